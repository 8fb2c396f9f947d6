"""Which first stage brings the exact top 10 to the rerank in the fewest candidates? The
product's rows/cols pooling against two token-level alternatives, each scored exactly (no
HNSW loss) on benches/scale.py's generated ColPali-sized pages (issue 8: at 100k pages the
rows/cols first stage needs ~10,000 pages reranked for Recall@10 0.95).

    python benches/first_stage.py [--pages 10000 ...] [--candidates 100 200 400]
        [--clusters 64] [--centroids 4096] [--source-index DIR] [--set DIR]

Pages and queries as in benches/scale.py (benches/scale_data.py, same seed: page n is the
same page). As each chunk of pages is generated:
- the exact MaxSim top 10 of every dev-set query over all pages (the ground truth) and each
  page's MaxSim on its mean-pooled grid rows and columns (scale.Truth);
- clusters: the page's vectors k-means-pooled into --clusters vectors (8 rounds, starting
  from grid cells spread over the page), scored by MaxSim like rows and columns;
- centroids: each vector's nearest of --centroids centroids, k-means-trained on a sample of
  the first pages' vectors (PLAID's codebook); a page is the set of centroids its vectors
  fall in. A query token scores a page by the best of its NPROBE nearest centroids that the
  page holds ("max"), or, as a sparse dot product over an inverted index would, by the sum
  over the ones it holds of each one's similarity less the next-nearest centroid's ("sum");
- tokens (WARP/XTR-style): the same codebook, but a query token is scored against the page's
  own vectors that fall in its NPROBE nearest centroids, exactly; a page's score for the token
  is the best of those, or, when it has none there, the similarity of the first centroid not
  probed (any vector of the page lies nearer some centroid that scores no higher).
The rerank after any first stage is exact, so Recall@10 of the whole search is the share of
the true top 10 among the first stage's candidates. Rows+cols passes the union of the top
C/2 by rows and the top C/2 by cols (at most C pages), the others their top C.

Prints a markdown table (machine, date, command, data) of Recall@10 per method and C, and
each method's build cost per page. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data
from scale import (
    COLS,
    DEFAULT_SET,
    DEFAULT_SOURCE,
    ROWS,
    Truth,
    ensure_source_index,
    log,
    page_number,
)

from vdr.token_index import nearest_centroids, train_centroids

from index_throughput import machine

KMEANS_ROUNDS = 8
CENTROID_SAMPLE = 1 << 18  # vectors the codebook is trained on
# Centroids each query token probes: "max" loses nothing by probing more, "sum" adds noise
# with every extra centroid a page holds (16 and 4 were the best of 1-32 on 10,000 pages).
# "tokens" gains little past 4 (Recall@10 at C=100 on 10,000 pages: 0.986 at 4, 0.993 at 8,
# 0.991 at 16) while its cost, the vectors it scores, grows with every centroid probed.
NPROBE = {"max": 16, "sum": 4, "tokens": 4}
MODES = tuple(NPROBE)


def kmeans_pool(pages: torch.Tensor, clusters: int) -> torch.Tensor:
    """[n, clusters, dim] float32: each page's vectors ([n, tokens, dim]) k-means-pooled, the
    means of KMEANS_ROUNDS rounds of assignment by dot product from evenly spread vectors."""
    start = torch.linspace(0, scale_data.CELLS - 1, clusters).round().long()
    means = pages[:, start].clone()
    for _ in range(KMEANS_ROUNDS):
        nearest = torch.bmm(pages, means.transpose(1, 2)).argmax(dim=2)
        members = torch.nn.functional.one_hot(nearest, clusters).float()
        counts = members.sum(dim=1)[..., None]
        sums = torch.bmm(members.transpose(1, 2), pages)
        means = torch.where(counts > 0, sums / counts.clamp(min=1), means)
    return means


class CentroidIndex:
    """Pages as sets of centroid numbers, with an inverted list (page numbers) per centroid,
    and every vector (float16, page by page) with its centroid for the "tokens" mode."""

    def __init__(self, centroids: torch.Tensor, n_pages: int) -> None:
        self.centroids = centroids.numpy()
        self.n_pages = n_pages
        self._codes: list[np.ndarray] = []
        self._pages: list[np.ndarray] = []
        self.vectors = np.empty((n_pages * scale_data.TOKENS, scale_data.DIM), np.float16)
        self.vector_codes = np.empty(n_pages * scale_data.TOKENS, np.int32)
        # Vectors each mode scored, summed over the queries asked (its cost grows with them).
        self.scored = dict.fromkeys(MODES, 0)
        self.asked = dict.fromkeys(MODES, 0)

    def add(self, first: int, pages: torch.Tensor) -> None:
        """Pages first .. first + n - 1 ([n, tokens, dim])."""
        n, tokens, dim = pages.shape
        codes = nearest_centroids(pages.reshape(-1, dim), torch.from_numpy(self.centroids))
        rows = slice(first * tokens, (first + n) * tokens)
        self.vectors[rows] = pages.reshape(-1, dim).numpy()
        self.vector_codes[rows] = codes.numpy()
        for number, held in enumerate(codes.view(n, tokens).numpy()):
            unique = np.unique(held)
            self._codes.append(unique.astype(np.int32))
            self._pages.append(np.full(len(unique), first + number, np.int32))

    def finish(self) -> None:
        codes, pages = np.concatenate(self._codes), np.concatenate(self._pages)
        order = np.argsort(codes, kind="stable")
        self.listed = pages[order]
        self.starts = np.searchsorted(codes[order], np.arange(len(self.centroids) + 1))
        self.held_per_page = len(codes) / self.n_pages
        # The "tokens" mode's inverted lists: row numbers of self.vectors per centroid.
        order = np.argsort(self.vector_codes, kind="stable")
        self.vector_rows = order
        self.vector_starts = np.searchsorted(
            self.vector_codes[order], np.arange(len(self.centroids) + 1)
        )

    def scores(self, query: np.ndarray, mode: str) -> np.ndarray:
        """[n_pages] float32 first-stage score of every page for `query` ([m, dim])."""
        nprobe = NPROBE[mode]
        similarity = query @ self.centroids.T
        probed = np.argpartition(-similarity, nprobe + 1, axis=1)[:, : nprobe + 1]
        total = np.zeros(self.n_pages, np.float32)
        self.asked[mode] += 1
        for vector, token, ranked in zip(query, similarity, probed, strict=True):
            ranked = ranked[np.argsort(-token[ranked])]
            floor = token[ranked[nprobe]]
            if mode == "tokens":
                total += self._token_scores(vector, ranked[:nprobe], floor)
                continue
            best = np.full(self.n_pages, floor if mode == "max" else 0.0, np.float32)
            for centroid in ranked[:nprobe][::-1]:  # worst first, so the best is written last
                pages = self.listed[self.starts[centroid] : self.starts[centroid + 1]]
                if mode == "max":
                    best[pages] = token[centroid]
                else:
                    best[pages] += token[centroid] - floor
                self.scored[mode] += len(pages)
            total += best
        return total

    def _token_scores(self, vector: np.ndarray, probed: np.ndarray, floor: float) -> np.ndarray:
        """[n_pages] float32: each page's best similarity to `vector` ([dim]) among its vectors
        in the `probed` centroids, `floor` for a page with none there."""
        rows = np.concatenate(
            [self.vector_rows[self.vector_starts[c] : self.vector_starts[c + 1]] for c in probed]
        )
        self.scored["tokens"] += len(rows)
        similarity = torch.from_numpy(self.vectors[rows].astype(np.float32) @ vector)
        pages = torch.from_numpy(rows // scale_data.TOKENS)
        best = torch.full((self.n_pages,), float(floor))
        return best.scatter_reduce_(0, pages, similarity, "amax").numpy()


def recall(true_top: np.ndarray, candidates: list[np.ndarray]) -> float:
    """Mean share of each query's true top 10 ([q, 10]) among its candidates (one array of
    page numbers a query)."""
    return float(
        np.mean([len(set(t) & set(c)) / len(t) for t, c in zip(true_top, candidates, strict=True)])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[10_000])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 400])
    parser.add_argument("--clusters", type=int, default=64)
    parser.add_argument("--centroids", type=int, default=4096)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-index", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    args = parser.parse_args()
    command = "python benches/first_stage.py " + shlex.join(sys.argv[1:])

    ensure_source_index(args.source_index, args.set)
    source = scale_data.load_source(args.source_index, args.set)
    # The codebook learns from the first chunk of pages, as an index would from its first
    # pages; page n is the same page at every size, so one codebook serves them all.
    _, first_pages = next(scale_data.pages(source, args.seed, min(args.pages)))
    sample = torch.from_numpy(first_pages.reshape(-1, scale_data.DIM))
    generator = torch.Generator().manual_seed(args.seed)
    sample = sample[torch.randperm(len(sample), generator=generator)[:CENTROID_SAMPLE]]
    started = time.perf_counter()
    centroids = train_centroids(sample, args.centroids, args.seed)
    train_s = time.perf_counter() - started
    log(f"centroids trained in {train_s:.0f} s on {len(sample):,} vectors")

    print(f"### First stages scored exactly, {datetime.date.today()}, {machine()}, `{command}`\n")
    print(
        f"Pages of {scale_data.TOKENS:,} x {scale_data.DIM} vectors from {source.n_sources} real "
        f"pages of `{args.source_index}` (seed {args.seed}); {len(source.queries)} real queries; "
        f"{args.centroids:,} centroids trained in {train_s:.0f} s on {len(sample):,} vectors "
        "of the first pages.\n"
    )
    for n_pages in args.pages:
        compare(source, centroids, n_pages, args)
    print(
        "Recall@10 of the whole search (the rerank is exact) when the first stage passes C "
        "pages; rows+cols passes the union of its top C/2 by rows and by cols. Vectors scored: "
        "the mean per query of the page numbers (max, sum) or page vectors (tokens) the "
        "probed centroids' inverted lists hold, which grows with the collection."
    )


def compare(
    source: scale_data.Source, centroids: torch.Tensor, n_pages: int, args: argparse.Namespace
) -> None:
    """Print the table of every first stage on the first `n_pages` generated pages."""
    queries = source.queries
    truth = Truth(queries, scale_data.patch_index(args.seed), range(len(queries)))
    index = CentroidIndex(centroids, n_pages)
    tokens = torch.from_numpy(np.concatenate(queries))
    owner = torch.from_numpy(np.repeat(np.arange(len(queries)), [len(q) for q in queries]))
    cluster_scores = []
    spent = {"clusters": 0.0, "centroids": 0.0}
    for first, vectors in scale_data.pages(source, args.seed, n_pages):
        truth.add(first, vectors)
        pages = torch.from_numpy(vectors)
        started = time.perf_counter()
        pooled = torch.cat([kmeans_pool(part, args.clusters) for part in pages.split(50)])
        spent["clusters"] += time.perf_counter() - started
        best = (tokens @ pooled.reshape(-1, scale_data.DIM).T).view(len(tokens), len(pages), -1)
        cluster_scores.append(
            torch.zeros(len(queries), len(pages)).index_add_(0, owner, best.amax(dim=2))
        )
        started = time.perf_counter()
        index.add(first, pages)
        spent["centroids"] += time.perf_counter() - started
        log(f"  {first + len(vectors):,} pages")
    index.finish()

    true_top = np.array([[page_number(p) for p in truth.top(q)] for q in truth.row])
    rows, cols = truth.ranks(ROWS), truth.ranks(COLS)
    clusters = torch.cat(cluster_scores, dim=1)
    by_centroids = {mode: np.stack([index.scores(q, mode) for q in queries]) for mode in MODES}

    def rows_cols(c: int) -> list[np.ndarray]:
        return [
            np.flatnonzero((r < c // 2) | (k < c // 2)) for r, k in zip(rows, cols, strict=True)
        ]

    def top(scores: np.ndarray) -> Callable[[int], list[np.ndarray]]:
        return lambda c: list(np.argpartition(-scores, c, axis=1)[:, :c])

    per_page = {name: f"{seconds / n_pages * 1e3:.1f} ms" for name, seconds in spent.items()}
    # (first stage, candidates at C, build cost per page, vectors scored a query)
    methods = [
        ("rows+cols (the product's)", rows_cols, "-", "-"),
        (
            f"clusters: {args.clusters} k-means means a page",
            top(clusters.numpy()),
            per_page["clusters"],
            "-",
        ),
        *(
            (
                f"centroids, {mode}: {NPROBE[mode]} probed a token",
                top(by_centroids[mode]),
                f"{per_page['centroids']} + training",
                f"{index.scored[mode] / index.asked[mode]:,.0f}",
            )
            for mode in MODES
        ),
    ]
    print(
        f"{n_pages:,} pages: a page holds {index.held_per_page:.0f} distinct centroids on "
        "average.\n"
    )
    header = " | ".join(f"C={c}" for c in args.candidates)
    print(f"| first stage | {header} | build per page | vectors scored a query |")
    print("|---|" + "---:|" * (len(args.candidates) + 2))
    for name, candidates_of, build, scored in methods:
        cells = " | ".join(f"{recall(true_top, candidates_of(c)):.3f}" for c in args.candidates)
        print(f"| {name} | {cells} | {build} | {scored} |")
    print()


if __name__ == "__main__":
    main()

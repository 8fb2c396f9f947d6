"""A token-level first stage (WARP/XTR-style) for large indexes, kept beside the store, that
also reranks its own candidates.

The pooled first stage (rows/cols) loses a page's detail, so at scale it must pass thousands
of pages to the exact rerank to keep the true top 10 among them (BENCHMARKS.md, "Query
latency and recall"). This index keeps every page vector instead, grouped by its nearest of K
centroids (a k-means codebook, as PLAID's), in int8 after a fixed random rotation (as Qdrant's
TurboQuant: it spreads a vector's weight over every coordinate, so one byte a coordinate loses
less; on the 100,000-page index below a vector's largest coordinate is 2.8 times its RMS
rotated, 5.1 not, and the int8 step shrinks alike). A query token is scored exactly against
the page vectors in its NPROBE nearest centroids; a page's score for the token is the best of
those, or, when it has none there, the similarity of the first centroid not probed (each of
its vectors lies nearer some centroid that scores no higher). A page's first-stage score is
the sum over the query's tokens. On generated ColPali-sized pages, probing 4 centroids, this
keeps Recall@10 at 0.95 with ~50 pages reranked at 10,000 pages and ~90 at 30,000, where
rows/cols reaches 0.63 with 400 (benches/first_stage.py); at 100,000 pages it takes 16 probes
(see NPROBE).

The best pages are then scored by exact MaxSim over all their vectors, which this index holds
already (search()): the store's copy of the same vectors need not be read too. At 100,000
pages the two copies (~13 GB each in int8) do not fit in a 24 GB machine's page cache
together, and reranking from the store made every search read from disk (BENCHMARKS.md,
"The token first stage at 100k pages").

It is derived from the store and rebuilt whole by Index.optimize: never the only copy of
anything, so a crash or a stale index costs speed, not pages (see Index for how staleness is
told). On disk, in one folder:

    centroids.npy   [K, dim] float32 unit centroids
    rotation.npy    [dim, dim] float32 orthogonal: vectors.npy holds vector @ rotation
    vectors.npy     [n_vectors, dim] int8 rotated page vectors, sorted by centroid (mmap)
    scales.npy      [n_vectors] float32: rotated vector = int8 row x scale
    pages.npy       [n_vectors] int32 page number (into page_ids.json) of each vector
    starts.npy      [K + 1] int64: centroid c's vectors are rows starts[c] .. starts[c + 1] - 1
    page_rows.npy   [n_vectors] int32 or int64: the rows of vectors.npy grouped by page, so
                    page p's are page_rows[page_starts[p] .. page_starts[p + 1] - 1]
    page_starts.npy [n_pages + 1] int64
    page_ids.json   the page ids, by page number
    meta.json       written last: its presence says the rest is complete
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numba import njit

# Centroids each query token probes. On 100,000 generated pages (16,384 centroids of ~6,300
# vectors) the share of the true top 10 among the first 100 / 200 pages is 0.77 / 0.88 probing
# 4, 0.89 / 0.96 at 8 and 0.95 / 0.98 at 16, for 11, 16 and 25 ms a query on 2 cores
# (benches/token_probes.py); on 10,000 (4,096 centroids) 0.99 among 100 at any of them.
NPROBE = 16
# Page vectors a centroid holds on average, which sets K: the query's cost is ~ m x NPROBE x
# this many vectors whatever the index size, up to MAX_CENTROIDS (~41 M vectors); past it, a
# centroid holds more (~6,300 at 100,000 pages) and the cost grows with the index. 2,500 is
# where 4,096 centroids put 10,000 pages of 1,030 vectors, the codebook measured above.
VECTORS_PER_CENTROID = 2_500
MIN_CENTROIDS, MAX_CENTROIDS = 16, 16_384
# The codebook is trained on this many vectors per centroid (capped by what there is).
SAMPLE_PER_CENTROID = 64
KMEANS_ROUNDS = 10
# Above this many centroids a flat codebook costs too much to build: assigning 100,000 pages'
# 103 M vectors to 16,384 centroids is ~4 x 10^14 multiply-adds, about an hour on 2 cores. It
# is trained and searched in two levels instead (coarse groups, then the centroids of the
# group), each vector compared with COARSE_PROBE groups' centroids: ~25x fewer products. At or
# below it (10,000 pages), the flat codebook that benches/first_stage.py measured.
FLAT_MAX_CENTROIDS = 4_096
# On 262,144 clustered 128-d vectors and 16,384 centroids (128 x 128), the share given their
# nearest centroid: 0.81 probing 2 groups, 0.90 at 4, 0.96 at 8, for ~8 minutes at 4 and ~14 at
# 8 to assign 100,000 pages' vectors on 2 cores. The others go to a centroid nearly as near.
COARSE_PROBE = 4
ASSIGN_ROWS = 1 << 18  # vectors assigned to centroids at a time (128 MiB of float32 at 128-d)
_META = "meta.json"


@dataclass(frozen=True)
class TokenIndexInfo:
    """What a built token index covers: `writes` is the index's write count it was built at
    (Index tells a stale token index by it)."""

    pages: int
    vectors: int
    centroids: int
    writes: int
    seconds: float


def centroid_count(n_vectors: int) -> int:
    """K for an index of `n_vectors`: a power of two near n_vectors / VECTORS_PER_CENTROID."""
    wanted = max(1.0, n_vectors / VECTORS_PER_CENTROID)
    return int(np.clip(2 ** round(np.log2(wanted)), MIN_CENTROIDS, MAX_CENTROIDS))


def random_rotation(dim: int, seed: int = 0) -> np.ndarray:
    """[dim, dim] float32 orthogonal matrix, uniformly random (QR of a Gaussian one)."""
    q, r = np.linalg.qr(np.random.default_rng(seed).standard_normal((dim, dim)))
    return (q * np.sign(np.diag(r))).astype(np.float32)


def train_centroids(sample: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
    """[k, dim] float32 unit centroids by spherical k-means on `sample` ([n >= k, dim])."""
    generator = torch.Generator().manual_seed(seed)
    sample = torch.nn.functional.normalize(sample.float(), dim=1)
    centroids = sample[torch.randperm(len(sample), generator=generator)[:k]].clone()
    for _ in range(KMEANS_ROUNDS):
        nearest = nearest_centroids(sample, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, nearest, sample)
        empty = torch.bincount(nearest, minlength=k) == 0
        refill = sample[torch.randint(len(sample), (k,), generator=generator)]
        centroids = torch.nn.functional.normalize(torch.where(empty[:, None], refill, sums), dim=1)
    return centroids


def nearest_centroids(vectors: torch.Tensor, centroids: torch.Tensor) -> torch.Tensor:
    """[n] int64: the centroid of largest dot product with each of `vectors` ([n, dim])."""
    return torch.cat([(part @ centroids.T).argmax(dim=1) for part in vectors.split(1 << 16)])


@dataclass(frozen=True)
class Codebook:
    """The index's centroids, and for a two-level codebook the coarse groups they come in:
    group g's centroids are rows g x per .. (g + 1) x per - 1 of `centroids`. Only the build
    needs the groups; a query compares its few tokens with every centroid."""

    centroids: torch.Tensor  # [K, dim] float32, unit
    coarse: torch.Tensor | None = None  # [groups, dim] float32, unit; None: flat

    @classmethod
    def train(cls, sample: torch.Tensor, k: int, seed: int = 0) -> Codebook:
        """A codebook of k centroids learnt from `sample` ([n >= k, dim] float32): flat up to
        FLAT_MAX_CENTROIDS, else sqrt(k)-ish coarse groups, each with its own k-means."""
        if k <= FLAT_MAX_CENTROIDS:
            return cls(train_centroids(sample, k, seed))
        groups = 2 ** (int(np.log2(k)) // 2)
        per = k // groups
        sample = torch.nn.functional.normalize(sample.float(), dim=1)
        coarse = train_centroids(sample, groups, seed)
        owner = nearest_centroids(sample, coarse)
        fine = []
        for group in range(groups):
            members = sample[owner == group]
            if len(members) < per:  # rare: duplicates leave some centroids with no vectors
                members = torch.cat([members, coarse[group : group + 1]]).repeat(per, 1)[:per]
            fine.append(train_centroids(members, per, seed + 1 + group))
        return cls(torch.cat(fine), coarse)

    def nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """[n] int64: the nearest centroid of each of `vectors` ([n, dim] float32); for a
        two-level codebook, the nearest within the COARSE_PROBE nearest groups."""
        if self.coarse is None:
            return nearest_centroids(vectors, self.centroids)
        groups = len(self.coarse)
        fine = self.centroids.view(groups, -1, self.centroids.shape[1])
        best = torch.zeros(len(vectors), dtype=torch.int64)
        best_score = torch.full((len(vectors),), -torch.inf)
        near = (vectors @ self.coarse.T).topk(min(COARSE_PROBE, groups), dim=1).indices
        for choice in near.T:
            # Vectors sorted by group: one matrix product per group.
            order = torch.argsort(choice)
            counts = torch.bincount(choice, minlength=groups).tolist()
            for group, rows in enumerate(order.split(counts)):
                if not len(rows):
                    continue
                score, nearest = (vectors[rows] @ fine[group].T).max(dim=1)
                better = score > best_score[rows]
                best_score[rows[better]] = score[better]
                best[rows[better]] = group * fine.shape[1] + nearest[better]
        return best


def build_token_index(
    pages: Iterable[tuple[str, np.ndarray]], n_vectors: int, folder: Path, writes: int
) -> TokenIndexInfo:
    """Build the token index of `pages` ((page id, [n, dim] float32 vectors) each, n_vectors
    in all, in any order that mixes documents: the codebook learns from the first ones) into
    `folder`, replacing what is there only once the new one is complete.

    Two passes over `pages` would read the store twice, so the page-ordered int8 vectors go to
    a scratch file first and are sorted by centroid from there. Peak memory: the codebook
    sample plus ~16 bytes a vector for the sort.
    """
    started = time.perf_counter()
    k = centroid_count(n_vectors)
    scratch = scratch_folder(folder)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    iterator = iter(pages)
    page_ids: list[str] = []
    sample_size = min(n_vectors, SAMPLE_PER_CENTROID * k)
    held: list[np.ndarray] = []  # the first pages' vectors, until the sample is full
    for page_id, vectors in iterator:
        page_ids.append(page_id)
        held.append(np.asarray(vectors, np.float32))
        if sum(len(v) for v in held) >= sample_size:
            break
    if not held:
        raise ValueError("no pages to build a token index of")
    dim = held[0].shape[1]
    sample = torch.from_numpy(np.concatenate(held)[:sample_size])
    codebook = Codebook.train(sample, min(k, len(sample)))
    centroids = codebook.centroids
    k = len(centroids)

    rotation = random_rotation(dim)
    by_page = np.lib.format.open_memmap(scratch / "by_page.npy", "w+", np.int8, (n_vectors, dim))
    scales = np.empty(n_vectors, np.float32)
    codes = np.empty(n_vectors, np.int32)
    numbers = np.empty(n_vectors, np.int32)
    row = 0
    pending: list[np.ndarray] = []  # vectors of the last rows, not yet given their centroid

    def assign() -> None:
        # Thousands of rows at a time, not a page's: a two-level codebook runs a product per
        # group.
        if pending:
            block = torch.from_numpy(np.concatenate(pending))
            codes[row - len(block) : row] = codebook.nearest(block).numpy()
            pending.clear()

    def add(number: int, vectors: np.ndarray) -> None:
        nonlocal row
        if not len(vectors):  # a blank page: listed, scored by the floors alone
            return
        if row + len(vectors) > n_vectors:
            raise ValueError(f"the pages hold more than the {n_vectors:,} vectors announced")
        rows = slice(row, row + len(vectors))
        rotated = vectors @ rotation
        scale = np.maximum(np.abs(rotated).max(axis=1), 1e-12) / 127
        by_page[rows] = np.round(rotated / scale[:, None]).astype(np.int8)
        scales[rows] = scale
        numbers[rows] = number
        row += len(vectors)
        pending.append(vectors)
        if sum(len(v) for v in pending) >= ASSIGN_ROWS:
            assign()

    for number, vectors in enumerate(held):
        add(number, vectors)
    for page_id, vectors in iterator:
        page_ids.append(page_id)
        add(len(page_ids) - 1, np.asarray(vectors, np.float32))
    assign()
    order = np.argsort(codes[:row], kind="stable")
    sorted_vectors = np.lib.format.open_memmap(scratch / "vectors.npy", "w+", np.int8, (row, dim))
    for start in range(0, row, 1 << 20):
        sorted_vectors[start : start + (1 << 20)] = by_page[order[start : start + (1 << 20)]]
    sorted_vectors.flush()
    (scratch / "by_page.npy").unlink()  # its mapping lives on until collected, the file not
    np.save(scratch / "centroids.npy", centroids.numpy())
    np.save(scratch / "rotation.npy", rotation)
    np.save(scratch / "scales.npy", scales[:row][order])
    sorted_numbers = numbers[:row][order]
    np.save(scratch / "pages.npy", sorted_numbers)
    np.save(scratch / "starts.npy", np.searchsorted(codes[:row][order], np.arange(k + 1)))
    del order  # before the sort by page: both are 8 bytes a vector
    page_rows = np.argsort(sorted_numbers, kind="stable")
    np.save(scratch / "page_rows.npy", page_rows.astype(np.int32 if row < 2**31 else np.int64))
    counts = np.bincount(sorted_numbers, minlength=len(page_ids))
    np.save(scratch / "page_starts.npy", np.concatenate([[0], np.cumsum(counts)]))
    (scratch / "page_ids.json").write_text(json.dumps(page_ids))
    info = TokenIndexInfo(len(page_ids), row, k, writes, time.perf_counter() - started)
    (scratch / _META).write_text(json.dumps(info.__dict__))
    remove_token_index(folder)
    scratch.rename(folder)
    return info


def scratch_folder(folder: Path) -> Path:
    """Where the token index of `folder` is built before it is swapped in: left behind (as
    large as the index) only by a build that was killed, and cleared by the next one."""
    return folder.with_name(folder.name + ".new")


def remove_token_index(folder: Path) -> None:
    """Delete the token index in `folder`, its meta first so a crash midway leaves none."""
    (folder / _META).unlink(missing_ok=True)
    shutil.rmtree(folder, ignore_errors=True)


class TokenIndex:
    """A built token index, opened read-only (vectors memory-mapped)."""

    def __init__(self, folder: Path, meta: dict[str, Any]) -> None:
        self.info = TokenIndexInfo(**meta)
        self.centroids = np.load(folder / "centroids.npy")
        self.rotation = np.load(folder / "rotation.npy")
        self.vectors = np.load(folder / "vectors.npy", mmap_mode="r")
        self.scales = np.load(folder / "scales.npy", mmap_mode="r")
        self.pages = np.load(folder / "pages.npy", mmap_mode="r")
        self.starts = np.load(folder / "starts.npy")
        self.page_rows = np.load(folder / "page_rows.npy", mmap_mode="r")
        self.page_starts = np.load(folder / "page_starts.npy")
        self.page_ids: list[str] = json.loads((folder / "page_ids.json").read_text())

    @classmethod
    def open(cls, folder: Path) -> TokenIndex | None:
        """The token index in `folder`, or None when there is none, or none whole: files lost
        or cut short by a crash of the machine (they are not synced) make it a cache miss,
        which the next optimize mends, never an index that will not open."""
        try:
            index = cls(folder, json.loads((folder / _META).read_text()))
        except (OSError, ValueError, TypeError, EOFError):  # json and npy errors included
            return None
        rows = index.info.vectors
        whole = (
            len(index.vectors) == len(index.scales) == len(index.pages) == rows
            and len(index.starts) == len(index.centroids) + 1 == index.info.centroids + 1
            and index.rotation.shape == (index.vectors.shape[1],) * 2
            and len(index.page_ids) == index.info.pages
            and len(index.page_rows) == rows
            and len(index.page_starts) == index.info.pages + 1
        )
        return index if whole else None

    def candidates(self, query: np.ndarray, count: int, nprobe: int | None = None) -> list[str]:
        """Ids of the `count` best pages for `query` ([m, dim] float32), best first, each
        token probing `nprobe` centroids (default NPROBE)."""
        scores = self.scores(query, nprobe)
        return [self.page_ids[p] for p in _best(scores, count)]

    def search(
        self, query: np.ndarray, k: int, candidates: int, nprobe: int | None = None
    ) -> list[tuple[str, float]]:
        """The k best pages for `query` ([m, dim] float32) as (page id, MaxSim score), best
        first: the `candidates` best by the first stage (each token probing `nprobe`
        centroids, default NPROBE), scored by exact MaxSim over the index's int8 vectors."""
        numbers = _best(self.scores(query, nprobe), candidates)
        exact = self.maxsim(query, numbers)
        return [(self.page_ids[numbers[i]], float(exact[i])) for i in _best(exact, k)]

    def maxsim(self, query: np.ndarray, numbers: np.ndarray) -> np.ndarray:
        """[len(numbers)] float32 MaxSim of `query` ([m, dim] float32) against these pages (page
        numbers) over all their vectors, dequantized from int8; 0 for a page with none.

        One page per call of the compiled kernel at a time per thread, on every thread torch
        may use: the arithmetic (m x dim x ~1,000 multiply-adds a ColPali page) is the cost."""
        query = np.ascontiguousarray(query @ self.rotation, np.float32)
        numbers = np.asarray(numbers, np.int64)
        scores = np.empty(len(numbers), np.float32)
        arrays = (np.asarray(self.page_rows), self.page_starts)
        vectors = (np.asarray(self.vectors), np.asarray(self.scales))
        threads = max(1, min(torch.get_num_threads(), len(numbers)))

        def score(part: int) -> None:
            scores[part::threads] = _page_maxsim(query, numbers[part::threads], *arrays, *vectors)

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(score, range(threads)))
        return scores

    def scores(self, query: np.ndarray, nprobe: int | None = None) -> np.ndarray:
        """[n_pages] float32 first-stage score of every page (see the module docstring), each
        token probing `nprobe` centroids (default NPROBE)."""
        query = np.ascontiguousarray(query, np.float32)
        similarity = query @ self.centroids.T  # [m, K]
        nprobe = min(nprobe or NPROBE, similarity.shape[1] - 1)
        nearest = np.argpartition(-similarity, nprobe, axis=1)[:, : nprobe + 1]
        ranked = np.take_along_axis(
            nearest, np.argsort(-np.take_along_axis(similarity, nearest, 1), axis=1), 1
        )
        floors = np.take_along_axis(similarity, ranked[:, nprobe:], 1)[:, 0]
        return _probed_maxsim(
            np.ascontiguousarray(query @ self.rotation),
            np.ascontiguousarray(ranked[:, :nprobe]),
            floors,
            self.starts,
            np.asarray(self.vectors),
            np.asarray(self.scales),
            np.asarray(self.pages),
            len(self.page_ids),
        )


def _best(scores: np.ndarray, count: int) -> np.ndarray:
    """Positions of the `count` largest of `scores`, largest first."""
    count = min(count, len(scores))
    if count < 1:
        return np.zeros(0, np.int64)
    best = np.argpartition(-scores, count - 1)[:count]
    return best[np.argsort(-scores[best], kind="stable")]


@njit(nogil=True, fastmath=True, cache=True)
def _probed_maxsim(
    query: np.ndarray,
    probed: np.ndarray,
    floors: np.ndarray,
    starts: np.ndarray,
    vectors: np.ndarray,
    scales: np.ndarray,
    pages: np.ndarray,
    n_pages: int,
) -> np.ndarray:
    """Sum over query tokens t of each page's max(floors[t], best dot product of query[t]
    with the page's vectors in centroids probed[t]), as [n_pages] float32.

    One pass over the probed rows of the int8 vectors, each dequantized on the fly: no
    float32 copy of them and no per-token array over all pages (at 100,000 pages both cost
    more than the arithmetic). A page starts at the sum of the floors and gains, per token,
    what its best probed vector beats that token's floor by."""
    total = np.full(n_pages, floors.sum(), np.float32)
    unseen = np.float32(-1e30)  # not -inf: fastmath assumes no infinities
    best = np.full(n_pages, unseen, np.float32)
    touched = np.empty(n_pages, np.int64)
    for t in range(query.shape[0]):
        token = query[t]
        n_touched = 0
        for c in probed[t]:
            for row in range(starts[c], starts[c + 1]):
                dot = np.float32(0.0)
                for d in range(token.shape[0]):
                    dot += np.float32(vectors[row, d]) * token[d]
                score = dot * scales[row]
                page = pages[row]
                if best[page] == unseen:
                    touched[n_touched] = page
                    n_touched += 1
                if score > best[page]:
                    best[page] = score
        for i in range(n_touched):
            page = touched[i]
            if best[page] > floors[t]:
                total[page] += best[page] - floors[t]
            best[page] = unseen
    return total


@njit(nogil=True, fastmath=True, cache=True)
def _page_maxsim(
    query: np.ndarray,
    numbers: np.ndarray,
    page_rows: np.ndarray,
    page_starts: np.ndarray,
    vectors: np.ndarray,
    scales: np.ndarray,
) -> np.ndarray:
    """[len(numbers)] float32: for each page number, the sum over query tokens of the largest
    dot product with the page's vectors (int8 rows x scale), 0 for a page with none.

    Each row is dequantized once into a float32 buffer and then multiplied by every token,
    so the conversion is paid per row, not per (row, token)."""
    m, dim = query.shape
    out = np.zeros(len(numbers), np.float32)
    row_values = np.empty(dim, np.float32)
    best = np.empty(m, np.float32)
    for i in range(len(numbers)):
        page = numbers[i]
        first, last = page_starts[page], page_starts[page + 1]
        if first == last:
            continue
        best[:] = np.float32(-1e30)  # not -inf: fastmath assumes no infinities
        for j in range(first, last):
            row = page_rows[j]
            scale = scales[row]
            for d in range(dim):
                row_values[d] = np.float32(vectors[row, d]) * scale
            for t in range(m):
                dot = np.float32(0.0)
                for d in range(dim):
                    dot += row_values[d] * query[t, d]
                if dot > best[t]:
                    best[t] = dot
        out[i] = best.sum()
    return out

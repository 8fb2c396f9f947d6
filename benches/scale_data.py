"""ColPali-sized page multi-vectors generated from real encoded pages, for benches/scale.py.

Encoding 100,000 pages is out of reach on a 2-core CPU, and i.i.d. random vectors say nothing
about a pooled first stage (../shared/DESIGN.md, "Benchmarks that can be trusted"), so pages
are assembled from the real token vectors of an index of the dev set (default encoder,
~500 x 384-d unit vectors per page, each tagged with its patch on a ~32 x 32 grid):

1. Projection: the 128 leading right singular vectors of every real page vector (an
   uncentred PCA: it keeps the part of the vectors that dot products see, common direction
   included); vectors are projected and renormalised to unit length. Queries (the set's real
   queries, encoded by the same encoder) go through the same projection.
2. Source cells: each real page is resampled onto a 32 x 32 grid (its own patch (r, c) of an
   R x C grid falls in cell (32r // R, 32c // C)); a cell holds the renormalised mean of the
   vectors in it. Cells with no text get the page's background: its mean vector, renormalised
   (ColPali's white-space patches carry page context too). Blank real pages are left out.
3. A generated page: the 32 x 32 grid cut into 1-3 horizontal bands, each band into 1-2
   blocks; each block is copied from a random real page at a random shift of up to
   MAX_SHIFT cells, so the layout stays a real page's. Six extra tokens (ColPali's prompt
   tokens) are the page's mean vector. Every one of the 1,030 vectors gets a small Gaussian
   perturbation (PERTURBATION: cosine ~0.96 to its source) and is renormalised.
   patch_index: cells 0..1023, then six fixed cells for the extra tokens.

Pages come in chunks of CHUNK_PAGES, chunk i from numpy's generator seeded with (seed, i),
so page n is the same vectors whatever the collection size or the order chunks are made in.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vdr.store.base import Store

GRID = 32
CELLS = GRID * GRID
EXTRA_TOKENS = 6  # 1,030 vectors a page, as ColPali
TOKENS = CELLS + EXTRA_TOKENS
DIM = 128
CHUNK_PAGES = 250
MAX_SHIFT = 6
# Gaussian noise of this norm (in expectation) is added to each unit vector before
# renormalising: cosine 1 / sqrt(1 + 0.3^2) = 0.96 to the source vector.
PERTURBATION = 0.3
# Perturbations are drawn from a bank of this many Gaussian vectors (a random row each): as
# good as fresh draws for this purpose and 5x cheaper than drawing 1,030 x 128 per page.
NOISE_BANK = 1 << 18
# Shares of the collection the real-pages control passes to the rerank (per pooled kind).
REAL_SHARES = (0.01, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class Source:
    """Real material the pages and queries are made from (all unit vectors, float32).

    cells:      [n_sources * CELLS, DIM]; source page s's cell j is row s * CELLS + j
    filled:     [n_sources] share of each source page's cells that hold text vectors
    queries:    the set's queries, each [m, DIM] (its scoring tokens, projected)
    query_text: the queries' texts
    energy:     share of the real vectors' squared norm that the projection keeps
    fidelity:   mean top-10 overlap between MaxSim on the real 384-d vectors and on the
                projected ones, over every query against every real page
    n_vectors:  real page vectors the projection was fitted on
    model:      the encoder that made them
    real_recall: the control on the real pages themselves (their own 384-d store, plain
                segments, so an exact scan of the pooled vectors): candidates per kind ->
                Recall@10 of the rows/cols first stage + rerank against the full scan
    """

    cells: np.ndarray
    filled: np.ndarray
    queries: list[np.ndarray]
    query_text: list[str]
    energy: float
    fidelity: float
    n_vectors: int
    model: str
    real_recall: dict[int, float]

    @property
    def n_sources(self) -> int:
        return len(self.cells) // CELLS


def unit(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length, float32 (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def load_source(index_dir: Path, set_dir: Path) -> Source:
    """Read every real page of the index at `index_dir` and encode the queries of `set_dir`
    with its encoder, then project and resample them (see the module docstring)."""
    from vdr import Index
    from vdr.eval import load_set

    fields = ["n_vectors", "patch_index", "grid"]
    with Index(index_dir, rerank="qdrant", create=False) as index:
        pages = [
            (payload, np.asarray(full, np.float32)[: int(payload["n_vectors"])])
            for payload, full in index.store._scroll(fields, with_full=True)
            if int(payload["n_vectors"])
        ]
        texts = [q.text for q in load_set(set_dir)[0]]
        real_queries = [e.scoring_vectors() for e in index.embed_queries(texts)]
        model = index.model
        real_recall = _real_recall(index.store, real_queries)
    if not pages:
        raise SystemExit(f"the index at {index_dir} holds no page vectors")
    everything = np.concatenate([vectors for _, vectors in pages]).astype(np.float64)
    # The right singular vectors of the data are the eigenvectors of its Gram matrix (8x
    # faster than an SVD of 150,000 x 384).
    eigenvalues, eigenvectors = np.linalg.eigh(everything.T @ everything)
    order = np.argsort(eigenvalues)[::-1][:DIM]
    basis = eigenvectors[:, order].astype(np.float32)  # [384, 128]
    energy = float(eigenvalues[order].sum() / eigenvalues.sum())
    projected = [(payload, unit(vectors @ basis)) for payload, vectors in pages]
    queries = [unit(q @ basis) for q in real_queries]

    cells = np.empty((len(pages), CELLS, DIM), np.float32)
    filled = np.empty(len(pages))
    for s, (payload, vectors) in enumerate(projected):
        rows, cols = (int(v) for v in payload["grid"])
        patch = np.asarray(payload["patch_index"], np.int64)
        cell = (patch // cols) * GRID // rows * GRID + (patch % cols) * GRID // cols
        order = np.argsort(cell, kind="stable")
        starts = np.flatnonzero(np.r_[True, np.diff(cell[order]) != 0])
        has = np.zeros(CELLS, bool)
        has[cell] = True
        cells[s, cell[order][starts]] = unit(np.add.reduceat(vectors[order], starts, axis=0))
        cells[s, ~has] = unit(vectors.mean(axis=0))
        filled[s] = has.mean()
    fidelity = _fidelity(
        [v for _, v in pages], [v for _, v in projected], real_queries, queries, k=10
    )
    return Source(
        cells=cells.reshape(-1, DIM),
        filled=filled,
        queries=queries,
        query_text=texts,
        energy=energy,
        fidelity=fidelity,
        n_vectors=len(everything),
        model=model,
        real_recall=real_recall,
    )


def _real_recall(store: Store, queries: list[np.ndarray]) -> dict[int, float]:
    """Recall@10 of the pooled first stage + rerank against the full scan on a store of real
    pages, with candidates = REAL_SHARES of its pages per kind."""
    exact = [{h.page_id for h in store.search(q, 10, None)} for q in queries]
    found = {}
    for share in REAL_SHARES:
        candidates = max(1, round(share * store.count()))
        hits = [{h.page_id for h in store.search(q, 10, candidates)} for q in queries]
        found[candidates] = float(
            np.mean([len(a & b) / 10 for a, b in zip(hits, exact, strict=True)])
        )
    return found


def _fidelity(
    pages: list[np.ndarray],
    projected: list[np.ndarray],
    queries: list[np.ndarray],
    projected_queries: list[np.ndarray],
    k: int,
) -> float:
    """Mean overlap of each query's top k real pages by MaxSim before and after projection."""
    starts = np.cumsum([0] + [len(page) for page in pages[:-1]])
    before_docs, after_docs = np.concatenate(pages), np.concatenate(projected)

    def top(docs: np.ndarray, query: np.ndarray) -> set[int]:
        scores = np.maximum.reduceat(query @ docs.T, starts, axis=1).sum(axis=0)
        return set(np.argsort(-scores)[:k].tolist())

    overlaps = [
        len(top(before_docs, query) & top(after_docs, small)) / k
        for query, small in zip(queries, projected_queries, strict=True)
    ]
    return float(np.mean(overlaps))


@functools.cache
def _noise_bank(seed: int) -> np.ndarray:
    """[NOISE_BANK, DIM] float32 Gaussian perturbations of expected norm PERTURBATION."""
    rng = np.random.default_rng([seed, 1 << 31])
    bank = rng.standard_normal((NOISE_BANK, DIM), dtype=np.float32)
    return bank * np.float32(PERTURBATION / np.sqrt(DIM))


def patch_index(seed: int) -> np.ndarray:
    """[TOKENS] int32: one vector per grid cell in row-major order, then the extra tokens'
    cells (fixed for a seed)."""
    extra = np.random.default_rng([seed, 1 << 30]).integers(0, CELLS, EXTRA_TOKENS)
    return np.concatenate([np.arange(CELLS), extra]).astype(np.int32)


def _layout(rng: np.random.Generator, n_sources: int) -> np.ndarray:
    """[CELLS] rows of Source.cells: one generated page's grid, block by block."""
    rows = np.arange(GRID)
    picked = np.empty((GRID, GRID), np.int64)
    n_bands = int(rng.integers(1, 4))
    row_cuts = [0, *sorted(rng.choice(np.arange(4, GRID - 3), n_bands - 1, replace=False)), GRID]
    for top, bottom in itertools.pairwise(row_cuts):
        col_cuts = [0, GRID]
        if rng.random() < 0.5:
            col_cuts = [0, int(rng.integers(8, GRID - 7)), GRID]
        for left, right in itertools.pairwise(col_cuts):
            source = int(rng.integers(n_sources))
            down = int(rng.integers(max(-MAX_SHIFT, -top), min(MAX_SHIFT, GRID - bottom) + 1))
            across = int(rng.integers(max(-MAX_SHIFT, -left), min(MAX_SHIFT, GRID - right) + 1))
            picked[top:bottom, left:right] = (
                source * CELLS
                + (rows[top:bottom, None] + down) * GRID
                + (rows[None, left:right] + across)
            )
    return picked.reshape(-1)


def chunk(source: Source, seed: int, number: int) -> np.ndarray:
    """Chunk `number`: [CHUNK_PAGES, TOKENS, DIM] float32 unit vectors, pages
    number * CHUNK_PAGES onwards."""
    rng = np.random.default_rng([seed, number])
    picked = np.stack([_layout(rng, source.n_sources) for _ in range(CHUNK_PAGES)])
    pages = np.empty((CHUNK_PAGES, TOKENS, DIM), np.float32)
    pages[:, :CELLS] = source.cells[picked]
    pages[:, CELLS:] = unit(pages[:, :CELLS].mean(axis=1))[:, None, :]
    pages += _noise_bank(seed)[rng.integers(0, NOISE_BANK, (CHUNK_PAGES, TOKENS))]
    return unit(pages)


def pages(source: Source, seed: int, n_pages: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first page number, [n, TOKENS, DIM] vectors) for pages 0 .. n_pages - 1, a chunk at
    a time (the last one cut short)."""
    for number in range(-(-n_pages // CHUNK_PAGES)):
        first = number * CHUNK_PAGES
        yield first, chunk(source, seed, number)[: n_pages - first]

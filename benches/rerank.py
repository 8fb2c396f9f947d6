"""The exact rerank stage: Qdrant's own MaxSim vs ours (vdr.kernels.maxsim on resident vectors).

    python benches/rerank.py [--index DIR] [--pages 1000] [--candidates 200]

Two collections, each searched both ways in the same run (same first stage, same candidates):
- the dev set (../shared/bench/dev) with the default encoder, its 124 queries (indexed into
  --index first if that folder holds no index);
- `--pages` generated ColPali-sized pages (1,030 x 128 unit vectors on a 32 x 32 grid plus 6
  extra) in a fresh Qdrant Edge store, with 32-token random queries.
Per query: p50/p95 latency of store.search (first stage + rerank, k=10, no evidence). For ours
also what holding the vectors costs: the time to read them out of Qdrant and their memory. On a
CUDA machine ours runs the Triton kernel. Results agree (checked) before they are timed.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr import Index
from vdr.encoders.base import PageEmbedding, resolve_device
from vdr.eval import load_set
from vdr.store.base import PageRecord, Store
from vdr.store.edge import EdgeStore
from vdr.store.resident import ResidentVectors

from index_throughput import DEFAULT_PDFS, machine

COLPALI_GRID, COLPALI_TOKENS, COLPALI_DIM = (32, 32), 1030, 128


def latencies(store: Store, queries: list[np.ndarray], candidates: int) -> np.ndarray:
    """Milliseconds per search, after one warm-up search."""
    store.search(queries[0], 10, candidates)
    times = []
    for query in queries:
        started = time.perf_counter()
        store.search(query, 10, candidates)
        times.append((time.perf_counter() - started) * 1e3)
    return np.array(times)


def compare(name: str, store: Store, queries: list[np.ndarray], candidates: int) -> None:
    """Time Qdrant's rerank, then read the vectors in and time ours; print two table rows."""
    device = torch.device(resolve_device("auto"))
    store.resident = None
    by_qdrant = [store.search(q, 10, candidates) for q in queries]
    qdrant = latencies(store, queries, candidates)
    resident = ResidentVectors(device)
    started = time.perf_counter()
    store.keep_resident(resident)
    load = time.perf_counter() - started
    for query, theirs in zip(queries, by_qdrant, strict=True):
        ours = store.search(query, 10, candidates)
        assert [h.page_id for h in ours] == [h.page_id for h in theirs], name
    ours = latencies(store, queries, candidates)
    print(
        f"| {name} | Qdrant's own | {np.median(qdrant):.1f} | "
        f"{np.percentile(qdrant, 95):.1f} | - | - |"
    )
    print(
        f"| {name} | vdr ({device.type}) | {np.median(ours):.1f} | {np.percentile(ours, 95):.1f} "
        f"| {load:.1f} s ({load / store.count() * 1e3:.1f} ms/page) "
        f"| {resident.nbytes / 2**20:.0f} MB |"
    )


def dev_set(folder: Path, candidates: int) -> None:
    with Index(folder, rerank="qdrant") as index:
        if not index.store.count():
            index.add([DEFAULT_PDFS])
        texts = [q.text for q in load_set(DEFAULT_PDFS.parent)[0]]
        queries = [e.scoring_vectors() for e in index.embed_queries(texts)]
        name = f"dev set, {index.store.count()} pages, {len(queries)} queries"
        compare(name, index.store, queries, candidates)


def generated(n_pages: int, candidates: int) -> None:
    rng = np.random.default_rng(0)
    grid_cells = COLPALI_GRID[0] * COLPALI_GRID[1]
    patch_index = np.concatenate(
        [np.arange(grid_cells), rng.integers(0, grid_cells, COLPALI_TOKENS - grid_cells)]
    ).astype(np.int32)

    def unit(shape: tuple[int, ...]) -> np.ndarray:
        vectors = rng.standard_normal(shape, dtype=np.float32)
        return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)

    with tempfile.TemporaryDirectory() as folder:
        store = EdgeStore(Path(folder), COLPALI_DIM)
        for first in range(0, n_pages, 50):
            store.upsert(
                [
                    PageRecord(
                        doc_id=f"doc{page // 10:05d}",
                        doc_path=f"/docs/doc{page // 10:05d}.pdf",
                        page=page % 10 + 1,
                        n_pages=10,
                        size=(612.0, 792.0),
                        words=(),
                        embedding=PageEmbedding(
                            unit((COLPALI_TOKENS, COLPALI_DIM)), patch_index, COLPALI_GRID
                        ),
                    )
                    for page in range(first, min(first + 50, n_pages))
                ]
            )
        queries = [unit((32, COLPALI_DIM)) for _ in range(50)]
        compare(f"{n_pages:,} generated ColPali pages, 50 queries", store, queries, candidates)
        store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--index", type=Path, default=Path(tempfile.gettempdir()) / "vdr-bench-dev-index"
    )
    parser.add_argument("--pages", type=int, default=1000)
    parser.add_argument("--candidates", type=int, default=200)
    args = parser.parse_args()
    print(f"Exact rerank, {datetime.date.today()}, {machine()}")
    print(f"first stage: top {args.candidates} pages by rows and by cols, then the rerank, k=10\n")
    print("| collection | rerank | p50 ms | p95 ms | read vectors in | resident memory |")
    print("|---|---|---:|---:|---:|---:|")
    dev_set(args.index, args.candidates)
    generated(args.pages, args.candidates)


if __name__ == "__main__":
    main()

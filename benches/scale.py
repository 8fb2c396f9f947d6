"""Search latency, recall and memory at 1k-100k ColPali-sized pages: the pooled first stage +
exact rerank against the exact full scan, in the same run (issue 8).

    python benches/scale.py --pages 1000 10000 100000 [--candidates 100 400 1600]
        [--token-candidates 50 100 200]
        [--storage auto|float32|float16|int8|binary] [--source-index DIR] [--set DIR]
        [--scan-seconds 60] [--repeats 1] [--truth-queries N] [--store-max-pages N]
        [--resident-max-gb 6] [--workdir /tmp] [--keep-token-index DIR] [--markdown-out FILE]

Data (benches/scale_data.py): pages of 1,030 x 128 unit vectors (a 32 x 32 grid + 6 extra
tokens, like ColPali) assembled from the real page vectors of an index of the dev set built
with the default encoder (--source-index; built there with `vdr index` when missing),
projected to 128-d; queries are the set's 124 real queries, encoded and projected alike.
Seeded: page n is the same at every size.

For each size, in a fresh Qdrant Edge store under --workdir (deleted afterwards), through
vdr's own store (EdgeStore.upsert / optimize / search, k=10):
- load: pages generated a chunk at a time and upserted (50 per call; the shard flushed every
  FLUSH_PAGES); the exact top 10 of every query is computed from the same generated vectors
  as they go by (float32 MaxSim over every page: the ground truth, timed apart from the
  load), and so is every page's MaxSim on its pooled vectors (for the exact first stage);
- the first stage before optimize (plain segments: Qdrant scans every pooled vector) with
  the largest C, on as many queries as --scan-seconds allows;
- optimize (HNSW graphs on the pooled rows/cols vectors), timed;
- for each --candidates C: one warm-up pass over the queries (its results give Recall@10
  against the ground truth), then --repeats timed passes: p50/p95/p99 of store.search with
  the pooled first stage (C pages by rows and C by cols) + Qdrant's exact rerank; then the
  first stage alone (the two pooled queries store.search makes for vdr's rerank), timed,
  and the share of the true top 10 in its pool;
- the token first stage (vdr.token_index, what Index.optimize builds at this size): built from
  the store, timed; for each --token-candidates C, its C best pages exactly reranked from the
  token index's own vectors (TokenIndex.search, then store.hits for the payloads: what vdr
  does in an int8 index with a current token stage), then by Qdrant (store.search with
  picked=, pooled=False), each timed and scored as above; then the first stage alone, timed;
- the exact full scan (store.search with candidates=None: Qdrant's MaxSim over every page), on
  as many queries as --scan-seconds allows (at least 3). With float32 storage its results
  must equal the ground truth (checked; a mismatch stops the run);
- vdr's rerank (--rerank vdr: the full vectors read into memory, our CPU MaxSim, one torch
  thread), at sizes whose float32 vectors fit in --resident-max-gb.
Then, from the scores kept during the load: what an exact (no HNSW) pooled first stage passes
on at each C, and the C it needs for Recall@10 0.95, for the product's rows+cols pooling and
for 4 x 4-cell blocks; with the same figure for the real pages in their own store.
Above --store-max-pages only that last part runs (no store, no latency).

Memory: the bench process's peak RSS (getrusage, its high-water mark reset per size; the
resident vectors' peak apart) and the store folder's size on disk, at its largest while
loading and once closed. --storage auto: float32 where a size's full float32 vectors take at
most half the RAM, int8 above.

Prints one markdown block (machine, date, command, data, then the tables);
--markdown-out FILE writes that block and nothing else to FILE. Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import inspect
import os
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data

from vdr.encoders.base import PageEmbedding
from vdr.store.base import COLS, ROWS, TIE_SLACK, Hit, PageRecord, ordered
from vdr.store.edge import EdgeStore
from vdr.store.resident import ResidentVectors
from vdr.token_index import TokenIndex, build_token_index

from index_throughput import REPO, machine

K = 10
SAMPLE_SECONDS = 0.2
UPSERT_PAGES = 50
# The bench flushes the shard every this many pages: Qdrant Edge keeps every upsert in its
# write-ahead log until a flush (vdr flushes only on close), ~0.7 MB a page of 1,030 x 128,
# which at 100,000 pages would outgrow the disk.
FLUSH_PAGES = 10_000
PAGES_PER_DOC = 10
# Pages scored per matrix product by the ground truth: [query tokens, 8 x 1,030] float32,
# ~70 MB for the ~2,000 scoring tokens of the dev set's queries.
TRUTH_PAGES = 8
# The first stage's target: the Recall@10.
RECALL_TARGET = 0.95
BLOCKS, BLOCK = "blocks", 4
DEFAULT_SET = REPO.parent / "shared" / "bench" / "dev"
DEFAULT_SOURCE = Path(tempfile.gettempdir()) / "vdr-scale-source-index"


@dataclass
class Measured:
    """One search path measured at one size."""

    name: str
    candidates: int | None  # pooled first-stage candidates per kind (None: no pooled stage)
    times_ms: list[float]
    recall: float  # mean Recall@10 against the ground truth, over the queries it answered
    answered: int  # queries whose results the recall is over
    first_stage_ms: float | None = None  # p50 of the two pooled prefetches alone
    pool_recall: float | None = None  # share of the true top 10 in the first stage's pool


@dataclass
class Size:
    """Everything measured at one collection size."""

    pages: int
    storage: str
    generate_s: float = 0.0
    load_s: float = 0.0
    truth_s: float = 0.0
    optimize_s: float = 0.0
    token_build_s: float = 0.0
    token_reused: bool = False  # from --keep-token-index, built by an earlier run
    resident_s: float | None = None
    folder_bytes: int = 0
    rss_start: int = 0  # resident memory when the size began (source data, encoder, ...)
    peak_rss: int = 0
    peak_disk: int = 0  # the store folder's largest size while loading (before a flush)
    peak_anon: int = 0  # sampled, up to the end of the full scan (see MemorySampler)
    peak_file: int = 0
    sampler: MemorySampler | None = None
    peak_rss_resident: int | None = None
    paths: list[Measured] = field(default_factory=list)
    poolings: list[Pooling] = field(default_factory=list)
    truth_check: str = ""


def pooling_matrices(patches: np.ndarray) -> dict[str, torch.Tensor]:
    """[groups, TOKENS] averaging matrices of the first-stage poolings over a page's vectors:
    its grid rows and columns (vdr.pooling.pool_rows_cols: the product's), and 4 x 4-cell
    blocks (an alternative with as many vectors, 64, that keeps a region's text together)."""
    row, col = patches // scale_data.GRID, patches % scale_data.GRID
    groups = {
        ROWS: row,
        COLS: col,
        BLOCKS: (row // BLOCK) * (scale_data.GRID // BLOCK) + col // BLOCK,
    }
    matrices = {}
    for kind, group in groups.items():
        member = (group[None, :] == np.unique(group)[:, None]).astype(np.float32)
        matrices[kind] = torch.from_numpy(member / member.sum(axis=1, keepdims=True))
    return matrices


class Truth:
    """Exact scores of every query against every page, kept as chunks of pages go by: the
    top K by MaxSim over the full vectors (the ground truth), and MaxSim over each pooling of
    pooling_matrices for every page (to see what an exact first stage would pass on).

    Scores are float32 MaxSim (each query token's largest dot product with the page's
    vectors, summed over the query's tokens): the same sums Qdrant computes, up to float
    rounding (~1e-6).
    """

    def __init__(
        self, queries: Sequence[np.ndarray], patches: np.ndarray, numbers: Sequence[int]
    ) -> None:
        """queries: all of them; numbers: those to score (the ground truth costs ~2 x tokens
        x DIM flops per page vector, minutes a query at 100,000 pages on 2 cores)."""
        chosen = [queries[n] for n in numbers]
        self.row = {number: i for i, number in enumerate(numbers)}
        self.tokens = torch.from_numpy(np.concatenate(chosen))
        self.owner = torch.from_numpy(np.repeat(np.arange(len(chosen)), [len(q) for q in chosen]))
        self.n_queries = len(chosen)
        # As store.search does: a few more than K, so ties across the K-th place are settled
        # the same way (by page id).
        self.scores = torch.full((self.n_queries, K + TIE_SLACK), -torch.inf)
        self.pages = torch.full((self.n_queries, K + TIE_SLACK), -1, dtype=torch.int64)
        self._top: list[list[str]] | None = None
        self.poolings = pooling_matrices(patches)
        self.pooled: dict[str, list[torch.Tensor]] = {kind: [] for kind in self.poolings}

    def _maxsim(self, pages: torch.Tensor) -> torch.Tensor:
        """[n_queries, n] MaxSim of every query against pages [n, tokens, dim]."""
        n, tokens, dim = pages.shape
        scores = torch.zeros(self.n_queries, n)
        for start in range(0, n, TRUTH_PAGES):
            block = pages[start : start + TRUTH_PAGES].reshape(-1, dim)
            best = (self.tokens @ block.T).view(len(self.tokens), -1, tokens).amax(dim=2)
            scores[:, start : start + TRUTH_PAGES].index_add_(0, self.owner, best)
        return scores

    def add(self, first: int, vectors: np.ndarray) -> None:
        """Score pages first .. first + len(vectors) - 1 ([n, TOKENS, DIM] float32)."""
        pages = torch.from_numpy(vectors)
        scores = self._maxsim(pages)
        n = len(pages)
        ids = torch.arange(first, first + n).expand(self.n_queries, n)
        top = torch.cat([self.scores, scores], dim=1).topk(K + TIE_SLACK, dim=1)
        self.pages = torch.cat([self.pages, ids], dim=1).gather(1, top.indices)
        self.scores = top.values
        self._top = None
        for kind, matrix in self.poolings.items():
            self.pooled[kind].append(self._maxsim(torch.matmul(matrix, pages)))

    def top(self, query: int) -> list[str]:
        """The true top K page ids of query number `query` (one of those scored), ties ordered
        as the store does."""
        if self._top is None:
            self._top = [
                [
                    h.page_id
                    for h in ordered(
                        [
                            Hit(page_id(int(p)), "", "", 0, float(score))
                            for p, score in zip(pages, scores, strict=True)
                        ]
                    )[:K]
                ]
                for pages, scores in zip(self.pages.tolist(), self.scores.tolist(), strict=True)
            ]
        return self._top[self.row[query]]

    def recall(self, query: int, page_ids: Sequence[str], among: int = K) -> float:
        """Share of query number `query`'s true top K found in the first `among` page ids."""
        return len(set(self.top(query)) & set(page_ids[:among])) / K

    def ranks(self, kind: str) -> np.ndarray:
        """[n_queries, n_pages] int: each page's 0-based rank by its `kind` pooled score."""
        scores = torch.cat(self.pooled[kind], dim=1)
        order = scores.argsort(dim=1, descending=True)
        ranks = torch.empty_like(order)
        ranks.scatter_(1, order, torch.arange(order.shape[1]).expand_as(order).contiguous())
        return ranks.numpy()


@dataclass
class Pooling:
    """An exact first stage (every page's pooled vectors scored, no HNSW) at one size."""

    name: str
    vectors: int  # pooled vectors a page
    recall_at: dict[int, float]  # candidates per kind -> share of the true top 10 passed on
    needed: int  # candidates per kind for RECALL_TARGET
    reranked: float  # pages the rerank then scores (mean over queries)


def shares_of(n_pages: int) -> list[int]:
    """Candidates per kind that are scale_data.REAL_SHARES of a collection."""
    return [max(1, round(share * n_pages)) for share in scale_data.REAL_SHARES]


def exact_first_stages(truth: Truth, candidates: Sequence[int], n_pages: int) -> list[Pooling]:
    """What an exact scan of each pooling passes on: recall at each candidates count, and the
    candidates (and pages to rerank) that RECALL_TARGET needs; rows+cols as the product
    combines them (the union of the top C by rows and the top C by cols)."""
    true_pages = np.array([[page_number(p) for p in truth.top(q)] for q in truth.row])
    found = []
    for name, kinds in ((f"{ROWS}+{COLS}", (ROWS, COLS)), (f"{BLOCKS} 4x4", (BLOCKS,))):
        ranks = [truth.ranks(kind) for kind in kinds]
        best = np.minimum.reduce([np.take_along_axis(r, true_pages, axis=1) for r in ranks])
        ordered_ranks = np.sort(best.reshape(-1))
        needed = int(ordered_ranks[int(np.ceil(RECALL_TARGET * len(ordered_ranks))) - 1]) + 1
        reranked = float(np.mean(np.logical_or.reduce([r < needed for r in ranks]).sum(axis=1)))
        found.append(
            Pooling(
                name,
                sum(len(truth.poolings[kind]) for kind in kinds),
                {c: float(np.mean(best < c)) for c in [*candidates, *shares_of(n_pages)]},
                needed,
                reranked,
            )
        )
    return found


def page_id(number: int) -> str:
    """The store's page id of generated page `number` (0-based)."""
    return f"gen{number // PAGES_PER_DOC:06d}-{number % PAGES_PER_DOC + 1}"


def page_number(page_id: str) -> int:
    """page_id's inverse."""
    doc, page = page_id[3:].split("-")
    return int(doc) * PAGES_PER_DOC + int(page) - 1


def records(first: int, vectors: np.ndarray, patches: np.ndarray) -> list[PageRecord]:
    """PageRecords for generated pages first, first + 1, ...: ten pages a document."""
    return [
        PageRecord(
            doc_id=f"gen{number // PAGES_PER_DOC:06d}",
            doc_path=f"/generated/gen{number // PAGES_PER_DOC:06d}.pdf",
            page=number % PAGES_PER_DOC + 1,
            n_pages=PAGES_PER_DOC,
            size=(612.0, 792.0),
            words=(),
            embedding=PageEmbedding(page, patches, (scale_data.GRID, scale_data.GRID)),
        )
        for number, page in enumerate(vectors, start=first)
    ]


def open_store(folder: Path, storage: str) -> EdgeStore:
    """A new EdgeStore with this storage (float32 also on a store that has no option yet)."""
    if "storage" in inspect.signature(EdgeStore).parameters:
        return EdgeStore(folder, scale_data.DIM, storage=storage)  # type: ignore[call-arg]
    if storage != "float32":
        raise SystemExit(f"this EdgeStore has no storage option: cannot store {storage}")
    return EdgeStore(folder, scale_data.DIM)


def choose_storage(requested: str, pages: int) -> str:
    """--storage, or for auto: float32 while the full vectors fit in half the RAM, else int8."""
    if requested != "auto":
        return requested
    float32_bytes = pages * scale_data.TOKENS * scale_data.DIM * 4
    return "float32" if float32_bytes <= ram_bytes() / 2 else "int8"


def ram_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def reset_peak_rss() -> None:
    """Reset this process's RSS high-water mark (Linux), so each size reports its own."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


class MemorySampler:
    """The largest anonymous and file-backed resident memory of this process (RssAnon,
    RssFile of /proc/self/status), sampled every SAMPLE_SECONDS by a thread.

    getrusage's peak RSS also counts the pages of files the process maps (Qdrant maps its
    segments and write-ahead log), and it reached 28 GiB on a 24 GiB machine at 10,000 float32
    pages, so it says little about memory pressure: the anonymous part is what the process
    allocated itself, the file-backed part is page cache the kernel can drop.
    """

    def __init__(self) -> None:
        self.anon = self.file = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        with contextlib.suppress(OSError):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("RssAnon"):
                    self.anon = max(self.anon, int(line.split()[1]) * 1024)
                elif line.startswith("RssFile"):
                    self.file = max(self.file, int(line.split()[1]) * 1024)

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            self._sample()

    def stop(self) -> tuple[int, int]:
        """Stop sampling; (largest anonymous, largest file-backed) bytes seen."""
        self._stop.set()
        self._thread.join()
        self._sample()
        return self.anon, self.file


def current_rss() -> int:
    """This process's resident memory now, in bytes (Linux; 0 elsewhere)."""
    try:
        status = Path("/proc/self/status").read_text()
    except OSError:
        return 0
    return next(
        int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS")
    )


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def folder_bytes(folder: Path) -> int:
    """Bytes the folder's files take on disk."""
    total = 0
    for root, _, names in os.walk(folder):
        total += sum((Path(root) / name).lstat().st_blocks * 512 for name in names)
    return total


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# A search path: query number -> result page ids, best first.
Run = Callable[[int], list[str]]


def timed_pass(run: Run, queries: Sequence[int]) -> tuple[list[float], list[list[str]]]:
    """Milliseconds and result page ids of run(query) for these query numbers, in order."""
    times, results = [], []
    for query in queries:
        started = time.perf_counter()
        results.append(run(query))
        times.append((time.perf_counter() - started) * 1e3)
    return times, results


def budgeted(run: Run, n_queries: int, seconds: float) -> tuple[list[float], list[list[str]]]:
    """timed_pass over the first queries only, until `seconds` have gone (at least 3)."""
    times: list[float] = []
    results: list[list[str]] = []
    started = time.perf_counter()
    for query in range(n_queries):
        if len(times) >= 3 and time.perf_counter() - started > seconds:
            break
        one, result = timed_pass(run, [query])
        times += one
        results += result
    return times, results


def timed_passes(run: Run, n_queries: int, repeats: int) -> tuple[list[float], list[list[str]]]:
    """One warm-up pass over every query (its results are returned), then `repeats` timed
    passes (their milliseconds are returned)."""
    everyone = range(n_queries)
    _, results = timed_pass(run, everyone)
    times: list[float] = []
    for _ in range(repeats):
        times += timed_pass(run, everyone)[0]
    return times, results


def pool_recall(truth: Truth, pools: Sequence[Sequence[str]]) -> float:
    """Share of the true top 10 in each first-stage pool (query 0, 1, ...), over the queries
    the ground truth holds."""
    return float(
        np.mean(
            [truth.recall(q, pool, len(pool)) for q, pool in enumerate(pools) if q in truth.row]
        )
    )


def ids(hits: Sequence[Hit]) -> list[str]:
    return [h.page_id for h in hits]


def recall_of(truth: Truth, results: Sequence[Sequence[str]]) -> tuple[float, int]:
    """Mean Recall@10 of these results (query 0, 1, ...) over the queries the ground truth
    holds, and how many those are."""
    scored = [truth.recall(q, r) for q, r in enumerate(results) if q in truth.row]
    return float(np.mean(scored)), len(scored)


def measure_size(n_pages: int, source: scale_data.Source, args: argparse.Namespace) -> Size:
    """Build, time and tear down one collection of n_pages generated pages (or, above
    --store-max-pages, only generate them and score them exactly)."""
    stored = not args.store_max_pages or n_pages <= args.store_max_pages
    size = Size(n_pages, choose_storage(args.storage, n_pages) if stored else "-")
    queries = source.queries
    patches = scale_data.patch_index(args.seed)
    step = max(1, round(len(queries) / args.truth_queries)) if args.truth_queries else 1
    truth = Truth(queries, patches, range(0, len(queries), step))
    gc.collect()
    reset_peak_rss()
    size.rss_start = current_rss()
    size.sampler = MemorySampler()
    folder = None
    store = None
    if stored:
        folder = Path(tempfile.mkdtemp(prefix=f"vdr-scale-{n_pages}-", dir=args.workdir))
        store = open_store(folder, size.storage)
    log(f"{n_pages:,} pages, {size.storage} storage, in {folder or 'no store'}")
    try:
        last_report = time.perf_counter()
        for first, vectors in timed_chunks(source, args.seed, n_pages, size):
            started = time.perf_counter()
            truth.add(first, vectors)
            size.truth_s += time.perf_counter() - started
            done = first + len(vectors)
            if store is not None and folder is not None:
                started = time.perf_counter()
                for start in range(0, len(vectors), UPSERT_PAGES):
                    batch = vectors[start : start + UPSERT_PAGES]
                    store.upsert(records(first + start, batch, patches))
                if done % FLUSH_PAGES == 0 or done == n_pages:
                    size.peak_disk = max(size.peak_disk, folder_bytes(folder))
                    store.shard.flush()
                size.load_s += time.perf_counter() - started
            if time.perf_counter() - last_report > 60:
                last_report = time.perf_counter()
                load = f"load {done / size.load_s:.0f} pages/s, " if size.load_s else ""
                log(
                    f"  {done:,} pages: {load}truth {size.truth_s:.0f} s, "
                    f"generation {size.generate_s:.0f} s"
                )
        log(f"  generated in {size.generate_s:.0f} s, ground truth {size.truth_s:.0f} s")
        if store is not None and folder is not None:
            assert store.count() == n_pages, (store.count(), n_pages)
            log(f"  loaded in {size.load_s:.0f} s ({n_pages / size.load_s:.0f} pages/s)")
            measure_searches(store, size, truth, queries, args)
            store.close()
            size.folder_bytes = folder_bytes(folder)
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)
    if not size.peak_rss:  # no store: nothing else was measured
        size.peak_rss = peak_rss()
    if size.sampler is not None and not size.peak_anon:
        size.peak_anon, size.peak_file = size.sampler.stop()
    started = time.perf_counter()
    size.poolings = exact_first_stages(truth, args.candidates, n_pages)
    log(f"  exact first stages analysed in {time.perf_counter() - started:.0f} s")
    return size


def measure_searches(
    store: EdgeStore,
    size: Size,
    truth: Truth,
    queries: Sequence[np.ndarray],
    args: argparse.Namespace,
) -> None:
    """Every search path on a loaded store (see the module docstring), into size.paths."""
    if args.candidates:
        measure_pooled(store, size, truth, queries, args)
    else:
        log("  no --candidates: no pooled first stage, the store left unoptimized")

    measure_token_stage(store, size, truth, queries, args)

    def scan(q: int) -> list[str]:
        return ids(store.search(queries[q], K, None))

    times, results = budgeted(scan, len(queries), args.scan_seconds)
    size.paths.append(
        Measured(
            "exact full scan (Qdrant MaxSim)",
            None,
            times,
            *recall_of(truth, results),
        )
    )
    size.truth_check = check_truth(truth, results, size.storage)
    log(f"  full scan: p50 {np.median(times):.0f} ms over {len(times)} queries")
    size.peak_rss = peak_rss()
    if size.sampler is not None:
        size.peak_anon, size.peak_file = size.sampler.stop()

    resident_gb = size.pages * scale_data.TOKENS * scale_data.DIM * 4 / 2**30
    if resident_gb <= args.resident_max_gb:
        measure_resident(store, size, truth, queries, args)


def measure_pooled(
    store: EdgeStore,
    size: Size,
    truth: Truth,
    queries: Sequence[np.ndarray],
    args: argparse.Namespace,
) -> None:
    """The pooled first stage at each --candidates C, before optimize (the largest C) and
    after, optimize timed, into size.paths."""
    as_lists = [q.tolist() for q in queries]
    n_queries = len(queries)

    def search(candidates: int | None) -> Run:
        return lambda q: ids(store.search(queries[q], K, candidates))

    def first_stage(candidates: int) -> Run:
        return lambda q: sorted(
            {
                p
                for kind in (ROWS, COLS)
                for p in store._nearest(as_lists[q], kind, candidates, None)
            }
        )

    probe = max(args.candidates)
    times, results = budgeted(search(probe), n_queries, args.scan_seconds)
    stage_times, pools = timed_pass(first_stage(probe), range(len(results)))
    size.paths.append(
        Measured(
            f"first stage {probe}, before optimize (plain scan) + Qdrant rerank",
            probe,
            times,
            *recall_of(truth, results),
            float(np.median(stage_times)),
            pool_recall(truth, pools),
        )
    )
    log(f"  before optimize: p50 {np.median(times):.0f} ms over {len(times)} queries")
    started = time.perf_counter()
    store.optimize()
    size.optimize_s = time.perf_counter() - started
    log(f"  optimize {size.optimize_s:.0f} s")

    for candidates in args.candidates:
        times, results = timed_passes(search(candidates), n_queries, args.repeats)
        stage_times, pools = timed_pass(first_stage(candidates), range(n_queries))
        size.paths.append(
            Measured(
                f"first stage {candidates} + Qdrant rerank",
                candidates,
                times,
                *recall_of(truth, results),
                float(np.median(stage_times)),
                pool_recall(truth, pools),
            )
        )
        log(
            f"  candidates {candidates}: p50 {np.median(times):.0f} ms, recall "
            f"{size.paths[-1].recall:.3f}, first stage {np.median(stage_times):.0f} ms"
        )


def measure_token_stage(
    store: EdgeStore,
    size: Size,
    truth: Truth,
    queries: Sequence[np.ndarray],
    args: argparse.Namespace,
) -> None:
    """The token first stage, built from the store as Index.optimize builds it, then each
    --token-candidates C of its pages reranked by the token index itself and by Qdrant, into
    size.paths."""
    kept = args.keep_token_index
    folder = kept or Path(tempfile.mkdtemp(prefix="vdr-scale-tokens-", dir=args.workdir))
    try:
        tokens = TokenIndex.open(folder) if kept else None
        if tokens is not None and tokens.info.pages == size.pages:
            # The same pages (seeded) as the run that built it: its build time as recorded.
            size.token_build_s, size.token_reused = tokens.info.seconds, True
        else:
            started = time.perf_counter()
            build_token_index(store.page_vectors(), store.vector_count(), folder, 0)
            size.token_build_s = time.perf_counter() - started
            tokens = TokenIndex.open(folder)
            assert tokens is not None
        how = "reused, built" if size.token_reused else "built"
        built_s = size.token_build_s
        log(f"  token index: {tokens.info.centroids:,} centroids, {how} in {built_s:.0f} s")
        for candidates in args.token_candidates:

            def own_rerank(q: int, c: int = candidates) -> list[str]:
                scored = tokens.search(queries[q], K + TIE_SLACK, c)
                return ids(store.hits(scored, K))

            def qdrant_rerank(q: int, c: int = candidates) -> list[str]:
                picked = tokens.candidates(queries[q], c)
                return ids(store.search(queries[q], K, c, picked=picked, pooled=False))

            def first_stage(q: int, c: int = candidates) -> list[str]:
                return tokens.candidates(queries[q], c)

            measured = [
                (rerank, *timed_passes(search, len(queries), args.repeats))
                for rerank, search in (("its own", own_rerank), ("Qdrant", qdrant_rerank))
            ]
            # Timed after the searches, as they leave the page cache: before them, the first
            # C's pass would time reading the token index from disk.
            stage_times, pools = timed_pass(first_stage, range(len(queries)))
            for rerank, times, results in measured:
                size.paths.append(
                    Measured(
                        f"token first stage {candidates} + {rerank} rerank",
                        None,
                        times,
                        *recall_of(truth, results),
                        float(np.median(stage_times)),
                        pool_recall(truth, pools),
                    )
                )
                log(
                    f"  token candidates {candidates}, {rerank} rerank: p50 "
                    f"{np.median(times):.0f} ms, recall {size.paths[-1].recall:.3f}, first "
                    f"stage {np.median(stage_times):.0f} ms"
                )
    finally:
        if not kept:
            shutil.rmtree(folder, ignore_errors=True)


def measure_resident(
    store: EdgeStore,
    size: Size,
    truth: Truth,
    queries: Sequence[np.ndarray],
    args: argparse.Namespace,
) -> None:
    """vdr's rerank (--rerank vdr): every page's full vectors read into memory, the
    candidates scored by our CPU MaxSim. It runs one small matrix product per candidate page,
    so with one torch thread: with two on a shared 2-core CPU each product waited ~15 ms for
    a descheduled worker thread (measured 15.5 ms vs 0.22-0.29 ms a page), which times the
    neighbours, not vdr."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    resident = ResidentVectors(torch.device("cpu"))
    try:
        started = time.perf_counter()
        store.keep_resident(resident)
        size.resident_s = time.perf_counter() - started
        for candidates in args.candidates:
            times, results = timed_passes(
                lambda q, c=candidates: ids(store.search(queries[q], K, c)),
                len(queries),
                args.repeats,
            )
            size.paths.append(
                Measured(
                    f"first stage {candidates} + vdr rerank (resident, CPU, 1 thread)",
                    candidates,
                    times,
                    *recall_of(truth, results),
                )
            )
    finally:
        store.resident = None
        torch.set_num_threads(threads)
    size.peak_rss_resident = peak_rss()
    log(f"  vdr rerank done (vectors read in {size.resident_s:.0f} s)")


def timed_chunks(
    source: scale_data.Source, seed: int, n_pages: int, size: Size
) -> Iterator[tuple[int, np.ndarray]]:
    """scale_data.pages, adding the time spent generating to size.generate_s."""
    chunks = scale_data.pages(source, seed, n_pages)
    while True:
        started = time.perf_counter()
        item = next(chunks, None)
        size.generate_s += time.perf_counter() - started
        if item is None:
            return
        yield item


def check_truth(truth: Truth, scanned: Sequence[Sequence[str]], storage: str) -> str:
    """Compare the ground truth with Qdrant's full scan on the queries it ran: the same top
    10 in the same order expected with float32 storage (anything else stops the run)."""
    compared = [(q, result) for q, result in enumerate(scanned) if q in truth.row]
    same = sum(truth.top(q) == list(result) for q, result in compared)
    if storage == "float32" and same != len(compared):
        raise SystemExit(f"the ground truth differs from Qdrant's full scan on {storage} vectors")
    return f"{same}/{len(compared)} queries: same top 10 as the full scan"


def ensure_source_index(folder: Path, set_dir: Path) -> None:
    """Index the set's PDFs into `folder` with the default encoder unless it holds an index."""
    if (folder / "vdr.json").exists():
        return
    log(f"indexing {set_dir / 'pdfs'} into {folder} (default encoder, a few minutes)")
    subprocess.run(
        [sys.executable, "-m", "vdr.cli", "index", str(set_dir / "pdfs"), "--index", str(folder)],
        check=True,
    )


def percentile(times: Sequence[float], q: float) -> str:
    return f"{np.percentile(times, q):,.1f}"


def gib(n: float) -> str:
    return f"{n / 2**30:.2f} GiB"


def report(
    sizes: Sequence[Size], source: scale_data.Source, args: argparse.Namespace, command: str
) -> str:
    """The markdown block: heading, data, then the search, first-stage and build tables."""
    n_tokens = sum(len(q) for q in source.queries)
    shares = " / ".join(f"{share:.0%}" for share in scale_data.REAL_SHARES)
    lines = [
        f"### Search at scale, {datetime.date.today()}",
        "",
        f"Machine: {machine()}; torch threads {torch.get_num_threads()}; load average "
        f"{args.load_at_start:.1f} at start and {os.getloadavg()[0]:.1f} at the end (other "
        "jobs on the machine slow every path alike: compare rows of one size).",
        f"Command: `{command}`",
        "",
        f"Data: pages of {scale_data.TOKENS:,} x {scale_data.DIM} unit vectors (32 x 32 grid + "
        f"{scale_data.EXTRA_TOKENS} extra tokens) assembled (benches/scale_data.py, seed "
        f"{args.seed}) from {source.n_sources} real pages of `{args.source_index}` "
        f"({source.model}, {source.n_vectors:,} vectors of 384-d) projected to "
        f"{scale_data.DIM}-d (keeps {source.energy:.0%} of their energy; the top 10 pages by "
        f"MaxSim of the real queries on the real pages overlap {source.fidelity:.2f} before and "
        f"after), resampled onto the grid ({np.median(source.filled):.0%} of cells hold text on "
        "the median page), 1-6 blocks of real pages per generated page, perturbed (cosine "
        f"~0.96). Queries: the {len(source.queries)} real queries of `{args.set}` "
        f"({n_tokens:,} tokens), encoded and projected alike. k = 10. Recall@10 is against the "
        "exact top 10 (float32 MaxSim over every generated page, computed by the bench as it "
        "loads). Latency: after a warm-up pass, every query once per repeat; slow paths on as "
        f"many queries as {args.scan_seconds:.0f} s allow.",
        "",
        "| pages | storage | path | p50 ms | p95 ms | p99 ms | runs | Recall@10 (queries) "
        "| first stage p50 ms | true top 10 in its pool | same, exact pooled scan by the bench |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for size in sizes:
        exact = next(p for p in size.poolings if p.name == f"{ROWS}+{COLS}")
        for path in size.paths:
            stage = "-" if path.first_stage_ms is None else f"{path.first_stage_ms:,.1f}"
            pool = "-" if path.pool_recall is None else f"{path.pool_recall:.3f}"
            candidates = path.candidates
            scanned = "-" if candidates is None else f"{exact.recall_at[candidates]:.3f}"
            lines.append(
                f"| {size.pages:,} | {size.storage} | {path.name} | "
                f"{percentile(path.times_ms, 50)} | {percentile(path.times_ms, 95)} | "
                f"{percentile(path.times_ms, 99)} | {len(path.times_ms)} | "
                f"{path.recall:.3f} ({path.answered}) | {stage} | {pool} | {scanned} |"
            )
    lines += [
        "",
        f"First stage alone, exact (every page's pooled vectors scored in float32 by the bench, "
        f"no HNSW): share of the true top 10 among the top C pages per pooled kind, C = {shares} "
        f"of the collection; the C that reaches Recall@10 {RECALL_TARGET} and the pages the "
        "rerank must then score. rows+cols is the product's first stage (the union of the top "
        "C by rows and by cols); 4x4 blocks pools 4 x 4 cells into each of 64 vectors instead. "
        "First line: the same on the real pages in their own 384-d store (Qdrant's pooled "
        "first stage + rerank against its full scan).",
        "",
        f"| pages | pooling | vectors a page | top 10 in pool at C = {shares} "
        f"| C for {RECALL_TARGET} | pages reranked |",
        "|---:|---|---:|---|---:|---:|",
        f"| dev set (real) | {ROWS}+{COLS} | 2 x ~32 | "
        + " / ".join(f"{r:.3f}" for r in source.real_recall.values())
        + " | - | - |",
    ]
    for size in sizes:
        for pooling in size.poolings:
            at = " / ".join(f"{pooling.recall_at[c]:.3f}" for c in shares_of(size.pages))
            lines.append(
                f"| {size.pages:,} | {pooling.name} | {pooling.vectors} | {at} | "
                f"{pooling.needed:,} | {pooling.reranked:,.0f} |"
            )
    lines += [
        "",
        "| pages | storage | generate s | load s (pages/s) | ground truth s | optimize s "
        "| token index s "
        "| store on disk: peak while loading, closed | RSS at start | peak RSS (getrusage) "
        "| sampled peak: anonymous, file-backed | peak RSS with vdr rerank (read in s) "
        "| truth check |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for size in sizes:
        resident = (
            "-"
            if size.peak_rss_resident is None
            else f"{gib(size.peak_rss_resident)} ({size.resident_s:,.0f} s)"
        )
        if size.load_s:
            load = f"{size.load_s:,.0f} ({size.pages / size.load_s:,.0f})"
            disk = f"{gib(size.peak_disk)}, {gib(size.folder_bytes)}"
        else:
            load, disk = "not stored (--store-max-pages)", "-"
        optimize = f"{size.optimize_s:,.0f}" if size.optimize_s else "-"
        token_build = f"{size.token_build_s:,.0f}" if size.token_build_s else "-"
        if size.token_reused:
            token_build += " (earlier run)"
        lines.append(
            f"| {size.pages:,} | {size.storage} | {size.generate_s:,.0f} | {load} | "
            f"{size.truth_s:,.0f} | {optimize} | {token_build} | {disk} | {gib(size.rss_start)} | "
            f"{gib(size.peak_rss)} | {gib(size.peak_anon)}, {gib(size.peak_file)} | "
            f"{resident} | {size.truth_check or '-'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pages", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument(
        "--candidates",
        type=int,
        nargs="*",
        default=[100, 400, 1600],
        help="pooled first-stage candidates per kind; none: skip the pooled paths and optimize "
        "(its HNSW graphs take ~45 minutes at 100,000 pages), timing the token stage alone",
    )
    parser.add_argument("--token-candidates", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument(
        "--storage", default="auto", choices=["auto", "float32", "float16", "int8", "binary"]
    )
    parser.add_argument("--source-index", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--scan-seconds",
        type=float,
        default=60.0,
        help="time budget for each slow path (first stage before optimize, full scan)",
    )
    parser.add_argument(
        "--truth-queries",
        type=int,
        default=0,
        help="compute the ground truth (and so recall) for about this many queries, evenly "
        "spaced (default: all); latency is still timed on every query",
    )
    parser.add_argument(
        "--store-max-pages",
        type=int,
        default=0,
        help="above this many pages only generate the pages and score them exactly (ground "
        "truth, exact first-stage analysis): no store, no latency (default: no limit)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed passes over the queries")
    parser.add_argument(
        "--resident-max-gb",
        type=float,
        default=6.0,
        help="also time vdr's rerank where every page's float32 vectors take at most this",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--keep-token-index",
        type=Path,
        metavar="DIR",
        help="keep the token index in DIR, and reuse one already there for the same page "
        "count (one --pages size): its ~30 min build at 100,000 pages is paid once",
    )
    parser.add_argument("--markdown-out", type=Path)
    args = parser.parse_args()
    args.load_at_start = os.getloadavg()[0]  # say how busy the machine was: see report()
    command = shlex.join(["python", "benches/scale.py", *sys.argv[1:]])

    ensure_source_index(args.source_index, args.set)
    started = time.perf_counter()
    source = scale_data.load_source(args.source_index, args.set)
    log(
        f"source: {source.n_sources} real pages, {len(source.queries)} queries "
        f"({time.perf_counter() - started:.0f} s)"
    )
    sizes = [measure_size(n, source, args) for n in args.pages]
    block = report(sizes, source, args, command)
    print(block)
    if args.markdown_out:
        args.markdown_out.write_text(block)


if __name__ == "__main__":
    main()

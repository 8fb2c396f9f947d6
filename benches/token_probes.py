"""How many centroids should a query token probe? The token first stage (vdr.token_index) as
the product builds it, at a size where a wrong NPROBE shows: Recall@10 among its first C pages
and its latency, for each --probes count, against the exact top 10.

    python benches/token_probes.py [--token-index /tmp/vdr-scale-tokens-100000]
        [--probes 4 8 16 32] [--candidates 100 200 300 500] [--truth-queries 62]

The token index is the one benches/scale.py keeps with --keep-token-index (built from its
store of generated pages, ~30 minutes at 100,000 pages); its page ids name the generated
pages, so the ground truth is computed here from the same seeded pages (benches/scale_data.py:
float32 MaxSim over every page, ~6 minutes at 100,000 pages on 2 cores) for every other query
of the dev set (--truth-queries). The rerank after the first stage is exact, so the share of
the true top 10 among the first C pages is the search's Recall@10 with C candidates.

Prints a markdown table (machine, date, command, data). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scale_data
from scale import DEFAULT_SET, DEFAULT_SOURCE, K, Truth, ensure_source_index, log

from vdr.token_index import TokenIndex

from index_throughput import machine


def ground_truth(
    source: scale_data.Source, n_pages: int, numbers: list[int], seed: int
) -> dict[int, list[str]]:
    """The exact top K page ids of each query number in `numbers`, over n_pages pages."""
    truth = Truth(source.queries, scale_data.patch_index(seed), numbers)
    truth.poolings = {}  # only the top K: no pooled scores
    started = time.perf_counter()
    for first, vectors in scale_data.pages(source, seed, n_pages):
        truth.add(first, vectors)
        if first and first % 10_000 < scale_data.CHUNK_PAGES:
            log(f"  ground truth: {first:,} pages in {time.perf_counter() - started:.0f} s")
    return {q: truth.top(q) for q in numbers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--token-index", type=Path, default=Path("/tmp/vdr-scale-tokens-100000"), metavar="DIR"
    )
    parser.add_argument("--probes", type=int, nargs="+", default=[4, 8, 16, 32])
    parser.add_argument("--candidates", type=int, nargs="+", default=[100, 200, 300, 500])
    parser.add_argument("--truth-queries", type=int, default=62)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--source-index", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET)
    args = parser.parse_args()
    command = shlex.join(["python", "benches/token_probes.py", *sys.argv[1:]])
    index = TokenIndex.open(args.token_index)
    if index is None:
        sys.exit(
            f"no token index in {args.token_index}: build one with benches/scale.py --pages N "
            f"--keep-token-index {args.token_index}"
        )

    ensure_source_index(args.source_index, args.set)
    source = scale_data.load_source(args.source_index, args.set)
    n_queries = len(source.queries)
    numbers = list(range(0, n_queries, max(1, round(n_queries / args.truth_queries))))
    log(f"ground truth of {len(numbers)} queries over {index.info.pages:,} pages")
    tops = ground_truth(source, index.info.pages, numbers, args.seed)

    rows = []
    deepest = max(args.candidates)
    for probes in args.probes:
        for q in numbers:  # a warm-up pass: numba compiles, the probed rows are read in
            index.candidates(source.queries[q], deepest, probes)
        times, found = [], {c: [] for c in args.candidates}
        for q in numbers:
            started = time.perf_counter()
            ranked = index.candidates(source.queries[q], deepest, probes)
            times.append((time.perf_counter() - started) * 1000)
            for c in args.candidates:
                found[c].append(len(set(tops[q]) & set(ranked[:c])) / K)
        recalls = " | ".join(f"{np.mean(found[c]):.3f}" for c in args.candidates)
        rows.append(
            f"| {probes} | {probes * index.info.vectors / index.info.centroids:,.0f} | "
            f"{np.median(times):.1f} | {np.percentile(times, 95):.1f} | {recalls} |"
        )
        log(f"  {probes} probes: {rows[-1]}")

    today = datetime.date.today().isoformat()
    header = " | ".join(f"Recall@10, C = {c}" for c in args.candidates)
    print(f"### Centroids probed per query token, {today}\n")
    print(f"Machine: {machine()}; torch threads {torch.get_num_threads()}; one query at a time.")
    print(f"Command: `{command}`\n")
    print(
        f"Token index: `{args.token_index}` ({index.info.pages:,} generated pages of "
        f"benches/scale_data.py, seed {args.seed}; {index.info.vectors:,} vectors in "
        f"{index.info.centroids:,} centroids, built by benches/scale.py in "
        f"{index.info.seconds:,.0f} s). Queries: {len(numbers)} of the dev set's "
        f"{n_queries}, against the exact float32 MaxSim top {K}; latency of the first stage "
        f"alone (its best {deepest} pages), after a warm-up pass over the same queries.\n"
    )
    print(f"| probes | vectors scored a token | p50 ms | p95 ms | {header} |")
    print("|---:|---:|---:|---:|" + "---:|" * len(args.candidates))
    print("\n".join(rows))


if __name__ == "__main__":
    main()

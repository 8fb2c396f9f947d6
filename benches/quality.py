"""Retrieval quality of each search mode on a labelled set, as a markdown table.

    python benches/quality.py [SET_DIR] [--index DIR] [--compare CONFIG...]

Indexes SET_DIR/pdfs with the default encoder (into a temporary folder unless --index is given,
which is reused when already built) and evaluates each search configuration of
`vdr eval --compare` (default: hybrid, late, bm25) on the same index: nDCG@1/5/10,
Recall@5/10 and MRR@10 overall, nDCG@5 per query type, ms per query. Default set:
../shared/bench/dev.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr.eval import SearchConfig, evaluate, load_set
from vdr.index import Index

from index_throughput import DEFAULT_PDFS, machine

COLUMNS = ("ndcg@1", "ndcg@5", "ndcg@10", "recall@5", "recall@10", "mrr@10")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--index", type=Path, help="index folder to build or reuse")
    parser.add_argument("--compare", nargs="+", default=["mode=hybrid", "mode=late", "mode=bm25"])
    args = parser.parse_args()
    configs = [SearchConfig.parse(text) for text in args.compare]
    with (
        tempfile.TemporaryDirectory(prefix="vdr-quality-") as scratch,
        Index(args.index or Path(scratch) / "index") as index,
    ):
        results = {}
        for c in configs:
            index.use_rerank(c.rerank or "auto")
            results[c.label] = evaluate(index, args.set_dir, candidates=c.candidates, mode=c.mode)
        pages = index.store.count()
    queries, _ = load_set(args.set_dir)
    counts = {t: sum(q.type == t for q in queries) for t in {q.type for q in queries}}
    types = sorted(counts)
    print(
        f"Default encoder on {args.set_dir} ({pages} pages, {len(queries)} queries: "
        + ", ".join(f"{counts[t]} {t}" for t in types)
        + f"), {datetime.date.today()}, {machine()}\n"
    )
    print(
        "| configuration | "
        + " | ".join(COLUMNS)
        + " | "
        + " | ".join(f"{t} @5" for t in types)
        + " | ms/query |"
    )
    print("|---|" + "---:|" * (len(COLUMNS) + len(types) + 1))
    for label, r in results.items():
        print(
            f"| {label} | "
            + " | ".join(f"{r[m]:.3f}" for m in COLUMNS)
            + " | "
            + " | ".join(f"{r['by_type'][t]['ndcg@5']:.3f}" for t in types)
            + f" | {r['search_seconds_per_query'] * 1000:.0f} |"
        )


if __name__ == "__main__":
    main()

"""Retrieval quality and index size with and without token pooling, on a labelled set.

    python benches/pooling_quality.py [SET_DIR] [--model NAME_OR_DIR] [--factors 1 2 3]

For each pool factor, indexes SET_DIR/pdfs into a fresh temporary index with the same encoder
(loaded once) and reports nDCG@5 overall and per query type, vectors per page and the
embedded store's size on disk, as a markdown table with the machine noted.
Default set: ../shared/bench/dev.
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr import Index
from vdr.encoders import DEFAULT_MODEL
from vdr.eval import evaluate

from index_throughput import DEFAULT_PDFS, machine


def folder_mb(folder: Path) -> float:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()) / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 3])
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="vdr-pool-") as scratch:
        for factor in args.factors:
            folder = Path(scratch) / f"pool{factor}"
            with Index(folder, model=args.model, pool_factor=factor) as index:
                result = evaluate(index, args.set_dir)
                pages, vectors = index.store.count(), index.store.vector_count()
            rows.append((factor, result, vectors / pages, folder_mb(folder / "qdrant") / pages))
    types = sorted(rows[0][1]["by_type"])
    print(f"{args.model} on {args.set_dir} ({pages} pages), {datetime.date.today()}, {machine()}\n")
    print(
        "| pool factor | nDCG@5 | "
        + " | ".join(f"nDCG@5 {t}" for t in types)
        + " | vectors/page | store MB/page |"
    )
    print("|---:|---:|" + "---:|" * len(types) + "---:|---:|")
    for factor, result, per_page, mb in rows:
        by_type = " | ".join(f"{result['by_type'][t]['ndcg@5']:.3f}" for t in types)
        print(f"| {factor} | {result['ndcg@5']:.3f} | {by_type} | {per_page:.0f} | {mb:.2f} |")


if __name__ == "__main__":
    main()

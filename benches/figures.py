"""Figure descriptions, component by component, on the generated validation set and on the
dev set: nDCG@5 by query type, indexing pages/s and search ms per query, in one run.

    python benches/figures.py [--validation DIR] [--dev DIR]

--validation: a set written by benches/visual_set.py (default: written now into a temporary
folder, with its default seed). --dev: the dev set (default ../shared/bench/dev), evaluated
only: nothing here is chosen on it. Each set is indexed into a fresh temporary index per
description (vdr.figures.FIGURES: "none", the default before figures were described; "kind",
kind and colours; "kind+text", with caption and labels) by the same process, after one
warm-up index of a single document that loads the models.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr.eval import evaluate
from vdr.figures import FIGURES
from vdr.index import Index

from index_throughput import DEFAULT_PDFS, machine

TYPES = ("extractive", "non_extractive", "visual")


def measure(set_dir: Path, folder: Path, figures: str) -> dict:
    """nDCG@5 overall and by type, pages/s of indexing the set, ms per search."""
    with Index(folder, figures=figures) as index:
        started = time.perf_counter()
        report = index.add([set_dir / "pdfs"])
        seconds = time.perf_counter() - started
        result = evaluate(index, set_dir)
    return {
        "all": result["ndcg@5"],
        **{t: result["by_type"].get(t, {}).get("ndcg@5") for t in TYPES},
        "pages_per_s": report.pages_encoded / seconds,
        "query_ms": result["search_seconds_per_query"] * 1000,
        "n": result["n"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--validation", type=Path, help="a set from benches/visual_set.py")
    parser.add_argument("--dev", type=Path, default=DEFAULT_PDFS.parent, help="dev set folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdr-figures-") as scratch:
        root = Path(scratch)
        validation = args.validation
        if validation is None:
            validation = root / "validation"
            bench = Path(__file__).with_name("visual_set.py")
            subprocess.run([sys.executable, str(bench), str(validation)], check=True)
        with Index(root / "warm-up") as warm:  # loads MiniLM, OCR and the classifier once
            warm.add([next((args.dev / "pdfs").glob("*.pdf"))])
        rows = []
        for name, set_dir in (("validation (generated)", validation), ("dev", args.dev)):
            for figures in FIGURES:
                folder = root / f"{set_dir.name}-{figures}"
                rows.append((name, figures, measure(set_dir, folder, figures)))
    print(
        f"### Figure descriptions, {datetime.date.today()}, {machine()}, "
        "`python benches/figures.py`\n"
    )
    print(
        "| set | figures | queries | nDCG@5 all | extractive | non_extractive | visual "
        "| index pages/s | search ms/query |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, figures, m in rows:
        cells = " | ".join("-" if m[t] is None else f"{m[t]:.3f}" for t in ("all", *TYPES))
        print(
            f"| {name} | {figures} | {m['n']} | {cells} "
            f"| {m['pages_per_s']:.2f} | {m['query_ms']:.0f} |"
        )


if __name__ == "__main__":
    main()

"""Crash safety: SIGKILL `vdr index` at random moments, re-run it, and let `vdr doctor` judge.

    python benches/kill_index.py [PDF_DIR] [--kills 20] [--seed 0] [--index DIR]

PDF_DIR defaults to ../shared/bench/dev/pdfs. A clean run first gives the page count. Then,
until --kills kills have landed mid-run: a random third of the documents is removed from the
index (so the next run has work to do), `vdr index` is started and killed with SIGKILL at a
random moment of the last re-run's length (a run of the same kind: the machine's load changes,
so a length measured once would put kills after the run's end), `vdr doctor` checks that the
crash left nothing inconsistent (no page without its image, nothing misnumbered; orphan images
and unfinished documents are what a crash may leave), a re-run completes, and `vdr doctor`
must then find every page exactly once and nothing orphaned. A kill that comes after the run
had finished interrupts nothing: it is checked the same way but counted apart, not as a kill.
Prints kills survived / kills tried as a table with the machine noted.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr import Index

from index_throughput import DEFAULT_PDFS, machine


def vdr(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vdr.cli", *args], capture_output=True, text=True, timeout=1800
    )


def doctor(index: Path) -> dict:
    return json.loads(vdr("doctor", "--index", str(index), "--json").stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="?", type=Path, default=DEFAULT_PDFS)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--index", type=Path, help="index folder (default: a temporary one)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    folder = args.index or Path(tempfile.mkdtemp(prefix="vdr-kill-")) / "index"
    run = ["index", str(args.pdfs), "--index", str(folder), "--quiet"]

    started = time.perf_counter()
    assert vdr(*run).returncode == 0, "the clean run failed"
    clean_s = time.perf_counter() - started
    # A third of the pages take about a third of the clean run, plus start-up.
    window = clean_s * 0.4
    clean = doctor(folder)
    pages = clean["found"]["pages"]
    assert clean["healthy"] and clean["found"]["images"] == pages

    survived, mid_run, late, failures = 0, 0, 0, []
    while mid_run < args.kills:
        with Index(folder) as index:
            documents = index.documents()
            index.remove([d.doc_id for d in rng.sample(documents, max(1, len(documents) // 3))])
        after = rng.uniform(0.0, window)
        process = subprocess.Popen(
            [sys.executable, "-m", "vdr.cli", *run], stdout=subprocess.DEVNULL
        )
        time.sleep(after)
        landed = process.poll() is None  # else the run had finished: nothing to interrupt
        mid_run += landed
        late += not landed
        process.send_signal(signal.SIGKILL)
        process.wait()
        crashed = doctor(folder)["found"]
        problems = [
            f"{what}: {crashed[what]}"
            for what in ("missing_images", "misnumbered")
            if crashed[what]
        ]
        started = time.perf_counter()
        rerun = vdr(*run)
        window = time.perf_counter() - started
        final = doctor(folder)
        if rerun.returncode != 0:
            problems.append(f"re-run exit {rerun.returncode}: {rerun.stderr.strip()[-300:]}")
        if not final["healthy"] or final["found"]["pages"] != pages:
            problems.append(f"after the re-run: {final['found']}")
        if final["found"]["images"] != pages:
            problems.append(f"{final['found']['images']} images for {pages} pages")
        what = f"kill {mid_run}" if landed else "a kill after the run's end"
        if problems:
            failures.append(f"{what} at {after:.1f} s: " + "; ".join(problems))
        else:
            survived += landed
        print(f"{what} at {after:5.1f} s: {'ok' if not problems else 'FAILED'}", file=sys.stderr)

    print(f"### Crash safety, {datetime.date.today()}, {machine()}\n")
    print(f"{args.pdfs}: {pages} pages, clean run {clean_s:.0f} s\n")
    print(
        "| kills tried (mid-run) | kills survived | after each re-run | kills after a run's end |"
    )
    print("|---:|---:|---|---:|")
    print(f"| {mid_run} | {survived} | all {pages} pages, each once, nothing orphaned | {late} |")
    for failure in failures:
        print(failure)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()

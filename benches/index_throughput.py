"""Indexing throughput and memory with the default encoder, on a folder of real PDFs.

    python benches/index_throughput.py [PDF_DIR] [--index DIR]

Runs `vdr index` twice in a fresh index as separate processes: a cold run (every page
rendered, read and encoded) and a re-run on the unchanged folder (must encode nothing).
Reports pages/s, wall time and each run's peak resident memory (from wait4's rusage),
as a markdown table with the machine noted. Default folder: ../shared/bench/dev/pdfs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PDFS = REPO.parent / "shared" / "bench" / "dev" / "pdfs"


def run_index(pdfs: Path, index: Path) -> dict:
    """One `vdr index --json` process: its report, wall seconds and peak RSS in MB."""
    command = [sys.executable, "-m", "vdr.cli", "index", str(pdfs), "--index", str(index), "--json"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(command, stdout=out, stderr=err, cwd=REPO)
        _, status, usage = os.wait4(process.pid, 0)  # rusage of this child alone
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        if os.waitstatus_to_exitcode(status):
            sys.exit(f"vdr index failed: {err.read().decode()[-2000:]}")
        report = json.loads(out.read())
    report["wall_seconds"] = seconds
    report["peak_rss_mb"] = usage.ru_maxrss / 1024  # Linux reports kilobytes
    return report


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    memory = f"{mem_kb / 2**20:.0f} GiB RAM"
    return f"{cpu}, {os.cpu_count()} cores, {memory}, Python {platform.python_version()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="?", type=Path, default=DEFAULT_PDFS)
    parser.add_argument("--index", type=Path, help="index folder (default: a temporary one)")
    args = parser.parse_args()
    index = args.index or Path(tempfile.mkdtemp(prefix="vdr-bench-")) / "index"
    shutil.rmtree(index, ignore_errors=True)
    try:
        cold, warm = run_index(args.pdfs, index), run_index(args.pdfs, index)
    finally:
        if not args.index:
            shutil.rmtree(index.parent, ignore_errors=True)
    pages = cold["pages_in_index"]
    print(f"Indexing {args.pdfs} ({pages} pages), {datetime.date.today()}, {machine()}\n")
    print("| run | pages encoded | wall s | pages/s | peak RSS MB |")
    print("|---|---:|---:|---:|---:|")
    for name, run in (("cold", cold), ("unchanged re-run", warm)):
        rate = run["pages_encoded"] / run["wall_seconds"] if run["pages_encoded"] else 0
        print(
            f"| {name} | {run['pages_encoded']} | {run['wall_seconds']:.1f} | {rate:.1f} "
            f"| {run['peak_rss_mb']:.0f} |"
        )
    if cold["skipped"]:
        print("\nskipped:", cold["skipped"])


if __name__ == "__main__":
    main()

"""Indexing throughput and memory with the default encoder: text-layer pages and OCR pages.

    python benches/index_throughput.py [PDF_DIR] [--index DIR] [--ocr-pages N]
                                       [--markdown-out FILE]

Every `vdr index` run is a separate process in a fresh index; its wall time includes process
start-up and model loading; its CPU time (user + system) and peak resident memory come from
wait4's rusage. pages/s is pages encoded per wall second.

- Text layer: a cold run over PDF_DIR (every page rendered, its text layer read and encoded),
  then a re-run on the unchanged folder (must encode nothing).
- OCR: N real pages of PDF_DIR (default 20; page 1 of each PDF in name order, then page 2, ...)
  rasterised by pdftoppm at 300 dpi in grey and written back by Pillow as image-only PDFs, one
  per source PDF, in a temporary folder; `pdftotext` must read nothing from them, so every page
  is read by OCR (rapidocr, ~2-4 s a page on a 2-core CPU). A cold run indexes them.
  `--ocr-pages 0` skips it.

Prints one markdown table (wall and CPU time, pages/s, peak RSS, words per indexed page) under a
heading naming the data, date, machine, its load average and the command, then the OCR /
text-layer wall-time-per-page ratio.
`--markdown-out FILE` also writes that heading and table, and nothing else, to FILE.
Default folder: ../shared/bench/dev/pdfs (314 pages).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
DEFAULT_PDFS = REPO.parent / "shared" / "bench" / "dev" / "pdfs"
# Resolution of the image-only copies: a common scanning resolution, and the dpi the indexer
# renders pages at for OCR (vdr.indexer.ocr.OCR_DPI), so OCR sees the raster unscaled.
SCAN_DPI = 300

# Counts the words stored in an index (text layer or OCR), without loading the encoder.
COUNT_WORDS = """
import sys
from vdr.index import Index
with Index(sys.argv[1], create=False) as index:
    print(sum(len(page["words"]) for page in index.store.payloads(["words"])))
"""


def run_index(pdfs: Path, index: Path) -> dict[str, Any]:
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
    # CPU seconds drift less than wall seconds when others share the machine.
    report["cpu_seconds"] = usage.ru_utime + usage.ru_stime
    return report


def words_in_index(index: Path) -> int:
    """How many words (text layer or OCR) the index's pages hold, counted in a subprocess."""
    run = subprocess.run(
        [sys.executable, "-c", COUNT_WORDS, str(index)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(run.stdout)


def page_count(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = [line.split()[1] for line in info.stdout.splitlines() if line.startswith("Pages:")]
    return int(pages[0])


def image_only_copies(pdfs: Path, n_pages: int, out: Path) -> int:
    """Write image-only PDFs of n_pages real pages of pdfs into out; returns the pages written.

    Pages are taken in turn from each PDF (page 1 of each, then page 2, ...) so that every
    source document is represented. Each copy holds one grey JPEG per page at SCAN_DPI and the
    source page's size, and no text layer (checked with pdftotext).
    """
    sources = sorted(p for p in pdfs.rglob("*") if p.suffix.lower() == ".pdf")
    counts = {pdf: page_count(pdf) for pdf in sources}
    chosen: dict[Path, list[int]] = {pdf: [] for pdf in sources}
    taken = 0
    for number in range(1, max(counts.values(), default=0) + 1):
        for pdf in sources:
            if taken < n_pages and number <= counts[pdf]:
                chosen[pdf].append(number)
                taken += 1
    for pdf, numbers in chosen.items():
        if not numbers:
            continue
        images = []
        for number in numbers:
            prefix = out / f"{pdf.stem}-{number}"
            page = ["-f", str(number), "-l", str(number)]
            render = ["pdftoppm", "-r", str(SCAN_DPI), "-gray", "-singlefile", *page]
            # capture_output: poppler warns on stderr about harmless flaws of some dev PDFs.
            subprocess.run([*render, str(pdf), str(prefix)], capture_output=True, check=True)
            raster = prefix.with_suffix(".pgm")
            images.append(Image.open(raster).copy())
            raster.unlink()
        copy = out / f"{pdf.stem}-scan.pdf"
        images[0].save(copy, save_all=True, append_images=images[1:], resolution=SCAN_DPI)
        text = subprocess.run(["pdftotext", str(copy), "-"], capture_output=True, check=True)
        if text.stdout.strip():
            sys.exit(f"{copy} still has a text layer: {text.stdout[:200]!r}")
    return taken


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


def row(name: str, run: dict[str, Any], words: int) -> str:
    encoded = run["pages_encoded"]
    rate = encoded / run["wall_seconds"] if encoded else 0.0
    per_page = words / run["pages_in_index"] if run["pages_in_index"] else 0.0
    return (
        f"| {name} | {run['pages_in_index']} | {encoded} | {run['wall_seconds']:.1f} "
        f"| {run['cpu_seconds']:.1f} | {rate:.2f} | {run['peak_rss_mb']:.0f} | {per_page:.0f} |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="?", type=Path, default=DEFAULT_PDFS)
    parser.add_argument("--index", type=Path, help="text-layer index folder (default: temporary)")
    parser.add_argument(
        "--ocr-pages", type=int, default=20, help="pages to index by OCR (default 20; 0 skips)"
    )
    parser.add_argument("--markdown-out", type=Path, help="also write the table block to FILE")
    args = parser.parse_args()

    load = os.getloadavg()[0]  # others' jobs slow every run down; say how busy the machine was
    scratch = Path(tempfile.mkdtemp(prefix="vdr-bench-"))
    index = args.index or scratch / "index"
    shutil.rmtree(index, ignore_errors=True)
    ocr: dict[str, Any] | None = None
    n_scans = ocr_words = 0
    try:
        cold, warm = run_index(args.pdfs, index), run_index(args.pdfs, index)
        text_words = words_in_index(index)
        if args.ocr_pages > 0:
            scans = scratch / "scans"
            scans.mkdir()
            n_scans = image_only_copies(args.pdfs, args.ocr_pages, scans)
            ocr = run_index(scans, scratch / "ocr-index")
            ocr_words = words_in_index(scratch / "ocr-index")
            if ocr["pages_encoded"] != n_scans or ocr["skipped"]:
                sys.exit(f"OCR run indexed {ocr['pages_encoded']} of {n_scans} pages: {ocr}")
            if not ocr_words:
                sys.exit("OCR read no words: the OCR row would measure nothing")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)  # a --index folder is kept

    data = os.path.relpath(args.pdfs.resolve(), REPO)
    if data.startswith(os.pardir + os.sep + os.pardir):
        data = str(args.pdfs.resolve())  # outside the workspace: a relative path reads worse
    command = shlex.join(["python", "benches/index_throughput.py", *sys.argv[1:]])
    lines = [
        f"### Indexing throughput, default encoder: {data} ({cold['pages_in_index']} pages), "
        f"{datetime.date.today()}, {machine()}, load average {load:.1f} at start, `{command}`",
        "",
        "| run | pages | pages encoded | wall s | CPU s | pages/s | peak RSS MB | words/page |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
        row("text layer, cold", cold, text_words),
        row("text layer, unchanged re-run", warm, text_words),
    ]
    if ocr:
        lines.append(row(f"OCR, cold ({n_scans} pages as images, {SCAN_DPI} dpi)", ocr, ocr_words))
    table = "\n".join(lines) + "\n"
    print(table)
    if ocr and cold["pages_encoded"]:
        ratio = (ocr["wall_seconds"] / ocr["pages_encoded"]) / (
            cold["wall_seconds"] / cold["pages_encoded"]
        )
        print(
            f"An OCR page takes {ratio:.1f}x the wall time of a text-layer page "
            "(cold runs, each including process start-up and model loading)."
        )
    if cold["skipped"]:
        print("skipped:", cold["skipped"])
    if args.markdown_out:
        args.markdown_out.write_text(table)


if __name__ == "__main__":
    main()

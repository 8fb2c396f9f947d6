"""Bad PDFs beside good ones: every good page indexed, every bad file named, the run bounded.

    python benches/bad_pdfs.py [--keep DIR]

Writes a folder holding the sample PDFs (samples/pdfs) and one file of each bad kind below,
runs `vdr index FOLDER --index DIR` on it as one process, and checks that every page of the
good files is in the index; that each bad file is skipped with its reason on stderr
(`vdr index: skipped 'PATH': REASON`), or, where poppler reads it, indexed (with a warning,
`vdr: 'PATH' NOTE`, for a giant page rendered at a lower dpi or damage poppler read past);
and that the run exits 0, which is what `vdr index` does when some files are skipped and the
rest indexed (README, "Command line"). Then each bad file is indexed alone, in its own
process and fresh index, for its own seconds and peak memory (the zero-byte file's run is
the floor: process start-up, imports and opening an index). Wall time, CPU time and peak
resident memory of each process come from wait4's rusage of that child alone. Prints a
markdown table under a heading naming the date and machine; exits 1 if a check fails.

The bad kinds are built on the spot (reportlab for the encrypted file and the giant page, raw
PDF bytes written here for the rest, since no library writes a broken file on purpose):
corrupt bytes, encrypted with a user password, zero bytes, the first half of a real PDF,
10,000 real pages, one 20,000 x 20,000 pt page, and four "PDF bombs": arrays and dictionaries
nested 200,000 deep, a page tree whose node is its own kid, and a page tree of 20 levels where
every node names the next one twice (2^20 leaf references in a 2 KB file).
"""

from __future__ import annotations

import argparse
import datetime
import os
import random
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from reportlab.lib.pdfencrypt import StandardEncryption
from reportlab.pdfgen.canvas import Canvas

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "pdfs"
# Deep enough to overflow any recursive-descent parser's stack (CPython's default limit is
# 1,000 frames, a C parser's 8 MB stack ~100,000), small enough to write in milliseconds.
BOMB_DEPTH = 200_000
MANY_PAGES = 10_000
GIANT_PAGE_PT = 20_000
# Levels of the doubling page tree: 2^20 leaf references, each node reached twice.
TREE_LEVELS = 20
# What a healthy run may take and hold, whatever the bad files: the checks fail above these.
RUN_LIMIT_S = 600
RUN_LIMIT_MB = 4096
SKIPPED = re.compile(r"^vdr index: skipped '(?P<path>[^']+)': (?P<reason>.+)$", re.MULTILINE)
NOTE = re.compile(r"^vdr: '(?P<path>[^']+)' (?P<note>.+)$", re.MULTILINE)


def raw_pdf(objects: list[bytes], root: int = 1) -> bytes:
    """A PDF file of `objects` (object i + 1 is objects[i]) with a correct xref table.

    The bad kinds below are malformed in their objects, not in their file structure, so that
    a reader meets the bomb itself rather than giving up at a broken xref.
    """
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        xref,
    )
    return bytes(out)


def _stream(data: bytes) -> bytes:
    return b"<< /Length %d >>\nstream\n" % len(data) + data + b"\nendstream"


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _one_page(extra_catalog: bytes = b"", text: bytes = b"bomb") -> list[bytes]:
    """Catalog, page tree, one US Letter page with a line of text, its content and font."""
    content = b"BT /F1 24 Tf 72 700 Td (" + text + b") Tj ET"
    return [
        b"<< /Type /Catalog /Pages 2 0 R " + extra_catalog + b" >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        _stream(content),
        _FONT,
    ]


def corrupt(path: Path) -> None:
    """A real PDF's first 200 bytes, then 4,000 random ones: a header and nothing readable."""
    good = (SAMPLES / "solar_report.pdf").read_bytes()
    path.write_bytes(good[:200] + random.Random(9).randbytes(4000))


def encrypted(path: Path) -> None:
    """A PDF that opens only with its user password."""
    canvas = Canvas(str(path), encrypt=StandardEncryption("secret", "owner"), invariant=1)
    canvas.drawString(72, 700, "confidential")
    canvas.save()


def zero_byte(path: Path) -> None:
    path.write_bytes(b"")


def truncated(path: Path) -> None:
    """The first half of a real three-page PDF, as an interrupted download leaves it."""
    good = (SAMPLES / "solar_report.pdf").read_bytes()
    path.write_bytes(good[: len(good) // 2])


def many_pages(path: Path, n_pages: int = MANY_PAGES) -> None:
    """A valid PDF of `n_pages` pages, each with one line of text (one shared font)."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, written once the kids' numbers are known
        _FONT,
    ]
    kids = []
    for number in range(1, n_pages + 1):
        content = b"BT /F1 12 Tf 72 700 Td (page %d of a long scan) Tj ET" % number
        objects.append(_stream(content))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>" % (len(objects))
        )
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % n_pages
    path.write_bytes(raw_pdf(objects))


def giant_page(path: Path) -> None:
    """One 20,000 x 20,000 pt page: 1.7 billion pixels at 150 dpi, were it rendered so."""
    size = (GIANT_PAGE_PT, GIANT_PAGE_PT)
    canvas = Canvas(str(path), pagesize=size, invariant=1)
    canvas.setFont("Helvetica", 600)
    canvas.drawString(1000, size[1] - 1000, "Giant harbour poster about lighthouse keepers")
    canvas.save()


def nested_arrays(path: Path, depth: int = BOMB_DEPTH) -> None:
    """A catalog entry of `depth` arrays, each inside the last."""
    path.write_bytes(raw_pdf(_one_page(b"/Bomb " + b"[" * depth + b"]" * depth)))


def nested_dictionaries(path: Path, depth: int = BOMB_DEPTH) -> None:
    """A catalog entry of `depth` dictionaries, each the value of /A in the last."""
    path.write_bytes(raw_pdf(_one_page(b"/Bomb " + b"<< /A " * depth + b">> " * depth)))


def page_tree_loop(path: Path) -> None:
    """A page tree node that is its own kid. It claims two pages, the real one and itself, so
    that a reader must walk the tree (rather than refuse a huge count) to meet the loop."""
    objects = _one_page()
    objects[1] = b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>"
    path.write_bytes(raw_pdf(objects))


def page_tree_doubling(path: Path, levels: int = TREE_LEVELS) -> None:
    """A page tree of `levels` nodes, each naming the next one twice, the last naming one
    page twice: 2^levels pages (each count true) from a file of a few KB."""
    first = 6  # objects 1-5: the catalog, _one_page's unused tree node, the page, content, font
    objects = _one_page()
    objects[0] = b"<< /Type /Catalog /Pages %d 0 R >>" % first
    objects[2] = objects[2].replace(b"/Parent 2 0 R", b"/Parent %d 0 R" % (first + levels - 1))
    for level in range(levels):
        number = first + level
        child = number + 1 if level < levels - 1 else 3
        parent = b"" if level == 0 else b"/Parent %d 0 R " % (number - 1)
        count = 2 ** (levels - level)
        objects.append(
            b"<< /Type /Pages "
            + parent
            + b"/Kids [%d 0 R %d 0 R] /Count %d >>" % (child, child, count)
        )
    path.write_bytes(raw_pdf(objects))


@dataclass(frozen=True)
class BadKind:
    """One kind of bad file: its file name, what it is, and how to write it."""

    name: str
    kind: str
    write: Callable[[Path], None]


BAD_KINDS = (
    BadKind("corrupt.pdf", "corrupt bytes after a PDF header", corrupt),
    BadKind("encrypted.pdf", "encrypted, user password", encrypted),
    BadKind("zero_byte.pdf", "zero bytes", zero_byte),
    BadKind("truncated.pdf", "first half of a real PDF", truncated),
    BadKind("many_pages.pdf", f"{MANY_PAGES:,} real pages", many_pages),
    BadKind("giant_page.pdf", f"one {GIANT_PAGE_PT:,} x {GIANT_PAGE_PT:,} pt page", giant_page),
    BadKind("bomb_arrays.pdf", f"bomb: arrays nested {BOMB_DEPTH:,} deep", nested_arrays),
    BadKind(
        "bomb_dicts.pdf", f"bomb: dictionaries nested {BOMB_DEPTH:,} deep", nested_dictionaries
    ),
    BadKind("bomb_tree_loop.pdf", "bomb: page tree node is its own kid", page_tree_loop),
    BadKind(
        "bomb_tree_doubling.pdf",
        f"bomb: page tree doubling {TREE_LEVELS} levels",
        page_tree_doubling,
    ),
)


@dataclass(frozen=True)
class Expect:
    """What the run must do with a bad kind: skip it naming a reason containing `word`, or
    index what poppler can read of it with a note containing `word` (a giant page rendered
    at a lower dpi, a nesting bomb read to poppler's depth limit)."""

    outcome: str  # "skipped" or "noted"
    word: str | None = None


EXPECT = {
    "corrupt.pdf": Expect("skipped", "corrupt"),
    "encrypted.pdf": Expect("skipped", "encrypted"),
    "zero_byte.pdf": Expect("skipped", "empty"),
    "truncated.pdf": Expect("skipped", "cut short"),
    "many_pages.pdf": Expect("skipped", "VDR_MAX_PAGES"),
    "giant_page.pdf": Expect("noted", "VDR_MAX_PAGE_PIXELS"),
    "bomb_arrays.pdf": Expect("noted", "poppler reads 500 levels"),
    "bomb_dicts.pdf": Expect("noted", "poppler reads 500 levels"),
    "bomb_tree_loop.pdf": Expect("skipped", "Loop in Pages tree"),
    "bomb_tree_doubling.pdf": Expect("skipped", "Page count"),
}


def write_folder(folder: Path, kinds: tuple[BadKind, ...] = BAD_KINDS) -> list[Path]:
    """The sample PDFs and one file of each kind in `folder`; returns the good files."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind in kinds:
        kind.write(folder / kind.name)
    return [Path(shutil.copy(pdf, folder)) for pdf in sorted(SAMPLES.glob("*.pdf"))]


@dataclass(frozen=True)
class Run:
    """One `vdr` process: exit status, output, and its own wall time, CPU time, peak RSS."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float
    cpu_seconds: float
    peak_mb: float

    def said(self) -> dict[str, str]:
        """{file name: reason or note} from the run's stderr (one sentence per file)."""
        found = {Path(m["path"]).name: m["reason"] for m in SKIPPED.finditer(self.stderr)}
        for m in NOTE.finditer(self.stderr):
            found.setdefault(Path(m["path"]).name, m["note"])
        return found


def run_vdr(*args: str) -> Run:
    """`vdr ARGS` as a child process; its rusage from wait4 is its own, not its siblings'."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(
            [sys.executable, "-m", "vdr.cli", *args], stdout=out, stderr=err, cwd=REPO
        )
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        out.seek(0)
        err.seek(0)
        return Run(
            returncode=os.waitstatus_to_exitcode(status),
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            seconds=seconds,
            cpu_seconds=usage.ru_utime + usage.ru_stime,
            peak_mb=usage.ru_maxrss / 1024,  # Linux reports kilobytes
        )


def indexed_pages(index: Path) -> dict[str, int]:
    """{file name: pages stored} of the complete documents in an index."""
    from vdr.index import Index  # imported here: torch, for the checks only

    with Index(index, create=False) as opened:
        return {Path(doc.doc_path).name: doc.n_pages for doc in opened.documents() if doc.complete}


def check(whole: Run, pages: dict[str, int], good: dict[str, int]) -> list[str]:
    """Every way the run fell short of what the folder demands; empty when it did not."""
    failures = []
    if whole.returncode != 0:
        failures.append(f"exit status {whole.returncode}, not 0: {whole.stderr[-500:]}")
    if whole.seconds > RUN_LIMIT_S or whole.peak_mb > RUN_LIMIT_MB:
        failures.append(f"the run took {whole.seconds:.0f} s and {whole.peak_mb:.0f} MB")
    for name, expected in good.items():
        if pages.get(name) != expected:
            failures.append(f"{name}: {pages.get(name)} pages indexed of {expected}")
    said = whole.said()
    skipped = {Path(m["path"]).name for m in SKIPPED.finditer(whole.stderr)}
    for name, expect in EXPECT.items():
        reason = said.get(name, "")
        if expect.outcome == "skipped" and name not in skipped:
            failures.append(f"{name} was not skipped ({reason or 'nothing said'})")
        elif expect.outcome == "noted" and (name not in pages or not reason):
            failures.append(f"{name} was not indexed with a note ({reason or 'nothing said'})")
        if expect.word and expect.word not in reason:
            failures.append(f"{name}: the reason {reason!r} does not say {expect.word!r}")
    return failures


def page_count(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE)[1])


def outcome(name: str, skipped: set[str], pages: dict[str, int]) -> str:
    """What the whole run did with a file: skipped it, or indexed how many pages."""
    if name in skipped:
        return "skipped"
    if name in pages:
        return f"indexed, {pages[name]} page{'s' * (pages[name] != 1)}"
    return "lost"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the folder and indexes here and keep them")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from index_throughput import machine

    load = os.getloadavg()[0]
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="vdr-bad-pdfs-"))
    folder = scratch / "pdfs"
    try:
        shutil.rmtree(folder, ignore_errors=True)
        good = {pdf.name: page_count(pdf) for pdf in write_folder(folder)}
        shutil.rmtree(scratch / "index", ignore_errors=True)
        whole = run_vdr("index", str(folder), "--index", str(scratch / "index"), "--quiet")
        pages = indexed_pages(scratch / "index")
        alone = {}
        for kind in BAD_KINDS:
            index = scratch / f"index-{kind.name}"
            shutil.rmtree(index, ignore_errors=True)
            alone[kind.name] = run_vdr(
                "index", str(folder / kind.name), "--index", str(index), "--quiet"
            )
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    failures = check(whole, pages, good)
    said = whole.said()
    skipped = {Path(m["path"]).name for m in SKIPPED.finditer(whole.stderr)}
    n_good_pages = sum(good.values())
    command = shlex.join(["python", "benches/bad_pdfs.py", *sys.argv[1:]])
    lines = [
        f"### Bad PDFs beside good ones: {len(good)} sample PDFs ({n_good_pages} pages) and "
        f"{len(BAD_KINDS)} bad files, {datetime.date.today()}, {machine()}, "
        f"load average {load:.1f} at start, `{command}`",
        "",
        "| run | exit | wall s | CPU s | peak RSS MB | pages indexed | files skipped |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `vdr index` on the whole folder | {whole.returncode} | {whole.seconds:.1f} "
        f"| {whole.cpu_seconds:.1f} | {whole.peak_mb:.0f} | {sum(pages.values())} "
        f"| {len(skipped)} |",
        "",
        "Each bad file indexed alone, in its own process and index (the zero-byte file's run is "
        "the floor: start-up, imports, opening an index):",
        "",
        "| file | kind | outcome | reason printed | wall s | peak RSS MB |",
        "|---|---|---|---|---:|---:|",
    ]
    for kind in BAD_KINDS:
        run = alone[kind.name]
        reason = said.get(kind.name, "-").replace("|", "\\|")
        lines.append(
            f"| {kind.name} | {kind.kind} | {outcome(kind.name, skipped, pages)} "
            f"| {reason} | {run.seconds:.1f} | {run.peak_mb:.0f} |"
        )
    print("\n".join(lines) + "\n")
    if failures:
        print("FAILED:\n" + "\n".join(f"- {failure}" for failure in failures))
        sys.exit(1)
    print(
        f"All {n_good_pages} good pages indexed, every bad file skipped with its reason or "
        "indexed with what poppler could read, exit status 0."
    )


if __name__ == "__main__":
    main()

"""Bad PDFs beside good ones: every readable page indexed, every bad file named, the run bounded.

    python benches/bad_pdfs.py [--keep DIR]

Writes a folder holding the sample PDFs (samples/pdfs) and one file of each bad kind below,
runs `vdr index FOLDER --index DIR` on it as one process, and checks that every readable page
is in the index (all the good files' pages, and what a reader can show of each bad kind: the
good pages of a document with one bad page, a file whose header is misplaced); that each bad
file is skipped with its reason on stderr (`vdr index: skipped 'PATH': REASON`), or, where
poppler reads it, indexed with a warning (`vdr: 'PATH' NOTE`: the pages left out, the damage
read past, a giant page rendered at a lower dpi); and that the run exits 0, which is what
`vdr index` does when some files are skipped and the rest indexed (README, "Command line").
Then it runs the same folder again, unchanged (it must take at most RERUN_LIMIT_S: refusals
are remembered, so no file is read and no model loaded), the folder without the file that hangs
poppler into a fresh index (the hanging file's cost: the two wall times), and each bad file
alone, in its own process and fresh index, for its own seconds and peak memory (the zero-byte
file's run is the floor: process start-up, imports and opening an index). Wall time, CPU time
and peak resident memory of each process come from wait4's rusage of that child alone. Prints
a markdown table under a heading naming the date and machine; exits 1 if a check fails.

The bad kinds are built on the spot (reportlab for the encrypted file, the giant page and the
document with a bad page, raw PDF bytes written here for the rest, since no library writes a
broken file on purpose): corrupt bytes, encrypted with a user password, zero bytes, the first
half of a real PDF, 10,000 real pages, one 20,000 x 20,000 pt page, four "PDF bombs" (arrays
and dictionaries nested 200,000 deep, a page tree whose node is its own kid, and a page tree of
20 levels where every node names the next one twice: 2^20 leaf references in a 2 KB file), and
the defects of real-world files: a report whose page 3 of 5 is a 2 x 14,400 pt ribbon, a real
PDF after mail headers (its %PDF- header offset), a file encrypted for certificate holders, and
a 2 KB file whose forms nest 8 deep, each drawing the next 10 times, which keeps poppler busy
for minutes.
"""

from __future__ import annotations

import argparse
import datetime
import json
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

from reportlab.lib.pagesizes import LETTER
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
# Pages of the report with one bad page among good ones.
ONE_BAD_PAGE_OF = 5
# Levels of forms in the file that hangs poppler: 10^7 lines of text, minutes of poppler's
# time, far past its budget.
HANG_LEVELS = 8
# What a healthy run may take and hold, whatever the bad files: the checks fail above these.
RUN_LIMIT_S = 600
RUN_LIMIT_MB = 4096
# An unchanged folder is re-run from the index's records alone: no file read, no model loaded.
RERUN_LIMIT_S = 5.0
SKIPPED = re.compile(r"^vdr index: skipped '(?P<path>[^']+)': (?P<reason>.+)$", re.MULTILINE)
NOTE = re.compile(r"^vdr: '(?P<path>[^']+)' (?P<note>.+)$", re.MULTILINE)


def raw_pdf(objects: list[bytes], root: int = 1, trailer: bytes = b"") -> bytes:
    """A PDF file of `objects` (object i + 1 is objects[i]) with a correct xref table;
    `trailer` holds more trailer entries (an /Encrypt, an /ID).

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
    out += b"trailer\n<< /Size %d /Root %d 0 R %s>>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        root,
        trailer + b" " if trailer else b"",
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


def one_bad_page(path: Path, n_pages: int = ONE_BAD_PAGE_OF, bad: int = 3) -> None:
    """A report of `n_pages` pages whose page `bad` is 2 x 14,400 pt: a ribbon, not a page,
    which no renderer can turn into a page image of any use; the others are ordinary."""
    canvas = Canvas(str(path), invariant=1)
    for number in range(1, n_pages + 1):
        canvas.setPageSize((2, 14_400) if number == bad else LETTER)
        canvas.drawString(72, 700, f"ledger sheet {number} of the tide tables")
        canvas.showPage()
    canvas.save()


def offset_header(path: Path) -> None:
    """A real PDF after 430 bytes of mail headers, as a saved e-mail attachment can be: the
    header is not at the start, and every cross-reference offset is wrong by as much."""
    junk = b"From: scanner@example.org\nSubject: solar report\n\n" * 10
    path.write_bytes(junk + (SAMPLES / "solar_report.pdf").read_bytes())


def certificate_encrypted(path: Path) -> None:
    """A PDF encrypted for certificate holders (/Filter /Adobe.PubSec): no password opens it."""
    handler = (
        b"<< /Filter /Adobe.PubSec /SubFilter /adbe.pkcs7.s5 /V 4 /R 4 /Length 128 "
        b"/CF << /DefaultCryptFilter << /CFM /AESV2 /Recipients [<3082>] >> >> "
        b"/StmF /DefaultCryptFilter /StrF /DefaultCryptFilter >>"
    )
    file_id = b"<" + b"0123456789abcdef" * 2 + b">"
    trailer = b"/Encrypt 6 0 R /ID [" + file_id + b" " + file_id + b"]"
    path.write_bytes(raw_pdf([*_one_page(text=b"sealed"), handler], trailer=trailer))


def hangs_poppler(path: Path, levels: int = HANG_LEVELS, fanout: int = 10) -> None:
    """A one-page PDF of a few KB whose page draws a form that draws the next one `fanout`
    times, `levels` deep: fanout^(levels - 1) lines of text to lay out, for as long as
    poppler is let run (a quadratic-time or looping file does the same in the wild)."""
    objects = _one_page()
    first = len(objects) + 1
    objects[2] = objects[2].replace(
        b"/Resources << /Font << /F1 5 0 R >> >>",
        b"/Resources << /Font << /F1 5 0 R >> /XObject << /X %d 0 R >> >>" % first,
    )
    objects[3] = _stream(b"/X Do")
    for level in range(levels):
        if level == levels - 1:
            draws, resources = b"BT /F1 12 Tf 72 700 Td (again) Tj ET", b"/Font << /F1 5 0 R >>"
        else:
            draws = b" ".join([b"/X Do"] * fanout)
            resources = b"/XObject << /X %d 0 R >>" % (first + level + 1)
        objects.append(
            b"<< /Type /XObject /Subtype /Form /BBox [0 0 612 792] /Resources << "
            + resources
            + b" >> /Length %d >>\nstream\n" % len(draws)
            + draws
            + b"\nendstream"
        )
    path.write_bytes(raw_pdf(objects))


@dataclass(frozen=True)
class BadKind:
    """One kind of bad file: its file name, what it is, how to write it, how many of its pages
    a reader can show (what vdr should index of it), and what the run must do with it: skip it
    naming a reason containing `word`, or index what poppler can read of it with a note
    containing `word` (a giant page rendered at a lower dpi, damage poppler read past)."""

    name: str
    kind: str
    write: Callable[[Path], None]
    readable: int
    outcome: str  # "skipped" or "noted"
    word: str


BAD_KINDS = (
    BadKind("corrupt.pdf", "corrupt bytes after a PDF header", corrupt, 0, "skipped", "cut short"),
    BadKind("encrypted.pdf", "encrypted, user password", encrypted, 0, "skipped", "--password"),
    BadKind("zero_byte.pdf", "zero bytes", zero_byte, 0, "skipped", "empty"),
    BadKind("truncated.pdf", "first half of a real PDF", truncated, 0, "skipped", "cut short"),
    BadKind(
        "many_pages.pdf", f"{MANY_PAGES:,} real pages", many_pages, 0, "skipped", "VDR_MAX_PAGES"
    ),
    BadKind(
        "giant_page.pdf",
        f"one {GIANT_PAGE_PT:,} x {GIANT_PAGE_PT:,} pt page",
        giant_page,
        1,
        "noted",
        "VDR_MAX_PAGE_PIXELS",
    ),
    BadKind(
        "bomb_arrays.pdf",
        f"bomb: arrays nested {BOMB_DEPTH:,} deep",
        nested_arrays,
        1,
        "noted",
        "poppler reads 500",
    ),
    BadKind(
        "bomb_dicts.pdf",
        f"bomb: dictionaries nested {BOMB_DEPTH:,} deep",
        nested_dictionaries,
        1,
        "noted",
        "poppler reads 500",
    ),
    BadKind(
        "bomb_tree_loop.pdf",
        "bomb: page tree node is its own kid",
        page_tree_loop,
        1,
        "noted",
        "page 2 of 2 cannot be read",
    ),
    BadKind(
        "bomb_tree_doubling.pdf",
        f"bomb: page tree doubling {TREE_LEVELS} levels",
        page_tree_doubling,
        0,
        "skipped",
        "Page count",
    ),
    BadKind(
        "one_bad_page.pdf",
        f"page 3 of {ONE_BAD_PAGE_OF} a 2 x 14,400 pt ribbon",
        one_bad_page,
        ONE_BAD_PAGE_OF - 1,
        "noted",
        "page 3 of 5 cannot be read",
    ),
    BadKind(
        "offset_header.pdf",
        "a real PDF after 430 bytes of mail headers",
        offset_header,
        3,
        "noted",
        "PDF header",
    ),
    BadKind(
        "certificate.pdf",
        "encrypted for certificate holders (Adobe.PubSec)",
        certificate_encrypted,
        0,
        "skipped",
        "certificate",
    ),
    BadKind(
        "hangs_poppler.pdf",
        f"forms {HANG_LEVELS} deep, each drawing the next 10 times",
        hangs_poppler,
        0,
        "skipped",
        "VDR_POPPLER_TIMEOUT_S",
    ),
)
HANGS = "hangs_poppler.pdf"


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
    """{file name: pages stored} of every document in an index, partial ones included."""
    from vdr.index import Index  # imported here: torch, for the checks only

    with Index(index, create=False) as opened:
        return {Path(doc.doc_path).name: doc.pages_indexed for doc in opened.documents()}


def check(whole: Run, pages: dict[str, int], good: dict[str, int]) -> list[str]:
    """Every way the run fell short of what the folder demands; empty when it did not."""
    failures = []
    if whole.returncode != 0:
        failures.append(f"exit status {whole.returncode}, not 0: {whole.stderr[-500:]}")
    if whole.seconds > RUN_LIMIT_S or whole.peak_mb > RUN_LIMIT_MB:
        failures.append(f"the run took {whole.seconds:.0f} s and {whole.peak_mb:.0f} MB")
    expected = good | {kind.name: kind.readable for kind in BAD_KINDS if kind.readable}
    for name, n_pages in expected.items():
        if pages.get(name) != n_pages:
            failures.append(f"{name}: {pages.get(name)} pages indexed of {n_pages} readable")
    said = whole.said()
    skipped = {Path(m["path"]).name for m in SKIPPED.finditer(whole.stderr)}
    for kind in BAD_KINDS:
        reason = said.get(kind.name, "")
        if kind.outcome == "skipped" and kind.name not in skipped:
            failures.append(f"{kind.name} was not skipped ({reason or 'nothing said'})")
        elif kind.outcome == "noted" and (kind.name not in pages or not reason):
            failures.append(f"{kind.name} was not indexed with a note ({reason or 'nothing said'})")
        if kind.word not in reason:
            failures.append(f"{kind.name}: the reason {reason!r} does not say {kind.word!r}")
    return failures


def check_rerun(rerun: Run, n_files: int) -> list[str]:
    """The unchanged folder again: nothing examined anew, nothing encoded, within the limit."""
    try:
        report = json.loads(rerun.stdout)
    except json.JSONDecodeError:
        return [f"the unchanged re-run printed no report: {rerun.stderr[-500:]}"]
    failures = []
    if rerun.seconds > RERUN_LIMIT_S:
        failures.append(f"the unchanged re-run took {rerun.seconds:.1f} s")
    if report["pages_encoded"] or report["added"] or report["outcomes"]:
        failures.append(f"the unchanged re-run examined files again: {report['outcomes']}")
    seen = len(report["unchanged"]) + len(report["remembered"])
    if seen != n_files:
        failures.append(f"the unchanged re-run accounted for {seen} files of {n_files}")
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


def index_run(folder: Path, index: Path, *extra: str) -> Run:
    """`vdr index FOLDER` into a fresh index, or into `index` as it is with --json."""
    if "--json" not in extra:
        shutil.rmtree(index, ignore_errors=True)
    return run_vdr("index", str(folder), "--index", str(index), "--quiet", *extra)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write the folder and indexes here and keep them")
    args = parser.parse_args()

    sys.path.insert(0, str(Path(__file__).parent))
    from index_throughput import machine

    load = os.getloadavg()[0]
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="vdr-bad-pdfs-"))
    folder, without = scratch / "pdfs", scratch / "pdfs-without-hang"
    try:
        for path in (folder, without):
            shutil.rmtree(path, ignore_errors=True)
        good = {pdf.name: page_count(pdf) for pdf in write_folder(folder)}
        shutil.copytree(folder, without, ignore=shutil.ignore_patterns(HANGS))
        whole = index_run(folder, scratch / "index")
        pages = indexed_pages(scratch / "index")
        rerun = index_run(folder, scratch / "index", "--json")
        calm = index_run(without, scratch / "index-without-hang")
        alone = {
            kind.name: index_run(folder / kind.name, scratch / f"index-{kind.name}")
            for kind in BAD_KINDS
        }
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)

    failures = check(whole, pages, good) + check_rerun(rerun, len(good) + len(BAD_KINDS))
    said = whole.said()
    skipped = {Path(m["path"]).name for m in SKIPPED.finditer(whole.stderr)}
    n_good_pages = sum(good.values())
    readable = n_good_pages + sum(kind.readable for kind in BAD_KINDS)
    command = shlex.join(["python", "benches/bad_pdfs.py", *sys.argv[1:]])
    lines = [
        f"### Bad PDFs beside good ones: {len(good)} sample PDFs ({n_good_pages} pages) and "
        f"{len(BAD_KINDS)} bad files, {datetime.date.today()}, {machine()}, "
        f"load average {load:.1f} at start, `{command}`",
        "",
        "| run | exit | wall s | CPU s | peak RSS MB | pages indexed of readable | files skipped |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| `vdr index` on the whole folder | {whole.returncode} | {whole.seconds:.1f} "
        f"| {whole.cpu_seconds:.1f} | {whole.peak_mb:.0f} | {sum(pages.values())} of "
        f"{readable} | {len(skipped)} |",
        f"| the same folder without {HANGS} | {calm.returncode} | {calm.seconds:.1f} "
        f"| {calm.cpu_seconds:.1f} | {calm.peak_mb:.0f} | | |",
        f"| the whole folder again, unchanged | {rerun.returncode} | {rerun.seconds:.1f} "
        f"| {rerun.cpu_seconds:.1f} | {rerun.peak_mb:.0f} | | |",
        "",
        "Each bad file indexed alone, in its own process and index (the zero-byte file's run is "
        "the floor: start-up, imports, opening an index):",
        "",
        "| file | kind | outcome | readable pages | reason printed | wall s | peak RSS MB |",
        "|---|---|---|---:|---|---:|---:|",
    ]
    for kind in BAD_KINDS:
        run = alone[kind.name]
        reason = said.get(kind.name, "-").replace("|", "\\|")
        lines.append(
            f"| {kind.name} | {kind.kind} | {outcome(kind.name, skipped, pages)} "
            f"| {kind.readable} | {reason} | {run.seconds:.1f} | {run.peak_mb:.0f} |"
        )
    print("\n".join(lines) + "\n")
    if failures:
        print("FAILED:\n" + "\n".join(f"- {failure}" for failure in failures))
        sys.exit(1)
    print(
        f"All {readable} readable pages indexed, every bad file skipped with its reason or "
        f"indexed with what poppler could read, exit status 0; the unchanged re-run took "
        f"{rerun.seconds:.1f} s."
    )


if __name__ == "__main__":
    main()

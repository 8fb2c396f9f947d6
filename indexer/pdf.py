"""Reading PDFs with poppler: check a file, read its text layer with word boxes, render pages.

Every poppler tool runs as a child process under a time limit and a memory limit, so that a
damaged or hostile file (a loop in its page tree, objects nested 200,000 deep, a content
stream that inflates to gigabytes) costs at most that much and is named with its reason.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
import resource
import shutil
import signal
import subprocess
import threading
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vdr.errors import BadDocument, VdrError
from vdr.pages import Word

RENDER_DPI = 150
# Safe limits, each a setting (environment variable) for the rare collection that needs more:
# pages per document (a 10,000-page scan would hold the index for hours), and pixels per
# rendered page (a 20,000 x 20,000 pt poster at 150 dpi would be 1.7 billion pixels, ~5 GB):
# larger pages are rendered at the dpi that fits.
MAX_PAGES = int(os.environ.get("VDR_MAX_PAGES", "5000"))
MAX_PAGE_PIXELS = int(os.environ.get("VDR_MAX_PAGE_PIXELS", str(50_000_000)))
# Pixels along a page's longer side: JPEG, which page images are stored as, holds at most
# 65,535; a 100 x 200,000 pt strip is within MAX_PAGE_PIXELS yet 416,000 pixels long at 150 dpi.
MAX_PAGE_SIDE = 65_000
# Longer side over shorter side: beyond this a page is a line, not a page, and the encoder's
# near-square patch grid would give it one patch per row (a million rows for a 1 x 10^6 pt
# page, gigabytes of vectors).
MAX_ASPECT = 1000
# Address space of one poppler process: a page at MAX_PAGE_PIXELS is ~150 MB of RGB, poppler
# and its libraries ~200 MB more; a decompression bomb meets this limit instead of the RAM.
POPPLER_MAX_MB = int(os.environ.get("VDR_POPPLER_MAX_MB", "2048"))
# A damaged file can send poppler into a long loop: each call may take POPPLER_TIMEOUT_S plus
# POPPLER_S_PER_MB for every MB of the file and POPPLER_S_PER_PAGE for every page it renders
# (a healthy 100 MB scan renders a chunk of pages in well under a minute, a page of dense
# vector drawing in a few seconds), so a small hanging file is stopped in seconds and a large
# healthy one is not cut short. VDR_POPPLER_TIMEOUT_S raises the floor.
POPPLER_TIMEOUT_S = float(os.environ.get("VDR_POPPLER_TIMEOUT_S", "20"))
POPPLER_S_PER_MB = 2.0
POPPLER_S_PER_PAGE = 1.0
# Below this a page would render as a few dozen pixels, too few to read or to encode.
MIN_DPI = 1.0
# Poppler's parser reads dictionaries and arrays this deep (Parser.cc, recursionLimit) and
# silently drops what lies deeper: a nesting bomb is read, but not all of it.
POPPLER_MAX_NESTING = 500
# Tokens that open and close dictionaries and arrays, and the ends of stream data (binary,
# where bracket bytes mean nothing); none is longer than _LONGEST_TOKEN bytes.
_NESTING = re.compile(rb"<<|>>|\[|\]|\bstream(?:\r\n|\r|\n)|\bendstream\b")
_LONGEST_TOKEN = 16
_XHTML = "{http://www.w3.org/1999/xhtml}"
# pdftotext copies control characters from some fonts into its XHTML, which XML forbids.
_XML_INVALID = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# How poppler starts a complaint ("Syntax Error (1234): "), and a byte it escapes ("<0a>").
_POPPLER_PREFIX = re.compile(
    r"^(Syntax (Error|Warning)|Internal Error|Command Line Error)( \(\d+\))?: "
)
_ESCAPED_BYTE = re.compile(r"<[0-9a-fA-F]{2}>")
# pdftoppm's binary PPM header: magic, width, height, maximum value, one whitespace byte each.
_PPM_HEADER = re.compile(rb"P6\s(\d+)\s(\d+)\s255\s")


@dataclass(frozen=True)
class PageText:
    """The text layer of one page: its size in points and its words in reading order, or
    the problem that keeps the page out of the index."""

    size: tuple[float, float]
    words: tuple[Word, ...]
    problem: str = ""  # why the page cannot be indexed, "" when it can


@dataclass(frozen=True)
class PdfCheck:
    """What pdfinfo found in a readable PDF.

    pages:  its page count
    damage: what poppler repaired or ignored to read it, in vdr's words ("" when nothing):
            a damaged header or cross-reference table, a loop in the page tree, objects
            nested beyond its depth limit; the pages it reads are indexed
    unlock: poppler arguments that open it (("-upw", password) or ("-opw", password) for an
            encrypted file, () otherwise), for every later call on the file
    """

    pages: int
    damage: str
    unlock: tuple[str, ...] = ()


def check_pdf(path: Path, passwords: Sequence[str] = ()) -> PdfCheck:
    """Page count of a readable PDF and any damage poppler noted; BadDocument naming the
    reason the file cannot be indexed otherwise.

    passwords: tried in turn (as user, then owner password) when the file is encrypted.
    Reads only the file's ends and pdfinfo's summary: a file over MAX_PAGES is refused before
    a single page is read or rendered. Whatever poppler opens is accepted, as PDF readers do:
    a header that is damaged, offset or missing is noted as damage, not refused.
    """
    try:
        with path.open("rb") as f:
            head = f.read(1024)
            f.seek(max(0, path.stat().st_size - 1024))
            tail = f.read()
    except OSError as error:
        raise BadDocument(f"cannot read the file ({error.strerror})", "unreadable") from error
    if not head:
        raise BadDocument("the file is empty", "empty")
    info = _poppler(["pdfinfo", str(path)], "reading the page count", path)
    unlock: tuple[str, ...] = ()
    if _needs_password(info):
        info, unlock = _unlock(path, passwords)
    pages = re.search(rb"^Pages:\s+(\d+)\s*$", info.stdout, re.MULTILINE)
    if info.returncode or not pages:
        raise _refusal(info.stderr, head, tail)
    n_pages = int(pages.group(1))
    if n_pages < 1:
        raise BadDocument("the PDF has no pages", "no_pages")
    if n_pages > MAX_PAGES:
        raise BadDocument(
            f"it has {n_pages:,} pages, more than the limit of {MAX_PAGES:,} (VDR_MAX_PAGES)",
            "too_many_pages",
        )
    damage = describe_damage(info.stderr, head)
    depth = nesting_depth(path)
    if depth > POPPLER_MAX_NESTING:
        deeper = f"objects nested {depth:,} deep, of which poppler reads {POPPLER_MAX_NESTING}"
        damage = f"{damage}; {deeper}" if damage else deeper
    return PdfCheck(pages=n_pages, damage=damage, unlock=unlock)


def _needs_password(info: subprocess.CompletedProcess[bytes]) -> bool:
    return info.returncode != 0 and b"Incorrect password" in info.stderr


def _unlock(
    path: Path, passwords: Sequence[str]
) -> tuple[subprocess.CompletedProcess[bytes], tuple[str, ...]]:
    """pdfinfo's answer with the first password that opens the file, and how it was given;
    BadDocument when none does."""
    for password in passwords:
        for flag in ("-upw", "-opw"):
            unlock = (flag, password)
            info = _poppler(["pdfinfo", *unlock, str(path)], "reading the page count", path)
            if not _needs_password(info):
                return info, unlock
    if passwords:
        none_opens = (
            "the password given does not open it"
            if len(passwords) == 1
            else f"none of the {len(passwords)} passwords given opens it"
        )
        raise BadDocument(f"the file is encrypted and {none_opens}", "encrypted")
    raise BadDocument(
        "the file is encrypted: give its password with --password or in the file named by "
        "VDR_PDF_PASSWORDS",
        "encrypted",
    )


# What poppler says, and what it means, in the order a refusal is explained: the first
# pattern found in its complaints names the reason.
_REFUSALS: tuple[tuple[bytes, str, str], ...] = (
    (
        rb"security handler",
        "the file is encrypted with a certificate (public-key security), which vdr cannot open",
        "encrypted",
    ),
    (
        rb"[Ee]ncryption key length|[Ww]eird encryption info|[Ii]nvalid encryption",
        "its encryption dictionary is broken, so its contents cannot be decrypted",
        "damaged",
    ),
    (rb"[Ii]nvalid page count 0", "the PDF has no pages", "no_pages"),
    (
        rb"[Cc]ouldn't read xref|[Cc]ouldn't find trailer|[Ii]nvalid XRef",
        "its cross-reference table is broken beyond what poppler can repair",
        "damaged",
    ),
)
# Complaints poppler repairs or reads past, in vdr's words: what damage() reports.
_DAMAGE: tuple[tuple[bytes, str], ...] = (
    (rb"[Ll]oop in Pages tree|[Ll]oop in page tree", "a loop in its page tree"),
    (rb"xref|[Tt]railer|startxref", "a damaged cross-reference table, which poppler rebuilt"),
    (rb"[Ee]ncryption", "a damaged encryption dictionary"),
    (rb"[Ii]nvalid page count|[Pp]age count", "a wrong page count"),
)


def _refusal(stderr: bytes, head: bytes, tail: bytes) -> BadDocument:
    """Why pdfinfo could not open a file, in vdr's words."""
    # Without a header poppler's complaints (no trailer, no xref) only say it found no PDF.
    if b"%PDF-" not in head:
        return BadDocument("not a PDF file: no PDF header, and poppler cannot read it", "not_pdf")
    if b"%%EOF" not in tail:
        # A writer ends the file with %%EOF: without it the file was most likely cut short,
        # which is also why poppler finds no cross-reference table.
        return BadDocument("the file is cut short (it has no %%EOF end) and cannot be read")
    for pattern, reason, kind in _REFUSALS:
        if re.search(pattern, stderr):
            return BadDocument(reason, kind)
    detail = poppler_detail(stderr)
    return BadDocument("the file is damaged beyond repair" + (f" ({detail})" if detail else ""))


def describe_damage(stderr: bytes, head: bytes) -> str:
    """What poppler read past in a file it opened, in vdr's words; "" when nothing."""
    found = []
    if not head.startswith(b"%PDF-"):
        found.append("a damaged or misplaced PDF header")
    for pattern, damage in _DAMAGE:
        if re.search(pattern, stderr) and damage not in found:
            found.append(damage)
    if not found and _first_line(stderr, default=""):
        found.append(poppler_detail(stderr))
    return "; ".join(found)


def poppler_detail(stderr: bytes, limit: int = 120) -> str:
    """Poppler's first complaint as plain text for a message: its 'Syntax Error: ' prefix,
    escaped bytes such as <0a> and runs of space dropped, cut at `limit` characters."""
    line = _first_line(stderr, default="")
    line = _POPPLER_PREFIX.sub("", line)
    line = _ESCAPED_BYTE.sub(" ", line)
    line = re.sub(r"\s+", " ", line).strip()
    return line if len(line) <= limit else line[: limit - 3].rstrip() + "..."


def nesting_depth(path: Path, chunk_bytes: int = 1 << 24) -> int:
    """How deep the file's dictionaries and arrays nest, stream data left out; read a chunk
    at a time, so memory stays bounded whatever the file's size.

    >>> import tempfile
    >>> with tempfile.NamedTemporaryFile(suffix=".pdf") as f:
    ...     _ = f.write(b"<< /A [ [ 1 ] ] >>stream\\n[[[[endstream << >>")
    ...     f.flush()
    ...     nesting_depth(Path(f.name), chunk_bytes=5)
    3
    """
    depth = deepest = 0
    in_stream = False
    carry = b""
    with path.open("rb") as f:
        while True:
            block = f.read(chunk_bytes)
            data = carry + block
            # A token may be cut at the end of a chunk: leave the tail for the next one.
            limit = len(data) - _LONGEST_TOKEN if block else len(data)
            done = 0
            for match in _NESTING.finditer(data):
                if match.start() >= limit:
                    break
                token, done = match.group(), match.end()
                if in_stream:
                    in_stream = token != b"endstream"
                elif token.startswith(b"stream"):
                    in_stream = True
                elif token in (b"<<", b"["):
                    depth += 1
                    deepest = max(deepest, depth)
                elif token in (b">>", b"]"):
                    depth = max(0, depth - 1)
            if not block:
                return deepest
            carry = data[max(limit, done) :]


def fitting_dpi(sizes: list[tuple[float, float]], dpi: float) -> float:
    """`dpi`, or less where a page of these sizes (points) would pass MAX_PAGE_PIXELS or be
    more than MAX_PAGE_SIDE pixels long.

    >>> fitting_dpi([(612, 792)], 150), fitting_dpi([(20_000, 20_000)], 150)
    (150, 25.4)
    >>> fitting_dpi([(100, 200_000)], 150)  # a strip: 0.35 x 2,778 inches
    23.3
    """
    largest = max(w * h for w, h in sizes) / 72**2  # square inches
    longest = max(max(w, h) for w, h in sizes) / 72  # inches
    if largest <= 0 or longest <= 0:
        return dpi
    # Rounded down: poppler rounds each side's pixel count up.
    fits = min(math.sqrt(MAX_PAGE_PIXELS / largest), MAX_PAGE_SIDE / longest) * 0.999
    return min(dpi, math.floor(10 * fits) / 10)


def read_text_layer(path: Path, unlock: Sequence[str] = ()) -> list[PageText]:
    """Every page's size and words (boxes as page fractions), via `pdftotext -bbox-layout`.

    Words are grouped into pdftotext's blocks (paragraph-like runs), which the encoder uses
    as context. A page without a text layer comes back with no words; a page that cannot be
    used (no size, as where poppler could not find it in a damaged page tree, or a line
    rather than a page) comes back with its `problem` said, so that the others are indexed.
    unlock: PdfCheck.unlock of an encrypted file.
    """
    run = _poppler(
        ["pdftotext", "-bbox-layout", "-enc", "UTF-8", *unlock, str(path), "-"],
        "reading the text layer",
        path,
    )
    try:
        root = ET.fromstring(_XML_INVALID.sub(b"", run.stdout))
    except ET.ParseError as error:
        if run.returncode:
            detail = poppler_detail(run.stderr) or _exit_reason(run.returncode)
            raise BadDocument(f"its text layer cannot be read ({detail})") from error
        raise BadDocument(f"pdftotext wrote malformed output ({error})") from error
    pages = []
    for page in root.iter(f"{_XHTML}page"):
        width, height = _number(page, "width"), _number(page, "height")
        if not (0 < width < math.inf and 0 < height < math.inf):
            problem = "it has no size: poppler finds no page there"
            pages.append(PageText((0.0, 0.0), (), problem=problem))
            continue
        if max(width, height) > MAX_ASPECT * min(width, height):
            problem = (
                f"it is {width:,.6g} x {height:,.6g} pt, one side over {MAX_ASPECT:,} times "
                "the other: a line, not a page"
            )
            pages.append(PageText((width, height), (), problem=problem))
            continue
        words = []
        for block_number, block in enumerate(page.iter(f"{_XHTML}block")):
            for word in block.iter(f"{_XHTML}word"):
                text = (word.text or "").strip()
                if not text:
                    continue
                box = (
                    _number(word, "xMin") / width,
                    _number(word, "yMin") / height,
                    _number(word, "xMax") / width,
                    _number(word, "yMax") / height,
                )
                words.append(Word(text=text, box=_clip(box), block=block_number))
        pages.append(PageText(size=(width, height), words=tuple(words)))
    return pages


def render_pages(
    path: Path, first: int, last: int, dpi: float = RENDER_DPI, unlock: Sequence[str] = ()
) -> list[Image.Image]:
    """RGB renderings of pages first..last (1-based, inclusive) at `dpi`, via pdftoppm.

    unlock: PdfCheck.unlock of an encrypted file."""
    pages = f"{first}-{last}" if last > first else str(first)
    if dpi < MIN_DPI:
        raise BadDocument(
            f"page {pages} is too large to render within {MAX_PAGE_PIXELS:,} pixels "
            f"(VDR_MAX_PAGE_PIXELS) at {MIN_DPI:g} dpi or more"
        )
    run = _poppler(
        ["pdftoppm", "-r", f"{dpi:g}", "-f", str(first), "-l", str(last), *unlock, str(path)],
        f"rendering page {pages}",
        path,
        pages=last - first + 1,
    )
    images = []
    at = 0
    while at < len(run.stdout):
        header = _PPM_HEADER.match(run.stdout, at)
        if not header:
            break
        size = (int(header.group(1)), int(header.group(2)))
        at = header.end() + 3 * size[0] * size[1]
        if at > len(run.stdout):
            break  # pdftoppm stopped mid-page (killed at its memory limit)
        images.append(Image.frombytes("RGB", size, run.stdout[header.end() : at]))
    if len(images) != last - first + 1:
        reason = poppler_detail(run.stderr) or _exit_reason(run.returncode)
        raise BadDocument(
            f"page {pages} cannot be rendered ({len(images)} of {last - first + 1} "
            f"images; {reason})"
        )
    return images


def poppler_budget_s(path: Path, pages: int = 0) -> float:
    """Seconds one poppler call on this file that renders `pages` pages may take:
    POPPLER_TIMEOUT_S, POPPLER_S_PER_MB more for every MB of the file, POPPLER_S_PER_PAGE
    more for every page."""
    try:
        size = path.stat().st_size
    except OSError:
        size = 0
    return POPPLER_TIMEOUT_S + POPPLER_S_PER_MB * size / 2**20 + POPPLER_S_PER_PAGE * pages


def _poppler(
    command: list[str], doing: str, path: Path, pages: int = 0
) -> subprocess.CompletedProcess[bytes]:
    """Run a poppler tool on `path` within poppler_budget_s(path, pages) and POPPLER_MAX_MB
    (`pages`: how many it renders); BadDocument past either.

    The memory limit is set on the child right after it starts (resource.prlimit) rather than
    in a preexec_fn, which is unsafe in a threaded process (pages render in a worker thread,
    the server indexes uploads in its own); poppler allocates nothing large in that instant.
    The child is started through `setpriv --pdeathsig KILL` (util-linux) where it exists, so
    that it dies with vdr even when vdr is killed outright and no timer of ours is left.
    """
    if shutil.which(command[0]) is None:
        raise VdrError(
            f"{command[0]} is not installed: vdr reads PDFs with poppler "
            "(install the Debian package poppler-utils)"
        )
    budget_s = poppler_budget_s(path, pages)
    child = subprocess.Popen(
        [*_DIE_WITH_PARENT, *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    limit = POPPLER_MAX_MB * 2**20
    with contextlib.suppress(ProcessLookupError):  # already finished: nothing left to limit
        resource.prlimit(child.pid, resource.RLIMIT_AS, (limit, limit))
    # A bomb makes poppler complain once per object: hundreds of MB of stderr. Keep its start
    # (the reason we quote) and its end (where an allocation failure is reported).
    head, tail = bytearray(), bytearray()
    stdout, stderr = child.stdout, child.stderr
    assert stdout is not None and stderr is not None  # both are pipes

    def drain() -> None:
        for chunk in iter(lambda: stderr.read(1 << 16), b""):
            head.extend(chunk[: max(0, STDERR_KEPT - len(head))])
            tail.extend(chunk)
            del tail[:-STDERR_KEPT]

    timed_out = threading.Event()

    def stop() -> None:
        timed_out.set()
        child.kill()

    reader = threading.Thread(target=drain, daemon=True)
    timer = threading.Timer(budget_s, stop)
    reader.start()
    timer.start()
    try:
        out = stdout.read()
        child.wait()
        reader.join()
    finally:
        timer.cancel()
        if child.poll() is None:  # interrupted while reading: leave no poppler behind
            child.kill()
            child.wait()
        stdout.close()
        stderr.close()
    if timed_out.is_set():
        raise BadDocument(
            f"{doing} took over {budget_s:.1f} s, the budget for a file of its size "
            "(VDR_POPPLER_TIMEOUT_S), so poppler was stopped",
            "timeout",
        )
    err = bytes(head)
    if _OUT_OF_MEMORY.search(bytes(tail)):
        raise BadDocument(
            f"{doing} ran out of memory: poppler may use {POPPLER_MAX_MB:,} MB "
            "(VDR_POPPLER_MAX_MB)",
            "memory",
        )
    if child.returncode < 0:  # poppler crashed on the file (or was killed by someone)
        detail = poppler_detail(err)
        raise BadDocument(
            f"{doing} failed: {_exit_reason(child.returncode)}"
            + (f" ({detail})" if detail else ""),
            "crash",
        )
    return subprocess.CompletedProcess(command, child.returncode, out, err)


# Prefix of every poppler command: the child gets SIGKILL when its parent dies.
_DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL", "--") if shutil.which("setpriv") else ()
# Bytes of a poppler tool's stderr kept from its start, and from its end.
STDERR_KEPT = 1 << 16
# How poppler says it could not allocate (gmem's messages, C++'s bad_alloc), or Fontconfig
# inside it (its parser's buffer), before it crashes.
_OUT_OF_MEMORY = re.compile(
    rb"bad_alloc|[Oo]ut of memory|[Bb]ogus memory allocation|cannot get parse buffer"
)


def _exit_reason(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"poppler was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"poppler was killed by signal {-returncode}"
    return f"poppler exited with status {returncode}"


def _number(element: ET.Element, name: str) -> float:
    """A numeric attribute of pdftotext's XHTML; 0 where it is missing or not a number."""
    try:
        return float(element.get(name, 0))
    except ValueError:
        return 0.0


def _clip(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return (x0, y0, x1, y1)


def _first_line(message: str | bytes, default: str = "no details") -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else default

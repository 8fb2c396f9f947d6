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
import signal
import subprocess
import threading
import xml.etree.ElementTree as ET
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
# A damaged file can send poppler into a long loop; nothing healthy takes this long per call.
POPPLER_TIMEOUT_S = 120
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
# pdftoppm's binary PPM header: magic, width, height, maximum value, one whitespace byte each.
_PPM_HEADER = re.compile(rb"P6\s(\d+)\s(\d+)\s255\s")


@dataclass(frozen=True)
class PageText:
    """The text layer of one page: its size in points and its words in reading order."""

    size: tuple[float, float]
    words: tuple[Word, ...]


@dataclass(frozen=True)
class PdfCheck:
    """What pdfinfo found in a readable PDF.

    pages:  its page count
    damage: poppler's first complaint while reading it ("" when none): it read the file
            anyway, by repairing or ignoring what it complained of (a loop in the page tree,
            objects nested beyond its depth limit), and the pages it reads are indexed
    """

    pages: int
    damage: str


def check_pdf(path: Path) -> PdfCheck:
    """Page count of a readable PDF and any damage poppler noted; BadDocument naming the
    reason the file cannot be indexed otherwise.

    Reads only the header and pdfinfo's summary: a file over MAX_PAGES is refused before a
    single page is read or rendered.
    """
    try:
        with path.open("rb") as f:
            head = f.read(1024)
            f.seek(max(0, path.stat().st_size - 1024))
            tail = f.read()
    except OSError as error:
        raise BadDocument(f"cannot read the file ({error.strerror})") from error
    if not head:
        raise BadDocument("the file is empty")
    if b"%PDF-" not in head:
        raise BadDocument("not a PDF file (no %PDF header)")
    info = _poppler(["pdfinfo", str(path)], "reading the page count")
    pages = re.search(rb"^Pages:\s+(\d+)\s*$", info.stdout, re.MULTILINE)
    if info.returncode or not pages:
        message = _first_line(info.stderr)
        if "password" in message.lower():
            raise BadDocument("the file is encrypted (a password is required)")
        if b"%%EOF" not in tail:
            # A writer ends the file with %%EOF: without it the file was most likely cut short.
            raise BadDocument(f"the file is corrupt or cut short: it has no %EOF end ({message})")
        raise BadDocument(f"the file is corrupt ({message})")
    n_pages = int(pages.group(1))
    if n_pages < 1:
        raise BadDocument("the PDF has no pages")
    if n_pages > MAX_PAGES:
        raise BadDocument(
            f"it has {n_pages:,} pages, more than the limit of {MAX_PAGES:,} (VDR_MAX_PAGES)"
        )
    damage = _first_line(info.stderr, default="")
    depth = nesting_depth(path)
    if depth > POPPLER_MAX_NESTING:
        deeper = f"objects nested {depth:,} deep; poppler reads {POPPLER_MAX_NESTING} levels"
        damage = f"{deeper}: {damage}" if damage else deeper
    return PdfCheck(pages=n_pages, damage=damage)


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


def read_text_layer(path: Path) -> list[PageText]:
    """Every page's size and words (boxes as page fractions), via `pdftotext -bbox-layout`.

    Words are grouped into pdftotext's blocks (paragraph-like runs), which the encoder uses
    as context. A page without a text layer comes back with no words; a page without a size
    (poppler could not find it in a damaged page tree) is BadDocument.
    """
    run = _poppler(
        ["pdftotext", "-bbox-layout", "-enc", "UTF-8", str(path), "-"], "reading the text layer"
    )
    try:
        root = ET.fromstring(_XML_INVALID.sub(b"", run.stdout))
    except ET.ParseError as error:
        if run.returncode:
            raise BadDocument(
                f"the text layer is unreadable ({_first_line(run.stderr)})"
            ) from error
        raise BadDocument(f"pdftotext wrote malformed output ({error})") from error
    pages = []
    for number, page in enumerate(root.iter(f"{_XHTML}page"), start=1):
        width, height = _number(page, "width"), _number(page, "height")
        if not (0 < width < math.inf and 0 < height < math.inf):
            raise BadDocument(
                f"page {number} has no usable size ({width:g} x {height:g} pt; "
                f"{_first_line(run.stderr, default='poppler gave no reason')})"
            )
        if max(width, height) > MAX_ASPECT * min(width, height):
            raise BadDocument(
                f"page {number} is {width:,.6g} x {height:,.6g} pt, one side over "
                f"{MAX_ASPECT:,} times the other: a line, not a page"
            )
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


def render_pages(path: Path, first: int, last: int, dpi: float = RENDER_DPI) -> list[Image.Image]:
    """RGB renderings of pages first..last (1-based, inclusive) at `dpi`, via pdftoppm."""
    pages = f"{first}-{last}" if last > first else str(first)
    if dpi < MIN_DPI:
        raise BadDocument(
            f"page {pages} is too large to render within {MAX_PAGE_PIXELS:,} pixels "
            f"(VDR_MAX_PAGE_PIXELS) at {MIN_DPI:g} dpi or more"
        )
    run = _poppler(
        ["pdftoppm", "-r", f"{dpi:g}", "-f", str(first), "-l", str(last), str(path)],
        f"rendering page {pages}",
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
        reason = _first_line(run.stderr, default=_exit_reason(run.returncode))
        raise BadDocument(
            f"page {pages} cannot be rendered ({len(images)} of {last - first + 1} "
            f"images; {reason})"
        )
    return images


def _poppler(command: list[str], doing: str) -> subprocess.CompletedProcess[bytes]:
    """Run a poppler tool with POPPLER_TIMEOUT_S and POPPLER_MAX_MB; BadDocument past either.

    The memory limit is set on the child right after it starts (resource.prlimit) rather than
    in a preexec_fn, which is unsafe in a threaded process (pages render in a worker thread,
    the server indexes uploads in its own); poppler allocates nothing large in that instant.
    """
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except FileNotFoundError as error:
        raise VdrError(f"poppler-utils is not installed ({command[0]} not found)") from error
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
    timer = threading.Timer(POPPLER_TIMEOUT_S, stop)
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
        raise BadDocument(f"{doing} took over {POPPLER_TIMEOUT_S} s (poppler was stopped)")
    err = bytes(head)
    if _OUT_OF_MEMORY.search(bytes(tail)):
        raise BadDocument(
            f"{doing} ran out of memory: poppler may use {POPPLER_MAX_MB:,} MB (VDR_POPPLER_MAX_MB)"
        )
    if child.returncode < 0:  # poppler crashed on the file (or was killed by someone)
        raise BadDocument(f"{doing} failed: {_exit_reason(child.returncode)} ({_first_line(err)})")
    return subprocess.CompletedProcess(command, child.returncode, out, err)


# Bytes of a poppler tool's stderr kept from its start, and from its end.
STDERR_KEPT = 1 << 16
# How poppler says it could not allocate (gmem's messages, C++'s bad_alloc).
_OUT_OF_MEMORY = re.compile(rb"bad_alloc|[Oo]ut of memory|[Bb]ogus memory allocation")


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

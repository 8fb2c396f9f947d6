"""Reading PDFs with poppler: check a file, read its text layer with word boxes, render pages."""

from __future__ import annotations

import math
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from pdf2image import convert_from_path, pdfinfo_from_path
from pdf2image.exceptions import PDFInfoNotInstalledError, PDFPageCountError, PDFSyntaxError
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
# A damaged file can send poppler into a long loop; nothing healthy takes this long per call.
POPPLER_TIMEOUT_S = 120
_XHTML = "{http://www.w3.org/1999/xhtml}"
# pdftotext copies control characters from some fonts into its XHTML, which XML forbids.
_XML_INVALID = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f]")


@dataclass(frozen=True)
class PageText:
    """The text layer of one page: its size in points and its words in reading order."""

    size: tuple[float, float]
    words: tuple[Word, ...]


def check_pdf(path: Path) -> int:
    """Number of pages of a readable PDF; BadDocument naming the reason otherwise."""
    try:
        with path.open("rb") as f:
            head = f.read(1024)
    except OSError as error:
        raise BadDocument(f"cannot read the file ({error.strerror})") from error
    if not head:
        raise BadDocument("the file is empty")
    if b"%PDF-" not in head:
        raise BadDocument("not a PDF file (no %PDF header)")
    try:
        info = pdfinfo_from_path(str(path), timeout=POPPLER_TIMEOUT_S)
    except PDFInfoNotInstalledError as error:
        raise VdrError("poppler-utils is not installed (pdfinfo not found)") from error
    except (PDFPageCountError, PDFSyntaxError) as error:
        message = str(error)
        if "password" in message.lower():
            raise BadDocument("the file is encrypted (a password is required)") from error
        raise BadDocument(f"the file is corrupt ({_first_line(message)})") from error
    except subprocess.TimeoutExpired as error:
        raise BadDocument(f"poppler gave up after {POPPLER_TIMEOUT_S} s") from error
    pages = int(info.get("Pages", 0))
    if pages < 1:
        raise BadDocument("the PDF has no pages")
    if pages > MAX_PAGES:
        raise BadDocument(
            f"it has {pages:,} pages, more than the limit of {MAX_PAGES:,} (VDR_MAX_PAGES)"
        )
    return pages


def fitting_dpi(sizes: list[tuple[float, float]], dpi: float) -> float:
    """`dpi`, or less where a page of these sizes (points) would pass MAX_PAGE_PIXELS.

    >>> fitting_dpi([(612, 792)], 150), fitting_dpi([(20_000, 20_000)], 150)
    (150, 25.4)
    """
    largest = max(w * h for w, h in sizes) / 72**2  # square inches
    if largest <= 0:
        return dpi
    # Rounded down: poppler rounds each side's pixel count up.
    return min(dpi, math.floor(10 * math.sqrt(MAX_PAGE_PIXELS / largest) * 0.999) / 10)


def read_text_layer(path: Path) -> list[PageText]:
    """Every page's size and words (boxes as page fractions), via `pdftotext -bbox-layout`.

    Words are grouped into pdftotext's blocks (paragraph-like runs), which the encoder uses
    as context. A page without a text layer comes back with no words.
    """
    try:
        run = subprocess.run(
            ["pdftotext", "-bbox-layout", "-enc", "UTF-8", str(path), "-"],
            capture_output=True,
            timeout=POPPLER_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as error:
        raise BadDocument(f"reading the text layer took over {POPPLER_TIMEOUT_S} s") from error
    try:
        root = ET.fromstring(_XML_INVALID.sub(b"", run.stdout))
    except ET.ParseError as error:
        if run.returncode:
            raise BadDocument(
                f"the text layer is unreadable ({_first_line(run.stderr)})"
            ) from error
        raise BadDocument(f"pdftotext wrote malformed output ({error})") from error
    pages = []
    for page in root.iter(f"{_XHTML}page"):
        width, height = float(page.get("width", 0)), float(page.get("height", 0))
        words = []
        for block_number, block in enumerate(page.iter(f"{_XHTML}block")):
            for word in block.iter(f"{_XHTML}word"):
                text = (word.text or "").strip()
                if not text or width <= 0 or height <= 0:
                    continue
                box = (
                    float(word.get("xMin", 0)) / width,
                    float(word.get("yMin", 0)) / height,
                    float(word.get("xMax", 0)) / width,
                    float(word.get("yMax", 0)) / height,
                )
                words.append(Word(text=text, box=_clip(box), block=block_number))
        pages.append(PageText(size=(width, height), words=tuple(words)))
    return pages


def render_pages(path: Path, first: int, last: int, dpi: float = RENDER_DPI) -> list[Image.Image]:
    """RGB renderings of pages first..last (1-based, inclusive) at `dpi`."""
    try:
        images = convert_from_path(
            str(path),
            dpi=dpi,
            first_page=first,
            last_page=last,
            fmt="ppm",
            timeout=POPPLER_TIMEOUT_S,
        )
    except (PDFPageCountError, PDFSyntaxError) as error:
        raise BadDocument(f"pages {first}-{last} cannot be rendered ({error})") from error
    except subprocess.TimeoutExpired as error:
        raise BadDocument(
            f"rendering pages {first}-{last} took over {POPPLER_TIMEOUT_S} s"
        ) from error
    if len(images) != last - first + 1:
        raise BadDocument(f"pages {first}-{last} rendered as {len(images)} images")
    return [image.convert("RGB") for image in images]


def _clip(box: tuple[float, float, float, float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (min(1.0, max(0.0, v)) for v in box)
    return (x0, y0, x1, y1)


def _first_line(message: str | bytes) -> str:
    text = message.decode(errors="replace") if isinstance(message, bytes) else message
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else "no details"

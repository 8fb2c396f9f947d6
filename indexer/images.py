"""Reading page images (scans and photos of pages): PNG, JPEG, TIFF (one page a frame) and
WebP, each file a document.

A page's size in points comes from the resolution the file records (300 dpi scans are
common), or RENDER_DPI when it records none, so that a page image is stored and read at the
same resolutions as a rendered PDF page (RENDER_DPI to view, OCR_DPI to read).
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from vdr.errors import BadDocument
from vdr.indexer.pdf import MAX_ASPECT, MAX_PAGES, RENDER_DPI, PageText

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".webp"})
# Pillow's formats for those suffixes: a file whose content is another format is refused.
_FORMATS = frozenset({"PNG", "JPEG", "MPO", "TIFF", "WEBP"})
# Pixels of one page image: a larger one is refused before it is decoded (Pillow's own
# decompression-bomb limit, ~89 million: a 300 dpi scan of an A0 poster).
MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485
# EXIF orientations that turn a picture by 90 degrees, so that its width is its height.
_QUARTER_TURNS = frozenset({5, 6, 7, 8})
# Resolutions outside this range are a file's metadata gone wrong, not a real scan.
_DPI_RANGE = (30.0, 2400.0)
_ORIENTATION = 0x0112  # the EXIF tag


def is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def read_image_pages(path: Path) -> list[PageText]:
    """Every page's size in points (one page a frame for TIFF), no words: BadDocument when
    the file is not a readable image of a supported kind."""
    with _open(path) as image:
        pages = []
        for number in range(_frames(image)):
            _seek(image, number + 1)
            width, height = image.size
            if _orientation(image, number + 1) in _QUARTER_TURNS:
                width, height = height, width
            if width < 1 or height < 1:
                pages.append(PageText((0.0, 0.0), (), problem="it has no pixels"))
                continue
            if max(width, height) > MAX_ASPECT * min(width, height):
                problem = f"it is {width:,} x {height:,} pixels: a line, not a page"
                pages.append(PageText((0.0, 0.0), (), problem=problem))
                continue
            dpi = _dpi(image)
            pages.append(PageText((width * 72 / dpi, height * 72 / dpi), ()))
        return pages


def render_image_pages(
    path: Path, first: int, last: int, dpi: float = RENDER_DPI
) -> list[Image.Image]:
    """RGB images of pages first..last (1-based, inclusive), scaled to `dpi`."""
    with _open(path) as image:
        rendered = []
        for number in range(first, last + 1):
            _seek(image, number)
            try:
                frame = ImageOps.exif_transpose(image).convert("RGB")
            except (OSError, ValueError) as error:
                raise BadDocument(f"page {number} cannot be decoded ({error})") from error
            scale = dpi / _dpi(image)
            size = (max(1, round(frame.width * scale)), max(1, round(frame.height * scale)))
            rendered.append(frame if size == frame.size else frame.resize(size, Image.LANCZOS))
        return rendered


def _open(path: Path) -> Image.Image:
    """The image, opened lazily; BadDocument naming why it cannot be used."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(path)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise BadDocument(
            f"the image has more than {MAX_IMAGE_PIXELS:,} pixels", "too_large"
        ) from error
    except UnidentifiedImageError as error:
        raise BadDocument(
            "not an image vdr can read (PNG, JPEG, TIFF or WebP)", "not_image"
        ) from error
    except OSError as error:
        raise BadDocument(
            f"cannot read the file ({error.strerror or error})", "unreadable"
        ) from error
    if image.format not in _FORMATS:
        image.close()
        raise BadDocument(
            f"a {image.format} image: vdr reads PNG, JPEG, TIFF and WebP", "not_image"
        )
    return image


def _seek(image: Image.Image, number: int) -> None:
    """Go to page `number` (1-based) of a multi-frame file."""
    try:
        image.seek(number - 1)
    except (EOFError, OSError, ValueError) as error:
        raise BadDocument(f"page {number} cannot be read ({error})") from error


def _orientation(image: Image.Image, number: int) -> int:
    """The EXIF orientation of the current frame (1: upright). Pillow reads a PNG's to the
    end of the file to find it, so a file cut short fails here, before any page is encoded."""
    try:
        return image.getexif().get(_ORIENTATION, 1)
    except (OSError, SyntaxError, ValueError) as error:
        raise BadDocument(
            f"the image is damaged or cut short: page {number} cannot be read ({error})",
            "damaged",
        ) from error


def _frames(image: Image.Image) -> int:
    """Pages in the file: a TIFF's frames; one for the other kinds (an animated WebP or PNG
    is one picture, not a document)."""
    frames = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    if frames > MAX_PAGES:
        raise BadDocument(
            f"it has {frames:,} pages, more than the limit of {MAX_PAGES:,} (VDR_MAX_PAGES)",
            "too_many_pages",
        )
    return frames


def _dpi(image: Image.Image) -> float:
    """The horizontal resolution the file records, or RENDER_DPI."""
    recorded = image.info.get("dpi", (0, 0))[0]
    try:
        dpi = float(recorded)
    except (TypeError, ValueError):
        return RENDER_DPI
    low, high = _DPI_RANGE
    return dpi if math.isfinite(dpi) and low <= dpi <= high else RENDER_DPI

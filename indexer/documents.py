"""One interface over the kinds of document file vdr reads: a PDF (poppler) or a page image
(Pillow). The pipeline and doctor open files through `open_document` and never ask which."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from vdr.indexer.images import is_image_name, read_image_pages, render_image_pages
from vdr.indexer.pdf import RENDER_DPI, PageText, check_pdf, read_text_layer, render_pages


@dataclass(frozen=True)
class OpenedDocument:
    """A file checked and read, ready to render.

    pages:  each page's size and words, or the problem that keeps it out (PageText.problem)
    damage: what the reader repaired or read past, in vdr's words ("" when nothing)
    """

    path: Path
    pages: tuple[PageText, ...]
    damage: str
    unlock: tuple[str, ...] = ()  # poppler's password arguments for an encrypted PDF

    def render(self, first: int, last: int, dpi: float = RENDER_DPI) -> list[Image.Image]:
        """RGB images of pages first..last (1-based, inclusive) at `dpi`; BadDocument when
        they cannot be rendered."""
        if is_image_name(self.path):
            return render_image_pages(self.path, first, last, dpi)
        return render_pages(self.path, first, last, dpi, unlock=self.unlock)


def open_document(path: Path, passwords: Sequence[str] = ()) -> OpenedDocument:
    """Check `path` and read every page's size and text layer; BadDocument naming why the
    file cannot be indexed at all. Slow for a large or damaged PDF (poppler reads it whole,
    within its time budget), so the pipeline runs it ahead, beside the encoder."""
    if is_image_name(path):
        return OpenedDocument(path, tuple(read_image_pages(path)), damage="")
    check = check_pdf(path, passwords)
    texts = read_text_layer(path, check.unlock)
    # pdfinfo counts the pages the page tree claims; pdftotext lists those it finds. A page
    # it does not find is one that cannot be read, the others are indexed.
    missing = PageText((0.0, 0.0), (), problem="poppler cannot find it in the page tree")
    pages = (texts + [missing] * check.pages)[: check.pages]
    return OpenedDocument(path, tuple(pages), check.damage, check.unlock)

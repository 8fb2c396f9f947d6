"""What the indexer hands to an encoder: a rendered page and the words printed on it."""

from __future__ import annotations

from dataclasses import dataclass

from PIL import Image


@dataclass(frozen=True)
class Word:
    """One word on a page, from the PDF's text layer or from OCR.

    box: (x0, y0, x1, y1) as fractions of the page's width and height, origin top-left,
         so that it maps onto any rendering and any patch grid of the page.
    block: index of the text block (paragraph, OCR line) the word belongs to; words of one
           block are encoded together, in reading order, so each word sees its context.
           Negative for the words describing a figure (vdr.figures): their box is the whole
           figure, and an encoder spreads them over every patch of it.
    """

    text: str
    box: tuple[float, float, float, float]
    block: int

    @property
    def describes_figure(self) -> bool:
        return self.block < 0


@dataclass(frozen=True)
class Page:
    """One rendered page.

    image: RGB rendering of the whole page.
    words: the page's words in reading order; empty when the page has no text layer and OCR
           found nothing (or was not run).
    size:  (width, height) in PDF points (1/72 inch).
    """

    image: Image.Image
    words: tuple[Word, ...]
    size: tuple[float, float]

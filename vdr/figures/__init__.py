"""Figures on a page, found and described so that a text encoder can place them: where they
are (regions), what kind they are and their colours (describe), as words whose box is the
figure (figure_words)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from vdr.figures.classifier import shipped
from vdr.figures.describe import FigureDescription, describe
from vdr.figures.regions import Region, find_regions
from vdr.pages import Word

__all__ = ["FigureDescription", "Region", "describe", "figure_words", "find_regions"]


def figure_words(image: Image.Image, words: Sequence[Word]) -> tuple[Word, ...]:
    """Words describing each figure of the page image ("bar chart blue orange"), each with
    the figure's box and a negative block of its own (Word.describes_figure)."""
    regions = find_regions(image, words)
    if not regions:
        return ()
    return tuple(
        Word(text, figure.region.box, block=-1 - number)
        for number, figure in enumerate(describe(image, regions, shipped()))
        for text in figure.text().split()
    )

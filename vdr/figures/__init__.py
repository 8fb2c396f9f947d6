"""Figures on a page, found and described so that a text encoder can place them: where they
are (regions), what kind they are and their colours (describe), and what is written in and
about them (the words inside, the caption), as words whose box is the figure
(figure_words)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vdr.pages import Word

if TYPE_CHECKING:
    from PIL import Image

    from vdr.figures.regions import Region

# How an index describes figures: not at all, by kind and colours, or with their text too.
# (This module stays light to import: the CLI reads these; torch and scipy load on use.)
FIGURES = ("none", "kind", "kind+text")
# "kind": adding the caption and labels lost 0.013 nDCG@5 on visual queries of the generated
# validation set (benches/figures.py, BENCHMARKS.md).
DEFAULT_FIGURES = "kind"

# A caption starts with one of these labels (and usually a number): "Figure 3.", "Fig. 2:".
_CAPTION_LABEL = re.compile(r"^(figure|fig\.?|table|chart|graph|plate|diagram|exhibit)$", re.I)
_NUMBER = re.compile(r"^[\dIVXivx]+[.:]?$|^[A-Z]?\d+(\.\d+)*[.:]?$")
# A caption sits within this share of the page's height above or below its figure.
CAPTION_REACH = 0.08
# Axis labels and legends sit at a figure's edge, up to this share of the page outside the
# ink the region was found from; of its own words, those with a letter or a year are kept
# (tick values would only add noise).
LABEL_MARGIN = 0.03
_LABEL = re.compile(r"[A-Za-z]|^\d{4}$")
# Labels are short blocks; a longer one is the body text around the figure.
MAX_LABEL_WORDS = 8
# Words of the figure's own text and caption added to its description, at most.
MAX_TEXT_WORDS = 40


def figure_words(
    image: Image.Image, words: Sequence[Word], with_text: bool = True
) -> tuple[Word, ...]:
    """Words describing each figure of the page image, each with the figure's box and a
    negative block of its own (Word.describes_figure): its kind and colours ("bar chart blue
    orange"), then, with_text, its caption's words and the words printed inside it."""
    from vdr.figures.classifier import shipped
    from vdr.figures.describe import describe
    from vdr.figures.regions import find_regions

    regions = find_regions(image, words)
    if not regions:
        return ()
    out = []
    for number, figure in enumerate(describe(image, regions, shipped())):
        texts = figure.text().split()
        if with_text:
            texts += figure_text(figure.region, words)
        out += [Word(text, figure.region.box, block=-1 - number) for text in texts]
    return tuple(out)


def figure_text(region: Region, words: Sequence[Word]) -> list[str]:
    """The caption's words (label and number left out) and the labels printed in or at the
    edge of the region (short blocks, words with a letter or a year), at most
    MAX_TEXT_WORDS."""
    x0, y0, x1, y1 = region.box
    caption: list[str] = []
    blocks: dict[int, list[Word]] = {}
    for word in words:
        if not word.describes_figure:
            blocks.setdefault(word.block, []).append(word)
    for block in blocks.values():
        first = block[0]
        if not _CAPTION_LABEL.match(first.text):
            continue
        top, bottom = first.box[1], first.box[3]
        near = y1 - 0.01 <= top <= y1 + CAPTION_REACH or y0 - CAPTION_REACH <= bottom <= y0 + 0.01
        across = first.box[0] < x1 and block[-1].box[2] > x0
        if near and across:
            rest = [w.text for w in block[1:]]
            caption = rest[1:] if rest and _NUMBER.match(rest[0]) else rest
            break
    m = LABEL_MARGIN
    inside = [
        w.text
        for w in words
        if not w.describes_figure
        and len(blocks[w.block]) <= MAX_LABEL_WORDS
        and _LABEL.search(w.text)
        and x0 - m <= (w.box[0] + w.box[2]) / 2 <= x1 + m
        and y0 - m <= (w.box[1] + w.box[3]) / 2 <= y1 + m
    ]
    return (caption + inside)[:MAX_TEXT_WORDS]

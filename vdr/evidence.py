"""Evidence for a result: the page's words under the patches that matched the query best.

Works for every encoder: the query's per-word similarity maps say which patches matched, and
the page's words (text layer or OCR, with boxes) say what is printed there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from vdr.pages import Word
from vdr.stop_words import ENGLISH_STOP_WORDS

if TYPE_CHECKING:
    from vdr.heatmap import SimilarityMaps

# A query word counts as matched when its best patch scores at least this share of the best
# word's: exact word matches score far above the rest.
RELATIVE_THRESHOLD = 0.75
CONTEXT_WORDS = 6  # words of context on each side of a match in the snippet
MAX_PASSAGES = 3
_EDGE_PUNCTUATION = re.compile(r"^\W+|\W+$")


@dataclass(frozen=True)
class Evidence:
    """What on the page matched the query.

    snippet: the matched words with a few words of context, passages joined by " … "
    boxes:   (x0, y0, x1, y1) of each matched word in PDF points, origin at the top-left
    words:   the matched page words, in reading order
    size:    (width, height) of the page in points: the frame of the boxes
    """

    snippet: str
    boxes: tuple[tuple[float, float, float, float], ...]
    words: tuple[str, ...]
    size: tuple[float, float]


def find_evidence(
    maps: SimilarityMaps, words: tuple[Word, ...], size: tuple[float, float]
) -> Evidence:
    """The page's content words under each content word of the query's best patch (when that
    word matched well).

    Content words (is_content_word): no English stop words, no lone letters or pieces left
    when punctuation splits a word ("don't" -> "don", "t"); a query of stop words alone has
    no evidence. words: the page's words in reading order (boxes as page fractions); size:
    the page's (width, height) in points. A page without words gives an empty Evidence.
    """
    content = [i for i, word in enumerate(maps.words) if is_content_word(word)]
    word_maps = maps.word_maps()[content]
    if not words or not len(word_maps) or not np.isfinite(word_maps).any():
        return Evidence(snippet="", boxes=(), words=(), size=size)
    rows, cols = word_maps.shape[1:]
    filled = np.where(np.isfinite(word_maps), word_maps, -np.inf).reshape(len(word_maps), -1)
    best_patch, best_score = filled.argmax(axis=1), filled.max(axis=1)
    top = best_score.max()
    matched: set[int] = set()
    for patch, score in zip(best_patch, best_score, strict=True):
        if np.isfinite(score) and score >= top - (1 - RELATIVE_THRESHOLD) * abs(top):
            matched.update(_words_at(words, patch // cols, patch % cols, rows, cols))
    order = sorted(i for i in matched if is_content_word(words[i].text))
    width, height = size
    boxes = tuple(
        (w.box[0] * width, w.box[1] * height, w.box[2] * width, w.box[3] * height)
        for w in (words[i] for i in order)
    )
    return Evidence(
        snippet=_snippet(words, order),
        boxes=boxes,
        words=tuple(words[i].text for i in order),
        size=size,
    )


def is_content_word(text: str) -> bool:
    """Whether a word says what a page is about: two or more letters or digits once its
    punctuation is stripped, and not an English stop word (vdr.stop_words).

    >>> [w for w in ("The", "volcano's", "of", "t", "42", "—") if is_content_word(w)]
    ["volcano's", '42']
    """
    core = "".join(c for c in text if c.isalnum())
    return len(core) >= 2 and _EDGE_PUNCTUATION.sub("", text).lower() not in ENGLISH_STOP_WORDS


def words_on_patch(words: tuple[Word, ...], row: int, col: int, rows: int, cols: int) -> list[int]:
    """Indices of the words whose boxes overlap patch (row, col) of a rows x cols grid."""
    x0, y0, x1, y1 = col / cols, row / rows, (col + 1) / cols, (row + 1) / rows
    return [
        i
        for i, w in enumerate(words)
        if w.box[0] < x1 and w.box[2] > x0 and w.box[1] < y1 and w.box[3] > y0
    ]


def _words_at(words: tuple[Word, ...], row: int, col: int, rows: int, cols: int) -> list[int]:
    """words_on_patch, or the word nearest to the patch when none overlaps it."""
    hits = words_on_patch(words, row, col, rows, cols)
    if hits:
        return hits
    cx, cy = (col + 0.5) / cols, (row + 0.5) / rows
    distance = [
        (max(w.box[0] - cx, 0, cx - w.box[2]) ** 2 + max(w.box[1] - cy, 0, cy - w.box[3]) ** 2, i)
        for i, w in enumerate(words)
    ]
    return [min(distance)[1]]


def _snippet(words: tuple[Word, ...], matched: list[int]) -> str:
    """The matched words in their context; overlapping windows merge, at most MAX_PASSAGES."""
    spans: list[list[int]] = []
    for i in matched:
        start, end = max(0, i - CONTEXT_WORDS), min(len(words), i + CONTEXT_WORDS + 1)
        if spans and start <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([start, end])
    # Prefer the passages holding the most matches.
    spans.sort(key=lambda span: -sum(span[0] <= i < span[1] for i in matched))
    kept = sorted(spans[:MAX_PASSAGES])
    return " … ".join(" ".join(w.text for w in words[a:b]) for a, b in kept)

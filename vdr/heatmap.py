"""Where on a page each query word matched: token-to-patch similarity maps and overlays."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from vdr.encoders.base import PageEmbedding, QueryEmbedding

# Colour ramp anchors (dark blue -> teal -> yellow -> red), interpolated into 256 steps;
# PIL-only so the CLI and the server need no matplotlib.
_RAMP = np.array([[20, 30, 140], [30, 150, 160], [250, 220, 40], [220, 30, 30]], np.float64)
# Markers tokenizers put on word pieces: WordPiece continues a word with "##"; byte-level BPE
# (GPT-2, Qwen) and SentencePiece (Gemma) start a word with "Ġ" or "▁".
_CONTINUES = "##"
_STARTS = ("Ġ", "▁")
# The similarities the colour ramp spans, the same for every map (the whole query, each word,
# every page): a word matched weakly stays dark where one printed on the page is red. Vectors
# are L2-normalised, so similarities are cosines; below 0 nothing matches either.
SCALE = (0.0, 1.0)


@dataclass(frozen=True)
class SimilarityMaps:
    """Per-token maps of one query over one page.

    maps:   [tokens, rows, cols] float32: for each of the query's word tokens (no special,
            augmentation, padding or punctuation tokens), its best similarity among the page
            vectors in each patch; NaN where a patch has no vector
    tokens: those tokens' strings, aligned with maps
    words:  the readable words the tokens make up (word pieces joined back)
    word_of: [tokens] index into words of each token
    """

    maps: np.ndarray
    tokens: tuple[str, ...]
    words: tuple[str, ...]
    word_of: tuple[int, ...]

    def whole_query(self) -> np.ndarray:
        """[rows, cols] float32: max over tokens (NaN where no patch vector)."""
        return _nanmax(self.maps, self.maps.shape[1:])

    def word_maps(self) -> np.ndarray:
        """[words, rows, cols] float32: each word's map, the max over its pieces' maps."""
        owner = np.asarray(self.word_of)
        return (
            np.stack(
                [
                    _nanmax(self.maps[owner == w], self.maps.shape[1:])
                    for w in range(len(self.words))
                ]
            )
            if self.words
            else np.zeros((0, *self.maps.shape[1:]), np.float32)
        )


def map_tokens(query: QueryEmbedding) -> np.ndarray:
    """[t] bool: the tokens that get a map: the query's word tokens, less punctuation."""
    return query.words() & np.array([not _is_punctuation(t) for t in query.tokens], dtype=bool)


def similarity_maps(query: QueryEmbedding, page: PageEmbedding) -> SimilarityMaps:
    """Token-to-patch maps [tokens, rows, cols] of the query's word tokens over the page grid."""
    rows, cols = page.grid
    keep = map_tokens(query)
    vectors = query.vectors[keep]
    tokens = tuple(t for t, k in zip(query.tokens, keep, strict=True) if k)
    best = np.full((len(vectors), rows * cols), -np.inf, np.float32)
    if len(page.vectors) and len(vectors):
        sims = vectors @ page.vectors.T  # [tokens, n]
        vector_of, patch_of = page.placements()
        for t in range(len(vectors)):
            np.maximum.at(best[t], patch_of, sims[t, vector_of])
    best[np.isneginf(best)] = np.nan
    words, word_of = group_word_pieces(tokens)
    return SimilarityMaps(best.reshape(len(vectors), rows, cols), tokens, words, word_of)


def group_word_pieces(tokens: Sequence[str]) -> tuple[tuple[str, ...], tuple[int, ...]]:
    """Readable words from word pieces, and the word each piece belongs to.

    >>> group_word_pieces(["brake", "pad", "##s"])
    (('brake', 'pads'), (0, 1, 1))
    >>> group_word_pieces(["Ġbr", "ake", "Ġpads"])
    (('brake', 'pads'), (0, 0, 1))
    """
    marked = any(t.startswith(_STARTS) for t in tokens)
    words: list[str] = []
    word_of: list[int] = []
    for token in tokens:
        if words and token.startswith(_CONTINUES):
            words[-1] += token[len(_CONTINUES) :]
        elif words and marked and not token.startswith(_STARTS):
            words[-1] += token
        else:
            words.append(token.lstrip("".join(_STARTS)))
        word_of.append(len(words) - 1)
    return tuple(words), tuple(word_of)


def colourise(values: np.ndarray) -> np.ndarray:
    """[...] floats in [0, 1] -> [..., 3] uint8 colours along the ramp."""
    position = np.clip(values, 0, 1) * (len(_RAMP) - 1)
    low = np.minimum(position.astype(int), len(_RAMP) - 2)
    frac = (position - low)[..., None]
    return (_RAMP[low] * (1 - frac) + _RAMP[low + 1] * frac).astype(np.uint8)


def overlay(
    image: Image.Image, grid_map: np.ndarray, title: str = "", alpha: float = 0.55
) -> Image.Image:
    """The page with `grid_map` ([rows, cols], NaN = no data) blended over it, and a legend.

    Colours span SCALE, not the map's own range, so they compare across words, pages and
    queries; the legend names what the colours mean and prints the similarity at both ends.
    Patches without data (no text there, for the default encoder) stay uncoloured.
    """
    image = image.convert("RGB")
    finite = np.isfinite(grid_map)
    low, high = SCALE
    scaled = np.clip(np.where(finite, (grid_map - low) / (high - low), 0.0), 0.0, 1.0)
    colours = Image.fromarray(colourise(scaled)).resize(image.size, Image.Resampling.NEAREST)
    weight = (finite * alpha * (0.35 + 0.65 * scaled) * 255).astype(np.uint8)
    mask = Image.fromarray(weight).resize(image.size, Image.Resampling.NEAREST)
    blended = Image.composite(colours, image, mask)

    size = max(12, image.width // 60)
    font = ImageFont.load_default(size=size)
    legend = 2 * size + 14  # colour bar row, then the caption row
    canvas = Image.new("RGB", (image.width, image.height + legend), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    low_label, high_label = f"{low:.2f} weaker", f"stronger {high:.2f}"
    bar_left = int(draw.textlength(low_label, font=font)) + size
    bar_right = image.width - int(draw.textlength(high_label, font=font)) - size
    top = image.height + 4
    if bar_right > bar_left:
        ramp = colourise(np.linspace(0, 1, bar_right - bar_left))[None].repeat(size, axis=0)
        canvas.paste(Image.fromarray(ramp), (bar_left, top))
    draw.text((4, top), low_label, fill="black", font=font)
    draw.text((bar_right + size // 2, top), high_label, fill="black", font=font)
    caption = (
        "query-to-page match" + (f": {title}" if title else "") + " (uncoloured: nothing there)"
    )
    draw.text((4, top + size + 6), caption, fill="black", font=font)
    return canvas


def overlay_grid(
    image: Image.Image, maps: np.ndarray, labels: Sequence[str], columns: int = 4, width: int = 400
) -> Image.Image:
    """One small overlay per map ([n, rows, cols]) labelled with its word, tiled in a grid."""
    thumb = image.convert("RGB")
    thumb = thumb.resize((width, round(width * thumb.height / thumb.width)))
    tiles = [
        overlay(thumb, grid_map, title=label) for grid_map, label in zip(maps, labels, strict=True)
    ]
    if not tiles:
        return overlay(thumb, np.full((1, 1), np.nan, np.float32), title="(no query words)")
    tile_w, tile_h = tiles[0].size
    rows = -(-len(tiles) // columns)
    sheet = Image.new("RGB", (tile_w * min(columns, len(tiles)), tile_h * rows), "white")
    for number, tile in enumerate(tiles):
        sheet.paste(tile, ((number % columns) * tile_w, (number // columns) * tile_h))
    return sheet


def _nanmax(maps: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    if not len(maps):
        return np.full(shape, np.nan, np.float32)
    with np.errstate(all="ignore"):
        return np.fmax.reduce(maps, axis=0)


def _is_punctuation(token: str) -> bool:
    text = token.lstrip("".join(_STARTS)).removeprefix(_CONTINUES)
    return bool(text) and all(unicodedata.category(c).startswith("P") for c in text)

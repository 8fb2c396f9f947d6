"""Where on a page each query token matched: token-to-patch similarity maps and overlays."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from vdr.encoders.base import PageEmbedding, QueryEmbedding

# Colour ramp anchors (dark blue -> teal -> yellow -> red), interpolated into 256 steps;
# PIL-only so the CLI and the server need no matplotlib.
_RAMP = np.array([[20, 30, 140], [30, 150, 160], [250, 220, 40], [220, 30, 30]], np.float64)
LEGEND_HEIGHT = 36


@dataclass(frozen=True)
class SimilarityMaps:
    """Per-token maps of one query over one page.

    maps:   [tokens, rows, cols] float32: for each of the query's word tokens, its best
            similarity among the page vectors in each patch; NaN where a patch has no vector
    tokens: those tokens' strings, aligned with maps
    """

    maps: np.ndarray
    tokens: tuple[str, ...]

    def whole_query(self) -> np.ndarray:
        """[rows, cols] float32: max over tokens (NaN where no patch vector)."""
        if not len(self.maps):
            return np.full(self.maps.shape[1:], np.nan, np.float32)
        with np.errstate(all="ignore"):
            return np.fmax.reduce(self.maps, axis=0)


def similarity_maps(query: QueryEmbedding, page: PageEmbedding) -> SimilarityMaps:
    """Token-to-patch maps: [tokens, rows, cols] for the query's word tokens."""
    rows, cols = page.grid
    words = query.words()
    vectors = query.vectors[words]
    tokens = tuple(t for t, keep in zip(query.tokens, words, strict=True) if keep)
    best = np.full((len(vectors), rows * cols), -np.inf, np.float32)
    if len(page.vectors):
        sims = vectors @ page.vectors.T  # [tokens, n]
        vector_of, patch_of = page.placements()
        for t in range(len(vectors)):
            np.maximum.at(best[t], patch_of, sims[t, vector_of])
    best[np.isneginf(best)] = np.nan
    return SimilarityMaps(maps=best.reshape(len(vectors), rows, cols), tokens=tokens)


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

    The map is scaled to its own min..max, so colours compare patches within one page; the
    legend prints the similarity values at both ends. Patches without data stay uncoloured.
    """
    image = image.convert("RGB")
    finite = np.isfinite(grid_map)
    low = float(grid_map[finite].min()) if finite.any() else 0.0
    high = float(grid_map[finite].max()) if finite.any() else 1.0
    scaled = np.where(finite, (grid_map - low) / max(high - low, 1e-6), 0.0)
    colours = Image.fromarray(colourise(scaled)).resize(image.size, Image.Resampling.NEAREST)
    weight = (finite * alpha * (0.35 + 0.65 * scaled) * 255).astype(np.uint8)
    mask = Image.fromarray(weight).resize(image.size, Image.Resampling.NEAREST)
    blended = Image.composite(colours, image, mask)

    canvas = Image.new("RGB", (image.width, image.height + LEGEND_HEIGHT), "white")
    canvas.paste(blended, (0, 0))
    draw = ImageDraw.Draw(canvas)
    bar_left, bar_right = 70, max(90, image.width - 70)
    ramp = colourise(np.linspace(0, 1, bar_right - bar_left))[None].repeat(10, axis=0)
    canvas.paste(Image.fromarray(ramp), (bar_left, image.height + 6))
    draw.text((4, image.height + 4), f"{low:.2f}", fill="black")
    draw.text((bar_right + 6, image.height + 4), f"{high:.2f}", fill="black")
    caption = f"token-patch similarity{': ' + title if title else ''} (uncoloured: no content)"
    draw.text((bar_left, image.height + 20), caption, fill="black")
    return canvas

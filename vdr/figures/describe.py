"""What a figure region shows, in words an encoder can place on it: the kind of figure (the
shipped classifier's answer) and the colours it is drawn in (named from its pixels)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from vdr.figures.classifier import FigureClassifier
from vdr.figures.regions import Region

# Below this probability the classifier's kind is not named; the region is "a figure".
MIN_CONFIDENCE = 0.5
# A colour is named when it covers this share of the region's coloured (not white) pixels.
MIN_COLOUR_SHARE = 0.06
MAX_COLOURS = 3
# Hue ranges (degrees) of the colour names people use for charts.
_HUES = (
    (15, "red"),
    (45, "orange"),
    (70, "yellow"),
    (165, "green"),
    (195, "cyan"),
    (255, "blue"),
    (290, "purple"),
    (345, "pink"),
    (360, "red"),
)


@dataclass(frozen=True)
class FigureDescription:
    """One figure region and what it shows.

    kind:    the classifier's kind ("bar chart", "photograph", ...), or "figure" when unsure
    colours: named colours, most present first (black and grey included, white never)
    """

    region: Region
    kind: str
    confidence: float
    colours: tuple[str, ...]

    def text(self) -> str:
        return " ".join((self.kind, *self.colours))


def describe(
    image: Image.Image, regions: Sequence[Region], classifier: FigureClassifier
) -> list[FigureDescription]:
    """A description of each region of the page image."""
    crops = [_crop(image, region) for region in regions]
    kinds = classifier.predict(crops)
    return [
        FigureDescription(
            region,
            kind if confidence >= MIN_CONFIDENCE else "figure",
            confidence,
            colour_names(crop),
        )
        for region, crop, (kind, confidence) in zip(regions, crops, kinds, strict=True)
    ]


def colour_names(image: Image.Image) -> tuple[str, ...]:
    """The named colours covering at least MIN_COLOUR_SHARE of the image's non-white pixels,
    most present first, at most MAX_COLOURS."""
    small = image.convert("RGB")
    small.thumbnail((96, 96))
    rgb = np.asarray(small, dtype=np.float32).reshape(-1, 3) / 255.0
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    saturation = np.where(high > 0, (high - low) / np.maximum(high, 1e-6), 0)
    painted = ~((high > 0.9) & (saturation < 0.12))  # white and near-white are the paper
    if not painted.any():
        return ()
    rgb, saturation, value = rgb[painted], saturation[painted], high[painted]
    hue = _hue_degrees(rgb)
    names = np.searchsorted(np.array([limit for limit, _ in _HUES]), hue, side="right")
    named = np.array([name for _, name in _HUES], dtype=object)[np.minimum(names, len(_HUES) - 1)]
    named[np.isin(named, ["orange", "red"]) & (value < 0.6)] = "brown"
    named[saturation < 0.2] = "grey"
    named[value < 0.25] = "black"
    names = list(named)
    counts = {n: names.count(n) for n in set(names)}
    ranked = sorted(counts, key=lambda n: -counts[n])
    return tuple(n for n in ranked if counts[n] >= MIN_COLOUR_SHARE * len(names))[:MAX_COLOURS]


def _hue_degrees(rgb: np.ndarray) -> np.ndarray:
    """[n] hue in [0, 360) of [n, 3] RGB in [0, 1] (as colorsys.rgb_to_hsv, vectorised)."""
    r, g, b = rgb.T
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    span = np.maximum(high - low, 1e-6)
    hue = np.where(
        high == r, (g - b) / span % 6, np.where(high == g, (b - r) / span + 2, (r - g) / span + 4)
    )
    return hue * 60 % 360


def _crop(image: Image.Image, region: Region) -> Image.Image:
    x0, y0, x1, y1 = region.box
    return image.crop(
        (
            int(x0 * image.width),
            int(y0 * image.height),
            int(x1 * image.width),
            int(y1 * image.height),
        )
    )

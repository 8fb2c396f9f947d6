"""Where a page's figures are: the regions of a rendered page that hold graphics (charts,
drawings, tables' rules, photographs) rather than words.

Works on the pixels, so it serves born-digital and scanned pages alike: ink that no word box
covers, closed into blobs, each blob large enough to be a figure and not a rule or a stray
mark. Words inside a figure (axis labels, cells) are left out of the ink but their boxes are
taken into the region where they touch it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy import ndimage

from vdr.pages import Word

# Working width of the page image (about; it is reduced by a whole factor): ~1/4 of a 150 dpi
# A4 rendering, fine enough for a figure's outline, coarse enough to take a few ms.
WORK_WIDTH = 320
# A pixel is ink when it differs from the page's background by this much (0-255), in grey
# level or in colour.
INK_CONTRAST = 48
# Strokes of one figure join when closer than this fraction of the page width.
JOIN = 0.02
# A region is a figure when each side is at least MIN_SIDE of the page's side and its ink
# fills at least MIN_INK of it (a frame or a lone rule fills almost none).
MIN_SIDE = 0.06
MIN_AREA = 0.012
MIN_INK = 0.02


@dataclass(frozen=True)
class Region:
    """A figure's box: (x0, y0, x1, y1) as fractions of the page, origin top-left."""

    box: tuple[float, float, float, float]


def find_regions(image: Image.Image, words: Sequence[Word]) -> list[Region]:
    """The figure regions of a page, top to bottom; none on a page of text alone."""
    factor = max(1, round(image.width / WORK_WIDTH))
    small = image.convert("RGB").reduce(factor)  # a box filter: ~5x faster than resize
    pixels = np.asarray(small, dtype=np.int16)
    height, width = pixels.shape[:2]
    # Ink is where the page changes (an edge), not where it is coloured: a shaded box behind a
    # code listing is no figure, its border no more than a frame.
    ink = np.zeros((height, width), dtype=bool)
    ink[:, 1:] |= np.abs(np.diff(pixels, axis=1)).max(axis=2) > INK_CONTRAST
    ink[1:, :] |= np.abs(np.diff(pixels, axis=0)).max(axis=2) > INK_CONTRAST
    for word in words:
        x0, y0, x1, y1 = _cells(word.box, width, height, pad=1)
        ink[y0:y1, x0:x1] = False
    # Closing (grow, then shrink back) joins a figure's strokes; growing once more joins its
    # parts. Square max/min filters are separable, so each pass is cheap.
    reach = max(1, round(JOIN * width))
    joined = ndimage.minimum_filter(ndimage.maximum_filter(ink, size=reach), size=reach)
    joined = ndimage.maximum_filter(joined, size=reach)
    labels, _ = ndimage.label(joined)
    boxes = []
    for found in ndimage.find_objects(labels):
        rows, cols = found
        w, h = (cols.stop - cols.start) / width, (rows.stop - rows.start) / height
        if min(w, h) < MIN_SIDE or w * h < MIN_AREA:
            continue
        if ink[found].mean() < MIN_INK:
            continue
        boxes.append(
            (cols.start / width, rows.start / height, cols.stop / width, rows.stop / height)
        )
    return [Region(box) for box in sorted(_merged(boxes), key=lambda b: (b[1], b[0]))]


def _cells(
    box: tuple[float, float, float, float], width: int, height: int, pad: int = 0
) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    return (
        max(0, int(x0 * width) - pad),
        max(0, int(y0 * height) - pad),
        min(width, int(np.ceil(x1 * width)) + pad),
        min(height, int(np.ceil(y1 * height)) + pad),
    )


def _merged(
    boxes: list[tuple[float, float, float, float]],
) -> list[tuple[float, float, float, float]]:
    """Boxes with every overlapping pair joined into one, until none overlap."""
    merged = list(boxes)
    changed = True
    while changed:
        changed = False
        for i in range(len(merged)):
            for j in range(i + 1, len(merged)):
                a, b = merged[i], merged[j]
                if a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]:
                    merged[i] = (min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]))
                    del merged[j]
                    changed = True
                    break
            if changed:
                break
    return merged

"""Words and boxes for pages without a text layer, by OCR (rapidocr's bundled ONNX models)."""

from __future__ import annotations

import functools
import logging

import numpy as np
from PIL import Image

from vdr.pages import Word

# Render resolution for OCR: a few more words read than at 150 dpi, for ~0.5 s more a page.
OCR_DPI = 300
# Lines read with less confidence than this are mostly noise (stamps, rules, speckle).
MIN_SCORE = 0.5


@functools.cache
def _engine():  # -> rapidocr_onnxruntime.RapidOCR, loaded once per process (~1 s)
    from rapidocr_onnxruntime import RapidOCR

    # rapidocr logs every call at INFO; keep the user's terminal for the progress bar.
    logging.getLogger("RapidOCR").setLevel(logging.WARNING)
    return RapidOCR()


def binarise(image: Image.Image) -> Image.Image:
    """Black text on white by Otsu's threshold.

    On grey, JPEG-compressed scans rapidocr runs most words together ("2023wasthe...": 27
    words read from a page of 190); after binarisation it reads them apart.
    """
    grey = np.asarray(image.convert("L"))
    probability = np.bincount(grey.ravel(), minlength=256) / grey.size
    weight = np.cumsum(probability)  # share of pixels at or below each level
    mean = np.cumsum(probability * np.arange(256))
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean[-1] * weight - mean) ** 2 / (weight * (1 - weight))
    threshold = int(np.nanargmax(between)) if np.isfinite(between).any() else 127
    return Image.fromarray(np.where(grey > threshold, 255, 0).astype(np.uint8))


def ocr_words(image: Image.Image) -> tuple[Word, ...]:
    """The words on a page image, each OCR line a block, boxes as fractions of the image.

    A line's box is shared among its words in proportion to their lengths (rapidocr reports
    lines, not words). Runs on CPU, ~2-3 s for a page on this machine.
    """
    result, _ = _engine()(np.asarray(binarise(image).convert("RGB")))
    width, height = image.size
    words: list[Word] = []
    for block, (corners, text, score) in enumerate(result or []):
        tokens = str(text).split()
        if float(score) < MIN_SCORE or not tokens:
            continue
        xs = [point[0] / width for point in corners]
        ys = [point[1] / height for point in corners]
        x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
        # Split the line box by character share, counting one space between words.
        total = sum(len(t) for t in tokens) + len(tokens) - 1
        start = 0
        for token in tokens:
            left = x0 + (x1 - x0) * start / total
            right = x0 + (x1 - x0) * (start + len(token)) / total
            words.append(Word(text=token, box=(left, y0, right, y1), block=block))
            start += len(token) + 1
    return tuple(words)

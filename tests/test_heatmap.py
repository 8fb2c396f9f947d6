"""Heatmaps: a word's map peaks where the word is printed; overlays keep the page visible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from vdr import Index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.heatmap import overlay

from conftest import make_pdf


def test_query_word_map_peaks_on_the_printed_word(tmp_path: Path, encoder: TextGridEncoder) -> None:
    del encoder
    # "volcano" printed once, low on the right; unrelated words elsewhere on the page.
    pdf = make_pdf(
        tmp_path / "page.pdf",
        [
            [
                ("Minutes of the parish council meeting", 72, 80, 14),
                ("Budget for road repairs and street lighting", 72, 300, 12),
                ("volcano", 420, 700, 14),
            ]
        ],
    )
    with Index(tmp_path / "index") as index:
        index.add([pdf])
        (doc,) = index.documents()
        page_id = f"{doc.doc_id}-1"
        maps = index.similarity("volcano", page_id)
        page = index.page(page_id)
    rows, cols = page.embedding.grid
    assert maps.maps.shape == (len(maps.tokens), rows, cols)
    word = next(w for w in page.words if w.text == "volcano")
    row, col = np.unravel_index(np.nanargmax(maps.whole_query()), (rows, cols))
    x0, y0, x1, y1 = word.box
    assert int(y0 * rows) <= row <= int(y1 * rows)
    assert int(x0 * cols) <= col <= int(x1 * cols)
    # Patches without any word hold no value rather than a made-up zero.
    assert np.isnan(maps.maps).any()


def test_overlay_adds_a_legend_and_leaves_empty_patches_unpainted() -> None:
    page = Image.new("RGB", (200, 300), "white")
    grid = np.full((3, 2), np.nan, np.float32)
    grid[0, 0], grid[2, 1] = 0.2, 0.9
    drawn = overlay(page, grid, title="test")
    assert drawn.width == 200 and drawn.height > 300  # the page, then the legend below it
    pixels = np.asarray(drawn)
    assert (pixels[150, 50] == 255).all()  # patch (1, 0) has no data: page shows through
    assert not (pixels[20, 20] == 255).all() and not (pixels[280, 180] == 255).all()
    assert not np.array_equal(pixels[20, 20], pixels[280, 180])  # low and high differ


def test_word_maps_share_one_scale(tmp_path: Path, encoder: TextGridEncoder) -> None:
    """A word printed on the page is drawn hotter than a made-up one: each word's map is not
    stretched to its own range, so a weak match does not look as strong as a real one."""
    del encoder
    pdf = make_pdf(
        tmp_path / "page.pdf",
        [[("Minutes of the parish council meeting", 72, 80, 14), ("volcano", 420, 700, 14)]],
    )
    with Index(tmp_path / "index") as index:
        index.add([pdf])
        (doc,) = index.documents()
        maps = index.similarity("volcano zxqv", f"{doc.doc_id}-1")
    assert maps.words == ("volcano", "zxqv")
    blank = Image.new("RGB", (280, 360), "white")
    hottest = []
    for word_map in maps.word_maps():
        row, col = np.unravel_index(np.nanargmax(word_map), word_map.shape)
        rows, cols = word_map.shape
        drawn = np.asarray(overlay(blank, word_map)).astype(int)
        y, x = int((row + 0.5) * 360 / rows), int((col + 0.5) * 280 / cols)
        hottest.append(drawn[y, x])
    real, made_up = hottest
    # The ramp runs blue -> teal -> yellow -> red: red minus blue grows with the similarity.
    assert real[0] - real[2] > made_up[0] - made_up[2] + 60, (real, made_up)

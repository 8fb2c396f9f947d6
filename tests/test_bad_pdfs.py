"""The PDF intake's bounds: poppler stopped at its time and memory limits with a reason,
pages too odd to render refused, a giant page kept from dragging its neighbours down.

The bad files come from benches/bad_pdfs.py, which indexes all of them beside the samples;
test_indexer.py's test_bad_files_are_named_with_reasons_and_the_rest_indexed does the same
through the Python API. These tests take the limits themselves.
"""

from __future__ import annotations

import doctest
import sys
import time
from pathlib import Path

import psutil
import pytest
from reportlab.pdfgen.canvas import Canvas

from vdr import Index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.errors import BadDocument
from vdr.indexer import pdf, pipeline

from conftest import REPO

sys.path.insert(0, str(REPO / "benches"))
import bad_pdfs

LETTER = (612, 792)


def blank_page(path: Path, size: tuple[float, float]) -> None:
    canvas = Canvas(str(path), pagesize=size)
    canvas.showPage()
    canvas.save()


def poppler_children() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if p.name().startswith("pdf")]


def test_poppler_past_its_time_limit_is_stopped_and_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.pdf"
    bad_pdfs.nested_arrays(bomb, depth=100_000)  # pdfinfo takes ~2 s over it
    monkeypatch.setattr(pdf, "POPPLER_TIMEOUT_S", 0.3)
    monkeypatch.setattr(pdf, "POPPLER_S_PER_MB", 0.0)
    started = time.perf_counter()
    with pytest.raises(BadDocument, match=r"^reading the page count took over 0.3 s"):
        pdf.check_pdf(bomb)
    assert time.perf_counter() - started < 1.5
    assert poppler_children() == []


def test_poppler_complaints_are_kept_to_their_start_and_end(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.pdf"
    bad_pdfs.nested_arrays(bomb, depth=100_000)  # one complaint a level: ~6 MB of stderr
    run = pdf._poppler(["pdfinfo", str(bomb)], "reading the page count", bomb)
    assert run.returncode == 0 and b"Pages:           1" in run.stdout
    assert run.stderr.startswith(b"Syntax Error") and len(run.stderr) == pdf.STDERR_KEPT
    complaint = pdf.poppler_detail(run.stderr)
    assert complaint and "Syntax Error" not in complaint
    assert pdf.check_pdf(bomb) == pdf.PdfCheck(
        pages=1,
        damage=f"{complaint}; objects nested 100,001 deep, of which poppler reads 500",
    )


def test_poppler_past_its_memory_limit_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    poster = tmp_path / "poster.pdf"
    bad_pdfs.giant_page(poster)  # 50 million pixels at the dpi that fits: 150 MB of RGB
    monkeypatch.setattr(pdf, "POPPLER_MAX_MB", 100)
    with pytest.raises(BadDocument) as refused:
        pdf.render_pages(poster, 1, 1, dpi=pdf.fitting_dpi([(20_000, 20_000)], 150))
    assert str(refused.value) == (
        "rendering page 1 ran out of memory: poppler may use 100 MB (VDR_POPPLER_MAX_MB)"
    )
    monkeypatch.setattr(pdf, "POPPLER_MAX_MB", 2048)
    (image,) = pdf.render_pages(poster, 1, 1, dpi=10)
    assert image.size == (2778, 2778)


def test_a_page_without_a_size_or_as_thin_as_a_line_is_named_and_its_neighbours_kept(
    tmp_path: Path,
) -> None:
    loop = tmp_path / "loop.pdf"
    bad_pdfs.page_tree_loop(loop)
    assert pdf.check_pdf(loop).pages == 2  # pdfinfo trusts the count; the text layer cannot
    first, second = pdf.read_text_layer(loop)
    assert not first.problem and first.size[0] > 0
    assert second.problem == "it has no size: poppler finds no page there"
    strip = tmp_path / "strip.pdf"
    blank_page(strip, (2, 14_400))  # a 2 pt x 200 inch ribbon
    (ribbon,) = pdf.read_text_layer(strip)
    assert ribbon.problem.startswith("it is 2 x 14,400 pt, one side over 1,000 times the other")


def test_a_long_page_is_rendered_within_jpeg_side_limit(tmp_path: Path) -> None:
    scroll = tmp_path / "scroll.pdf"
    blank_page(scroll, (500, 40_000))  # 1,042 x 83,333 px at 150 dpi
    texts = pdf.read_text_layer(scroll)
    (image,) = pdf.render_pages(scroll, 1, 1, dpi=pdf.fitting_dpi([texts[0].size], 150))
    assert max(image.size) <= pdf.MAX_PAGE_SIDE and image.size[0] > 500


def test_a_giant_page_leaves_its_neighbours_at_full_resolution(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder  # loaded once per session; the index gets the same cached model
    folder = tmp_path / "pdfs"
    folder.mkdir()
    canvas = Canvas(str(folder / "atlas.pdf"))
    for number, size in enumerate([LETTER, (20_000, 20_000), LETTER], start=1):
        canvas.setPageSize(size)
        canvas.setFont("Helvetica", 12 if size == LETTER else 600)
        canvas.drawString(72, size[1] - 720, f"atlas sheet {number} harbour lighthouse")
        canvas.showPage()
    canvas.save()
    with Index(tmp_path / "index") as index:
        report = index.add([folder])
        assert report.skipped == [] and report.pages_encoded == 3
        assert report.notes == [
            (
                str(folder / "atlas.pdf"),
                "page 2 is 20,000 x 20,000 pt: rendered at 25.4 dpi instead of 150, within "
                "VDR_MAX_PAGE_PIXELS",
            )
        ]
        (doc,) = index.documents()
        sizes = [index.page_image(f"{doc.doc_id}-{page}").size for page in (1, 2, 3)]
    assert sizes[0] == sizes[2] == (1275, 1650)  # 8.5 x 11 inches at 150 dpi
    assert sizes[1][0] * sizes[1][1] <= pdf.MAX_PAGE_PIXELS


def test_intake_doctests_pass() -> None:
    """indexer/ lies outside the suite's doctest paths (it is vdr.indexer only once
    installed): run its examples here."""
    for module in (pdf, pipeline):
        assert doctest.testmod(module).failed == 0, module.__name__

"""Figures on generated pages: found where they are drawn, named by kind and colour, lit by a
query that describes them, and named in the evidence of a search."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from reportlab.graphics import renderPDF
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.piecharts import Pie
from reportlab.graphics.shapes import Drawing
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from vdr import Index
from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.errors import VdrError
from vdr.figures.classifier import FigureClassifier, shipped
from vdr.figures.describe import colour_names
from vdr.figures.regions import find_regions
from vdr.figures.synthetic import KINDS
from vdr.indexer.documents import open_document

from conftest import REPO

PROSE = (
    "The harbour office keeps a ledger of every vessel that enters the basin, with its "
    "length, its draught and the berth it was given on arrival at the quay."
)
# Where the chart is drawn on the page, in points from the bottom-left (reportlab's origin).
CHART_AT = (100, 300)
CHART_SIZE = (400, 260)


def chart_page(path: Path, kind: str) -> Path:
    """An A4 PDF: two lines of prose at the top, a chart below them (blue and red bars, or a
    pie in green, orange and purple), and a line of prose under it."""
    drawing = Drawing(*CHART_SIZE)
    if kind == "bar":
        chart = VerticalBarChart()
        chart.x, chart.y, chart.width, chart.height = 40, 30, 340, 210
        chart.data = [[30, 55, 42, 70, 25], [45, 20, 60, 35, 50]]
        chart.categoryAxis.categoryNames = ["north", "south", "east", "west", "centre"]
        chart.bars[0].fillColor = colors.HexColor("#1f5fbf")
        chart.bars[1].fillColor = colors.HexColor("#d62728")
    else:
        chart = Pie()
        chart.x, chart.y, chart.width, chart.height = 100, 20, 220, 220
        chart.data = [40, 35, 25]
        for i, colour in enumerate(["#2ca02c", "#ff7f0e", "#8c3fbf"]):
            chart.slices[i].fillColor = colors.HexColor(colour)
    drawing.add(chart)
    canvas = Canvas(str(path), pagesize=A4, invariant=1)
    canvas.setFont("Helvetica", 11)
    canvas.drawString(72, 780, PROSE[:90])
    canvas.drawString(72, 765, PROSE[90:])
    renderPDF.draw(drawing, canvas, *CHART_AT)
    canvas.drawString(72, 250, "Figure 1. Vessels per quay over the last season.")
    canvas.save()
    return path


def chart_box() -> tuple[float, float, float, float]:
    """The chart's drawing area as fractions of the A4 page, origin top-left."""
    width, height = A4
    x, y = CHART_AT
    return (
        x / width,
        1 - (y + CHART_SIZE[1]) / height,
        (x + CHART_SIZE[0]) / width,
        1 - y / height,
    )


def overlap(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """Intersection over the smaller box's area."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return w * h / smaller


def rendered(pdf: Path) -> tuple[Image.Image, tuple]:
    opened = open_document(pdf, ())
    (image,) = opened.render(1, 1)
    return image, opened.pages[0].words


@pytest.mark.parametrize("kind", ["bar", "pie"])
def test_a_chart_is_found_where_it_is_drawn_and_named(kind: str, tmp_path: Path) -> None:
    image, words = rendered(chart_page(tmp_path / "page.pdf", kind))
    (region,) = find_regions(image, words)
    assert overlap(region.box, chart_box()) > 0.6
    x0, y0, x1, y1 = region.box
    crop = image.crop((x0 * image.width, y0 * image.height, x1 * image.width, y1 * image.height))
    (named,) = shipped().predict([crop])
    assert named[0] == {"bar": "bar chart", "pie": "pie chart"}[kind]
    expected = {"bar": {"blue", "red"}, "pie": {"green", "orange", "purple"}}[kind]
    assert expected <= set(colour_names(crop))


@pytest.mark.parametrize(
    ("rgb", "name"),
    [
        ((214, 39, 40), "red"),
        ((232, 163, 23), "orange"),  # the sample report's amber bars
        ((255, 127, 14), "orange"),
        ((242, 208, 34), "yellow"),
        ((44, 160, 44), "green"),
        ((31, 95, 191), "blue"),
        ((140, 63, 191), "purple"),
        ((120, 70, 20), "brown"),
        ((128, 128, 128), "grey"),
        ((17, 17, 17), "black"),
    ],
)
def test_colours_are_named_as_people_name_them(rgb: tuple[int, int, int], name: str) -> None:
    patch = Image.new("RGB", (60, 60), "white")
    patch.paste(rgb, (10, 10, 50, 50))  # paper around it is never a colour
    assert colour_names(patch) == (name,)


def test_a_page_of_text_has_no_figure(tmp_path: Path) -> None:
    canvas = Canvas(str(tmp_path / "text.pdf"), pagesize=A4, invariant=1)
    canvas.setFont("Helvetica", 11)
    for line in range(40):
        canvas.drawString(72, 780 - 16 * line, PROSE[: 60 + line % 30])
    canvas.save()
    assert find_regions(*rendered(tmp_path / "text.pdf")) == []


def test_a_query_describing_the_chart_lights_it_and_its_evidence_names_it(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    del encoder  # loaded once for the session; the index gets the same cached model
    folder = tmp_path / "pdfs"
    folder.mkdir()
    chart_page(folder / "quays.pdf", "bar")
    index_dir = str(tmp_path / "index")
    assert main(["index", str(folder), "--index", index_dir, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "bar chart in blue and red", "--index", index_dir, "--json"]) == 0
    (hit,) = json.loads(capsys.readouterr().out)
    assert {"bar", "chart", "blue", "red"} <= set(hit["evidence"]["words"])
    with Index(Path(index_dir)) as index:
        maps = index.similarity("bar chart", hit["page_id"])
        described = [w.text for w in index.page(hit["page_id"]).words if w.describes_figure]
    assert described[:2] == ["bar", "chart"] and {"blue", "red"} <= set(described[2:])
    whole = maps.whole_query()  # [rows, cols], NaN where a patch has no vectors
    rows, cols = whole.shape
    x0, y0, x1, y1 = chart_box()
    inside = np.zeros_like(whole, dtype=bool)
    inside[int(y0 * rows) + 1 : int(y1 * rows) - 1, int(x0 * cols) + 1 : int(x1 * cols) - 1] = True
    assert np.isfinite(whole[inside]).mean() > 0.9  # the chart's patches carry vectors
    assert inside.flat[np.nanargmax(whole)]  # the best match on the page is on the chart
    assert np.nanmean(whole[inside]) > np.nanmean(whole[~inside])
    out = tmp_path / "chart.png"
    argv = ["heatmap", "bar chart", "--page", hit["page_id"], "--index", index_dir, "-o", str(out)]
    assert main(argv) == 0
    with Image.open(out) as drawn, Index(Path(index_dir)) as index:
        plain = index.page_image(hit["page_id"]).convert("RGB")
        shown = np.asarray(drawn.convert("RGB").crop((0, 0, *plain.size)), dtype=np.int16)
    changed = np.abs(shown - np.asarray(plain, dtype=np.int16)).max(axis=2) > 30
    h, w = changed.shape
    # the overlay colours most of the chart
    assert changed[int(y0 * h) : int(y1 * h), int(x0 * w) : int(x1 * w)].mean() > 0.5


@pytest.fixture()
def quays(tmp_path: Path, encoder: TextGridEncoder) -> Path:
    """A folder holding one page with a bar chart; the session's encoder loaded."""
    del encoder
    folder = tmp_path / "pdfs"
    folder.mkdir()
    chart_page(folder / "quays.pdf", "bar")
    return folder


def test_kind_and_text_adds_the_caption_and_the_labels(quays: Path, tmp_path: Path) -> None:
    folder = quays
    with Index(tmp_path / "index", figures="kind+text") as index:
        index.add([folder])
        (doc,) = index.documents()
        described = [w.text for w in index.page(f"{doc.doc_id}-1").words if w.describes_figure]
    # kind and colours, then the caption without its label, then the chart's own labels
    assert described[:2] == ["bar", "chart"] and {"blue", "red"} <= set(described[2:5])
    assert "Vessels per quay over the last season." in " ".join(described)
    assert "Figure" not in described and {"north", "centre"} <= set(described)


def test_an_index_without_figure_descriptions_says_so(quays: Path, tmp_path: Path) -> None:
    folder = quays
    with Index(tmp_path / "index", figures="none") as index:
        index.add([folder])
        (hit,) = index.search("bar chart in blue and red", k=1)
        assert "chart" not in hit.evidence.words
    with pytest.raises(VdrError, match="describes figures as 'none', not 'kind'"):
        Index(tmp_path / "index", figures="kind")


def test_the_train_command_writes_weights_the_classifier_loads(tmp_path: Path) -> None:
    out = tmp_path / "tiny.safetensors"
    command = [sys.executable, "-m", "vdr.figures.train", "--per-kind", "2", "--epochs", "1"]
    run = subprocess.run([*command, "--out", str(out)], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "held-out accuracy" in run.stdout
    assert FigureClassifier(out).kinds == tuple(KINDS)

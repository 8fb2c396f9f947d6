"""A validation set of generated documents whose figures are known: charts, tables, diagrams and
photographs beside prose pages, with the queries the generator writes about them.

    python benches/visual_set.py OUT_DIR [--documents N] [--seed S]
    vdr eval OUT_DIR                  # today's default on it, by query type

Writes OUT_DIR/pdfs/*.pdf, OUT_DIR/queries.jsonl and OUT_DIR/qrels.tsv in the layout of
`vdr eval` (the dev set's). Nothing here comes from Debian documentation, nor is chosen on
the dev set: the prose is the package descriptions (METADATA) and docs installed beside vdr,
as in benches/no_match.py; the figures are drawn by reportlab (charts, tables, diagrams) and
Pillow (photographs), each kind with named colours drawn at random.

Every page of a document is one PDF page: prose pages, and figure pages holding a short
paragraph, the figure and its caption ("Figure N. <title>", the title made of the document's
own words, as real captions rarely name the kind of chart). Some prose pages of other
documents mention a kind of figure in passing ("an earlier draft showed this as a pie chart"),
as real text does: a page that talks about a chart is not one that shows it.

Queries, one page relevant each (grade 2):
- visual: the figure by its kind and colours ("stacked bar chart in blue and orange"), or its
  kind and caption words ("line chart of harbour rainfall per month");
- extractive: a phrase copied from a prose page;
- non_extractive: a few of a page's content words inside a generic request.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import re
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from PIL import Image, ImageDraw, ImageFilter
from reportlab.graphics.charts.barcharts import HorizontalBarChart, VerticalBarChart
from reportlab.graphics.charts.doughnut import Doughnut
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.charts.piecharts import Pie
from reportlab.graphics.charts.spider import SpiderChart
from reportlab.graphics.shapes import Drawing, Line, Polygon, Rect, String
from reportlab.graphics.widgets.markers import makeMarker
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.units import cm
from reportlab.platypus import (
    Flowable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)
from reportlab.platypus import Image as PlacedImage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from no_match import BODY, REQUEST_WORDS, STYLES, content_words, descriptions

SEED = 22
DOCUMENTS = 40
PROSE_PAGES = 2  # per document, before its figure pages
FIGURES_PER_DOCUMENT = 2
WORDS_PER_PAGE = 230
MENTION_SHARE = 0.3  # of prose pages that mention a kind of figure in passing
COLOURS = {
    "red": colors.HexColor("#d62728"),
    "blue": colors.HexColor("#1f5fbf"),
    "green": colors.HexColor("#2ca02c"),
    "orange": colors.HexColor("#ff7f0e"),
    "purple": colors.HexColor("#8c3fbf"),
    "grey": colors.HexColor("#808080"),
    "yellow": colors.HexColor("#f2d022"),
    "black": colors.HexColor("#111111"),
}
CAPTION = STYLES["Italic"]


@dataclass(frozen=True)
class Figure:
    """One figure: its kind as a person names it, the colours it is drawn in, its caption
    title, and the words it prints (labels, cells)."""

    kind: str
    colours: tuple[str, ...]
    title: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class GeneratedPage:
    paragraphs: tuple[str, ...]
    figure: Figure | None = None


def _values(rng: random.Random, n: int) -> list[int]:
    return [rng.randint(8, 95) for _ in range(n)]


def bar_like(figure: Figure, rng: random.Random) -> Drawing:
    """Vertical, grouped, stacked or horizontal bars: one series a colour."""
    drawing = Drawing(420, 260)
    chart = HorizontalBarChart() if figure.kind == "horizontal bar chart" else VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 60, 30, 330, 200
    chart.data = [_values(rng, len(figure.labels)) for _ in figure.colours]
    chart.categoryAxis.categoryNames = list(figure.labels)
    if figure.kind == "stacked bar chart":
        chart.categoryAxis.style = "stacked"
    chart.valueAxis.valueMin = 0
    for series, name in enumerate(figure.colours):
        chart.bars[series].fillColor = COLOURS[name]
    drawing.add(chart)
    return drawing


def line_like(figure: Figure, rng: random.Random) -> Drawing:
    """A line chart (one line a colour) or a scatter plot (markers, no lines)."""
    drawing = Drawing(420, 260)
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 50, 30, 340, 200
    scatter = figure.kind == "scatter plot"
    series = []
    for _ in figure.colours:
        if scatter:
            series.append([(rng.uniform(0, 100), rng.uniform(0, 100)) for _ in range(40)])
        else:
            level = rng.uniform(20, 80)
            points = []
            for x in range(12):
                level = min(100.0, max(0.0, level + rng.uniform(-12, 12)))
                points.append((x, level))
            series.append(points)
    plot.data = series
    for i, name in enumerate(figure.colours):
        plot.lines[i].strokeColor = COLOURS[name]
        plot.lines[i].strokeWidth = 2
        if scatter:
            plot.lines[i].symbol = makeMarker("FilledCircle", fillColor=COLOURS[name], size=4)
    if scatter:
        plot.lineLabelFormat = None
        for i in range(len(series)):
            plot.lines[i].strokeWidth = 0
            plot.lines[i].strokeColor = None
    drawing.add(plot)
    return drawing


def pie_like(figure: Figure, rng: random.Random) -> Drawing:
    """A pie or doughnut chart, a slice a colour, labelled."""
    drawing = Drawing(420, 260)
    chart = Doughnut() if figure.kind == "doughnut chart" else Pie()
    chart.x, chart.y, chart.width, chart.height = 110, 20, 210, 210
    chart.data = _values(rng, len(figure.colours))
    chart.labels = list(figure.labels[: len(figure.colours)])
    for i, name in enumerate(figure.colours):
        chart.slices[i].fillColor = COLOURS[name]
    drawing.add(chart)
    return drawing


def radar(figure: Figure, rng: random.Random) -> Drawing:
    drawing = Drawing(420, 260)
    chart = SpiderChart()
    chart.x, chart.y, chart.width, chart.height = 110, 20, 210, 210
    chart.data = [_values(rng, len(figure.labels)) for _ in figure.colours]
    chart.labels = list(figure.labels)
    for i, name in enumerate(figure.colours):
        chart.strands[i].strokeColor = COLOURS[name]
        chart.strands[i].fillColor = None
        chart.strands[i].strokeWidth = 2
    drawing.add(chart)
    return drawing


def flowchart(figure: Figure, rng: random.Random) -> Drawing:
    """Boxes in a row or a column, each labelled, joined by arrows."""
    drawing = Drawing(420, 260)
    n = len(figure.labels)
    fill = COLOURS[figure.colours[0]]
    for i, label in enumerate(figure.labels):
        x, y = 20 + i * (380 / n), 110 + rng.choice([-50, 0, 50])
        drawing.add(Rect(x, y, 380 / n - 25, 40, fillColor=fill, strokeColor=colors.black))
        drawing.add(String(x + 4, y + 16, label, fontSize=9, fillColor=colors.white))
        if i + 1 < n:
            x1 = x + 380 / n - 25
            drawing.add(Line(x1, y + 20, x1 + 24, 130, strokeWidth=1.5))
            drawing.add(Polygon([x1 + 24, 130, x1 + 17, 134, x1 + 17, 126], fillColor=colors.black))
    return drawing


def table(figure: Figure, rng: random.Random) -> Table:
    """A ruled table: a header row of labels, rows of numbers, the header shaded."""
    header = list(figure.labels[:4])
    rows = [[str(rng.randint(10, 999)) for _ in header] for _ in range(rng.randint(5, 9))]
    placed = Table([header, *rows])
    placed.setStyle(
        TableStyle(
            [
                ("GRID", (0, 0), (-1, -1), 0.6, colors.black),
                ("BACKGROUND", (0, 0), (-1, 0), COLOURS[figure.colours[0]]),
                ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
            ]
        )
    )
    return placed


def photograph(figure: Figure, rng: random.Random) -> PlacedImage:
    """A landscape as a camera might take it: sky, sun, hills or mountains, blurred noise."""
    width, height = 640, 420
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    top, bottom = (40, 90, 200), (170, 210, 240)
    for y in range(height):
        t = y / height
        draw.line(
            [(0, y), (width, y)],
            fill=tuple(int(a + (b - a) * t) for a, b in zip(top, bottom, strict=True)),
        )
    sun = (rng.randint(60, 580), rng.randint(40, 140))
    draw.ellipse([sun[0] - 35, sun[1] - 35, sun[0] + 35, sun[1] + 35], fill=(250, 220, 90))
    ground = (60, 130, 60) if "green" in figure.colours else (120, 110, 100)
    for layer in range(3):
        base = 240 + layer * 50
        points = [(0, height)]
        for x in range(0, width + 40, 40):
            points.append((x, base - rng.randint(0, 120 - layer * 30)))
        points.append((width, height))
        shade = tuple(max(0, c - layer * 20) for c in ground)
        draw.polygon(points, fill=shade)
    noise = Image.effect_noise((width, height), 24).convert("RGB")
    image = Image.blend(image, noise, 0.12).filter(ImageFilter.GaussianBlur(1.2))
    return PlacedImage(_png(image), width=14 * cm, height=14 * cm * height / width)


def _png(image: Image.Image) -> io.BytesIO:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    buffer.seek(0)
    return buffer


# Each kind of figure: how many colours and labels it takes, and how to draw it.
KINDS: dict[str, tuple[int, int, Callable[[Figure, random.Random], Flowable | Drawing]]] = {
    "bar chart": (1, 6, bar_like),
    "grouped bar chart": (2, 5, bar_like),
    "stacked bar chart": (3, 5, bar_like),
    "horizontal bar chart": (1, 6, bar_like),
    "line chart": (2, 0, line_like),
    "scatter plot": (2, 0, line_like),
    "pie chart": (4, 4, pie_like),
    "doughnut chart": (3, 3, pie_like),
    "radar chart": (2, 6, radar),
    "flowchart": (1, 4, flowchart),
    "table": (1, 4, table),
    "photograph": (1, 0, photograph),
}
MENTIONS = (
    "An earlier draft showed these {w} figures as a {kind}, which readers found hard to follow.",
    "A {kind} would suit the {w} numbers, but the text gives them in full instead.",
    "Reviewers asked for a {kind} of the {w} results; it was left out for space.",
)


def make_documents(rng: random.Random, n_docs: int) -> dict[str, list[GeneratedPage]]:
    packages = descriptions()
    chosen = rng.sample(sorted(packages), min(n_docs, len(packages)))
    docs = {}
    for name in chosen:
        paragraphs = list(packages[name])
        pages: list[GeneratedPage] = []
        current: list[str] = []
        while paragraphs and len(pages) < PROSE_PAGES:
            current.append(paragraphs.pop(0))
            if sum(len(p.split()) for p in current) >= WORDS_PER_PAGE:
                pages.append(GeneratedPage(tuple(current)))
                current = []
        if not pages:
            continue
        words = list(
            dict.fromkeys(w.lower() for p in pages for w in content_words(" ".join(p.paragraphs)))
        )
        if len(words) < 12:
            continue
        for _ in range(FIGURES_PER_DOCUMENT):
            kind = rng.choice(sorted(KINDS))
            n_colours, n_labels, _ = KINDS[kind]
            picked = rng.sample(words, 3 + n_labels)
            figure = Figure(
                kind=kind,
                colours=tuple(rng.sample(sorted(COLOURS), n_colours)),
                title=f"{picked[0]} {picked[1]} per {picked[2]}",
                labels=tuple(picked[3:]),
            )
            lead = paragraphs.pop(0) if paragraphs else pages[0].paragraphs[0]
            pages.append(GeneratedPage((" ".join(lead.split()[:90]),), figure))
        docs[f"vis_{name}"] = pages
    # Prose that talks about a kind of figure, on pages that show none.
    for pages in docs.values():
        for number, page in enumerate(pages):
            if page.figure is None and rng.random() < MENTION_SHARE:
                word = rng.choice(content_words(" ".join(page.paragraphs)) or ["main"])
                mention = rng.choice(MENTIONS).format(
                    w=word.lower(), kind=rng.choice(sorted(KINDS))
                )
                pages[number] = GeneratedPage((*page.paragraphs, mention))
    return docs


def write_pdf(path: Path, pages: Sequence[GeneratedPage], rng: random.Random) -> None:
    story: list[Flowable] = []
    figure_number = 0
    for number, page in enumerate(pages):
        if number:
            story.append(PageBreak())
        story.extend(Paragraph(escape(p), BODY) for p in page.paragraphs)
        if page.figure:
            figure_number += 1
            draw = KINDS[page.figure.kind][2]
            story += [
                Spacer(1, 0.6 * cm),
                draw(page.figure, rng),
                Spacer(1, 0.3 * cm),
                Paragraph(escape(f"Figure {figure_number}. {page.figure.title}"), CAPTION),
            ]
    SimpleDocTemplate(str(path), pagesize=A4, invariant=1).build(story)


def queries(docs: dict[str, list[GeneratedPage]], rng: random.Random) -> list[dict]:
    """Every query with its type and its one relevant page."""
    out = []
    for stem, pages in docs.items():
        for number, page in enumerate(pages, 1):
            target = {"doc": stem, "page": number}
            if page.figure:
                figure = page.figure
                shown = " and ".join(figure.colours[:2])
                if figure.kind in ("table", "photograph", "flowchart"):
                    by_look = (
                        f"{figure.kind} with {shown}"
                        if figure.kind != "photograph"
                        else ("photograph of a landscape with hills and the sun")
                    )
                else:
                    by_look = f"{figure.kind} in {shown}"
                out.append({"text": by_look, "type": "visual", **target})
                out.append({"text": f"{figure.kind} of {figure.title}", "type": "visual", **target})
                continue
            sentences = [s.split() for p in page.paragraphs for s in p.split(". ")]
            sentence = rng.choice([s for s in sentences if len(s) >= 6] or sentences)
            length = rng.randint(4, min(9, len(sentence)))
            start = rng.randint(0, len(sentence) - length)
            phrase = " ".join(w.strip(".,;:()\"'") for w in sentence[start : start + length])
            out.append({"text": phrase, "type": "extractive", **target})
            words = list(dict.fromkeys(content_words(" ".join(page.paragraphs))))
            picked = rng.sample(words, min(3, len(words)))
            asked = f"{rng.choice(REQUEST_WORDS)} {' '.join(picked)}"
            out.append({"text": asked, "type": "non_extractive", **target})
    return out


def page_count(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    return int(re.search(r"^Pages:\s+(\d+)", info.stdout, re.MULTILINE)[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the set's folder (pdfs/, queries.jsonl, qrels.tsv)")
    parser.add_argument("--documents", type=int, default=DOCUMENTS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    docs = make_documents(rng, args.documents)
    (args.out / "pdfs").mkdir(parents=True, exist_ok=True)
    for stem, pages in docs.items():
        pdf = args.out / "pdfs" / f"{stem}.pdf"
        write_pdf(pdf, pages, rng)
        if page_count(pdf) != len(pages):  # a page that overflowed would shift the qrels
            sys.exit(f"{pdf} has {page_count(pdf)} pages, not the {len(pages)} generated")
    written = queries(docs, rng)
    with (args.out / "queries.jsonl").open("w") as out:
        for number, query in enumerate(written, 1):
            row = {"qid": f"vis-q{number:04d}", "text": query["text"], "type": query["type"]}
            out.write(json.dumps(row) + "\n")
    with (args.out / "qrels.tsv").open("w") as out:
        for number, query in enumerate(written, 1):
            out.write(f"vis-q{number:04d}\t{query['doc']}\t{query['page']}\t2\n")
    kinds = sorted({p.figure.kind for pages in docs.values() for p in pages if p.figure})
    n_pages = sum(len(pages) for pages in docs.values())
    print(
        f"wrote {len(docs)} documents ({n_pages} pages; figures: {', '.join(kinds)}) and "
        f"{len(written)} queries to {args.out}"
    )


if __name__ == "__main__":
    main()

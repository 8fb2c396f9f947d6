"""Generate the small sample PDFs used by the vdr demo and test-suite.

vdr indexes folders of PDFs and searches their pages by text, so the samples
cover the page types it has to cope with, each page carrying its own
distinctive vocabulary so that a test can query for one specific page:

* ``solar_report.pdf`` (3 pages): an annual report of a fictional solar
  cooperative -- page 1 prose, page 2 a ruled table, page 3 a bar chart.
* ``bike_maintenance.pdf`` (2 pages): a bicycle maintenance how-to -- page 1
  prose with a numbered list, page 2 a vector diagram and a numbered list.
* ``scanned_letter.pdf`` (1 page): a business letter rendered to a noisy,
  slightly rotated greyscale JPEG with no text layer, as a scanner would
  produce it; it can only be searched after OCR.

Output is deterministic: reportlab runs in invariant mode and the scan noise
uses a fixed seed, so rerunning the script reproduces the same bytes.

Usage: ``python samples/make_samples.py [OUT_DIR]`` (default: samples/pdfs).
"""

from __future__ import annotations

import argparse
import io
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageChops, ImageDraw, ImageFilter, ImageFont
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Circle, Drawing, Group, Line, Rect, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.lib.utils import ImageReader
from reportlab.pdfgen.canvas import Canvas
from reportlab.platypus import (
    Flowable,
    ListFlowable,
    PageBreak,
    Paragraph,
    SimpleDocTemplate,
    Spacer,
    Table,
    TableStyle,
)

DEFAULT_OUT_DIR = Path(__file__).resolve().parent / "pdfs"

STYLES = getSampleStyleSheet()
BODY = ParagraphStyle("Body", parent=STYLES["BodyText"], fontSize=10.5, leading=14.5)
CAPTION = ParagraphStyle(
    "Caption", parent=BODY, fontName="Helvetica-Oblique", fontSize=9, leading=12
)

QUARTERS = ("Q1", "Q2", "Q3", "Q4")
# Quarterly generation in MWh per site; the monthly figures below add up to
# the same quarterly totals, so the table and the chart agree.
SITE_GENERATION: dict[str, tuple[float, float, float, float]] = {
    "Millbrook Primary School": (27.3, 69.0, 63.7, 23.5),
    "Hollow Lane Dairy Barn": (40.2, 101.5, 93.7, 34.6),
    "Riverside Sports Hall": (17.3, 43.8, 40.4, 14.9),
    "Eastgate Business Park": (48.4, 122.4, 113.0, 41.7),
    "St Aidan's Community Centre": (13.3, 33.5, 30.9, 11.4),
    "Ferncombe Water Works": (66.0, 167.0, 154.1, 56.9),
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
MONTHLY_OUTPUT_MWH = (38.4, 62.0, 112.1, 153.5, 186.0, 197.7, 194.8, 171.2, 129.8, 97.4, 51.7, 33.9)

SCAN_DPI = 150
SCAN_SEED = 20240311
SCAN_ROTATION_DEG = 0.35
SCAN_JPEG_QUALITY = 45
LETTER_LINES = (
    "PORTHAVEN HARBOUR AUTHORITY",
    "Harbour Office, 3 Quay Street, Porthaven PH4 2QL",
    "Telephone 01632 960 417",
    "",
    "11 March 2024",
    "",
    "Ms Eleanor Marsh, Operations Manager",
    "Marlow Marine Contractors Ltd",
    "Unit 7, Slipway Industrial Estate, Porthaven PH4 5RT",
    "",
    "Our reference: HDP-2024-017",
    "",
    "Dear Ms Marsh,",
    "",
    "Re: Harbour dredging permit for the Inner Basin and Fish Quay berths",
    "",
    "Further to your application of 12 February, the Harbour Authority is pleased "
    "to grant a maintenance dredging permit for the Inner Basin and the two Fish "
    "Quay berths, subject to the conditions set out below.",
    "",
    "1. Dredging may only take place between 1 October and 28 February, outside "
    "the herring spawning season, and within two hours either side of high water.",
    "2. Dredged sediment must be disposed of at the licensed offshore site PH-D3. "
    "No material may be deposited within the harbour limits.",
    "3. A turbidity monitoring buoy must be kept at the harbour entrance for the "
    "duration of the works, with readings sent to the Harbour Master each week.",
    "4. The dredger must display the signals required by the local port bylaws "
    "and keep a listening watch on VHF channel 14.",
    "",
    "The sediment sampling results you supplied show contaminant levels below "
    "the action thresholds, so no further testing is required before work begins. "
    "This permit is valid for one dredging season and may not be transferred.",
    "",
    "Please contact the Harbour Master's office at least seven days before the "
    "dredger arrives so that berth closures can be notified to harbour users.",
    "",
    "Yours sincerely,",
    "",
    "",
    "Captain Robert Tregenza",
    "Harbour Master, Porthaven Harbour Authority",
)


def page_footer(label: str) -> Callable[[Canvas, SimpleDocTemplate], None]:
    """Return a platypus page callback that draws ``label`` and the page number."""

    def draw(canvas: Canvas, doc: SimpleDocTemplate) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 8)
        canvas.setFillColor(colors.grey)
        canvas.drawString(doc.leftMargin, 1.2 * cm, label)
        canvas.drawRightString(A4[0] - doc.rightMargin, 1.2 * cm, f"Page {doc.page}")
        canvas.restoreState()

    return draw


def build_pdf(path: Path, title: str, footer: str, story: list[Flowable]) -> None:
    """Lay out ``story`` on A4 pages with a footer, in reportlab invariant mode."""
    doc = SimpleDocTemplate(
        str(path),
        pagesize=A4,
        title=title,
        author="vdr sample generator",
        leftMargin=2.2 * cm,
        rightMargin=2.2 * cm,
        topMargin=2 * cm,
        bottomMargin=2 * cm,
        invariant=1,
    )
    on_page = page_footer(footer)
    doc.build(story, onFirstPage=on_page, onLaterPages=on_page)


def numbered_list(items: list[str]) -> ListFlowable:
    """Return a numbered list flowable with one paragraph per item."""
    return ListFlowable(
        [Paragraph(item, BODY) for item in items],
        bulletType="1",
        bulletFormat="%s.",
        bulletFontName=BODY.fontName,
        bulletFontSize=BODY.fontSize,
        leftIndent=18,
    )


def generation_table() -> Table:
    """Return the ruled table of quarterly generation per site, with totals."""
    rows: list[list[str]] = [["Site", *QUARTERS, "Year"]]
    for site, quarters in SITE_GENERATION.items():
        rows.append([site, *(f"{q:.1f}" for q in quarters), f"{sum(quarters):.1f}"])
    totals = [sum(q[i] for q in SITE_GENERATION.values()) for i in range(4)]
    rows.append(["All sites", *(f"{t:.1f}" for t in totals), f"{sum(totals):.1f}"])

    table = Table(rows, colWidths=[5.6 * cm] + [2.0 * cm] * 5, hAlign="LEFT")
    table.setStyle(
        TableStyle(
            [
                ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
                ("FONTNAME", (0, -1), (-1, -1), "Helvetica-Bold"),
                ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#2f5d50")),
                ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
                ("BACKGROUND", (0, -1), (-1, -1), colors.HexColor("#e4efe9")),
                ("ALIGN", (1, 0), (-1, -1), "RIGHT"),
                ("GRID", (0, 0), (-1, -1), 0.6, colors.HexColor("#4d4d4d")),
                ("TOPPADDING", (0, 0), (-1, -1), 5),
                ("BOTTOMPADDING", (0, 0), (-1, -1), 5),
            ]
        )
    )
    return table


def monthly_output_chart() -> Drawing:
    """Return a bar chart of monthly output with a title and axis labels."""
    drawing = Drawing(440, 300)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 60, 50, 360, 210
    chart.data = [MONTHLY_OUTPUT_MWH]
    chart.bars[0].fillColor = colors.HexColor("#e8a317")
    chart.bars[0].strokeColor = colors.HexColor("#8a5d00")
    chart.categoryAxis.categoryNames = list(MONTHS)
    chart.categoryAxis.labels.fontSize = 8
    chart.valueAxis.valueMin = 0
    chart.valueAxis.valueMax = 225
    chart.valueAxis.valueStep = 25
    chart.valueAxis.labels.fontSize = 8
    chart.valueAxis.visibleGrid = True
    chart.valueAxis.gridStrokeColor = colors.HexColor("#d0d0d0")
    drawing.add(chart)

    drawing.add(
        String(
            240,
            282,
            "Monthly Solar Output, 2023 (all sites)",
            fontName="Helvetica-Bold",
            fontSize=12,
            textAnchor="middle",
        )
    )
    drawing.add(String(240, 18, "Month", fontSize=10, textAnchor="middle"))
    y_label = Group(String(0, 0, "Output (MWh)", fontSize=10, textAnchor="middle"))
    y_label.translate(22, 155)
    y_label.rotate(90)
    drawing.add(y_label)
    return drawing


def make_solar_report(out_dir: Path) -> Path:
    """Write the 3-page solar cooperative annual report: prose, table, chart."""
    path = out_dir / "solar_report.pdf"
    annual_total = sum(MONTHLY_OUTPUT_MWH)
    story: list[Flowable] = [
        Paragraph("Sunridge Energy Cooperative", STYLES["Title"]),
        Paragraph("Annual Report 2023", STYLES["Heading2"]),
        Paragraph(
            "2023 was the cooperative's busiest year since its founding. Our six "
            "community solar sites produced a combined "
            f"{annual_total:,.1f} MWh of electricity, enough to cover the yearly "
            "consumption of roughly 480 households, and membership grew from "
            "1,214 to 1,387 local shareholders.",
            BODY,
        ),
        Paragraph("Rooftop installations", STYLES["Heading3"]),
        Paragraph(
            "Volunteers and our installation partner completed the new rooftop "
            "array on Millbrook Primary School in April and re-roofed the Hollow "
            "Lane Dairy Barn before fitting 250 kWp of panels in June. Every "
            "rooftop installation was preceded by a structural survey, and the "
            "school now uses a live display in its entrance hall to teach pupils "
            "how the panels respond to cloud cover.",
            BODY,
        ),
        Paragraph("Battery storage pilot", STYLES["Heading3"]),
        Paragraph(
            "In September we commissioned a 1.2 MWh lithium iron phosphate "
            "community battery beside the Ferncombe Water Works array. The "
            "battery storage pilot shifts midday surplus into the evening peak; "
            "in its first three months it raised on-site self-consumption from "
            "61% to 78% and earned grid balancing payments of 9,400 euros.",
            BODY,
        ),
        Paragraph("Member assembly", STYLES["Heading3"]),
        Paragraph(
            "The annual member assembly met on 18 November in St Aidan's "
            "Community Centre, with 312 members attending in person and 96 "
            "voting online. The assembly approved a 3.5% dividend on member "
            "shares, elected two new directors to the board and endorsed a "
            "feasibility study for a solar carport at Eastgate Business Park.",
            BODY,
        ),
        PageBreak(),
        Paragraph("Quarterly Generation Table", STYLES["Heading2"]),
        Paragraph(
            "The quarterly generation table below lists the electricity exported "
            "by each site in megawatt-hours (MWh). Figures are metered at the "
            "inverter and audited by the board's finance committee.",
            BODY,
        ),
        Spacer(1, 0.4 * cm),
        generation_table(),
        Spacer(1, 0.4 * cm),
        Paragraph(
            "Table 1. Quarterly generation per site in MWh, 2023. Ferncombe Water "
            "Works, our largest ground-mounted array, supplied 31% of the total.",
            CAPTION,
        ),
        PageBreak(),
        Paragraph("Monthly Output Chart", STYLES["Heading2"]),
        Paragraph(
            "Seasonal variation remains the dominant factor in our output: the "
            "sunniest month produced almost six times as much as the darkest.",
            BODY,
        ),
        Spacer(1, 0.5 * cm),
        monthly_output_chart(),
        Spacer(1, 0.3 * cm),
        Paragraph(
            "Figure 1. Monthly output bar chart for all sites combined. Output "
            "peaked in June at 197.7 MWh and fell to 33.9 MWh in December, when "
            "short days and snow on the barn roof limited generation.",
            CAPTION,
        ),
    ]
    build_pdf(
        path,
        "Sunridge Energy Cooperative - Annual Report 2023",
        "Sunridge Energy Cooperative - Annual Report 2023",
        story,
    )
    return path


def brake_diagram() -> Drawing:
    """Return a labelled side view of a rim-brake wheel and caliper."""
    drawing = Drawing(440, 300)
    cx, cy = 150.0, 140.0
    drawing.add(Circle(cx, cy, 120, fillColor=colors.HexColor("#333333")))
    drawing.add(Circle(cx, cy, 106, fillColor=colors.HexColor("#b8bec4")))
    drawing.add(Circle(cx, cy, 96, fillColor=colors.white, strokeWidth=0.8))
    for i in range(16):
        angle = i * 360 / 16
        spoke = Group(Line(12, 0, 96, 0, strokeWidth=0.8, strokeColor=colors.grey))
        spoke.translate(cx, cy)
        spoke.rotate(angle)
        drawing.add(spoke)
    drawing.add(Circle(cx, cy, 12, fillColor=colors.HexColor("#777777")))

    # Caliper body above the tyre with its arm reaching down to the rim.
    drawing.add(Rect(cx - 22, 262, 44, 16, fillColor=colors.HexColor("#5a6b7c")))
    drawing.add(Rect(cx - 5, 244, 10, 20, fillColor=colors.HexColor("#5a6b7c")))
    drawing.add(Rect(cx - 16, 237, 32, 8, fillColor=colors.HexColor("#a3231f")))
    drawing.add(Line(cx + 22, 272, cx + 80, 292, strokeWidth=1.5))

    labels = (
        ("Brake cable", (cx + 60, 285), 285),
        ("Caliper arm", (cx + 22, 270), 255),
        ("Brake pad", (cx + 16, 241), 225),
        ("Rim braking surface", (cx + 95, cy + 35), 185),
        ("Tyre", (cx + 119, cy - 10), 145),
        ("Spoke", (cx + 45, cy - 45), 105),
        ("Hub and axle", (cx + 12, cy - 4), 65),
    )
    label_x = 320.0
    for text, (px, py), ly in labels:
        drawing.add(Line(px, py, label_x - 4, ly + 3, strokeWidth=0.6))
        drawing.add(Circle(px, py, 1.8, fillColor=colors.black))
        drawing.add(String(label_x, ly, text, fontSize=9.5))
    return drawing


def make_bike_maintenance(out_dir: Path) -> Path:
    """Write the 2-page bicycle maintenance manual with a brake diagram."""
    path = out_dir / "bike_maintenance.pdf"
    story: list[Flowable] = [
        Paragraph("Keeping Your Bicycle Road-Ready", STYLES["Title"]),
        Paragraph(
            "A short home maintenance guide for commuters and weekend riders. "
            "You need a rag, a bottle of chain lube, a degreaser, a floor pump "
            "with a gauge and a 5 mm Allen key.",
            BODY,
        ),
        Paragraph("Chain lubrication", STYLES["Heading2"]),
        Paragraph(
            "A dry or gritty chain wastes effort, shifts poorly and wears out the "
            "cassette and chainrings early. Lubricate the chain every 150 to "
            "300 km, and after every ride in the rain.",
            BODY,
        ),
        numbered_list(
            [
                "Shift to the smallest rear sprocket and wipe the chain with a "
                "clean rag while turning the pedals backwards.",
                "If the chain is black with grime, scrub it with degreaser and a "
                "brush, rinse with water and let it dry completely.",
                "Apply one drop of chain lube to each roller on the inside of the "
                "chain while slowly back-pedalling.",
                "Turn the cranks for thirty seconds so the lubricant works into "
                "the rollers and pins.",
                "Wipe off the excess oil from the outside of the links; surplus "
                "lube only attracts dust.",
            ]
        ),
        Paragraph("Tyre pressure", STYLES["Heading2"]),
        Paragraph(
            "Correct tyre pressure prevents pinch flats, lowers rolling "
            "resistance and gives predictable grip. Tyres lose pressure slowly, "
            "so check them with a gauge at least once a week. The range printed "
            "on the tyre sidewall is the safe limit; within it, lighter riders "
            "and wet roads call for the lower end.",
            BODY,
        ),
        Paragraph(
            "As a starting point, inflate road tyres (25-28 mm) to 80-100 psi "
            "(5.5-6.9 bar), hybrid and touring tyres (32-42 mm) to 50-70 psi "
            "(3.4-4.8 bar) and mountain bike tyres to 25-35 psi (1.7-2.4 bar). "
            "Presta valves need the small lock nut unscrewed before the pump "
            "head is fitted; Schrader valves work like a car valve.",
            BODY,
        ),
        PageBreak(),
        Paragraph("Brake pad replacement", STYLES["Heading2"]),
        Paragraph(
            "Rim brake pads wear down with every stop, faster in wet and muddy "
            "conditions. Replace them when the grooves in the rubber are nearly "
            "gone, when metal grit is embedded in the pad surface, or when the "
            "brake lever can be pulled all the way to the handlebar.",
            BODY,
        ),
        Spacer(1, 0.3 * cm),
        brake_diagram(),
        Paragraph(
            "Figure 2. Side view of a rim-brake wheel: the brake pad must sit "
            "fully on the rim braking surface, never touching the tyre.",
            CAPTION,
        ),
        Spacer(1, 0.3 * cm),
        numbered_list(
            [
                "Open the quick-release on the caliper so the arms spread and the "
                "wheel can turn freely.",
                "Undo the pad fixing bolt with a 5 mm Allen key and remove the "
                "worn brake pad from the caliper arm.",
                "Fit the new pad with the arrow pointing in the direction of "
                "wheel rotation and the closed end of the shoe facing forward.",
                "Align the pad flat against the rim braking surface, about 1 mm "
                "below the tyre, with the front edge touching slightly first "
                "(toe-in).",
                "Tighten the fixing bolt to about 6 Nm, close the quick-release "
                "and squeeze the lever hard several times.",
                "Check the pads clear the rim when released, then test the "
                "brakes at walking pace before riding on the road.",
            ]
        ),
    ]
    build_pdf(
        path,
        "Keeping Your Bicycle Road-Ready",
        "Bicycle Home Maintenance Guide",
        story,
    )
    return path


def wrap_text(text: str, font: ImageFont.FreeTypeFont, width: float) -> list[str]:
    """Split ``text`` into lines no wider than ``width`` pixels in ``font``."""
    lines: list[str] = []
    current = ""
    for word in text.split():
        candidate = f"{current} {word}".strip()
        if current and font.getlength(candidate) > width:
            lines.append(current)
            current = word
        else:
            current = candidate
    lines.append(current)
    return lines


def render_letter_scan() -> Image.Image:
    """Render the harbour letter as a greyscale page that looks scanned."""
    px_per_pt = SCAN_DPI / 72
    size = (round(A4[0] * px_per_pt), round(A4[1] * px_per_pt))
    margin = round(72 * px_per_pt)
    body_font = ImageFont.load_default(size=round(12 * px_per_pt))
    head_font = ImageFont.load_default(size=round(18 * px_per_pt))
    line_height = round(16 * px_per_pt)

    page = Image.new("L", size, 255)
    draw = ImageDraw.Draw(page)
    y = margin
    for i, paragraph in enumerate(LETTER_LINES):
        font = head_font if i == 0 else body_font
        for line in wrap_text(paragraph, font, size[0] - 2 * margin):
            draw.text((margin, y), line, fill=25, font=font)
            y += round(line_height * 1.4) if font is head_font else line_height

    # Scanner artefacts: a slight skew, soft optics, grey paper and sensor noise.
    page = page.rotate(SCAN_ROTATION_DEG, resample=Image.Resampling.BICUBIC, fillcolor=255)
    page = page.filter(ImageFilter.GaussianBlur(0.6))
    rng = random.Random(SCAN_SEED)
    noise = Image.frombytes("L", size, rng.randbytes(size[0] * size[1]))
    noise = noise.point(lambda v: v * 18 // 255).filter(ImageFilter.BoxBlur(1))
    return ImageChops.subtract(page.point(lambda v: 10 + v * 236 // 255), noise)


def make_scanned_letter(out_dir: Path) -> Path:
    """Write a 1-page PDF whose only content is the scanned letter JPEG."""
    path = out_dir / "scanned_letter.pdf"
    jpeg = io.BytesIO()
    render_letter_scan().save(jpeg, "JPEG", quality=SCAN_JPEG_QUALITY, dpi=(SCAN_DPI, SCAN_DPI))
    jpeg.seek(0)

    canvas = Canvas(str(path), pagesize=A4, invariant=1)
    canvas.setTitle("Scanned letter")
    canvas.setAuthor("vdr sample generator")
    canvas.drawImage(ImageReader(jpeg), 0, 0, width=A4[0], height=A4[1])
    canvas.showPage()
    canvas.save()
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "out_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_OUT_DIR,
        help=f"directory to write the PDFs to (default: {DEFAULT_OUT_DIR})",
    )
    out_dir: Path = parser.parse_args().out_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    for make in (make_solar_report, make_bike_maintenance, make_scanned_letter):
        path = make(out_dir)
        print(f"wrote {path} ({path.stat().st_size:,} bytes)")


if __name__ == "__main__":
    main()

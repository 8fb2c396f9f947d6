"""The no-match threshold (vdr.search.MATCH_THRESHOLD): fitted on generated data, checked on dev.

    python benches/no_match.py [--index DIR] [--dev SET_DIR] [--dev-index DIR] [--no-dev]

Generated data (the fit): prose from the package descriptions (METADATA) of the Python packages
installed beside vdr, laid out by reportlab as PDFs of a few pages each, some with a bar chart
whose title and bars are words of its document; indexed with the default encoder into a
temporary folder (or --index DIR, reused when built). Its queries:
- true matches, written from one page's own content: a phrase copied from a sentence, a few
  of its content words shuffled, those words inside a generic request ("example showing how
  ..."), or a description of its chart;
- non-matches: gibberish (random syllables and letter strings) and off-topic requests (cooking,
  gardening, sport, ... words that no generated page holds).
Each query's signal is the best vdr.search.match_score among its top K pages (how well its
best content word is found on the page); the threshold is the highest one (in steps of 0.01)
that calls at most MAX_FALSE_ALARM of the true matches unmatched.

Dev set (evaluation only, nothing is fitted on it): every query of SET_DIR (default
../shared/bench/dev) and the gibberish queries run on its index (built as benches/quality.py
does, into a temporary folder unless --dev-index is given); prints the false-alarm rate over all
its queries (each has a relevant page in the index), over those whose relevant page is ranked
first, and the miss rate over the gibberish queries.
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import sysconfig
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import ParagraphStyle, getSampleStyleSheet
from reportlab.lib.units import cm
from reportlab.platypus import Flowable, PageBreak, Paragraph, SimpleDocTemplate, Spacer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr.eval import load_set
from vdr.index import Index
from vdr.search import MATCH_THRESHOLD, match_score, matched
from vdr.stop_words import ENGLISH_STOP_WORDS
from vdr.text_index import terms

from index_throughput import DEFAULT_PDFS

SEED = 21
DOCUMENTS = 48  # generated PDFs; ~2.5 pages each
WORDS_PER_PAGE = 230
MAX_PAGES = 3
CHART_SHARE = 0.35  # of the documents get a chart page
NON_MATCHES = 300  # gibberish and off-topic queries each
# The fit keeps false alarms (true matches called unmatched) to at most this share of the
# generated true matches: a user told "nothing matched" stops looking, a false "matched" on
# gibberish only costs a glance at the ten pages shown.
MAX_FALSE_ALARM = 0.01
K = 10

STYLES = getSampleStyleSheet()
BODY = ParagraphStyle("Body", parent=STYLES["BodyText"], fontSize=10.5, leading=14.5)
_MARKUP = re.compile(r"<[^>]*>|`+|\*+")  # HTML tags and inline markdown/RST marks
_WORD = re.compile(r"^[A-Za-z][a-z]+(?:-[a-z]+)?[.,;:]?$")
# Words of generic requests, wrapped around a page's own words in "asked" queries.
REQUEST_WORDS = (
    "example showing how to use",
    "section that explains",
    "page describing",
    "overview of the",
    "where the documentation mentions",
    "instructions about",
    "notes on",
    "details of",
)
# Topics far from package documentation: off-topic queries draw 3-6 words from one of them.
OFF_TOPIC = {
    "cooking": "sourdough loaf crust oven knead dough cinnamon buttercream icing roast chicken "
    "garlic simmer broth lemon drizzle cake pastry caramelised onions recipe spoonful",
    "gardening": "tomato seedlings compost pruning roses hedge trimming lawn mower tulip bulbs "
    "greenhouse watering can mulch soil vegetable patch slugs",
    "sport": "football goalkeeper penalty referee halftime striker cricket wicket batsman "
    "tennis racket serve rugby scrum marathon sprinter medal",
    "medicine": "fever antibiotics prescription stethoscope surgeon kidney liver bandage "
    "vaccine pharmacy blood pressure nurse ward fracture",
    "animals": "giraffe elephant zebra lion cub penguin colony whale migration badger fox "
    "burrow owl nest feathers hedgehog",
    "weather": "thunderstorm hail drizzle snowfall blizzard rainbow humidity breeze "
    "hurricane forecast sunshine frost fog",
}
_SYLLABLE_START = "bcdfghjklmnprstvwxz"
_VOWELS = "aeiouy"


@dataclass(frozen=True)
class GeneratedPage:
    """One page of a generated document: paragraphs, or a bar chart (title, bar labels)."""

    paragraphs: tuple[str, ...] = ()
    chart: tuple[str, tuple[str, ...]] | None = None

    def text(self) -> str:
        title, bars = self.chart or ("", ())
        return " ".join((*self.paragraphs, title, *bars))


@dataclass(frozen=True)
class GeneratedQuery:
    text: str
    kind: str  # phrase, words, asked, chart | gibberish, off-topic
    target: tuple[str, int] | None  # (document stem, 1-based page) of a true match


def prose(text: str) -> list[str]:
    """The paragraphs of a README-like text that read as English prose (no code, tables,
    markup lines or link lists): at least 12 words, four in five of them plain words."""
    paragraphs, current = [], []
    for line in [*text.splitlines(), ""]:
        stripped = line.strip()
        if not stripped or line.startswith((" ", "\t")) or stripped[0] in "|.#`*-=+>[<":
            if current:
                paragraphs.append(" ".join(current))
            current = []
        else:
            current.append(_MARKUP.sub(" ", stripped))
    return [
        p
        for p in paragraphs
        if len(p.split()) >= 12
        and sum(bool(_WORD.match(w)) for w in p.split()) >= 0.8 * len(p.split())
    ]


def descriptions() -> dict[str, list[str]]:
    """Source name -> its prose paragraphs, for every package description (METADATA) and
    markdown or reStructuredText file installed beside vdr with enough prose for a page."""
    root = Path(sysconfig.get_paths()["purelib"])
    found = {}
    for path in sorted(
        [*root.glob("*.dist-info/METADATA"), *root.glob("*/**/*.md"), *root.glob("*/**/*.rst")]
    ):
        text = path.read_text(errors="replace")
        if path.name == "METADATA":
            text = text.partition("\n\n")[2]  # the description, after the headers
            name = path.parent.name.split("-")[0]
        else:
            name = f"{path.relative_to(root).parts[0]}_{path.stem}"
        paragraphs = prose(text)
        if sum(len(p.split()) for p in paragraphs) >= WORDS_PER_PAGE and name != "vdr":
            found.setdefault(re.sub(r"[^a-z0-9]+", "_", name.lower()), paragraphs)
    return found


def content_words(text: str) -> list[str]:
    """The words of `text` worth asking for: whole words of 4 letters or more, no stop words."""
    return [
        w
        for w in re.findall(r"\b[A-Za-z]{4,}\b", text)
        if w.lower() not in ENGLISH_STOP_WORDS and w.lower() not in {"http", "https", "python"}
    ]


def documents(rng: random.Random) -> dict[str, list[GeneratedPage]]:
    """DOCUMENTS generated documents: each package's prose cut into pages, and for some a
    bar chart titled and labelled with its own words."""
    packages = descriptions()
    chosen = rng.sample(sorted(packages), min(DOCUMENTS, len(packages)))
    docs = {}
    for name in chosen:
        pages: list[GeneratedPage] = []
        current: list[str] = []
        for paragraph in packages[name]:
            current.append(paragraph)
            if sum(len(p.split()) for p in current) >= WORDS_PER_PAGE:
                pages.append(GeneratedPage(paragraphs=tuple(current)))
                current = []
            if len(pages) == MAX_PAGES:
                break
        if rng.random() < CHART_SHARE:
            words = list(dict.fromkeys(w.lower() for w in content_words(pages[0].text())))
            picked = rng.sample(words, min(7, len(words)))
            title = f"{picked[0]} {picked[1]} per {picked[2]}"
            pages.append(GeneratedPage(chart=(title, tuple(picked[3:]))))
        docs[f"gen_{name}"] = pages
    return docs


def write_pdf(path: Path, pages: Sequence[GeneratedPage], rng: random.Random) -> None:
    story: list[Flowable] = []
    for number, page in enumerate(pages):
        if number:
            story.append(PageBreak())
        story.extend(Paragraph(escape(p), BODY) for p in page.paragraphs)
        if page.chart:
            title, bars = page.chart
            story += [Spacer(1, cm), bar_chart(title, bars, rng)]
    template = SimpleDocTemplate(str(path), pagesize=A4, invariant=1)
    template.build(story)


def bar_chart(title: str, bars: Sequence[str], rng: random.Random) -> Drawing:
    drawing = Drawing(440, 320)
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 50, 50, 360, 220
    chart.data = [[rng.randint(5, 95) for _ in bars]]
    chart.categoryAxis.categoryNames = list(bars)
    chart.valueAxis.valueMin = 0
    drawing.add(chart)
    drawing.add(String(220, 295, title, fontSize=13, textAnchor="middle"))
    return drawing


def true_queries(docs: dict[str, list[GeneratedPage]], rng: random.Random) -> list[GeneratedQuery]:
    """Queries written from each page's content, in each style the page allows."""
    out = []
    for stem, pages in docs.items():
        for number, page in enumerate(pages, 1):
            target = (stem, number)
            if page.chart:
                title, bars = page.chart
                text = f"bar chart of {title} for {' and '.join(bars[:2])}"
                out.append(GeneratedQuery(text, "chart", target))
                continue
            sentences = [s.split() for p in page.paragraphs for s in re.split(r"(?<=[.!?])\s+", p)]
            sentence = rng.choice([s for s in sentences if len(s) >= 6] or sentences)
            length = rng.randint(4, min(9, len(sentence)))
            start = rng.randint(0, len(sentence) - length)
            phrase = " ".join(w.strip(".,;:()\"'") for w in sentence[start : start + length])
            out.append(GeneratedQuery(phrase, "phrase", target))
            words = list(dict.fromkeys(content_words(page.text())))
            picked = rng.sample(words, min(rng.randint(2, 5), len(words)))
            out.append(GeneratedQuery(" ".join(picked), "words", target))
            asked = f"{rng.choice(REQUEST_WORDS)} {' '.join(picked[:3])}"
            out.append(GeneratedQuery(asked, "asked", target))
    return out


def gibberish(rng: random.Random) -> str:
    """1-4 made-up words: pronounceable syllables, or consonant runs like "zxqv"."""
    words = []
    for _ in range(rng.randint(1, 4)):
        if rng.random() < 0.3:
            words.append(
                "".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(rng.randint(3, 6)))
            )
        else:
            words.append(
                "".join(
                    rng.choice(_SYLLABLE_START)
                    + rng.choice(_VOWELS)
                    + rng.choice(["", "r", "n", "g", "f"])
                    for _ in range(rng.randint(1, 3))
                )
            )
    return " ".join(words)


def non_queries(corpus_terms: set[str], rng: random.Random) -> list[GeneratedQuery]:
    """NON_MATCHES gibberish and NON_MATCHES off-topic queries, none sharing a BM25 term with
    the generated pages (so none is a match in disguise)."""
    out: list[GeneratedQuery] = []
    while sum(q.kind == "gibberish" for q in out) < NON_MATCHES:
        text = gibberish(rng)
        if not set(terms(text)) & corpus_terms:
            out.append(GeneratedQuery(text, "gibberish", None))
    vocabulary = {
        topic: [w for w in words.split() if not set(terms(w)) & corpus_terms]
        for topic, words in OFF_TOPIC.items()
    }
    while sum(q.kind == "off-topic" for q in out) < NON_MATCHES:
        words = vocabulary[rng.choice(sorted(vocabulary))]
        text = " ".join(rng.sample(words, rng.randint(3, min(6, len(words)))))
        out.append(GeneratedQuery(text, "off-topic", None))
    return out


def signals(index: Index, texts: Sequence[str]) -> list[float]:
    """Each query's best match_score among its top K pages."""
    found = index.search_many(texts, k=K)
    return [
        max((match_score(query, index.page(h.page_id).embedding) for h in hits), default=-1.0)
        for query, hits in zip(index.embed_queries(texts), found, strict=True)
    ]


def fit(true: Sequence[float]) -> float:
    """The highest threshold, in steps of 0.01, that calls at most MAX_FALSE_ALARM of `true`
    below it."""
    allowed = int(MAX_FALSE_ALARM * len(true))
    threshold = 0.0
    for step in range(1, 100):
        if sum(s < step / 100 for s in true) <= allowed:
            threshold = step / 100
    return threshold


def rates(true: Sequence[float], false: Sequence[float], threshold: float) -> str:
    """False alarms (true matches below `threshold`) and misses (non-matches at or above)."""
    parts = []
    if true:
        alarms = sum(s < threshold for s in true)
        parts.append(f"false alarms {alarms}/{len(true)} ({alarms / len(true):.1%})")
    if false:
        misses = sum(s >= threshold for s in false)
        parts.append(f"misses {misses}/{len(false)} ({misses / len(false):.1%})")
    return ", ".join(parts)


def generated(folder: Path) -> tuple[list[GeneratedQuery], list[float]]:
    rng = random.Random(SEED)
    docs = documents(rng)
    pdfs = folder / "pdfs"
    pdfs.mkdir(parents=True, exist_ok=True)
    for stem, pages in docs.items():
        write_pdf(pdfs / f"{stem}.pdf", pages, rng)
    corpus_terms = {t for pages in docs.values() for page in pages for t in terms(page.text())}
    queries = true_queries(docs, rng) + non_queries(corpus_terms, rng)
    with Index(folder / "index") as index:
        index.add([pdfs])
        pages = index.store.count()
        scores = signals(index, [q.text for q in queries])
    print(f"generated: {len(docs)} documents, {pages} pages, {len(queries)} queries")
    return queries, scores


def dev(set_dir: Path, folder: Path) -> None:
    """The shipped MATCH_THRESHOLD on the dev set: false alarms over its queries, misses over
    gibberish (evaluation only)."""
    queries, qrels = load_set(set_dir)
    rng = random.Random(SEED + 1)
    noise = [gibberish(rng) for _ in range(NON_MATCHES)]
    with Index(folder) as index:
        index.add([set_dir / "pdfs"])
        found = index.search_many([q.text for q in queries] + noise, k=K)
    answered = found[: len(queries)]
    first = [
        (Path(hits[0].doc_path).stem, hits[0].page) in qrels.get(q.qid, {}) if hits else False
        for q, hits in zip(queries, answered, strict=True)
    ]
    alarms = [matched(hits) is False for hits in answered]
    missed = sum(bool(matched(hits)) for hits in found[len(queries) :])
    at_first = sum(a for a, f in zip(alarms, first, strict=True) if f)
    print(
        f"dev set {set_dir} (evaluation only), threshold {MATCH_THRESHOLD}:\n"
        f"  false alarms over all {len(queries)} queries: {sum(alarms)} "
        f"({sum(alarms) / len(queries):.1%})\n"
        f"  false alarms over the {sum(first)} whose relevant page is ranked first: {at_first}\n"
        f"  misses over {len(noise)} gibberish queries: {missed} ({missed / len(noise):.1%})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--index", type=Path, help="folder for the generated PDFs and index")
    parser.add_argument("--dev", type=Path, default=DEFAULT_PDFS.parent, help="dev set folder")
    parser.add_argument("--dev-index", type=Path, help="dev index folder to build or reuse")
    parser.add_argument("--no-dev", action="store_true", help="fit only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vdr-no-match-") as scratch:
        queries, scores = generated(args.index or Path(scratch) / "generated")
        true = [s for q, s in zip(queries, scores, strict=True) if q.target]
        false = [s for q, s in zip(queries, scores, strict=True) if not q.target]
        threshold = fit(true)  # misses are what it costs: printed below
        print(
            f"chosen threshold: {threshold:.2f} "
            f"(shipped: vdr.search.MATCH_THRESHOLD = {MATCH_THRESHOLD})"
        )
        print(f"  all: {rates(true, false, threshold)}")
        for kind in sorted({q.kind for q in queries}):
            picked = [s for q, s in zip(queries, scores, strict=True) if q.kind == kind]
            is_true = any(q.target for q in queries if q.kind == kind)
            print(
                f"  {kind}: "
                + rates(picked if is_true else [], [] if is_true else picked, threshold)
            )
        if not args.no_dev:
            dev(args.dev, args.dev_index or Path(scratch) / "dev")


if __name__ == "__main__":
    main()

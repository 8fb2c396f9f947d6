"""Property-based fuzzing of the PDF intake (hypothesis): mutated sample PDFs and small PDFs
generated from their parts, each indexed by the real pipeline into a real store.

Each file must come out as pages (every page stored, with its image) or be skipped with a
reason; any other exception fails the test, and so does a run past the deadline (a hang in
our code; a hang in poppler is stopped at its timeout, shortened here, and named). Bounded
and reproducible for CI: derandomized, no example database, 60 examples in all.

OCR is off: it reads an image the intake has already rendered, not the PDF's bytes, and
costs seconds a page; tests/test_indexer.py covers it.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from vdr.encoders.textgrid import TextGridEncoder
from vdr.indexer import pdf
from vdr.indexer.pipeline import index_paths, is_complete
from vdr.ledger import Ledger
from vdr.page_images import PageImages
from vdr.store import Store, open_store

from conftest import REPO, SAMPLES

sys.path.insert(0, str(REPO / "benches"))
from bad_pdfs import raw_pdf

# Bytes of "%PDF-1.4\n" and the binary-comment line after it that the samples start with.
HEADER = 16
SEEDS = {path.name: path.read_bytes() for path in sorted(SAMPLES.glob("*.pdf"))}
FUZZ_SETTINGS = settings(
    derandomize=True,
    database=None,
    # A slow example is a hang in our code: poppler itself is stopped at POPPLER_TIMEOUT_S.
    deadline=60_000,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
# Poppler's timeout during the fuzz: no sample, however mutated, needs a second.
FUZZ_POPPLER_TIMEOUT_S = 15


@dataclass
class Intake:
    """The real pipeline's pieces, opened once per test: a store, page images, the ledger,
    the encoder."""

    folder: Path
    store: Store
    images: PageImages
    ledger: Ledger
    encoder: TextGridEncoder

    def index(self, data: bytes) -> None:
        """Index `data` as the folder's only PDF; assert pages or a reason came out."""
        path = self.folder / "fuzzed.pdf"
        path.write_bytes(data)
        report = index_paths(
            [self.folder],
            lambda: self.encoder,
            self.store,
            self.images,
            self.ledger,
            ocr=False,
            progress=False,
        )
        if report.skipped:
            ((skipped, reason),) = report.skipped
            assert skipped == str(path) and isinstance(reason, str) and reason.strip()
            assert report.added == []
            event(f"skipped: {re.sub(r'[0-9]+', 'N', reason)[:60]}")
            return
        event("indexed")
        # Indexed now, or earlier when a mutation gave back bytes indexed before.
        assert report.added + report.unchanged + report.moved == [str(path)], report
        (doc,) = self.store.documents()
        outcome = self.ledger.get(doc.doc_id)
        assert is_complete(doc, outcome) and 1 <= doc.n_pages <= pdf.MAX_PAGES
        # Every page is held but those the ledger names as unreadable.
        bad = set(outcome.bad_pages) if outcome else set()
        expected = {f"{doc.doc_id}-{p}" for p in range(1, doc.n_pages + 1) if p not in bad}
        assert self.images.page_ids() == expected


@pytest.fixture()
def intake(
    tmp_path: Path, encoder: TextGridEncoder, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Intake]:
    monkeypatch.setattr(pdf, "POPPLER_TIMEOUT_S", FUZZ_POPPLER_TIMEOUT_S)
    folder = tmp_path / "pdfs"
    folder.mkdir()
    store = open_store(tmp_path / "qdrant", encoder.dim)
    try:
        yield Intake(folder, store, PageImages(tmp_path / "pages"), Ledger(tmp_path), encoder)
    finally:
        store.close()


# -- mutations of real PDFs ---------------------------------------------------------------

_NUMBER = st.one_of(
    st.integers(-(2**31), 2**31),
    st.sampled_from([0, -1, 1, 2**31 - 1, 2**63, 10**400]),
)


@st.composite
def mutation(draw: st.DrawFn, data: bytes) -> bytes:
    """`data` with one change: a byte flipped, cut short, a span inserted or deleted, an
    object header repeated elsewhere, or a number in a /Length, the xref or startxref
    replaced by an arbitrary one."""
    # Past the "%PDF-1.x" line mostly: a file without it is refused at once, which one
    # example in ten is enough to show.
    start = draw(st.sampled_from([0] + [min(HEADER, len(data) - 1)] * 9))
    at = draw(st.integers(start, len(data) - 1))
    spans = {  # what the structural mutations can act on, where `data` still has it
        "header": [m.span() for m in re.finditer(rb"\d+ \d+ obj\b", data)],
        "length": [m.span(1) for m in re.finditer(rb"/Length (\d+)", data)],
        "xref": [m.span(1) for m in re.finditer(rb"(?m)^(\d{10}) \d{5} [nf]", data)]
        + [m.span(1) for m in re.finditer(rb"startxref\s+(\d+)", data)],
    }
    kind = draw(
        st.sampled_from(["flip", "truncate", "insert", "delete", *(k for k in spans if spans[k])])
    )
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ draw(st.integers(1, 255))]) + data[at + 1 :]
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + draw(st.binary(min_size=1, max_size=64)) + data[at:]
    if kind == "delete":
        return data[:at] + data[at + draw(st.integers(1, 512)) :]
    start, end = draw(st.sampled_from(spans[kind]))
    if kind == "header":
        return data[:at] + b"\n" + data[start:end] + b"\n" + data[at:]
    return data[:start] + str(draw(_NUMBER)).encode() + data[end:]


@st.composite
def mutated_pdf(draw: st.DrawFn) -> bytes:
    """A sample PDF after one to three mutations."""
    data = SEEDS[draw(st.sampled_from(sorted(SEEDS)))]
    for _ in range(draw(st.integers(1, 3))):
        if data:
            data = draw(mutation(data))
    return data


@settings(FUZZ_SETTINGS, max_examples=30)
@given(data=mutated_pdf())
def test_mutated_pdfs_come_out_as_pages_or_a_reason(intake: Intake, data: bytes) -> None:
    intake.index(data)


# -- small PDFs built from their parts ----------------------------------------------------

_SIDE = st.one_of(st.integers(1, 2000).map(str), st.integers(1, 20_000).map(str))
_COORDINATE = st.one_of(
    st.integers(-20_000, 20_000).map(str),
    st.sampled_from(["0", "-0", "1e400", "99999999999", "0.0001", "nan", "/Name", "(text)"]),
)
_OPERATIONS = [
    "BT /F1 {} Tf {} {} Td (fuzzed words here) Tj ET",
    "{} {} {} {} re f",
    "q {} 0 0 {} 0 0 cm Q",
    "{} {} m {} {} l S",
    "BT /F9 {} Tf (no such font) Tj ET",
    "/Im1 Do",
    "{} w [{}] 0 d",
]


@st.composite
def built_pdf(draw: st.DrawFn) -> bytes:
    """A PDF of one to three pages written object by object: arbitrary media boxes, page
    counts that may lie, content streams of real operators with arbitrary operands, and
    references that may point nowhere or back up the tree."""
    n_pages = draw(st.integers(1, 3))
    first_page = 4  # 1 catalog, 2 page tree, 3 font; then a page and its content per page
    kids = [first_page + 2 * i for i in range(n_pages)]
    if draw(st.integers(0, 3)) == 0:  # a kid that is the tree itself, the font, or nothing
        kids.append(draw(st.sampled_from([2, 3, 99])))
    count = draw(st.sampled_from([n_pages] * 3 + [draw(st.integers(-1, 10))]))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [%s] /Count %d >>"
        % (b" ".join(b"%d 0 R" % kid for kid in kids), count),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    for number in kids[:n_pages]:
        # A sound box mostly, so that most pages reach the renderer and the encoder.
        sound = f"0 0 {draw(_SIDE)} {draw(_SIDE)}"
        box = draw(st.sampled_from([sound] * 3 + [" ".join(draw(_COORDINATE) for _ in range(4))]))
        rotate = draw(st.sampled_from(["", "/Rotate 90", "/Rotate 45", "/Rotate -270"]))
        lines = []
        for _ in range(draw(st.integers(0, 4))):
            template = draw(st.sampled_from(_OPERATIONS))
            lines.append(template.format(*(draw(_COORDINATE) for _ in range(template.count("{}")))))
        content = "\n".join(lines).encode()
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [%s] %s /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R >> >> >>"
            % (box.encode(), rotate.encode(), number + 1)
        )
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    return raw_pdf(objects)


@settings(FUZZ_SETTINGS, max_examples=30)
@given(data=built_pdf())
@example(  # a page tree whose node is its own kid: a 0 x 0 pt page crashed the encoder
    data=raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R 2 0 R] /Count 2 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        ]
    )
)
def test_built_pdfs_come_out_as_pages_or_a_reason(intake: Intake, data: bytes) -> None:
    intake.index(data)

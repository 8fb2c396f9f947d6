"""Bring an index in line with a set of PDF paths: add new files, replace changed ones, drop
removed ones, and leave unchanged ones alone.

Order of writes, so that a crash at any moment leaves a consistent index that a re-run
completes: page images are written before their points; a document's points carry its page
count, so a partly indexed document is recognised and redone (point ids are derived from
content, so redoing overwrites rather than duplicates); removed documents leave the store
before their images; images of documents the store does not hold are swept at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import groupby
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from vdr.encoders.base import Encoder
from vdr.errors import BadDocument
from vdr.indexer.discover import content_id, discover, is_under
from vdr.indexer.ocr import OCR_DPI, ocr_words
from vdr.indexer.pdf import (
    MAX_PAGE_PIXELS,
    RENDER_DPI,
    PdfCheck,
    check_pdf,
    fitting_dpi,
    read_text_layer,
    render_pages,
)
from vdr.page_images import PageImages
from vdr.pages import Page
from vdr.pooling import pool_tokens
from vdr.store.base import PageRecord, Store

log = logging.getLogger(__name__)

# Pages rendered, encoded and written together: bounds memory (~25 MB of 150 dpi images)
# and is the most work a crash can undo.
PAGES_PER_CHUNK = 16


@dataclass
class IndexReport:
    """What one indexing run did. Paths are absolute strings."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, same content as)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # (path, note) on files indexed with a caveat: damage poppler read past, pages rendered
    # below the usual dpi to stay within the pixel limit. Each is also logged as a warning.
    notes: list[tuple[str, str]] = field(default_factory=list)
    pages_encoded: int = 0


def index_paths(
    paths: Sequence[Path],
    get_encoder: Callable[[], Encoder],
    store: Store,
    images: PageImages,
    *,
    ocr: bool = True,
    pool_factor: int = 1,
    progress: bool = True,
) -> IndexReport:
    """Index every PDF under `paths`; forget indexed documents under them that are gone.

    get_encoder: called only when some page must be encoded, so that a run over an
                 unchanged folder does not pay for loading a model.
    ocr:         read pages without a text layer by OCR when the encoder uses words.
    pool_factor: keep ~1/pool_factor of each page's vectors (hierarchical token pooling).
    A bad file is recorded in IndexReport.skipped with its reason; the rest go on.
    """
    roots = [Path(p).expanduser().absolute() for p in paths]
    report = IndexReport()
    indexed = {doc.doc_id: doc for doc in store.documents()}
    current = _identify(discover(roots), report)

    todo: list[tuple[str, Path, PdfCheck]] = []
    for doc_id, path in current.items():
        known = indexed.get(doc_id)
        if known and known.complete:
            if known.doc_path != str(path):
                store.set_doc_path(doc_id, str(path))
                report.moved.append(str(path))
            else:
                report.unchanged.append(str(path))
            continue
        try:
            todo.append((doc_id, path, check_pdf(path)))
        except BadDocument as error:
            report.skipped.append((str(path), str(error)))

    held = set(indexed)  # the documents the store holds, kept up to date below
    if todo:
        encoder = get_encoder()
        with tqdm(
            total=sum(check.pages for _, _, check in todo),
            unit="page",
            desc="indexing",
            disable=not progress,
        ) as bar:
            for doc_id, path, check in todo:
                if check.damage:
                    _note(report, path, f"is damaged; poppler read past it ({check.damage})")
                try:
                    _index_document(
                        doc_id,
                        path,
                        check.pages,
                        encoder,
                        store,
                        images,
                        ocr,
                        pool_factor,
                        bar,
                        partial(_note, report, path),
                    )
                except BadDocument as error:
                    store.delete_documents([doc_id])
                    held.discard(doc_id)
                    report.skipped.append((str(path), str(error)))
                    continue
                held.add(doc_id)
                report.added.append(str(path))
                report.pages_encoded += check.pages

    gone = [
        doc
        for doc in indexed.values()
        if doc.doc_id not in current and is_under(doc.doc_path, roots)
    ]
    store.delete_documents([doc.doc_id for doc in gone])
    images.delete_documents(doc.doc_id for doc in gone)
    report.removed.extend(doc.doc_path for doc in gone)
    images.keep_only(held - {doc.doc_id for doc in gone})
    return report


def _note(report: IndexReport, path: Path, note: str) -> None:
    """Record a caveat on a file in the report and log it (the CLI prints warnings)."""
    report.notes.append((str(path), note))
    log.warning("'%s' %s", path, note)


def _identify(paths: list[Path], report: IndexReport) -> dict[str, Path]:
    """{content id: path} of the files, the first path kept when contents repeat."""
    current: dict[str, Path] = {}
    for path in paths:
        try:
            doc_id = content_id(path)
        except OSError as error:
            report.skipped.append((str(path), f"cannot read the file ({error.strerror})"))
            continue
        if doc_id in current:
            report.duplicates.append((str(path), str(current[doc_id])))
        else:
            current[doc_id] = path
    return current


def _chunks(sizes: list[tuple[float, float]]) -> list[tuple[int, int]]:
    """(first, last) runs of pages, 1-based, of at most PAGES_PER_CHUNK pages and at most
    MAX_PAGE_PIXELS pixels at the dpi each renders at (one page at least): 16 letter pages
    (34 million pixels) go together, large posters one at a time, so a chunk's images stay
    ~150 MB whatever the pages.

    >>> _chunks([(612, 792)] * 20), _chunks([(612, 792), (5000, 5000), (612, 792)])
    ([(1, 16), (17, 20)], [(1, 1), (2, 2), (3, 3)])
    """
    chunks = []
    first, pixels = 1, 0.0
    for number, (width, height) in enumerate(sizes, start=1):
        dpi = fitting_dpi([(width, height)], RENDER_DPI)
        page = width * height * (dpi / 72) ** 2
        full = number - first >= PAGES_PER_CHUNK or pixels + page > MAX_PAGE_PIXELS
        if number > first and full:
            chunks.append((first, number - 1))
            first, pixels = number, 0.0
        pixels += page
    chunks.append((first, len(sizes)))
    return chunks


def _index_document(
    doc_id: str,
    path: Path,
    n_pages: int,
    encoder: Encoder,
    store: Store,
    images: PageImages,
    ocr: bool,
    pool_factor: int,
    bar: tqdm,
    note: Callable[[str], None],
) -> None:
    texts = read_text_layer(path)
    if len(texts) != n_pages:
        raise BadDocument(f"the text layer has {len(texts)} pages, pdfinfo counts {n_pages}")
    chunks = _chunks([text.size for text in texts])

    def render(first: int, last: int, dpi: float = RENDER_DPI) -> list[Image.Image]:
        """Pages first..last at `dpi`; a page too large for MAX_PAGE_PIXELS at the dpi that
        fits it, rendered on its own so that its neighbours keep `dpi`."""
        numbers = range(first, last + 1)
        fitting = [fitting_dpi([texts[number - 1].size], dpi) for number in numbers]
        images: list[Image.Image] = []
        for page_dpi, run in groupby(zip(numbers, fitting, strict=True), key=lambda nd: nd[1]):
            run_numbers = [number for number, _ in run]
            if page_dpi < dpi:
                for number in run_numbers:
                    width, height = texts[number - 1].size
                    note(
                        f"page {number} is {width:,.0f} x {height:,.0f} pt: rendered at "
                        f"{page_dpi:g} dpi instead of {dpi:g}, within VDR_MAX_PAGE_PIXELS"
                    )
            images += render_pages(path, run_numbers[0], run_numbers[-1], dpi=page_dpi)
        return images

    # Render the next chunk (a pdftoppm process) while this one is encoded.
    with ThreadPoolExecutor(max_workers=1) as renderer:
        rendering = renderer.submit(render, *chunks[0])
        for number, (first, last) in enumerate(chunks):
            rendered = rendering.result()
            if number + 1 < len(chunks):
                rendering = renderer.submit(render, *chunks[number + 1])
            pages = []
            for page_number, image in zip(range(first, last + 1), rendered, strict=True):
                text = texts[page_number - 1]
                words = text.words
                if not words and ocr and encoder.uses_words:
                    # OCR reads small print better at 300 dpi than at the 150 dpi view.
                    (sharp,) = render(page_number, page_number, dpi=OCR_DPI)
                    words = ocr_words(sharp)
                pages.append(Page(image=image, words=words, size=text.size))
            records = [
                PageRecord(
                    doc_id=doc_id,
                    doc_path=str(path),
                    page=page_number,
                    n_pages=n_pages,
                    size=page.size,
                    words=page.words,
                    embedding=pool_tokens(embedding, pool_factor),
                )
                for page_number, page, embedding in zip(
                    range(first, last + 1), pages, encoder.encode_pages(pages), strict=True
                )
            ]
            for record, page in zip(records, pages, strict=True):
                images.save(record.page_id, page.image)
            store.upsert(records)
            bar.update(len(records))

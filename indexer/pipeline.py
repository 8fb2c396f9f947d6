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
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field, replace
from itertools import groupby
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from vdr.encoders.base import Encoder
from vdr.errors import BadDocument
from vdr.figures import figure_words
from vdr.indexer.discover import content_id, discover, is_under
from vdr.indexer.documents import OpenedDocument, open_document
from vdr.indexer.ocr import OCR_DPI, ocr_words
from vdr.indexer.pdf import MAX_PAGE_PIXELS, RENDER_DPI, fitting_dpi
from vdr.ledger import FileOutcome, Ledger
from vdr.page_images import PageImages
from vdr.pages import Page, Word
from vdr.pooling import pool_tokens
from vdr.store.base import IndexedDocument, PageRecord, Store

log = logging.getLogger(__name__)

# Pages rendered, encoded and written together: bounds memory (~25 MB of 150 dpi images)
# and is the most work a crash can undo.
PAGES_PER_CHUNK = 16
# Files checked and read (poppler's pdfinfo and pdftotext) ahead of the one being encoded,
# in as many threads: a file that hangs poppler holds one of them until its budget runs
# out, while the others keep the encoder fed.
FILES_AHEAD = 2


@dataclass
class IndexReport:
    """What one indexing run did. Paths are absolute strings."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    moved: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (path, same content as)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    # (path, note) on files indexed with a caveat, one sentence a file: pages that could not
    # be read, damage poppler read past, pages rendered below the usual dpi to stay within
    # the pixel limit. Each is also logged as a warning.
    notes: list[tuple[str, str]] = field(default_factory=list)
    # Files refused by an earlier run and unchanged since: in `skipped` too, not examined again.
    remembered: list[str] = field(default_factory=list)
    outcomes: list[FileOutcome] = field(default_factory=list)  # of the files examined now
    pages_encoded: int = 0


def is_complete(doc: IndexedDocument, outcome: FileOutcome | None) -> bool:
    """Whether the store holds every page of the document that can be read: all of them,
    or all but the bad pages its ledger entry names."""
    bad = len(outcome.bad_pages) if outcome and outcome.status == "partial" else 0
    return doc.pages_indexed + bad == doc.n_pages


def index_paths(
    paths: Sequence[Path],
    get_encoder: Callable[[], Encoder],
    store: Store,
    images: PageImages,
    ledger: Ledger,
    *,
    ocr: bool = True,
    pool_factor: int = 1,
    figures: str = "none",
    progress: bool = True,
    passwords: Sequence[str] = (),
) -> IndexReport:
    """Index every document (PDF or page image) under `paths`; forget indexed documents
    under them that are gone.

    get_encoder: called only when some page must be encoded, so that a run over an
                 unchanged folder does not pay for loading a model.
    ledger:      what became of each file; a file refused before and unchanged since is not
                 examined again (but an encrypted one is, when passwords are given).
    ocr:         read pages without a text layer by OCR when the encoder uses words.
    pool_factor: keep ~1/pool_factor of each page's vectors (hierarchical token pooling).
    figures:     "kind" or "kind+text": add words describing each page's figures
                 (vdr.figures.figure_words) when the encoder uses words; "none": do not.
    passwords:   tried on encrypted PDFs.
    A bad file is recorded in IndexReport.skipped with its reason, a bad page in
    IndexReport.notes; the rest go on.
    """
    roots = [Path(p).expanduser().absolute() for p in paths]
    report = IndexReport()
    indexed = {doc.doc_id: doc for doc in store.documents()}
    current = _identify(discover(roots), report)

    todo: list[tuple[str, Path]] = []
    for doc_id, path in current.items():
        known, outcome = indexed.get(doc_id), ledger.get(doc_id)
        if known and is_complete(known, outcome):
            if known.doc_path != str(path):
                store.set_doc_path(doc_id, str(path))
                report.moved.append(str(path))
            else:
                report.unchanged.append(str(path))
            if outcome and outcome.path != str(path):
                ledger.record(replace(outcome, path=str(path)))
        elif (
            outcome
            and outcome.status == "refused"
            and not known
            and not (outcome.kind == "encrypted" and passwords)
        ):
            report.skipped.append((str(path), outcome.message))
            report.remembered.append(str(path))
            if outcome.path != str(path):
                ledger.record(replace(outcome, path=str(path)))
        else:
            todo.append((doc_id, path))

    held = set(indexed)  # the documents the store holds, kept up to date below
    encoder: Encoder | None = None
    with tqdm(total=0, unit="page", desc="indexing", disable=not progress or not todo) as bar:
        for doc_id, path, opened in _opened_ahead(todo, passwords):
            if isinstance(opened, BadDocument):
                _refuse(report, ledger, doc_id, path, opened, pages=0)
                continue
            bar.total += sum(not page.problem for page in opened.pages)
            bar.refresh()
            encoder = encoder or get_encoder()
            notes: list[str] = []
            try:
                bad = _index_document(
                    doc_id,
                    opened,
                    encoder,
                    store,
                    images,
                    ocr,
                    pool_factor,
                    figures,
                    bar,
                    notes.append,
                )
            except BadDocument as error:
                store.delete_documents([doc_id])
                held.discard(doc_id)
                _refuse(report, ledger, doc_id, path, error, pages=len(opened.pages))
                continue
            held.add(doc_id)
            report.added.append(str(path))
            report.pages_encoded += len(opened.pages) - len(bad)
            message = _message(opened, bad, notes)
            outcome = FileOutcome(
                doc_id,
                str(path),
                "partial" if bad else "indexed",
                message,
                pages=len(opened.pages),
                bad_pages=tuple(sorted(bad)),
            )
            ledger.record(outcome)
            report.outcomes.append(outcome)
            if message:
                report.notes.append((str(path), message))
                log.warning("'%s' %s", path, message)

    gone = [
        doc
        for doc in indexed.values()
        if doc.doc_id not in current and is_under(doc.doc_path, roots)
    ]
    store.delete_documents([doc.doc_id for doc in gone])
    images.delete_documents(doc.doc_id for doc in gone)
    report.removed.extend(doc.doc_path for doc in gone)
    images.keep_only(held - {doc.doc_id for doc in gone})
    # Outcomes of files gone from the folders indexed (refusals among them), and of
    # documents the store no longer holds.
    ledger.forget(
        o.doc_id
        for o in ledger.outcomes()
        if o.doc_id not in current
        and (is_under(o.path, roots) or (o.status != "refused" and o.doc_id not in held))
    )
    return report


def _opened_ahead(
    todo: list[tuple[str, Path]], passwords: Sequence[str]
) -> Iterator[tuple[str, Path, OpenedDocument | BadDocument]]:
    """(doc id, path, the file opened or why not) for every file of `todo`, in the order they
    finish opening, FILES_AHEAD at a time in threads."""
    if not todo:
        return
    pending = iter(todo)
    running: dict[Future[OpenedDocument], tuple[str, Path]] = {}
    with ThreadPoolExecutor(max_workers=FILES_AHEAD) as pool:

        def start_next() -> None:
            for doc_id, path in pending:
                running[pool.submit(open_document, path, passwords)] = (doc_id, path)
                return

        for _ in range(FILES_AHEAD):
            start_next()
        while running:
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in sorted(done, key=lambda f: str(running[f][1])):
                doc_id, path = running.pop(future)
                start_next()
                error = future.exception()
                if error is not None and not isinstance(error, BadDocument):
                    raise error
                yield doc_id, path, error if error is not None else future.result()


def _refuse(
    report: IndexReport,
    ledger: Ledger,
    doc_id: str,
    path: Path,
    error: BadDocument,
    pages: int,
) -> None:
    outcome = FileOutcome(doc_id, str(path), "refused", str(error), pages=pages, kind=error.kind)
    ledger.record(outcome)
    report.outcomes.append(outcome)
    report.skipped.append((str(path), str(error)))


def _message(opened: OpenedDocument, bad: dict[int, str], notes: list[str]) -> str:
    """The one sentence a person reads about a file that was indexed: "" when nothing went
    wrong, otherwise what was left out and what was read past.

    >>> from vdr.indexer.pdf import PageText
    >>> doc = OpenedDocument(Path("a.pdf"), (PageText((612.0, 792.0), ()),) * 9, damage="")
    >>> _message(doc, {2: "it has no usable size"}, [])
    'page 2 of 9 cannot be read (it has no usable size), the other 8 are indexed'
    """
    parts = []
    if bad:
        numbers = sorted(bad)
        shown = ", ".join(map(str, numbers[:10])) + (", ..." if len(numbers) > 10 else "")
        left = len(opened.pages) - len(bad)
        parts.append(
            f"page{'s' if len(bad) > 1 else ''} {shown} of {len(opened.pages)} cannot be read "
            f"({bad[numbers[0]]}), "
            + ("the other page is indexed" if left == 1 else f"the other {left} are indexed")
        )
    if opened.damage:
        parts.append(f"indexed although damaged ({opened.damage}): poppler read past it")
    return "; ".join(parts + notes)


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
    opened: OpenedDocument,
    encoder: Encoder,
    store: Store,
    images: PageImages,
    ocr: bool,
    pool_factor: int,
    figures: str,
    bar: tqdm,
    note: Callable[[str], None],
) -> dict[int, str]:
    """Render, encode and store every readable page of the document; {page: why} of the
    pages that cannot be read. BadDocument when none can."""
    texts = opened.pages
    n_pages = len(texts)
    bad = {number: text.problem for number, text in enumerate(texts, start=1) if text.problem}
    good = [number for number in range(1, n_pages + 1) if number not in bad]
    if not good:
        raise BadDocument(
            f"none of its {n_pages} page{'s' if n_pages > 1 else ''} can be read (page 1: {bad[1]})"
        )

    def render(numbers: list[int], dpi: float = RENDER_DPI) -> dict[int, Image.Image]:
        """{page: image} of these pages at `dpi`, runs of adjacent pages rendered together;
        a page too large for MAX_PAGE_PIXELS at the dpi that fits it, rendered on its own so
        that its neighbours keep `dpi`. A run that fails is rendered again page by page, and
        a page that fails alone is left out and named in `bad`."""
        fitting = {number: fitting_dpi([texts[number - 1].size], dpi) for number in numbers}
        rendered: dict[int, Image.Image] = {}
        runs = groupby(enumerate(numbers), key=lambda item: (item[1] - item[0], fitting[item[1]]))
        for (_, page_dpi), run in runs:
            run_numbers = [number for _, number in run]
            if page_dpi < dpi:
                for number in run_numbers:
                    width, height = texts[number - 1].size
                    note(
                        f"page {number} is {width:,.0f} x {height:,.0f} pt: rendered at "
                        f"{page_dpi:g} dpi instead of {dpi:g}, within VDR_MAX_PAGE_PIXELS"
                    )
            try:
                images = opened.render(run_numbers[0], run_numbers[-1], dpi=page_dpi)
                rendered.update(zip(run_numbers, images, strict=True))
                continue
            except BadDocument as error:
                if len(run_numbers) == 1 or error.kind == "timeout":
                    for number in run_numbers:
                        bad[number] = _page_reason(error)
                    continue
            for number in run_numbers:
                try:
                    (rendered[number],) = opened.render(number, number, dpi=page_dpi)
                except BadDocument as error:
                    bad[number] = _page_reason(error)
        return rendered

    chunks = [
        [good[i] for i in range(first - 1, last)]
        for first, last in _chunks([texts[number - 1].size for number in good])
    ]
    # Render the next chunk (a pdftoppm process) while this one is encoded.
    with ThreadPoolExecutor(max_workers=1) as renderer:
        rendering = renderer.submit(render, chunks[0])
        for number in range(len(chunks)):
            rendered = rendering.result()
            if number + 1 < len(chunks):
                rendering = renderer.submit(render, chunks[number + 1])
            pages = {}
            for page_number, image in rendered.items():
                text = texts[page_number - 1]
                words = text.words
                if not words and ocr and encoder.uses_words:
                    words = _ocr(opened, page_number)
                if figures != "none" and encoder.uses_words:
                    words = words + figure_words(image, words, with_text=figures == "kind+text")
                pages[page_number] = Page(image=image, words=words, size=text.size)
            records = [
                PageRecord(
                    doc_id=doc_id,
                    doc_path=str(opened.path),
                    page=page_number,
                    n_pages=n_pages,
                    size=page.size,
                    words=page.words,
                    embedding=pool_tokens(embedding, pool_factor),
                )
                for (page_number, page), embedding in zip(
                    pages.items(), encoder.encode_pages(list(pages.values())), strict=True
                )
            ]
            for record, page in zip(records, pages.values(), strict=True):
                images.save(record.page_id, page.image)
            store.upsert(records)
            bar.update(len(records))
    if len(bad) == n_pages:
        raise BadDocument(
            f"none of its {n_pages} page{'s' if n_pages > 1 else ''} can be read (page 1: {bad[1]})"
        )
    return bad


def _ocr(opened: OpenedDocument, number: int) -> tuple[Word, ...]:
    """The page's words read by OCR, at OCR_DPI (or what fits MAX_PAGE_PIXELS), where it
    reads small print better than the 150 dpi view; none when the page does not render."""
    dpi = fitting_dpi([opened.pages[number - 1].size], OCR_DPI)
    try:
        (sharp,) = opened.render(number, number, dpi=dpi)
    except BadDocument:
        return ()
    return ocr_words(sharp)


def _page_reason(error: BadDocument) -> str:
    """A page's render failure without the "page N" its message starts with."""
    text = str(error)
    return text.split(" ", 2)[2] if text.startswith("page ") else text

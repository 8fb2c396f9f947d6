"""The documents of an index as a person asks after them (`vdr docs`): each file's pages, and
whether it is indexed whole, in part, left incomplete, or refused, with vdr's one message.

Joins what the store holds (vdr.store.IndexedDocument) with what the indexer made of each file
(vdr.ledger.FileOutcome): the store knows the pages written, the ledger why others are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vdr.errors import UnknownId

if TYPE_CHECKING:
    from vdr.index import Index
    from vdr.ledger import FileOutcome
    from vdr.store import IndexedDocument


@dataclass(frozen=True)
class DocumentStatus:
    """One document of an index.

    status:        "indexed" (every page), "partial" (pages that could not be read, named in
                   bad_pages), "incomplete" (a run cut short: `vdr index` again completes it)
                   or "refused" (no page indexed; message says why)
    pages:         pages the file has (0 when refused before they could be counted)
    pages_indexed: pages in the store
    bad_pages:     1-based numbers of the pages that could not be read
    message:       one sentence in vdr's words, "" for a clean, complete index
    """

    doc_id: str
    path: str
    status: str
    pages: int
    pages_indexed: int
    bad_pages: tuple[int, ...]
    message: str


def document_statuses(index: Index) -> list[DocumentStatus]:
    """Every document the store holds and every file the index refused, sorted by path."""
    held = {d.doc_id: d for d in index.documents()}
    outcomes = {o.doc_id: o for o in index.outcomes()}
    statuses = [_status(doc, outcomes.get(doc.doc_id)) for doc in held.values()]
    statuses += [
        _refused(o) for o in outcomes.values() if o.doc_id not in held and o.status == "refused"
    ]
    return sorted(statuses, key=lambda s: (s.path, s.doc_id))


def document_status(index: Index, doc_id: str) -> DocumentStatus:
    """The one document `doc_id` (held or refused); UnknownId when the index knows neither."""
    outcome = index.outcome(doc_id)
    held = [d for d in index.documents() if d.doc_id == doc_id]
    if held:
        return _status(held[0], outcome)
    if outcome is not None and outcome.status == "refused":
        return _refused(outcome)
    raise UnknownId("document", doc_id)


def _status(doc: IndexedDocument, outcome: FileOutcome | None) -> DocumentStatus:
    bad = outcome.bad_pages if outcome is not None and outcome.status == "partial" else ()
    message = outcome.message if outcome is not None else ""
    if doc.pages_indexed + len(bad) < doc.n_pages:
        status = "incomplete"
        message = (
            f"{doc.pages_indexed} of its {doc.n_pages} pages are indexed (a run was cut short); "
            "`vdr index` on its folder, or `vdr doctor --repair`, completes it"
        )
    else:
        status = "partial" if bad else "indexed"
    return DocumentStatus(
        doc.doc_id, doc.doc_path, status, doc.n_pages, doc.pages_indexed, bad, message
    )


def _refused(outcome: FileOutcome) -> DocumentStatus:
    return DocumentStatus(
        outcome.doc_id, outcome.path, "refused", outcome.pages, 0, (), outcome.message
    )

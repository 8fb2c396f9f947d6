"""The store contract and the one schema both Qdrant backends share.

A point is one page:
- vector "full": the page's multi-vector (MaxSim, no HNSW): exact rerank and heatmaps;
- vectors "rows" and "cols": its grid-pooled multi-vectors (MaxSim, HNSW): the first stage;
- sparse vector "text": BM25 weights of its words (vdr.text_index; Qdrant applies the IDF);
- payload: which document and page it is, its grid and patch map, its size and its words.
"""

from __future__ import annotations

import threading
import uuid
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from vdr.encoders.base import PageEmbedding
from vdr.evidence import Evidence
from vdr.pages import Word
from vdr.storage import DEFAULT_STORAGE, LOSSY_STORAGES
from vdr.text_index import page_vector, query_vector

if TYPE_CHECKING:
    from vdr.store.resident import ResidentVectors

FULL, ROWS, COLS = "full", "rows", "cols"
# Pages' BM25 vectors (stemmed terms). Indexes from before stemming hold unstemmed ones under
# "text", which stemmed queries would mostly miss: those have no "bm25" and search late.
TEXT = "bm25"
# Payload keys that are indexed for filtering.
KEYWORD_FIELDS = ("doc_id", "doc_path")
# Payload keys read back for a search hit, and to list documents (vectors and words stay put).
HIT_FIELDS = ["page_id", "doc_id", "doc_path", "page"]
DOC_FIELDS = ["doc_id", "doc_path", "n_pages"]
SCROLL_PAGE = 1000
# Pages whose arrays get_page keeps: ~0.5-0.8 MB each, so ~100 MB at most.
PAGE_CACHE_SIZE = 128
# Scores this close (relative) are a tie: far above float32 rounding of a MaxSim sum, far below
# any real difference between pages.
TIE_TOLERANCE = 1e-5
# Extra hits a search asks the engine for, so that ties across the k-th place are settled.
TIE_SLACK = 8
_POINT_NAMESPACE = uuid.UUID("0f6c1d52-5a44-4c36-9b1e-3f43f0ad7a10")


def page_id_of(doc_id: str, page: int) -> str:
    """A page's id: its document's content id and its 1-based page number, e.g. '3f2a...-7'."""
    return f"{doc_id}-{page}"


def point_id_of(page_id: str) -> str:
    """Qdrant point id (a UUID string) for a page id: deterministic, so re-upserts replace."""
    return str(uuid.uuid5(_POINT_NAMESPACE, page_id))


@dataclass(frozen=True)
class PageRecord:
    """One page as the indexer hands it to the store."""

    doc_id: str
    doc_path: str
    page: int  # 1-based
    n_pages: int  # pages in the document, to tell a complete document from an interrupted one
    size: tuple[float, float]  # (width, height) in points
    words: tuple[Word, ...]
    embedding: PageEmbedding

    @property
    def page_id(self) -> str:
        return page_id_of(self.doc_id, self.page)


@dataclass(frozen=True)
class StoredPage:
    """A page read back from the store, with its full multi-vector."""

    page_id: str
    doc_id: str
    doc_path: str
    page: int
    size: tuple[float, float]
    words: tuple[Word, ...]
    embedding: PageEmbedding


@dataclass(frozen=True)
class Hit:
    """One ranked page. score: MaxSim of the query against the page's full multi-vector.

    evidence: the page words that matched, when the search was asked for them.
    matched:  whether the page clears the encoder's calibrated no-match threshold
              (vdr.search.MATCH_THRESHOLD); None where the index's encoder has none.
    """

    page_id: str
    doc_id: str
    doc_path: str
    page: int
    score: float
    evidence: Evidence | None = None
    matched: bool | None = None


@dataclass(frozen=True)
class IndexedDocument:
    """A document as the store knows it; pages_indexed < n_pages after an interrupted run."""

    doc_id: str
    doc_path: str
    n_pages: int
    pages_indexed: int

    @property
    def complete(self) -> bool:
        return self.pages_indexed == self.n_pages


class Store(ABC):
    """Pages in a Qdrant collection (embedded Qdrant Edge, or a Qdrant server).

    Pages read with get_page are kept in a small cache (evidence and heatmaps read the same
    result pages again and again, and turning a page's vectors into arrays costs more than the
    search); every write through the store forgets what it changes.
    """

    # Whether the engine builds its search structures by itself (a Qdrant server does, in
    # the background), so that optimize() has nothing to do.
    optimizes_itself = False

    def __init__(self) -> None:
        self._pages: OrderedDict[str, StoredPage] = OrderedDict()
        self._pages_lock = threading.Lock()
        # Set by keep_resident: searches then rerank with our kernels instead of Qdrant's.
        self.resident: ResidentVectors | None = None
        # Whether pages carry the BM25 vector (indexes made by an older vdr do not), and how
        # the vectors are kept (vdr.storage); each backend reads both from its
        # collection's configuration.
        self.has_text = False
        self.storage = DEFAULT_STORAGE

    def upsert(self, records: Sequence[PageRecord]) -> None:
        """Insert or replace pages (same page id -> same point), durably on return."""
        self._upsert(records)
        written = {r.page_id for r in records}
        self._forget(lambda page: page.page_id in written)
        if self.resident is not None:
            self.resident.put(self._as_stored(records))

    def _as_stored(self, records: Sequence[PageRecord]) -> Iterator[tuple[Hit, np.ndarray]]:
        """Each record's hit and full multi-vector as Qdrant holds it, for the resident copy:
        float16 and int8 storage round the values, so those are read back."""
        for r in records:
            hit = Hit(r.page_id, r.doc_id, r.doc_path, r.page, 0.0)
            stored = self._fetch_page(r.page_id) if self.storage in LOSSY_STORAGES else None
            yield hit, full_vector_of((stored or r).embedding)

    def delete_documents(self, doc_ids: Sequence[str]) -> None:
        """Remove every page of these documents."""
        if doc_ids:
            self._delete_documents(doc_ids)
            self._forget(lambda page: page.doc_id in doc_ids)
            if self.resident is not None:
                self.resident.drop_documents(set(doc_ids))

    def set_doc_path(self, doc_id: str, doc_path: str) -> None:
        """Record that a document now lives at another path (moved or renamed file)."""
        self._set_doc_path(doc_id, doc_path)
        self._forget(lambda page: page.doc_id == doc_id)
        if self.resident is not None:
            self.resident.move_document(doc_id, doc_path)

    def keep_resident(self, resident: ResidentVectors) -> None:
        """Load every page's full multi-vector into `resident` and rerank with it from now on;
        this store's writes keep it in step. Reads the whole collection once (~7 ms a page)."""
        resident.put(
            (hit_of(payload, 0.0), np.asarray(full, np.float32))
            for payload, full in self._scroll(HIT_FIELDS, with_full=True)
        )
        self.resident = resident

    def get_page(self, page_id: str) -> StoredPage | None:
        """A page with its full multi-vector, or None."""
        with self._pages_lock:
            if page_id in self._pages:
                self._pages.move_to_end(page_id)
                return self._pages[page_id]
        page = self._fetch_page(page_id)
        if page is not None:
            with self._pages_lock:
                self._pages[page_id] = page
                while len(self._pages) > PAGE_CACHE_SIZE:
                    self._pages.popitem(last=False)
        return page

    def _forget(self, stale: Callable[[StoredPage], bool]) -> None:
        with self._pages_lock:
            for page_id in [k for k, page in self._pages.items() if stale(page)]:
                del self._pages[page_id]

    @abstractmethod
    def _upsert(self, records: Sequence[PageRecord]) -> None: ...

    @abstractmethod
    def _delete_documents(self, doc_ids: Sequence[str]) -> None: ...

    @abstractmethod
    def _set_doc_path(self, doc_id: str, doc_path: str) -> None: ...

    @abstractmethod
    def _fetch_page(self, page_id: str) -> StoredPage | None: ...

    def documents(self) -> list[IndexedDocument]:
        """Every document with at least one page in the store."""
        return documents_of(list(self.payloads(DOC_FIELDS)))

    def vector_count(self) -> int:
        """Multi-vector rows stored across all pages (their full multi-vectors)."""
        return sum(int(p["n_vectors"]) for p in self.payloads(["n_vectors"]))

    def page_vectors(self) -> Iterator[tuple[str, np.ndarray]]:
        """(page id, [n, dim] float32 full multi-vector) of every page, in the store's order
        (by point id, so documents come mixed); a blank page has n = 0."""
        for payload, full in self._scroll(["page_id", "n_vectors"], with_full=True):
            yield payload["page_id"], np.asarray(full, np.float32)[: int(payload["n_vectors"])]

    def payloads(self, fields: list[str]) -> Iterator[dict[str, Any]]:
        """These payload fields of every point (page), in no particular order."""
        return (payload for payload, _ in self._scroll(fields, with_full=False))

    @abstractmethod
    def _scroll(
        self, fields: list[str], with_full: bool
    ) -> Iterator[tuple[dict[str, Any], list[list[float]] | None]]:
        """These payload fields of every point (and its full multi-vector when asked), read
        SCROLL_PAGE points at a time."""

    def search(
        self,
        query: np.ndarray,
        k: int,
        candidates: int | None,
        doc_ids: Sequence[str] | None = None,
        picked: Sequence[str] = (),
        pooled: bool = True,
    ) -> list[Hit]:
        """Top k pages by MaxSim against `query` ([m, dim] float32, the tokens that count).

        candidates: pages the pooled first stage passes to the exact rerank (per pooled
                    vector kind); None scores every page exactly (slow, for checks).
        doc_ids:    restrict to these documents.
        picked:     page ids another first stage chose (vdr.token_index), reranked too; ids
                    of pages no longer stored are passed over.
        pooled:     run the pooled first stage (False: rerank `picked` alone).

        The rerank is Qdrant's own, or ours on the resident vectors after keep_resident; both
        score the same float32 vectors exactly, so they give the same pages in the same order.
        """
        # Pages with the same content (repeated slides, duplicate scans) tie up to float
        # rounding, and each rerank orders ties its own way: take a few more, order ties by
        # page id, so results are the same whichever path runs and from one run to the next.
        wanted = k + TIE_SLACK
        if candidates is None or not picked:
            picked, pooled = (), True
        per_kind = candidates if pooled else None
        if self.resident is None:
            vectors = np.asarray(query, np.float32).tolist()
            return ordered(self._search(vectors, wanted, per_kind, doc_ids, picked))[:k]
        pool = None
        if candidates:
            vectors = np.asarray(query, np.float32).tolist()
            pool = set(picked) | {
                p
                for kind in ((ROWS, COLS) if pooled else ())
                for p in self._nearest(vectors, kind, candidates, doc_ids)
            }
        return ordered(self.resident.rerank(query, wanted, pool, doc_ids))[:k]

    def hits(self, scored: Sequence[tuple[str, float]], k: int) -> list[Hit]:
        """The top k of pages scored elsewhere ((page id, score) each, as TokenIndex.search
        gives them), with their payloads, best first and ties ordered as search() orders them;
        ids of pages no longer stored are passed over."""
        payloads = {p["page_id"]: p for p in self._hit_payloads([p for p, _ in scored])}
        return ordered([hit_of(payloads[p], s) for p, s in scored if p in payloads])[:k]

    @abstractmethod
    def _hit_payloads(self, page_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The HIT_FIELDS of these pages' points, for those that exist, in any order."""

    def search_text(self, text: str, k: int, doc_ids: Sequence[str] | None = None) -> list[Hit]:
        """Top k pages by BM25 of their words against `text` (none when it has no terms).
        Callers check has_text first: an index made by an older vdr has no BM25 vectors."""
        indices, values = query_vector(text)
        if not indices:
            return []
        return ordered(self._search_text(indices, values, k + TIE_SLACK, doc_ids))[:k]

    @abstractmethod
    def _search_text(
        self, indices: list[int], values: list[float], k: int, doc_ids: Sequence[str] | None
    ) -> list[Hit]: ...

    @abstractmethod
    def _search(
        self,
        query: list[list[float]],
        k: int,
        candidates: int | None,
        doc_ids: Sequence[str] | None,
        picked: Sequence[str] = (),
    ) -> list[Hit]:
        """search() with Qdrant's own rerank: the first stage as prefetches of the query, the
        pooled ones when `candidates` is given and one of the `picked` pages when any are."""

    @abstractmethod
    def _nearest(
        self, query: list[list[float]], using: str, limit: int, doc_ids: Sequence[str] | None
    ) -> list[str]:
        """Page ids of the `limit` best pages by MaxSim on the named (pooled) vector."""

    @abstractmethod
    def count(self, doc_ids: Sequence[str] | None = None) -> int:
        """Number of pages (of these documents only, when given)."""

    @abstractmethod
    def optimize(self) -> bool:
        """Build the search structures a large collection needs (HNSW graphs on the pooled
        vectors) now, rather than scanning on every query; blocks until done (minutes for
        10,000 pages). Returns whether anything changed (False: already optimal)."""

    @abstractmethod
    def close(self) -> None:
        """Release files and connections."""


def payload_of(record: PageRecord) -> dict[str, Any]:
    """The JSON payload of a page's point."""
    embedding = record.embedding
    return {
        "page_id": record.page_id,
        "doc_id": record.doc_id,
        "doc_path": record.doc_path,
        "page": record.page,
        "n_pages": record.n_pages,
        "size": list(record.size),
        "grid": list(embedding.grid),
        "n_vectors": len(embedding.vectors),
        "patch_index": embedding.patch_index.tolist(),
        "covers": None if embedding.covers is None else [a.tolist() for a in embedding.covers],
        "words": [[w.text, *(round(v, 5) for v in w.box), w.block] for w in record.words],
    }


def stored_page_of(payload: dict[str, Any], full: Sequence[Sequence[float]]) -> StoredPage:
    """Rebuild a StoredPage from a point's payload and its "full" multi-vector."""
    n = int(payload["n_vectors"])
    vectors = np.asarray(full, dtype=np.float32)[:n]  # an empty page stores one zero vector
    return StoredPage(
        page_id=payload["page_id"],
        doc_id=payload["doc_id"],
        doc_path=payload["doc_path"],
        page=int(payload["page"]),
        size=(float(payload["size"][0]), float(payload["size"][1])),
        words=tuple(
            Word(text=w[0], box=(w[1], w[2], w[3], w[4]), block=int(w[5])) for w in payload["words"]
        ),
        embedding=PageEmbedding(
            vectors=vectors.reshape(n, -1) if n else np.zeros((0, vectors.shape[-1]), np.float32),
            patch_index=np.asarray(payload["patch_index"], dtype=np.int32),
            grid=(int(payload["grid"][0]), int(payload["grid"][1])),
            covers=_covers_of(payload.get("covers")),
        ),
    )


def _covers_of(pairs: list[list[int]] | None) -> tuple[np.ndarray, np.ndarray] | None:
    if pairs is None:
        return None
    return np.asarray(pairs[0], dtype=np.int32), np.asarray(pairs[1], dtype=np.int32)


def ordered(hits: Sequence[Hit]) -> list[Hit]:
    """Best first; scores equal within TIE_TOLERANCE (relative) ordered by page id."""
    by_score = sorted(hits, key=lambda h: -h.score)
    ties: list[list[Hit]] = []
    for hit in by_score:
        if ties and ties[-1][-1].score - hit.score <= TIE_TOLERANCE * max(1.0, abs(hit.score)):
            ties[-1].append(hit)
        else:
            ties.append([hit])
    return [hit for tie in ties for hit in sorted(tie, key=lambda h: h.page_id)]


def hit_of(payload: dict[str, Any], score: float) -> Hit:
    return Hit(
        page_id=payload["page_id"],
        doc_id=payload["doc_id"],
        doc_path=payload["doc_path"],
        page=int(payload["page"]),
        score=float(score),
    )


def documents_of(payloads: Sequence[dict[str, Any]]) -> list[IndexedDocument]:
    """Group page payloads (doc_id, doc_path, n_pages) into documents."""
    docs: dict[str, IndexedDocument] = {}
    for p in payloads:
        seen = docs.get(p["doc_id"])
        docs[p["doc_id"]] = IndexedDocument(
            doc_id=p["doc_id"],
            doc_path=p["doc_path"],
            n_pages=int(p["n_pages"]),
            pages_indexed=(seen.pages_indexed if seen else 0) + 1,
        )
    return sorted(docs.values(), key=lambda d: d.doc_path)


def text_vector_of(record: PageRecord) -> tuple[list[int], list[float]]:
    """The page's BM25 "text" vector: (indices, values)."""
    return page_vector(word.text for word in record.words)


def full_vector_of(embedding: PageEmbedding) -> np.ndarray:
    """The page's "full" multi-vector as stored: its vectors, or one zero vector for a blank
    page (Qdrant refuses an empty multi-vector)."""
    if len(embedding.vectors):
        return embedding.vectors
    return np.zeros((1, embedding.vectors.shape[-1]), np.float32)


def vectors_of(embedding: PageEmbedding) -> dict[str, list[list[float]]]:
    """The three named multi-vectors of a page's point, checked before they reach Qdrant, as
    Python lists.

    Qdrant Edge panics (and can leave its write-ahead log unreadable) on ragged or empty
    multi-vectors, so anything but a finite, non-empty [n, dim] float array is refused here.
    Lists because both clients build a point from them faster than from numpy arrays: a
    1,030 x 128 page took 14.1 ms as arrays and 6.1 ms as lists (.tolist() included) to become
    a qdrant_edge Point, and EdgeStore.upsert 19.0 ms and 11.8 ms a page (same run, 2 cores).
    """
    from vdr.pooling import pool_rows_cols

    rows, cols = pool_rows_cols(embedding)
    named = {FULL: full_vector_of(embedding), ROWS: rows, COLS: cols}
    for name, vectors in named.items():
        if vectors.ndim != 2 or not len(vectors) or not np.isfinite(vectors).all():
            raise ValueError(
                f"'{name}' vectors of shape {vectors.shape} are not a finite multi-vector"
            )
    return {name: vectors.tolist() for name, vectors in named.items()}

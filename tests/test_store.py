"""The store contract, run against Qdrant Edge and qdrant-client's in-memory mode."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest
import torch

from vdr.encoders.base import PageEmbedding
from vdr.pages import Word
from vdr.store import Hit, PageRecord, Store
from vdr.store.resident import ResidentVectors

DIM = 384
GRID = (6, 5)


def random_record(
    rng: np.random.Generator, doc_id: str, page: int, n_pages: int = 3, n: int = 20
) -> PageRecord:
    vectors = rng.standard_normal((n, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return PageRecord(
        doc_id=doc_id,
        doc_path=f"/docs/{doc_id}.pdf",
        page=page,
        n_pages=n_pages,
        size=(612.0, 792.0),
        words=(Word(text="word", box=(0.1, 0.2, 0.3, 0.25), block=0),),
        embedding=PageEmbedding(
            vectors=vectors,
            patch_index=rng.integers(0, GRID[0] * GRID[1], n).astype(np.int32),
            grid=GRID,
        ),
    )


def maxsim(query: np.ndarray, vectors: np.ndarray) -> float:
    return float((query @ vectors.T).max(axis=1).sum()) if len(vectors) else 0.0


@pytest.fixture()
def filled(store: Store) -> tuple[Store, list[PageRecord], np.ndarray]:
    rng = np.random.default_rng(0)
    records = [
        random_record(rng, doc, page) for doc in ("aaaa", "bbbb", "cccc") for page in (1, 2, 3)
    ]
    store.upsert(records)
    query = rng.standard_normal((5, DIM)).astype(np.float32)
    return store, records, query / np.linalg.norm(query, axis=1, keepdims=True)


def test_exact_search_scores_are_maxsim(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, records, query = filled
    hits = store.search(query, k=9, candidates=None)
    expected = sorted(
        ((maxsim(query, r.embedding.vectors), r.page_id) for r in records), reverse=True
    )
    assert [h.page_id for h in hits] == [page_id for _, page_id in expected]
    np.testing.assert_allclose(
        [h.score for h in hits], [s for s, _ in expected], rtol=1e-4, atol=1e-4
    )


def test_prefetch_and_rerank_returns_exact_scores(
    filled: tuple[Store, list[PageRecord], np.ndarray],
) -> None:
    store, records, query = filled
    by_id = {r.page_id: r for r in records}
    hits = store.search(query, k=3, candidates=4)
    assert len(hits) == 3
    for hit in hits:
        assert hit.score == pytest.approx(
            maxsim(query, by_id[hit.page_id].embedding.vectors), abs=1e-4
        )
    # With every page a candidate, the first stage changes nothing.
    assert [h.page_id for h in store.search(query, k=5, candidates=9)] == [
        h.page_id for h in store.search(query, k=5, candidates=None)
    ]


def test_document_filter(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, _, query = filled
    assert {h.doc_id for h in store.search(query, k=9, candidates=9, doc_ids=["bbbb"])} == {"bbbb"}
    two = store.search(query, k=9, candidates=None, doc_ids=["aaaa", "cccc"])
    assert {h.doc_id for h in two} == {"aaaa", "cccc"} and len(two) == 6


def test_documents_and_delete(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, _, query = filled
    docs = {d.doc_id: d for d in store.documents()}
    assert set(docs) == {"aaaa", "bbbb", "cccc"}
    assert all(d.complete and d.pages_indexed == 3 for d in docs.values())
    store.delete_documents(["bbbb"])
    assert store.count() == 6
    assert "bbbb" not in {h.doc_id for h in store.search(query, k=9, candidates=None)}


def test_upserting_a_page_again_replaces_it(
    filled: tuple[Store, list[PageRecord], np.ndarray],
) -> None:
    store, records, _ = filled
    rng = np.random.default_rng(1)
    replacement = random_record(rng, "aaaa", 1)
    store.upsert([replacement])
    assert store.count() == len(records)
    stored = store.get_page(replacement.page_id)
    assert stored is not None
    np.testing.assert_allclose(stored.embedding.vectors, replacement.embedding.vectors, atol=1e-6)


def test_get_page_round_trip(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, records, _ = filled
    record = records[4]
    page = store.get_page(record.page_id)
    assert page is not None
    assert (page.doc_id, page.page, page.doc_path, page.size) == (
        record.doc_id,
        record.page,
        record.doc_path,
        record.size,
    )
    assert page.embedding.grid == GRID
    np.testing.assert_array_equal(page.embedding.patch_index, record.embedding.patch_index)
    np.testing.assert_allclose(page.embedding.vectors, record.embedding.vectors, atol=1e-6)
    assert page.words == record.words
    assert store.get_page("ffff-1") is None


def test_moved_document_keeps_its_pages(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, _, query = filled
    store.set_doc_path("cccc", "/elsewhere/renamed.pdf")
    paths = {d.doc_id: d.doc_path for d in store.documents()}
    assert paths["cccc"] == "/elsewhere/renamed.pdf" and store.count() == 9
    hits = store.search(query, k=9, candidates=None, doc_ids=["cccc"])
    assert {h.doc_path for h in hits} == {"/elsewhere/renamed.pdf"}


def test_interrupted_document_is_incomplete(store: Store) -> None:
    rng = np.random.default_rng(2)
    store.upsert(
        [random_record(rng, "dddd", 1, n_pages=5), random_record(rng, "dddd", 2, n_pages=5)]
    )
    (doc,) = store.documents()
    assert (doc.pages_indexed, doc.n_pages, doc.complete) == (2, 5, False)


def test_blank_page_is_stored_and_scores_zero(store: Store) -> None:
    rng = np.random.default_rng(3)
    blank = PageRecord(
        doc_id="eeee",
        doc_path="/docs/blank.pdf",
        page=1,
        n_pages=1,
        size=(612.0, 792.0),
        words=(),
        embedding=PageEmbedding(np.zeros((0, DIM), np.float32), np.zeros(0, np.int32), GRID),
    )
    store.upsert([blank])
    (hit,) = store.search(rng.standard_normal((3, DIM)).astype(np.float32), k=1, candidates=None)
    assert hit.page_id == blank.page_id and hit.score == 0.0
    page = store.get_page(blank.page_id)
    assert page is not None and page.embedding.vectors.shape == (0, DIM)


def test_non_finite_vectors_are_refused(store: Store) -> None:
    rng = np.random.default_rng(4)
    record = random_record(rng, "ffff", 1)
    record.embedding.vectors[0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        store.upsert([record])
    assert store.count() == 0


def test_cached_pages_follow_writes(filled: tuple[Store, list[PageRecord], np.ndarray]) -> None:
    store, records, _ = filled
    first = store.get_page(records[0].page_id)
    assert first is not None and store.get_page(records[0].page_id) is first  # served from cache
    replacement = random_record(np.random.default_rng(9), records[0].doc_id, records[0].page)
    store.upsert([replacement])
    again = store.get_page(records[0].page_id)
    assert again is not None
    np.testing.assert_allclose(again.embedding.vectors, replacement.embedding.vectors, atol=1e-6)
    store.set_doc_path(records[0].doc_id, "/moved.pdf")
    moved = store.get_page(records[0].page_id)
    assert moved is not None and moved.doc_path == "/moved.pdf"
    store.delete_documents([records[0].doc_id])
    assert store.get_page(records[0].page_id) is None


def searched_both_ways(
    store: Store, resident: ResidentVectors, query: np.ndarray, **search: Any
) -> tuple[list[Hit], list[Hit]]:
    """The same search reranked by Qdrant and by our kernel on `resident`."""
    store.resident = None
    by_qdrant = store.search(query, **search)
    store.resident = resident
    return by_qdrant, store.search(query, **search)


def assert_same_results(by_qdrant: list[Hit], by_vdr: list[Hit]) -> None:
    """Same pages in the same order (with their paths), scores within 1e-4."""
    assert [(h.page_id, h.doc_path) for h in by_vdr] == [(h.page_id, h.doc_path) for h in by_qdrant]
    np.testing.assert_allclose(
        [h.score for h in by_vdr], [h.score for h in by_qdrant], rtol=0, atol=1e-4
    )


def rerank_records(rng: np.random.Generator) -> list[PageRecord]:
    """40 pages of 1 to 60 vectors (one-vector pages often have only negative similarities),
    three copies of page aaaa-4 in other documents (exact ties), and a blank page."""
    pages = [
        random_record(rng, doc, page, n_pages=10, n=int(rng.integers(1, 61)))
        for doc in ("aaaa", "bbbb", "cccc", "dddd")
        for page in range(1, 11)
    ]
    copies = [replace(pages[3], doc_id=doc, doc_path=f"/docs/{doc}.pdf") for doc in "xyz"]
    blank = random_record(rng, "eeee", 1, n_pages=1, n=1)
    empty = PageEmbedding(np.zeros((0, DIM), np.float32), np.zeros(0, np.int32), GRID)
    return [*pages, *copies, replace(blank, embedding=empty)]


def check_rerank_paths_agree(store: Store, resident: ResidentVectors) -> None:
    """Qdrant's rerank and ours give identical results, before and after the store changes."""
    rng = np.random.default_rng(7)
    records = rerank_records(rng)
    store.upsert(records[:30])
    store.keep_resident(resident)
    queries = [rng.standard_normal((m, DIM)).astype(np.float32) for m in (1, 3, 12)]
    queries.append(records[3].embedding.vectors[:4])  # the copies of aaaa-4 tie at the top
    searches: list[dict[str, Any]] = [
        {"k": 10, "candidates": 8},
        {"k": 5, "candidates": None},
        {"k": 41, "candidates": None},
        {"k": 6, "candidates": 20, "doc_ids": ["bbbb", "cccc"]},
    ]

    def compare() -> None:
        for query in queries:
            for search in searches:
                assert_same_results(*searched_both_ways(store, resident, query, **search))

    compare()
    store.upsert(records[30:])  # new pages, the copies and the blank page
    replaced = random_record(rng, "aaaa", 1, n_pages=10, n=25)
    store.upsert([replaced])
    store.delete_documents(["cccc"])
    store.set_doc_path("aaaa", "/moved/aaaa.pdf")
    assert len(resident) == store.count() == 34
    compare()
    top = store.search(queries[-1], k=3, candidates=None)
    assert [h.page_id for h in top] == sorted(h.page_id for h in top)  # ties by page id


def test_our_rerank_gives_qdrants_results(store: Store) -> None:
    check_rerank_paths_agree(store, ResidentVectors(torch.device("cpu")))


def worded_record(doc_id: str, page: int, text: str) -> PageRecord:
    record = random_record(np.random.default_rng(page), doc_id, page, n_pages=4)
    words = tuple(Word(text=w, box=(0.1, 0.1, 0.2, 0.2), block=0) for w in text.split())
    return replace(record, words=words)


def test_bm25_over_page_words(store: Store) -> None:
    assert store.has_text
    store.upsert(
        [
            worded_record("aaaa", 1, "harbour dredging permit granted for the harbour basin"),
            worded_record("aaaa", 2, "quarterly generation per site in the harbour region"),
            worded_record("bbbb", 1, "brake pads and chain maintenance for the harbour bike"),
            worded_record("bbbb", 2, ""),  # a page without words
        ]
    )
    hits = store.search_text("dredging permit", k=5)
    assert [h.page_id for h in hits] == ["aaaa-1"]  # only it has the terms
    # "harbour" is on three pages, "generation" on one: the rare term decides (Qdrant's IDF).
    assert store.search_text("harbour generation", k=5)[0].page_id == "aaaa-2"
    assert {h.doc_id for h in store.search_text("harbour", k=5, doc_ids=["bbbb"])} == {"bbbb"}
    assert store.search_text("the and of", k=5) == []  # stop words only: nothing to match
    scores = [h.score for h in store.search_text("harbour", k=5)]
    assert len(scores) == 3 and scores == sorted(scores, reverse=True) and scores[0] > 0


@pytest.mark.parametrize("resident", [False, True])
def test_picked_pages_alone_are_reranked_exactly_and_deleted_ids_pass_over(
    filled: tuple[Store, list[PageRecord], np.ndarray], resident: bool
) -> None:
    """What the token first stage relies on, on both backends and both reranks."""
    store, _, query = filled
    if resident:
        store.keep_resident(ResidentVectors(torch.device("cpu")))
    exact = store.search(query, k=9, candidates=None)
    picked = [h.page_id for h in exact[2:5]] + ["zzzz-p9"]  # no such page
    got = store.search(query, k=9, candidates=4, picked=picked, pooled=False)
    assert [h.page_id for h in got] == picked[:3]
    np.testing.assert_allclose([h.score for h in got], [h.score for h in exact[2:5]], rtol=1e-4)
    # Restricted to documents, the picked pages outside them are left out too.
    doc = exact[2].doc_id
    within = store.search(query, k=9, candidates=4, doc_ids=[doc], picked=picked, pooled=False)
    assert [h.page_id for h in within] == [p for p in picked[:3] if p.startswith(doc)]
    # With the pooled stage too (here wide enough for every page), the union is reranked.
    both = store.search(query, k=9, candidates=9, picked=picked)
    assert [h.page_id for h in both] == [h.page_id for h in exact]


def test_pages_scored_elsewhere_get_their_payloads_in_search_order(
    filled: tuple[Store, list[PageRecord], np.ndarray],
) -> None:
    """What the token index's own rerank relies on, on both backends."""
    store, records, _ = filled
    first, second, third = (r.page_id for r in records[:3])
    scored = [(first, 0.5), ("zzzz-p9", 9.0), (third, 2.0), (second, 0.5)]  # zzzz: no such page
    hits = store.hits(scored, k=2)
    assert [h.page_id for h in hits] == [third, min(first, second)]  # a tie: by page id
    assert (hits[0].score, hits[0].doc_id, hits[0].page) == (2.0, records[2].doc_id, 3)
    assert hits[0].doc_path == records[2].doc_path
    assert store.hits([], k=5) == []

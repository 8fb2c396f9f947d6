"""Storage options (float32, float16, int8, binary) on both store backends: each keeps what it
promises, remembers what it is, and an index refuses another one later."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_store import maxsim, random_record
from vdr.errors import VdrError
from vdr.index import Index
from vdr.storage import LOSSY_STORAGES, STORAGES
from vdr.store import PageRecord, Store, open_store
from vdr.store.resident import ResidentVectors

DIM = 384
# Largest change each option may make to a MaxSim score, relative to the float32 score
# (int8: one byte a coordinate after Qdrant's rotation; binary rescores with the float32).
SCORE_TOLERANCE = {"float32": 1e-5, "float16": 1e-3, "int8": 2e-2, "binary": 1e-5}


@pytest.fixture(params=[(s, b) for s in STORAGES for b in ("edge", "memory")], ids=str)
def stored(
    request: pytest.FixtureRequest, tmp_path: Path
) -> tuple[Store, str, list[PageRecord], np.ndarray]:
    storage, backend = request.param
    store = open_store(
        tmp_path / "qdrant", DIM, ":memory:" if backend == "memory" else None, storage=storage
    )
    rng = np.random.default_rng(1)
    records = [random_record(rng, f"doc{d}", p, n=40) for d in range(6) for p in (1, 2, 3)]
    store.upsert(records)
    query = rng.standard_normal((6, DIM)).astype(np.float32)
    yield store, storage, records, query / np.linalg.norm(query, axis=1, keepdims=True)
    store.close()


def test_scores_stay_within_the_options_tolerance(
    stored: tuple[Store, str, list[PageRecord], np.ndarray],
) -> None:
    store, storage, records, query = stored
    assert store.storage == storage
    exact = {r.page_id: maxsim(query, r.embedding.vectors) for r in records}
    best = max(exact, key=exact.__getitem__)
    for candidates in (None, 6):
        hits = store.search(query, k=5, candidates=candidates)
        assert hits[0].page_id == best
        for hit in hits:
            assert hit.score == pytest.approx(exact[hit.page_id], rel=SCORE_TOLERANCE[storage])


def test_pages_read_back_close_to_what_was_written(
    stored: tuple[Store, str, list[PageRecord], np.ndarray],
) -> None:
    store, storage, records, _ = stored
    page = store.get_page(records[4].page_id)
    assert page is not None
    written = records[4].embedding.vectors
    error = np.abs(page.embedding.vectors - written).max()
    assert error <= {"float32": 0, "binary": 0, "float16": 1e-3, "int8": 2e-2}[storage]


def test_our_rerank_scores_what_qdrant_stores(
    stored: tuple[Store, str, list[PageRecord], np.ndarray],
) -> None:
    """The resident copy holds the stored (rounded) values, for pages written before it was
    made and after, so both reranks give the same scores whatever the option rounds (Qdrant
    rounds a float16 index's query to float16 as well, and scores int8 in its rotated space:
    ~5e-5 apart)."""
    store, storage, _, query = stored
    store.keep_resident(ResidentVectors(torch.device("cpu")))
    late = random_record(np.random.default_rng(7), "late", 1, n=40)
    store.upsert([late])
    query = np.concatenate([query, late.embedding.vectors[:6]])  # the late page comes first
    ours = store.search(query, k=8, candidates=None)
    assert ours[0].page_id == late.page_id
    stored_late = store.get_page(late.page_id)
    assert stored_late is not None
    assert ours[0].score == pytest.approx(maxsim(query, stored_late.embedding.vectors), rel=1e-6)
    store.resident = None
    theirs = store.search(query, k=8, candidates=None)
    assert [h.page_id for h in ours] == [h.page_id for h in theirs]
    rtol = 1e-4 if storage in LOSSY_STORAGES else 1e-5
    np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], rtol=rtol)


def test_embedded_store_reopens_with_its_storage(tmp_path: Path) -> None:
    for storage in STORAGES:
        folder = tmp_path / storage
        open_store(folder, DIM, storage=storage).close()
        reopened = open_store(folder, DIM)  # the shard's own configuration says which
        assert reopened.storage == storage
        reopened.close()


def test_index_refuses_another_storage_later(tmp_path: Path, samples: Path) -> None:
    with Index(tmp_path / "index", storage="int8") as index:
        index.add([samples / "solar_report.pdf"])
        assert index.search("quarterly generation per site", k=1)[0].doc_path.endswith(
            "solar_report.pdf"
        )
    with pytest.raises(VdrError, match="stores its vectors as int8, not float16"):
        Index(tmp_path / "index", storage="float16")
    with Index(tmp_path / "index") as index:
        assert index.storage == "int8" and index.store.storage == "int8"
    with pytest.raises(VdrError, match="storage must be one of"):
        Index(tmp_path / "other", storage="int4")

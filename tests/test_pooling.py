"""Token pooling at index time: fewer vectors, same page coverage, search and heatmaps intact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from vdr import Index, VdrError
from vdr.encoders.base import PageEmbedding
from vdr.encoders.textgrid import TextGridEncoder
from vdr.pooling import pool_rows_cols, pool_tokens
from vdr.store import PageRecord, Store


def random_embedding(n: int = 240, grid: tuple[int, int] = (12, 10)) -> PageEmbedding:
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return PageEmbedding(vectors, rng.integers(0, grid[0] * grid[1], n).astype(np.int32), grid)


def test_pooling_keeps_a_third_and_covers_every_patch() -> None:
    page = random_embedding()
    pooled = pool_tokens(page, 3)
    assert len(pooled.vectors) == len(page.vectors) // 3
    np.testing.assert_allclose(np.linalg.norm(pooled.vectors, axis=1), 1.0, atol=1e-5)
    vector_of, patch_of = pooled.placements()
    assert sorted(patch_of) == sorted(page.patch_index)  # each original placement kept once
    assert vector_of.max() == len(pooled.vectors) - 1 and set(vector_of) == set(
        range(len(pooled.vectors))
    )
    rows, cols = pool_rows_cols(pooled)
    assert len(rows) == len(set(page.patch_index // 10)) and len(cols) == len(
        set(page.patch_index % 10)
    )


def test_pool_factor_one_and_tiny_pages_are_unchanged() -> None:
    page = random_embedding()
    assert pool_tokens(page, 1) is page
    single = random_embedding(n=1)
    assert pool_tokens(single, 3) is single


def test_store_keeps_what_pooled_vectors_cover(store: Store) -> None:
    pooled = pool_tokens(random_embedding(n=240, grid=(12, 10)), 4)
    record = PageRecord("abcd", "/d.pdf", 1, 1, (612.0, 792.0), (), pooled)
    store.upsert([record])
    page = store.get_page(record.page_id)
    assert page is not None and page.embedding.covers is not None
    for stored, original in zip(page.embedding.covers, pooled.covers, strict=True):
        np.testing.assert_array_equal(stored, original)


def test_pooled_index_searches_and_maps_the_whole_page(
    tmp_path: Path, samples: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    (samples / "scanned_letter.pdf").unlink()
    query = "quarterly generation per site table"
    with Index(tmp_path / "full") as full:
        full.add([samples])
        expected = full.search(query, k=1)[0]
        full_page = full.page(expected.page_id)
        full_map = full.similarity(query, expected.page_id).whole_query()
    with Index(tmp_path / "pooled", pool_factor=3) as pooled:
        pooled.add([samples])
        top = pooled.search(query, k=1)[0]
        pooled_page = pooled.page(top.page_id)
        pooled_map = pooled.similarity(query, top.page_id).whole_query()
    assert top.page_id == expected.page_id
    ratio = len(full_page.embedding.vectors) / len(pooled_page.embedding.vectors)
    assert 2.5 <= ratio <= 3.5
    np.testing.assert_array_equal(np.isfinite(pooled_map), np.isfinite(full_map))
    with pytest.raises(VdrError, match="pools vectors by 3, not 2"):
        Index(tmp_path / "pooled", pool_factor=2)

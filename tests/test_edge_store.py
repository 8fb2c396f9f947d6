"""The embedded store's upkeep: optimizing builds its search graphs without changing results,
flushing during a run keeps the write-ahead log bounded, and a kill after flushes loses
nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.test_store import DIM, random_record
from vdr.store import PageRecord, edge
from vdr.store.edge import EdgeStore

from conftest import REPO

# 20 pages of 400 x 384 float32 vectors: ~12 MB, past the ~10 MB below which Qdrant Edge
# leaves a segment plain (16 such pages stay plain), so optimize has work to do.
PAGES, VECTORS = 20, 400
# Qdrant Edge's write-ahead log is a chain of files of this size.
WAL_FILE_BYTES = 32 * 2**20


def wal_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in (folder / "wal").iterdir())


def big_records(rng: np.random.Generator, first: int, last: int, n_pages: int) -> list[PageRecord]:
    return [
        random_record(rng, "big", p, n_pages=n_pages, n=VECTORS) for p in range(first, last + 1)
    ]


@pytest.fixture()
def edge_store(tmp_path: Path) -> Iterator[EdgeStore]:
    store = EdgeStore(tmp_path / "qdrant", DIM)
    yield store
    store.close()


def test_optimize_builds_the_graphs_and_keeps_the_results(edge_store: EdgeStore) -> None:
    rng = np.random.default_rng(0)
    edge_store.upsert(big_records(rng, 1, PAGES, PAGES))
    query = rng.standard_normal((5, DIM)).astype(np.float32)
    before = [edge_store.search(query, k=5, candidates=c) for c in (None, 8)]
    plain = edge_store.shard.info()
    # Only the sparse BM25 vectors count as indexed in a plain segment.
    assert plain.indexed_vectors_count == PAGES

    assert edge_store.optimize() is True
    optimized = edge_store.shard.info()
    # BM25 plus the three dense vectors, full ("m=0", never searched) and the graphs on
    # rows and cols.
    assert optimized.indexed_vectors_count == 4 * PAGES
    assert optimized.points_count == PAGES
    assert [edge_store.search(query, k=5, candidates=c) for c in (None, 8)] == before
    assert edge_store.optimize() is False  # nothing left to do


def test_flushing_every_few_pages_keeps_the_log_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """~1.2 MB of log a page here: unflushed, it grew from 134 MB after 96 pages to 302 MB
    after 240."""
    monkeypatch.setattr(edge, "FLUSH_EVERY_PAGES", 48)
    store = EdgeStore(tmp_path / "qdrant", DIM)
    rng = np.random.default_rng(0)
    sizes = []
    for first in range(1, 241, 16):
        store.upsert(big_records(rng, first, first + 15, 240))
        if first + 15 in (96, 240):
            sizes.append(wal_bytes(tmp_path / "qdrant"))
    assert store.count() == 240
    store.close()
    after_96, after_240 = sizes
    # The log grows by whole 32 MB files: flushed, it is no more than one longer after 240
    # pages than after 96 (unflushed: 168 MB longer).
    assert after_240 - after_96 <= WAL_FILE_BYTES, sizes


def test_a_kill_after_flushes_loses_no_page(tmp_path: Path) -> None:
    """Pages flushed into segments and pages only in the log after them both survive a
    SIGKILL, with their vectors."""
    folder = tmp_path / "qdrant"
    script = textwrap.dedent(
        f"""
        import os, signal, sys
        from pathlib import Path
        import numpy as np
        sys.path.insert(0, {str(REPO)!r})
        from tests.test_store import DIM, random_record
        from vdr.store import edge
        edge.FLUSH_EVERY_PAGES = 4
        store = edge.EdgeStore(Path({str(folder)!r}), DIM)
        rng = np.random.default_rng(7)
        for first in (1, 4, 7, 10):  # flushes after pages 6 and 12; 13 only in the log
            store.upsert([random_record(rng, "doc", p, 13) for p in range(first, first + 3)])
        store.upsert([random_record(rng, "doc", 13, 13)])
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    killed = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True)
    assert killed.returncode == -9, killed.stderr.decode()

    rng = np.random.default_rng(7)
    expected = [random_record(rng, "doc", p, n_pages=13) for p in range(1, 14)]
    store = EdgeStore(folder, DIM)
    try:
        assert store.count() == 13
        assert store.documents()[0].complete
        for record in expected:
            page = store.get_page(record.page_id)
            assert page is not None
            np.testing.assert_array_equal(page.embedding.vectors, record.embedding.vectors)
    finally:
        store.close()

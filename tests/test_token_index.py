"""The token-level first stage: its scores against exact MaxSim, its files, and an index that
uses it while pages come and go (real PDFs, the real encoder, Qdrant Edge)."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vdr import token_index
from vdr.encoders.textgrid import TextGridEncoder
from vdr.index import TOKEN_INDEX_DIR, Index
from vdr.token_index import (
    Codebook,
    TokenIndex,
    build_token_index,
    centroid_count,
    nearest_centroids,
)

from conftest import DEV_SET, make_pdf


def unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def clustered_pages(n_pages: int, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Pages of 40 x 32 unit vectors, each near one of 200 topic directions (noise of norm
    ~0.3), as real page vectors crowd around what the page is about."""
    rng = np.random.default_rng(seed)
    topics = unit(rng.standard_normal((200, 32)))
    return [
        (f"p{n}", unit(topics[rng.integers(0, 200, 40)] + 0.05 * rng.standard_normal((40, 32))))
        for n in range(n_pages)
    ]


def maxsim(query: np.ndarray, page: np.ndarray) -> float:
    return float((query @ page.T).max(axis=1).sum())


def built(pages: list[tuple[str, np.ndarray]], folder: Path) -> TokenIndex:
    build_token_index(iter(pages), sum(len(v) for _, v in pages), folder, writes=3)
    opened = TokenIndex.open(folder)
    assert opened is not None
    return opened


def reference_scores(index: TokenIndex, query: np.ndarray, pages: list[np.ndarray]) -> np.ndarray:
    """The first stage's score of each page, by its definition, in float32 (no int8)."""
    similarity = query @ index.centroids.T
    ranked = np.argsort(-similarity, axis=1)
    scores = np.zeros(len(pages))
    for n, vectors in enumerate(pages):
        codes = (vectors @ index.centroids.T).argmax(axis=1)
        for token, order, sims in zip(query, ranked, similarity, strict=True):
            probed = np.isin(codes, order[: token_index.NPROBE])
            floor = sims[order[token_index.NPROBE]]
            scores[n] += max([floor, *(vectors[probed] @ token)])
    return scores


def test_scores_are_the_probed_maxsim_with_floors_and_find_the_true_top(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 of the 16 centroids a small index has: most pages' best vector for a token is not
    # probed, so floors decide much of each score.
    monkeypatch.setattr(token_index, "NPROBE", 4)
    pages = clustered_pages(300)
    index = built(pages, tmp_path / "tokens")
    assert index.info.pages == 300 and index.info.vectors == 12_000 and index.info.writes == 3
    rng = np.random.default_rng(1)
    recalls = []
    for _ in range(20):
        # A query: 6 tokens, each near a vector of some page.
        picks = [pages[rng.integers(300)][1][rng.integers(40)] for _ in range(6)]
        query = unit(np.stack(picks) + 0.04 * rng.standard_normal((6, 32)))
        expected = reference_scores(index, query, [v for _, v in pages])
        np.testing.assert_allclose(index.scores(query), expected, atol=0.01 * len(query))
        exact = np.array([maxsim(query, v) for _, v in pages])
        true_top = {f"p{n}" for n in np.argsort(-exact)[:10]}
        recalls.append(len(true_top & set(index.candidates(query, 30))) / 10)
    assert np.mean(recalls) >= 0.95


def test_a_query_token_equal_to_a_page_vector_finds_that_page_first(tmp_path: Path) -> None:
    pages = clustered_pages(200, seed=2)
    index = built(pages, tmp_path / "tokens")
    for n in (0, 57, 199):
        query = pages[n][1][[3, 17, 29]]
        assert index.candidates(query, 1) == [f"p{n}"]


def test_search_reranks_its_candidates_by_maxsim_over_all_their_int8_vectors(
    tmp_path: Path,
) -> None:
    pages = clustered_pages(120, seed=6)
    pages.insert(50, ("blank", np.zeros((0, 32), np.float32)))  # listed, with no vectors
    index = built(pages, tmp_path / "tokens")
    np.testing.assert_allclose(index.rotation @ index.rotation.T, np.eye(32), atol=1e-5)
    rng = np.random.default_rng(7)
    for _ in range(10):
        picks = [pages[rng.integers(50)][1][rng.integers(40)] for _ in range(5)]
        query = unit(np.stack(picks) + 0.04 * rng.standard_normal((5, 32)))
        # Every page a candidate: the result is the exact top 10, up to int8 rounding.
        got = index.search(query, k=10, candidates=len(pages))
        exact = {page_id: maxsim(query, v) if len(v) else 0.0 for page_id, v in pages}
        true_top = sorted(exact, key=lambda p: -exact[p])[:10]
        assert len({p for p, _ in got} & set(true_top)) >= 9
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        for page_id, score in got:
            assert abs(score - exact[page_id]) <= 0.01 * len(query)
        # Each page's score is MaxSim over exactly its own rows, as the int8 values give them
        # (rotated, as the query is).
        numbers = np.arange(len(pages))
        rotated = query @ index.rotation
        for n, score in zip(numbers, index.maxsim(query, numbers), strict=True):
            rows = index.page_rows[index.page_starts[n] : index.page_starts[n + 1]]
            assert sorted(index.pages[rows].tolist()) == [n] * len(rows)
            vectors = index.vectors[rows].astype(np.float32) * index.scales[rows][:, None]
            assert score == pytest.approx(maxsim(rotated, vectors) if len(rows) else 0, rel=1e-5)
        # Fewer candidates than pages: the best by the first stage, then by MaxSim.
        few = index.search(query, k=3, candidates=12)
        assert {p for p, _ in few} <= set(index.candidates(query, 12)) and len(few) == 3


def test_a_partial_build_is_no_index_and_a_new_build_replaces_the_old(tmp_path: Path) -> None:
    folder = tmp_path / "tokens"
    assert TokenIndex.open(folder) is None
    built(clustered_pages(50), folder)
    (folder / "meta.json").unlink()  # as a crash before the last file leaves it
    assert TokenIndex.open(folder) is None
    built(clustered_pages(50), folder)
    with (folder / "vectors.npy").open("r+b") as cut:  # a file the machine's crash cut short
        cut.truncate(1000)
    assert TokenIndex.open(folder) is None
    index = built(clustered_pages(80, seed=5), folder)
    assert index.info.pages == 80 and not folder.with_name("tokens.new").exists()
    assert len(json.loads((folder / "page_ids.json").read_text())) == 80


def test_the_codebook_grows_with_the_index() -> None:
    assert centroid_count(1_000) == 16
    assert centroid_count(10_300_000) == 4096
    assert centroid_count(103_000_000) == 16_384


def test_a_two_level_codebook_mostly_finds_the_nearest_centroid_and_the_true_top(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Large indexes (above FLAT_MAX_CENTROIDS) get a two-level codebook; lowered here so that
    # a small one does: 64 centroids in 8 groups of 8.
    monkeypatch.setattr(token_index, "FLAT_MAX_CENTROIDS", 32)
    monkeypatch.setattr(token_index, "VECTORS_PER_CENTROID", 150)
    pages = clustered_pages(240, seed=3)
    vectors = torch.from_numpy(np.concatenate([v for _, v in pages]))
    codebook = Codebook.train(vectors, 64)
    assert codebook.coarse is not None and codebook.coarse.shape == (8, 32)
    assert codebook.centroids.shape == (64, 32)
    # Each group's centroids lie near their coarse centroid, nearer than to the others.
    owners = nearest_centroids(codebook.centroids, codebook.coarse)
    assert (owners == torch.arange(8).repeat_interleave(8)).float().mean() >= 0.9
    exact = nearest_centroids(vectors, codebook.centroids)
    assert (codebook.nearest(vectors) == exact).float().mean() >= 0.9

    index = built(pages, tmp_path / "tokens")
    assert index.info.centroids == 64
    rng = np.random.default_rng(4)
    recalls = []
    for _ in range(20):
        picks = [pages[rng.integers(240)][1][rng.integers(40)] for _ in range(6)]
        query = unit(np.stack(picks) + 0.04 * rng.standard_normal((6, 32)))
        exact_scores = np.array([maxsim(query, v) for _, v in pages])
        true_top = {f"p{n}" for n in np.argsort(-exact_scores)[:10]}
        recalls.append(len(true_top & set(index.candidates(query, 30))) / 10)
    assert np.mean(recalls) >= 0.95


def late_ids(index: Index, query: str, k: int, candidates: int | None) -> list[str]:
    hits = index.search(query, k=k, candidates=candidates, evidence=False, mode="late")
    return [h.page_id for h in hits]


@pytest.mark.parametrize("storage", ["float32", "int8"])
def test_an_index_searches_through_its_token_stage_and_stays_whole_as_pages_come_and_go(
    tmp_path: Path,
    samples: Path,
    encoder: TextGridEncoder,
    monkeypatch: pytest.MonkeyPatch,
    storage: str,
) -> None:
    del encoder  # loaded once per session and shared
    (samples / "scanned_letter.pdf").unlink()  # OCR adds time, not coverage, here
    monkeypatch.setattr("vdr.index.TOKEN_INDEX_MIN_PAGES", 6)
    with Index(tmp_path / "index", storage=storage) as index:
        index.add([samples])
        assert index.optimize().token_index is None  # 5 pages: under the threshold
        assert not (index.path / TOKEN_INDEX_DIR).exists()
        make_pdf(samples / "grid.pdf", [[("transmission grid upgrade schedule", 72, 72, 14)]])
        index.add([samples])
        report = index.optimize()
        assert report.token_index is not None and report.token_index.pages == 6
        assert index.writes == report.token_index.writes  # fresh: the token stage alone
        query = "quarterly generation per site"
        assert late_ids(index, query, 1, candidates=2) == late_ids(index, query, 1, None)
        # Fresh, in an int8 index, it also reranks its candidates itself (rerank auto on a
        # CPU): the scores are its own, and Qdrant's rerank of the same candidates orders the
        # pages alike. A float32 index keeps Qdrant's rerank of its float32 vectors.
        ours = index.search(query, k=3, candidates=6, mode="late")
        vectors = index.embed_queries([query])[0].scoring_vectors()
        own = index._tokens.search(vectors, 3, 6) if index._tokens else []
        index.use_rerank("qdrant")
        theirs = index.search(query, k=3, candidates=6, mode="late")
        index.use_rerank("auto")
        assert [h.page_id for h in theirs] == [h.page_id for h in ours] == [p for p, _ in own]
        np.testing.assert_allclose([h.score for h in theirs], [s for _, s in own], rtol=0.01)
        expected = own if storage == "int8" else [(h.page_id, h.score) for h in theirs]
        assert [(h.page_id, h.score) for h in ours] == expected

        # A run that changes nothing leaves it fresh; one that adds a page makes it stale,
        # and the new page (unknown to the token stage) is still found.
        index.add([samples])
        assert index.writes == report.token_index.writes
        make_pdf(samples / "ferry.pdf", [[("ferry timetable harbour crossing", 72, 72, 14)]])
        index.add([samples])
        assert index.writes > report.token_index.writes
        ferry = late_ids(index, "ferry timetable harbour crossing", 1, candidates=2)
        assert index.page(ferry[0]).doc_path.endswith("ferry.pdf")

        # A removed document's pages, still listed by the token stage, are never returned.
        grid = index.page(late_ids(index, "transmission grid upgrade schedule", 1, None)[0])
        index.remove([grid.doc_id])
        found = late_ids(index, "transmission grid upgrade schedule", 10, candidates=2)
        assert found and grid.page_id not in found

    with Index(tmp_path / "index") as reopened:  # the token index is read back on open
        assert reopened._tokens is not None and reopened._tokens.info.pages == 6


def test_a_run_killed_midway_leaves_the_token_index_stale(
    tmp_path: Path, samples: Path, encoder: TextGridEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The write count goes up before the first page is written, so a SIGKILL after some
    pages landed can never leave a token index that passes for knowing every page."""
    del encoder  # loaded once per session and shared
    (samples / "scanned_letter.pdf").unlink()
    monkeypatch.setattr("vdr.index.TOKEN_INDEX_MIN_PAGES", 1)
    index_dir = tmp_path / "index"
    with Index(index_dir) as index:
        index.add([samples])
        built_at = index.optimize().token_index
        assert built_at is not None and built_at.pages == 5
    for name in ("dev02_beamer_talk.pdf", "dev04_booktabs.pdf"):  # 31 + 18 pages
        shutil.copy(DEV_SET / "pdfs" / name, samples)
    command = [sys.executable, "-m", "vdr.cli", "index", str(samples), "--index", str(index_dir)]
    run = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:
        # Images are saved a batch at a time just before the batch's upsert: at 25 new ones,
        # at least one batch is in the store, and the run is not done.
        if len(list((index_dir / "pages").glob("*.jpg"))) >= 5 + 25:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the indexer finished before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()
    with Index(index_dir) as index:
        assert index.store.count() > 5  # pages landed that the token index does not know
        assert index._tokens is not None and index._tokens.info.writes != index.writes

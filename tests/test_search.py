"""Hybrid fusion of the late-interaction and BM25 rankings, and search modes on an index."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from qdrant_edge import EdgeConfig, EdgeShard

from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.errors import VdrError
from vdr.index import Index
from vdr.search import TEXT_WEIGHT, fuse
from vdr.store.base import Hit
from vdr.store.edge import _config

from conftest import SAMPLES


def hit(page_id: str, score: float) -> Hit:
    return Hit(page_id=page_id, doc_id="d", doc_path="/d.pdf", page=1, score=score)


def test_fusion_scales_each_ranking_and_weighs_them() -> None:
    late = [hit("a", 12.0), hit("b", 10.0), hit("c", 8.0)]
    by_text = [hit("c", 5.0), hit("d", 1.0)]
    fused = {h.page_id: h.score for h in fuse(late, by_text, k=10)}
    w = TEXT_WEIGHT
    assert fused == pytest.approx({"a": 1 - w, "b": 0.5 * (1 - w), "c": w, "d": 0.0})
    assert [h.page_id for h in fuse(late, by_text, k=2)] == ["a", "b"]  # 0.7, 0.35 > 0.3
    assert [h.page_id for h in fuse(late, [], k=2)] == ["a", "b"]  # no BM25 match: late order


def test_search_modes_on_the_samples(tmp_path: Path, encoder: TextGridEncoder) -> None:
    del encoder  # loaded once per session and shared
    with Index(tmp_path / "index") as index:
        index.add([SAMPLES])
        for mode in ("hybrid", "late", "bm25"):
            top = index.search("harbour dredging permit", k=3, mode=mode)[0]
            assert Path(top.doc_path).name == "scanned_letter.pdf", mode  # words read by OCR
        hybrid = index.search("quarterly generation per site", k=6, mode="hybrid")
        assert all(0.0 <= h.score <= 1.0 for h in hybrid) and hybrid[0].score == pytest.approx(1)
        with pytest.raises(VdrError, match="mode must be one of hybrid, late, bm25"):
            index.search("solar", mode="fuzzy")
        # Stems meet: the page says "commissioned a ... battery", in no query word as written.
        stemmed = index.search("commissioning batteries", k=1, mode="bm25")
        assert [(Path(h.doc_path).name, h.page) for h in stemmed] == [("solar_report.pdf", 1)]


def test_an_index_without_bm25_searches_late_and_refuses_bm25(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "index"
    (folder / "qdrant").mkdir(parents=True)
    old = EdgeConfig(vectors=_config(encoder.dim, "float32").vectors)  # no BM25 vector
    EdgeShard.create(str(folder / "qdrant"), old).close()
    assert main(["index", str(SAMPLES), "--index", str(folder), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["search", "harbour dredging permit", "--index", str(folder), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert Path(hits[0]["doc_path"]).name == "scanned_letter.pdf" and hits[0]["score"] > 1
    assert main(["search", "harbour", "--index", str(folder), "--mode", "bm25"]) == 1
    assert "built before vdr's current BM25 search" in capsys.readouterr().err

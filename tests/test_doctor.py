"""`vdr doctor` on a real index of the sample PDFs: healthy as built, then damaged the ways a
crash or a careless hand can damage it, found, and repaired."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from qdrant_edge import UpdateOperation

from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.index import Index
from vdr.store.base import point_id_of
from vdr.store.edge import EdgeStore

from conftest import SAMPLES, make_pdf


@pytest.fixture()
def index_dir(tmp_path: Path, encoder: TextGridEncoder) -> Path:
    del encoder  # loaded once per session; the CLI in this process reuses it
    shutil.copytree(SAMPLES, tmp_path / "pdfs")
    folder = tmp_path / "index"
    assert main(["index", str(tmp_path / "pdfs"), "--index", str(folder), "--quiet"]) == 0
    return folder


def doctor(folder: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict]:
    code = main(["doctor", "--index", str(folder), "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


def test_a_fresh_index_is_healthy(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, report = doctor(index_dir, capsys)
    assert code == 0 and report["healthy"]
    assert report["found"]["pages"] == report["found"]["images"] == 6
    assert report["found"]["documents"] == 3


def test_damage_is_found_and_repaired(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Index(index_dir) as index:
        pages = sorted(index.images.page_ids())
        solar = next(d for d in index.documents() if d.doc_path.endswith("solar_report.pdf"))
        lost_image = next(p for p in pages if not p.startswith(solar.doc_id))
        lost_point = f"{solar.doc_id}-2"
        index.images.path(lost_image).unlink()  # a page whose image is gone
        shutil.copy(index.images.path(pages[0]), index.images.folder / "feedfacecafe-1.jpg")
        (index.images.folder / "tmpx1y2.tmp").write_bytes(b"half an image")
        assert isinstance(index.store, EdgeStore)
        # A document missing a page, as a crash between two chunks leaves it.
        index.store.shard.update(UpdateOperation.delete_points([point_id_of(lost_point)]))

    code, report = doctor(index_dir, capsys)
    found = report["found"]
    assert code == 1 and not report["healthy"]
    assert found["missing_images"] == [lost_image]
    assert found["orphan_images"] == sorted([lost_point, "feedfacecafe-1"])
    assert found["temp_files"] == ["tmpx1y2.tmp"]
    assert found["incomplete"] == [solar.doc_id]
    assert found["pages"] == 5 and found["images"] == 6

    code, report = doctor(index_dir, capsys, "--repair")
    assert code == 0 and report["healthy"], report
    assert report["repairs"]["rendered"] == [lost_image]
    assert report["repairs"]["reindexed"] == [solar.doc_id]
    assert report["after"]["pages"] == report["after"]["images"] == 6
    with Index(index_dir) as index:
        assert index.page_image(lost_image).size[0] > 100  # a real rendering
        assert index.search("quarterly generation per site", k=1)[0].page_id == lost_point


def test_what_cannot_be_repaired_is_named(
    index_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with Index(index_dir) as index:
        page_id = sorted(index.images.page_ids())[0]
        doc_path = Path(index.page(page_id).doc_path)
        index.images.path(page_id).unlink()
    doc_path.write_bytes(doc_path.read_bytes() + b"\n% edited")  # no longer the indexed file
    code, report = doctor(index_dir, capsys, "--repair")
    assert code == 1 and not report["healthy"]
    assert report["repairs"]["unrepaired"] == {page_id: f"'{doc_path}' is gone or changed"}
    assert report["after"]["missing_images"] == [page_id]


def test_text_report(index_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Index(index_dir) as index:
        (index.images.folder / "tmpzz.tmp").write_bytes(b"")
    assert main(["doctor", "--index", str(index_dir)]) == 1
    out = capsys.readouterr().out
    assert "3 documents, 6 pages, 6 page images: problems found" in out
    assert "1 temp files: tmpzz.tmp" in out


def test_token_index_troubles_are_found_and_repaired(
    index_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vdr.index.TOKEN_INDEX_MIN_PAGES", 1)
    with Index(index_dir) as index:
        assert index.token_stage == "none"
        index.optimize()
    assert doctor(index_dir, capsys)[1]["found"]["token_stage"] == "current"
    # A build killed midway leaves its scratch folder; a machine crash, files cut short.
    (index_dir / "tokens.new").mkdir()
    (index_dir / "tokens.new" / "by_page.npy").write_bytes(b"\0" * 4096)
    vectors = index_dir / "tokens" / "vectors.npy"
    vectors.write_bytes(vectors.read_bytes()[:-128])

    code, report = doctor(index_dir, capsys)
    assert code == 1 and report["found"]["token_stage"] == "broken"
    assert report["found"]["unfinished_builds"] == ["tokens.new"]
    with Index(index_dir) as index:  # searches pass over it meanwhile
        assert index.search("quarterly generation per site", k=1, candidates=2)

    code, report = doctor(index_dir, capsys, "--repair")
    assert code == 0 and report["healthy"], report
    assert report["repairs"]["removed_folders"] == ["tokens.new", "tokens"]
    assert report["after"]["token_stage"] == "none"
    assert not (index_dir / "tokens.new").exists() and not (index_dir / "tokens").exists()
    with Index(index_dir) as index:
        index.optimize()
        assert index.token_stage == "current"


def test_a_stale_token_index_is_reported_not_damage(
    index_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("vdr.index.TOKEN_INDEX_MIN_PAGES", 1)
    with Index(index_dir) as index:
        index.optimize()
        pdfs = Path(index.documents()[0].doc_path).parent
    make_pdf(pdfs / "ferry.pdf", [[("ferry timetable harbour crossing", 72, 72, 14)]])
    assert main(["index", str(pdfs), "--index", str(index_dir), "--quiet"]) == 0
    capsys.readouterr()
    assert main(["doctor", "--index", str(index_dir)]) == 0
    out = capsys.readouterr().out
    assert "healthy" in out and "token first stage stale" in out

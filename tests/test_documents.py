"""Documents by id on every edge: `vdr docs list|show|rm`, and one wording for an unknown
document or page id in the library, the CLI and the HTTP API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from vdr import Index
from vdr.catalog import document_status, document_statuses
from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.errors import UnknownId
from vdr.server.app import create_app

from conftest import BACKENDS, make_pdf, running_server

UNKNOWN_DOC = "0123456789abcdef"
UNKNOWN_PAGE = f"{UNKNOWN_DOC}-1"


def two_pdfs(folder: Path) -> Path:
    folder.mkdir()
    make_pdf(folder / "permit.pdf", [[("harbour dredging permit", 72, 72, 14)]] * 2)
    make_pdf(folder / "brakes.pdf", [[("replacing worn brake pads", 72, 72, 14)]])
    return folder


@pytest.fixture(params=BACKENDS)
def index(
    request: pytest.FixtureRequest, tmp_path: Path, encoder: TextGridEncoder
) -> Iterator[Index]:
    """An index of two small PDFs on each backend (Qdrant Edge; qdrant-client :memory:)."""
    del encoder
    url = ":memory:" if request.param == "memory" else None
    with Index(tmp_path / "index", qdrant_url=url) as opened:
        opened.add([two_pdfs(tmp_path / "pdfs")])
        yield opened


def test_statuses_list_show_and_remove_on_both_backends(index: Index) -> None:
    listed = document_statuses(index)
    assert [(Path(s.path).name, s.status, s.pages, s.pages_indexed) for s in listed] == [
        ("brakes.pdf", "indexed", 1, 1),
        ("permit.pdf", "indexed", 2, 2),
    ]
    permit = listed[1]
    assert document_status(index, permit.doc_id) == permit
    with pytest.raises(UnknownId, match=f"no document '{UNKNOWN_DOC}' in the index"):
        index.remove([permit.doc_id, UNKNOWN_DOC])
    assert len(document_statuses(index)) == 2  # nothing removed
    index.remove([permit.doc_id])
    assert [s.doc_id for s in document_statuses(index)] == [listed[0].doc_id]
    assert not index.images.page_ids() & {f"{permit.doc_id}-1", f"{permit.doc_id}-2"}


def test_unknown_ids_are_one_error_in_the_library(index: Index) -> None:
    doc_error = f"no document '{UNKNOWN_DOC}' in the index"
    for call in (
        lambda: index.search("permit", doc_ids=[UNKNOWN_DOC]),
        lambda: index.remove([UNKNOWN_DOC]),
        lambda: document_status(index, UNKNOWN_DOC),
    ):
        with pytest.raises(UnknownId) as raised:
            call()
        assert str(raised.value) == doc_error
    for call in (lambda: index.page(UNKNOWN_PAGE), lambda: index.page_image(UNKNOWN_PAGE)):
        with pytest.raises(UnknownId) as raised:
            call()
        assert str(raised.value) == f"no page '{UNKNOWN_PAGE}' in the index"


def test_docs_commands(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    del encoder
    folder = str(tmp_path / "index")
    assert main(["index", str(two_pdfs(tmp_path / "pdfs")), "--index", folder, "--quiet"]) == 0
    capsys.readouterr()
    assert main(["docs", "list", "--index", folder, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(Path(d["path"]).name, d["status"], d["pages"]) for d in listed] == [
        ("brakes.pdf", "indexed", 1),
        ("permit.pdf", "indexed", 2),
    ]
    brakes = listed[0]["doc_id"]
    assert main(["docs", "list", "--index", folder]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith(f"{brakes}  indexed")
    assert main(["docs", "show", brakes, "--index", folder]) == 0
    assert "status: indexed, 1 of 1 pages indexed" in capsys.readouterr().out
    assert main(["docs", "rm", brakes, UNKNOWN_DOC, "--index", folder]) == 1
    assert capsys.readouterr().err.strip() == (
        f"vdr docs: no document '{UNKNOWN_DOC}' in the index"
    )
    assert main(["docs", "rm", brakes, "--index", folder, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"removed": [brakes]}
    assert main(["docs", "show", brakes, "--index", folder]) == 1
    assert f"no document '{brakes}' in the index" in capsys.readouterr().err
    assert main(["search", "brake", "--doc", UNKNOWN_DOC, "--index", folder]) == 1
    assert capsys.readouterr().err.strip() == (
        f"vdr search: no document '{UNKNOWN_DOC}' in the index"
    )
    assert main(["heatmap", "brake", "--page", UNKNOWN_PAGE, "--index", folder]) == 1
    assert capsys.readouterr().err.strip() == (
        f"vdr heatmap: no page '{UNKNOWN_PAGE}' in the index"
    )


def test_the_api_answers_unknown_ids_with_the_same_words(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    with Index(tmp_path / "index") as index:
        index.add([two_pdfs(tmp_path / "pdfs")])
        with running_server(create_app(index)) as url, httpx.Client(base_url=url) as api:
            answers = [
                api.post("/search", json={"query": "permit", "doc": UNKNOWN_DOC}),
                api.delete(f"/documents/{UNKNOWN_DOC}"),
            ]
            for answer in answers:
                assert answer.status_code == 404
                assert answer.json()["detail"] == f"no document '{UNKNOWN_DOC}' in the index"
            for route in ("image", "heatmap?query=permit", "similarity?query=permit"):
                answer = api.get(f"/pages/{UNKNOWN_PAGE}/{route}")
                assert answer.status_code == 404
                assert answer.json()["detail"] == f"no page '{UNKNOWN_PAGE}' in the index"

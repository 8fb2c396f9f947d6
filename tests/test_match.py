"""The calibrated no-match signal: gibberish answers matched=false in Python, CLI and API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from vdr import Index
from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.search import matched
from vdr.server.app import create_app

from conftest import SAMPLES, make_pdf, running_server

GIBBERISH = "zxqv blorf wug"
# Printed on a page made on the spot: a real match asked in other words than a phrase.
LINES = [
    "Volunteers fitted solar panels on the dairy barn before the summer.",
    "The finance committee audited the cooperative's accounts in December.",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder) -> Path:
    """An index of the samples and a page made on the spot (closed: each test opens it)."""
    del encoder
    root = tmp_path_factory.mktemp("match")
    lines = [(line, 72, 100 + 30 * i, 12) for i, line in enumerate(LINES)]
    pdf = make_pdf(root / "barn.pdf", [lines])
    with Index(root / "index") as index:
        index.add([SAMPLES, pdf])
    return root / "index"


@pytest.mark.parametrize("mode", ["hybrid", "late", "bm25"])
def test_gibberish_matches_no_page_and_a_real_query_does(folder: Path, mode: str) -> None:
    with Index(folder) as index:
        nothing = index.search(GIBBERISH, k=10, mode=mode)
        found = index.search("audited accounts of the committee", k=3, mode=mode)
        nearest = index.search(GIBBERISH, k=3, mode="late")
    assert all(hit.matched is False for hit in nothing) and matched(nothing) is False
    assert Path(found[0].doc_path).name == "barn.pdf" and found[0].matched is True
    assert matched(found) is True
    # Unmatched pages are still ranked (the nearest ones), only flagged.
    assert len(nearest) == 3


def test_the_cli_says_nothing_matched(folder: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", GIBBERISH, "--index", str(folder), "--json"]) == 0
    hits = json.loads(capsys.readouterr().out)
    assert hits and all(hit["matched"] is False for hit in hits)
    assert main(["search", GIBBERISH, "--index", str(folder)]) == 0
    assert f"no page matches '{GIBBERISH}'" in capsys.readouterr().out
    assert main(["search", "dredging permit", "--index", str(folder)]) == 0
    assert "no page matches" not in capsys.readouterr().out


def test_the_api_answers_matched(folder: Path) -> None:
    with (
        Index(folder) as index,
        running_server(create_app(index)) as url,
        httpx.Client(base_url=url, timeout=120) as api,
    ):
        nothing = api.post("/search", json={"query": GIBBERISH, "k": 5}).json()
        found = api.post("/search", json={"query": "harbour dredging permit", "k": 5}).json()
    assert nothing["matched"] is False and nothing["results"]
    assert all(result["matched"] is False for result in nothing["results"])
    assert found["matched"] is True and found["results"][0]["matched"] is True

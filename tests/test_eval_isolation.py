"""`vdr eval` writes only where its own command line says: never into VDR_INDEX's index, and
never into an index that holds documents outside the set."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vdr import Index
from vdr.cli import main
from vdr.encoders.textgrid import TextGridEncoder

from conftest import REPO, make_pdf


def tiny_set(folder: Path) -> Path:
    """One PDF with one labelled query."""
    (folder / "pdfs").mkdir(parents=True)
    make_pdf(folder / "pdfs" / "permit.pdf", [[("harbour dredging permit", 72, 72, 14)]])
    (folder / "queries.jsonl").write_text('{"qid": "q1", "text": "dredging permit"}\n')
    (folder / "qrels.tsv").write_text("q1\tpermit\t1\t2\n")
    return folder


def fingerprint(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_eval_leaves_the_vdr_index_index_byte_for_byte_unchanged(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    user_pdfs = tmp_path / "mine"
    user_pdfs.mkdir()
    make_pdf(user_pdfs / "brakes.pdf", [[("replacing worn brake pads", 72, 72, 14)]])
    mine = tmp_path / "my-index"
    with Index(mine) as index:
        index.add([user_pdfs])
    before = fingerprint(mine)
    cache = tmp_path / "cache"
    result = subprocess.run(
        [sys.executable, "-m", "vdr.cli", "eval", str(tiny_set(tmp_path / "set")), "--json"],
        cwd=REPO,
        env={**os.environ, "VDR_INDEX": str(mine), "XDG_CACHE_HOME": str(cache)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["relevant_ranks"] == {"q1": [1]}
    assert fingerprint(mine) == before
    (own,) = (cache / "vdr" / "eval").iterdir()  # eval's own index, in the cache
    with Index(own, create=False) as index:
        assert [Path(d.doc_path).name for d in index.documents()] == ["permit.pdf"]


def test_eval_refuses_an_index_with_other_documents(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    del encoder
    user_pdfs = tmp_path / "mine"
    user_pdfs.mkdir()
    make_pdf(user_pdfs / "brakes.pdf", [[("replacing worn brake pads", 72, 72, 14)]])
    mine = tmp_path / "my-index"
    with Index(mine) as index:
        index.add([user_pdfs])
        held = index.documents()
    images = fingerprint(mine / "pages")
    set_dir = tiny_set(tmp_path / "set")
    assert main(["eval", str(set_dir), "--index", str(mine)]) == 1
    error = capsys.readouterr().err
    assert "holds 1 document that is not in the set (such as '" in error
    assert "brakes.pdf" in error
    with Index(mine) as index:
        assert index.documents() == held
    assert fingerprint(mine / "pages") == images
    # An index of the set alone is fine, and evaluating twice re-encodes nothing.
    own = tmp_path / "set-index"
    for _ in range(2):
        assert main(["eval", str(set_dir), "--index", str(own), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["ndcg@1"] == 1.0

"""The `vdr` command line: output formats, and errors as one sentence without a traceback."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.test_edge_store import PAGES, big_records
from vdr import Index
from vdr.cli import main, server_url
from vdr.encoders.textgrid import TextGridEncoder
from vdr.errors import VdrError
from vdr.store.edge import EdgeStore

from conftest import REPO, make_pdf


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder) -> Path:
    """An index of the sample PDFs, built once through the CLI."""
    del encoder  # loaded once; the CLI in this process reuses it
    folder = tmp_path_factory.mktemp("cli") / "index"
    assert main(["index", str(REPO / "samples" / "pdfs"), "--index", str(folder), "--quiet"]) == 0
    return folder


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`vdr ARGS` in a fresh process, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "vdr.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def assert_one_sentence_error(result: subprocess.CompletedProcess[str], words: str) -> None:
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vdr ") and words in lines[0], result.stderr


def test_index_json_report(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["index", str(REPO / "samples" / "pdfs"), "--index", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["pages_in_index"] == 6 and report["pages_encoded"] == 6
    assert len(report["added"]) == 3 and report["skipped"] == []


def test_search_json(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        main(
            ["search", "quarterly generation per site", "--index", str(built), "-k", "3", "--json"]
        )
        == 0
    )
    hits = json.loads(capsys.readouterr().out)
    assert len(hits) == 3
    assert set(hits[0]) == {"page_id", "doc_id", "doc_path", "page", "score", "matched", "evidence"}
    assert set(hits[0]["evidence"]) == {"snippet", "words", "boxes", "size"}
    assert Path(hits[0]["doc_path"]).name == "solar_report.pdf" and hits[0]["page"] == 2
    scores = [h["score"] for h in hits]
    assert scores == sorted(scores, reverse=True)
    assert all(isinstance(h["page"], int) and h["page"] >= 1 for h in hits)


def test_search_gives_the_same_results_whichever_rerank_runs(
    built: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = {}
    for rerank in ("qdrant", "vdr"):
        query = ["search", "quarterly generation per site", "--index", str(built), "--json"]
        assert main([*query, "--rerank", rerank]) == 0
        results[rerank] = json.loads(capsys.readouterr().out)
    by_qdrant, by_vdr = results["qdrant"], results["vdr"]
    assert len(by_vdr) == 6  # every sample page
    assert [h["page_id"] for h in by_vdr] == [h["page_id"] for h in by_qdrant]
    for ours, theirs in zip(by_vdr, by_qdrant, strict=True):
        assert ours["score"] == pytest.approx(theirs["score"], abs=1e-4)
        assert ours["evidence"] == theirs["evidence"]


def test_rerank_setting_decides_who_holds_the_vectors(built: Path) -> None:
    with Index(built) as index:  # auto, on a machine without CUDA: Qdrant's own rerank
        index.search("solar output", k=1, evidence=False)
        assert index.store.resident is None
    with Index(built, rerank="vdr") as index:  # our kernel: every page's vectors in memory
        index.search("solar output", k=1, evidence=False)
        assert index.store.resident is not None and len(index.store.resident) == 6
    with pytest.raises(VdrError, match="rerank must be auto, qdrant or vdr"):
        Index(built, rerank="fastest")


def test_search_restricted_to_a_document(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with Index(built) as index:
        bike = next(
            d.doc_id for d in index.documents() if d.doc_path.endswith("bike_maintenance.pdf")
        )
    assert main(["search", "solar output", "--index", str(built), "--doc", bike, "--json"]) == 0
    assert {h["doc_id"] for h in json.loads(capsys.readouterr().out)} == {bike}


def test_search_text_output(built: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["search", "brake pad replacement", "--index", str(built), "-k", "2"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.lstrip().startswith("1.") and "bike_maintenance.pdf p.2" in first


def test_heatmap_writes_an_overlay(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["search", "harbour dredging permit", "--index", str(built), "-k", "1", "--json"])
    page_id = json.loads(capsys.readouterr().out)[0]["page_id"]
    out = tmp_path / "map.png"
    assert (
        main(
            [
                "heatmap",
                "harbour dredging permit",
                "--page",
                page_id,
                "--index",
                str(built),
                "-o",
                str(out),
            ]
        )
        == 0
    )
    with Index(built) as index:
        page = index.page_image(page_id)
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width == page.width and image.height > page.height
        # The overlay coloured the page: it differs from the plain page image.
        assert (
            image.crop((0, 0, page.width, page.height)).convert("RGB").tobytes() != page.tobytes()
        )


def small_set(tmp_path: Path) -> Path:
    """The three sample PDFs with one labelled query each."""
    set_dir = tmp_path / "set"
    shutil.copytree(REPO / "samples" / "pdfs", set_dir / "pdfs")
    queries = [
        ("q1", "quarterly generation table per site", "visual", "solar_report", 2),
        ("q2", "replacing worn brake pads", "extractive", "bike_maintenance", 2),
        ("q3", "permit to dredge the harbour basin", "non_extractive", "scanned_letter", 1),
    ]
    (set_dir / "queries.jsonl").write_text(
        "".join(json.dumps({"qid": q, "text": t, "type": ty}) + "\n" for q, t, ty, _, _ in queries)
    )
    (set_dir / "qrels.tsv").write_text("".join(f"{q}\t{d}\t{p}\t2\n" for q, _, _, d, p in queries))
    return set_dir


def test_eval_json_on_a_small_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    set_dir = small_set(tmp_path)
    assert main(["eval", str(set_dir), "--index", str(tmp_path / "index"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 3 and set(result["by_type"]) == {"visual", "extractive", "non_extractive"}
    assert 0.0 <= result["ndcg@5"] <= 1.0
    assert result["ndcg@1"] == 1.0  # each query names its page plainly
    assert set(result["per_query"]) == {"q1", "q2", "q3"}
    assert result["relevant_ranks"] == {"q1": [1], "q2": [1], "q3": [1]}


def test_eval_compares_search_configurations(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    set_dir = small_set(tmp_path)
    configs = ["candidates=1", "candidates=all,rerank=vdr", "candidates=200,rerank=qdrant"]
    eval_args = ["eval", str(set_dir), "--index", str(tmp_path / "index")]
    assert main([*eval_args, "--json", "--compare", *configs]) == 0
    results = json.loads(capsys.readouterr().out)
    assert list(results) == configs
    # One candidate per pooled kind leaves at most two pages to rerank; all is all six.
    assert results["candidates=1"]["pages_per_query"] <= 2
    assert results["candidates=all,rerank=vdr"]["pages_per_query"] == 6
    # The same pages whichever rerank runs, when the first stage lets every page through.
    assert (
        results["candidates=all,rerank=vdr"]["relevant_ranks"]
        == results["candidates=200,rerank=qdrant"]["relevant_ranks"]
    )
    assert main([*eval_args, "--compare", *configs]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:3] == ["configuration", "ndcg@1", "ndcg@5"]
    assert [line.split()[0] for line in table[1:]] == configs
    assert main([*eval_args, "--compare", "k=5"]) == 1
    assert "'k=5' in 'k=5' is not a search setting" in capsys.readouterr().err


def test_eval_rejects_a_folder_that_is_not_a_set(tmp_path: Path) -> None:
    assert_one_sentence_error(
        run_cli("eval", str(tmp_path), "--index", str(tmp_path / "i")), "queries.jsonl"
    )


def test_search_without_an_index(tmp_path: Path) -> None:
    assert_one_sentence_error(
        run_cli("search", "anything", "--index", str(tmp_path / "none")), "no index"
    )


def test_index_of_a_missing_path(tmp_path: Path) -> None:
    result = run_cli("index", str(tmp_path / "missing"), "--index", str(tmp_path / "i"))
    assert_one_sentence_error(result, "does not exist")


def test_unknown_model(tmp_path: Path) -> None:
    result = run_cli(
        "index", str(REPO / "samples" / "pdfs"), "--index", str(tmp_path), "--model", "nope/none"
    )
    assert_one_sentence_error(result, "model 'nope/none' is not a local directory")
    assert "--model DIR" in result.stderr


def test_unknown_page(built: Path) -> None:
    result = run_cli("heatmap", "permit", "--page", "0000000000000000-9", "--index", str(built))
    assert_one_sentence_error(result, "no page '0000000000000000-9'")


def test_index_in_use_by_another_process(built: Path) -> None:
    with Index(built):
        result = run_cli("search", "permit", "--index", str(built))
    assert_one_sentence_error(result, "in use by another vdr process")


def test_a_served_index_says_where_its_server_is(built: Path) -> None:
    with Index(built) as index:
        index.announce_server("http://127.0.0.1:8765")  # what `vdr serve` does once it holds it
        for command in (["search", "permit"], ["index", str(REPO / "samples" / "pdfs")]):
            result = run_cli(*command, "--index", str(built))
            assert_one_sentence_error(result, "is served by `vdr serve` at http://127.0.0.1:8765")
            assert "POST http://127.0.0.1:8765/search" in result.stderr


def test_model_mismatch_is_refused(built: Path) -> None:
    manifest = json.loads((built / "vdr.json").read_text())
    (built / "vdr.json").write_text(json.dumps({**manifest, "model": "vidore/colqwen2.5-v0.2"}))
    try:
        result = run_cli("search", "permit", "--index", str(built), "--model", "textgrid-minilm")
    finally:
        (built / "vdr.json").write_text(json.dumps(manifest))
    assert_one_sentence_error(result, "was built with model 'vidore/colqwen2.5-v0.2'")


def test_k_must_be_positive(built: Path) -> None:
    assert_one_sentence_error(
        run_cli("search", "permit", "--index", str(built), "-k", "0"), "k must be"
    )


def test_heatmap_of_one_word_and_of_all_words(
    built: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    main(["search", "brake pad replacement", "--index", str(built), "-k", "1", "--json"])
    page_id = json.loads(capsys.readouterr().out)[0]["page_id"]
    common = ["--page", page_id, "--index", str(built), "--json"]
    one, grid = tmp_path / "one.png", tmp_path / "all.png"
    assert main(["heatmap", "brake pad replacement", *common, "--token", "1", "-o", str(one)]) == 0
    assert json.loads(capsys.readouterr().out)["words"] == ["brake", "pad", "replacement"]
    assert (
        main(["heatmap", "brake pad replacement", *common, "--token", "all", "-o", str(grid)]) == 0
    )
    capsys.readouterr()
    with Image.open(one) as single, Image.open(grid) as sheet:
        assert sheet.width > single.width / 2 and sheet.width != single.width
    result = run_cli(
        "heatmap", "brake pad", "--page", page_id, "--index", str(built), "--token", "7"
    )
    assert_one_sentence_error(result, "--token must be 'all' or a word number from 0 to 1")


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "vdr.json").read_text())


def test_index_optimizes_once_enough_pages_changed(
    tmp_path: Path,
    samples: Path,
    encoder: TextGridEncoder,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """With the threshold lowered to 6 pages: 5 sample pages are not enough, 2 more are."""
    del encoder  # loaded once; the CLI in this process reuses it
    (samples / "scanned_letter.pdf").unlink()  # OCR adds time, not coverage, here
    monkeypatch.setattr("vdr.index.OPTIMIZE_MIN_PAGES", 6)
    folder = tmp_path / "index"
    indexing = ["index", str(samples), "--index", str(folder)]
    # MaxSim only: BM25 scores move with every page added (IDF), MaxSim scores do not.
    searching = ["search", "quarterly generation per site", "--index", str(folder), "-k", "10"]
    assert main([*indexing, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["optimized"] is None
    assert manifest_of(folder)["pages_since_optimize"] == 5
    assert main([*searching, "--mode", "late", "--json"]) == 0
    before = json.loads(capsys.readouterr().out)

    make_pdf(samples / "extra.pdf", [[("harbour dredging permit", 72, 72, 12)]] * 2)
    assert main([*indexing, "--quiet", "--no-optimize"]) == 0  # due, and left for later
    assert "7 pages written since the last optimize; " in capsys.readouterr().err
    assert manifest_of(folder)["pages_since_optimize"] == 7
    assert main([*indexing, "--quiet"]) == 0  # nothing new to write, but still due
    printed = capsys.readouterr()
    assert "optimizing (7 pages written since the last optimize)" in printed.err
    assert "7 pages in the index; optimized in" in printed.out
    assert manifest_of(folder)["pages_since_optimize"] == 0
    assert main([*searching, "--mode", "late", "--json"]) == 0
    after = json.loads(capsys.readouterr().out)
    assert [h for h in after if not h["doc_path"].endswith("extra.pdf")] == before

    assert main([*indexing, "--json"]) == 0  # nothing written: nothing to optimize
    assert json.loads(capsys.readouterr().out)["optimized"] is None
    # An index made before vdr counted writes has all its pages to optimize.
    manifest = manifest_of(folder)
    del manifest["pages_since_optimize"]
    (folder / "vdr.json").write_text(json.dumps(manifest))
    with Index(folder) as index:
        assert index.pages_since_optimize == 7 and index.optimize_due()
    # A large index waits for a quarter of its pages to change (of 7 pages: 1.75).
    monkeypatch.setattr("vdr.index.OPTIMIZE_MIN_PAGES", 1)
    for written, due in ((1, False), (2, True)):
        (folder / "vdr.json").write_text(json.dumps({**manifest, "pages_since_optimize": written}))
        with Index(folder) as index:
            assert index.optimize_due() is due


def test_optimize_command_builds_the_search_graphs(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    """Pages written straight into the store, enough (~12 MB) for Qdrant Edge to index."""
    del encoder  # loaded once; Index in this process reuses it
    folder = tmp_path / "index"
    with Index(folder) as index:
        index.store.upsert(big_records(np.random.default_rng(0), 1, PAGES, PAGES))
    assert main(["optimize", "--index", str(folder)]) == 0
    printed = capsys.readouterr()
    assert "optimizing" in printed.err
    assert (
        printed.out.startswith(f"optimized {PAGES} pages") and "search graphs built" in printed.out
    )
    with Index(folder) as index:
        assert isinstance(index.store, EdgeStore)
        # BM25 plus full, rows and cols: the pooled vectors now have their graphs.
        assert index.store.shard.info().indexed_vectors_count == 4 * PAGES
    assert main(["optimize", "--index", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["changed"] is False


@pytest.mark.parametrize(
    "command",
    [
        ["search", "permit"],
        ["heatmap", "permit", "--page", "0000000000000000-1"],
        ["docs", "list"],
        ["docs", "show", "0000000000000000"],
        ["docs", "rm", "0000000000000000"],
        ["doctor"],
        ["serve", "--port", "0"],
        ["optimize"],
    ],
    ids=" ".join,
)
def test_only_vdr_index_creates_an_index(tmp_path: Path, command: list[str]) -> None:
    """A typo in --index is named, not answered from a new empty index: nothing is created,
    neither the folder nor a lock file in an existing folder."""
    typo, empty = tmp_path / "typo", tmp_path / "empty"
    empty.mkdir()
    for folder in (typo, empty):
        result = run_cli(*command, "--index", str(folder))
        assert_one_sentence_error(result, f"there is no index at '{folder}'")
    assert not typo.exists() and not list(empty.iterdir())


def test_optimize_without_an_index(tmp_path: Path) -> None:
    assert_one_sentence_error(run_cli("optimize", "--index", str(tmp_path / "none")), "no index")
    assert not (tmp_path / "none").exists()


def test_the_served_url_brackets_an_ipv6_host() -> None:
    assert server_url("127.0.0.1", 8000) == "http://127.0.0.1:8000"
    assert server_url("::", 8000) == "http://[::]:8000"
    assert server_url("::1", 9000) == "http://[::1]:9000"

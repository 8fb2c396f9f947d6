"""Indexing a folder: what is added, replaced, dropped, skipped, and what survives a crash."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from vdr import Index
from vdr.doctor import check
from vdr.encoders.textgrid import TextGridEncoder
from vdr.indexer import pdf
from vdr.indexer.discover import content_id
from vdr.indexer.pipeline import index_paths
from vdr.ledger import Ledger
from vdr.page_images import PageImages
from vdr.store import Store, edge

from conftest import DEV_SET, REPO, make_pdf, rasterise

# The bench's bad files, so that this test and benches/bad_pdfs.py judge the same files.
sys.path.insert(0, str(REPO / "benches"))
import bad_pdfs

SAMPLE_PAGES = {"bike_maintenance.pdf": 2, "scanned_letter.pdf": 1, "solar_report.pdf": 3}


@pytest.fixture()
def index(tmp_path: Path, encoder: TextGridEncoder) -> Iterator[Index]:
    del encoder  # loaded once for the session; the index gets the same cached model
    with Index(tmp_path / "index") as opened:
        yield opened


def page_set(store: Store) -> list[tuple[str, int]]:
    """(doc_path name, page) for every stored page, sorted, duplicates kept."""
    return sorted(
        (Path(payload["doc_path"]).name, payload["page"])
        for payload in store.payloads(["doc_path", "page"])
    )


def test_index_samples_then_search(index: Index, samples: Path) -> None:
    report = index.add([samples])
    assert sorted(Path(p).name for p in report.added) == [
        "bike_maintenance.pdf",
        "scanned_letter.pdf",
        "solar_report.pdf",
    ]
    assert report.pages_encoded == 6 and index.store.count() == 6
    assert index.images.page_ids() == {
        f"{d.doc_id}-{p}" for d in index.documents() for p in range(1, d.n_pages + 1)
    }
    top = index.search("quarterly generation per site table", k=1)[0]
    assert (Path(top.doc_path).name, top.page) == ("solar_report.pdf", 2)
    top = index.search("how to replace brake pads", k=1)[0]
    assert (Path(top.doc_path).name, top.page) == ("bike_maintenance.pdf", 2)


def test_unchanged_folder_encodes_nothing(index: Index, samples: Path) -> None:
    index.add([samples])
    again = index.add([samples])
    assert again.pages_encoded == 0 and again.added == [] and len(again.unchanged) == 3


def test_scanned_page_is_found_by_its_printed_words(
    index: Index, samples: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    scan = rasterise(samples / "solar_report.pdf", 1, folder / "scanned_report.pdf")
    shutil.copy(samples / "bike_maintenance.pdf", folder)
    layer = subprocess.run(
        ["pdftotext", str(scan), "-"], capture_output=True, text=True, check=True
    )
    assert layer.stdout.strip() == ""  # no text layer: only OCR can read it
    index.add([folder, samples / "scanned_letter.pdf"])
    top = index.search("community battery storage pilot and the annual member assembly", k=1)[0]
    assert (Path(top.doc_path).name, top.page) == ("scanned_report.pdf", 1)
    assert len(index.page(top.page_id).words) > 50  # words came from OCR
    top = index.search("harbour dredging permit", k=1)[0]
    assert Path(top.doc_path).name == "scanned_letter.pdf"


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_changed_file_pages_are_replaced(
    backend: str, store: Store, encoder: TextGridEncoder, tmp_path: Path
) -> None:
    del backend  # the store fixture is parametrised already; this names the case
    folder, images = tmp_path / "docs", PageImages(tmp_path / "pages")
    ledger = Ledger(tmp_path)
    folder.mkdir()
    doc = make_pdf(folder / "notes.pdf", [[("alpha glacier survey", 72, 100, 14)]] * 2)
    make_pdf(folder / "other.pdf", [[("unrelated bakery recipes", 72, 100, 14)]])
    index_paths([folder], lambda: encoder, store, images, ledger, progress=False)
    old = {d.doc_id for d in store.documents() if d.doc_path == str(doc)}

    make_pdf(doc, [[("omega volcano eruption", 72, 100, 14)]] * 3)
    report = index_paths([folder], lambda: encoder, store, images, ledger, progress=False)
    assert report.added == [str(doc)] and report.removed == [str(doc)]
    assert page_set(store) == [
        ("notes.pdf", 1),
        ("notes.pdf", 2),
        ("notes.pdf", 3),
        ("other.pdf", 1),
    ]
    assert not old & {d.doc_id for d in store.documents()}
    assert not any(page_id.startswith(tuple(old)) for page_id in images.page_ids())
    top = store.search(encoder.encode_queries(["volcano eruption"])[0].scoring_vectors(), 1, 50)[0]
    assert top.doc_path == str(doc)


@pytest.mark.parametrize("backend", ["edge", "memory"])
def test_deleted_file_pages_are_gone(
    backend: str, store: Store, encoder: TextGridEncoder, tmp_path: Path
) -> None:
    del backend
    folder, images = tmp_path / "docs", PageImages(tmp_path / "pages")
    ledger = Ledger(tmp_path)
    (folder / "sub").mkdir(parents=True)
    make_pdf(folder / "keep.pdf", [[("kept document", 72, 100, 14)]])
    gone = make_pdf(folder / "sub" / "gone.pdf", [[("deleted document", 72, 100, 14)]] * 2)
    index_paths([folder], lambda: encoder, store, images, ledger, progress=False)
    assert store.count() == 3
    gone.unlink()
    report = index_paths([folder], lambda: encoder, store, images, ledger, progress=False)
    assert report.removed == [str(gone)] and report.pages_encoded == 0
    assert page_set(store) == [("keep.pdf", 1)]
    assert len(images.page_ids()) == 1


def test_indexing_another_folder_keeps_the_first(
    index: Index, tmp_path: Path, samples: Path
) -> None:
    other = tmp_path / "other"
    other.mkdir()
    make_pdf(other / "extra.pdf", [[("extra page", 72, 100, 14)]])
    index.add([samples])
    report = index.add([other])
    assert report.removed == [] and index.store.count() == 7


def test_moved_file_is_relabelled_not_reencoded(index: Index, samples: Path) -> None:
    index.add([samples])
    moved = samples / "archive" / "bike.pdf"
    moved.parent.mkdir()
    (samples / "bike_maintenance.pdf").rename(moved)
    report = index.add([samples])
    assert report.moved == [str(moved)] and report.pages_encoded == 0
    assert {d.doc_path for d in index.documents()} >= {str(moved)}
    assert index.store.count() == 6


def test_identical_files_are_indexed_once(index: Index, samples: Path) -> None:
    shutil.copy(samples / "solar_report.pdf", samples / "copy of report.pdf")
    report = index.add([samples])
    assert [Path(p).name for p, _ in report.duplicates] == ["solar_report.pdf"]
    assert index.store.count() == 6


def test_bad_files_are_named_with_reasons_and_the_rest_indexed(
    index: Index, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every bad kind of benches/bad_pdfs.py (corrupt, encrypted, empty, cut short, 10,000
    pages, a giant page, four bombs, one bad page, an offset header, certificate encryption, a
    file that hangs poppler) and two files that are not PDFs, beside the samples."""
    monkeypatch.setattr(pdf, "POPPLER_TIMEOUT_S", 8.0)  # the hanging file's budget, not 20 s
    for kind in bad_pdfs.BAD_KINDS:
        kind.write(samples / kind.name)
    (samples / "notes.pdf").write_text("meeting notes, not a PDF at all\n")
    explicit_text = samples.parent / "readme.txt"
    explicit_text.write_text("plain text")

    report = index.add([samples, explicit_text])
    reasons = {Path(path).name: reason for path, reason in report.skipped}
    notes = {Path(path).name: note for path, note in report.notes}
    assert reasons.pop("zero_byte.pdf") == "the file is empty"
    assert (
        reasons.pop("notes.pdf")
        == reasons.pop("readme.txt")
        == "not a PDF file: no PDF header, and poppler cannot read it"
    )
    cut_short = "the file is cut short (it has no %%EOF end) and cannot be read"
    assert reasons.pop("corrupt.pdf") == reasons.pop("truncated.pdf") == cut_short
    assert reasons.pop("encrypted.pdf").startswith("the file is encrypted: give its password")
    assert reasons.pop("certificate.pdf").startswith("the file is encrypted with a certificate")
    assert reasons.pop("hangs_poppler.pdf").startswith("reading the text layer took over 8.0 s")
    assert notes["one_bad_page.pdf"].startswith("page 3 of 5 cannot be read")
    assert notes["offset_header.pdf"] == (
        "indexed although damaged (a damaged or misplaced PDF header): poppler read past it"
    )
    assert reasons.pop("many_pages.pdf") == (
        f"it has 10,000 pages, more than the limit of {pdf.MAX_PAGES:,} (VDR_MAX_PAGES)"
    )
    # A page-tree loop hides page 2; page 1 is indexed and page 2 named.
    assert notes["bomb_tree_loop.pdf"] == (
        "page 2 of 2 cannot be read (it has no size: poppler finds no page there), "
        "the other page is indexed"
    )
    assert index.outcome(content_id(samples / "bomb_tree_loop.pdf")).bad_pages == (2,)
    assert "Page count (1048576)" in reasons.pop("bomb_tree_doubling.pdf")
    # Poppler stops parsing at its nesting limit and reads the page under a nesting bomb: it is
    # indexed, with a note saying how deep the file nests (poppler says nothing of dictionaries).
    bombs = ("bomb_arrays.pdf", "bomb_dicts.pdf")
    for name in bombs:
        depth = re.search(r"objects nested ([\d,]+) deep, of which poppler reads 500", notes[name])
        assert depth and int(depth[1].replace(",", "")) >= bad_pdfs.BOMB_DEPTH, notes[name]
    assert reasons == {}
    assert "rendered at 25.4 dpi instead of 150" in notes["giant_page.pdf"]
    expected = {**SAMPLE_PAGES, "giant_page.pdf": 1, "bomb_tree_loop.pdf": 1}
    expected |= {"one_bad_page.pdf": 4, "offset_header.pdf": 3}
    expected |= dict.fromkeys(bombs, 1)
    assert Counter(name for name, _ in page_set(index.store)) == expected
    assert index.store.count() == sum(expected.values())


def test_a_giant_page_is_rendered_within_the_pixel_limit(index: Index, tmp_path: Path) -> None:
    """A 20,000 x 20,000 pt poster would be 1.7 billion pixels at 150 dpi: it is rendered at
    the dpi that fits MAX_PAGE_PIXELS, quickly, and is found by its words."""
    folder = tmp_path / "posters"
    folder.mkdir()
    make_pdf(
        folder / "poster.pdf",
        [[("Giant harbour poster about lighthouse keepers", 1000, 1000, 600)]],
        size=(20_000, 20_000),
    )
    report = index.add([folder])
    assert report.skipped == [] and len(report.added) == 1
    (hit,) = index.search("lighthouse keepers poster", k=1)
    width, height = index.page_image(hit.page_id).size
    assert width * height <= pdf.MAX_PAGE_PIXELS and width > 1000


def test_documents_over_the_page_limit_are_named(
    index: Index, samples: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pdf, "MAX_PAGES", 2)  # solar_report.pdf has 3 pages
    report = index.add([samples])
    reasons = {Path(path).name: reason for path, reason in report.skipped}
    assert reasons == {
        "solar_report.pdf": "it has 3 pages, more than the limit of 2 (VDR_MAX_PAGES)"
    }
    assert {Path(p).name for p in report.added} == {"bike_maintenance.pdf", "scanned_letter.pdf"}


def test_missing_path_is_an_error(index: Index, tmp_path: Path) -> None:
    from vdr.errors import NotFound

    with pytest.raises(NotFound, match="does not exist"):
        index.add([tmp_path / "nowhere"])


@pytest.mark.skipif(not (DEV_SET / "pdfs").is_dir(), reason="needs ../shared/bench/dev")
def test_sigkill_mid_run_then_rerun_leaves_every_page_once(tmp_path: Path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    for name in ("dev02_beamer_talk.pdf", "dev04_booktabs.pdf", "dev09_tikz_feynman.pdf"):
        shutil.copy(DEV_SET / "pdfs" / name, folder)
    index_dir = tmp_path / "index"
    command = [
        sys.executable,
        "-m",
        "vdr.cli",
        "index",
        str(folder),
        "--index",
        str(index_dir),
        "--quiet",
    ]
    run = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    # Kill once some pages are written but before the run can finish (79 pages in all).
    while time.monotonic() < deadline and run.poll() is None:
        written = (
            len(list((index_dir / "pages").glob("*.jpg"))) if (index_dir / "pages").is_dir() else 0
        )
        if written >= 20:
            break
        time.sleep(0.05)
    assert run.poll() is None, "the indexer finished before it could be killed"
    run.send_signal(signal.SIGKILL)
    run.wait()

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    with Index(index_dir) as index:
        expected = sorted(
            [("dev02_beamer_talk.pdf", p) for p in range(1, 32)]
            + [("dev04_booktabs.pdf", p) for p in range(1, 19)]
            + [("dev09_tikz_feynman.pdf", p) for p in range(1, 31)]
        )
        assert page_set(index.store) == expected
        assert index.store.count() == len(expected)
        assert len(index.images.page_ids()) == len(expected)
        assert not list((index_dir / "pages").glob("*.tmp"))


def test_flushing_after_every_page_leaves_a_consistent_index(
    tmp_path: Path, samples: Path, encoder: TextGridEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The store flushed after each write of a run: reopened, every page is there once, with
    its image, and searches find the same pages with the same scores."""
    del encoder  # loaded once for the session; the index gets the same cached model
    (samples / "scanned_letter.pdf").unlink()  # OCR adds time, not coverage, here
    monkeypatch.setattr(edge, "FLUSH_EVERY_PAGES", 1)
    query = "quarterly generation per site table"
    with Index(tmp_path / "index") as index:
        assert index.add([samples]).pages_encoded == 5
        expected = [(h.page_id, h.score) for h in index.search(query, k=5)]
    with Index(tmp_path / "index") as index:
        assert page_set(index.store) == sorted(
            (name, p)
            for name, n in SAMPLE_PAGES.items()
            if name != "scanned_letter.pdf"
            for p in range(1, n + 1)
        )
        assert check(index).healthy
        assert [(h.page_id, h.score) for h in index.search(query, k=5)] == expected


def test_qdrant_server_code_path_ranks_like_the_embedded_store(
    tmp_path: Path, samples: Path
) -> None:
    (samples / "scanned_letter.pdf").unlink()  # OCR adds time, not coverage, here
    query = "monthly solar output chart"
    with Index(tmp_path / "edge") as embedded:
        embedded.add([samples])
        expected = [(h.page_id, round(h.score, 3)) for h in embedded.search(query, k=5)]
    # qdrant-client's in-process mode stands in for a server: the --qdrant-url code path.
    with Index(tmp_path / "server", qdrant_url=":memory:") as served:
        served.add([samples])
        assert served.qdrant_url == ":memory:" and not (tmp_path / "server" / "qdrant").exists()
        assert [(h.page_id, round(h.score, 3)) for h in served.search(query, k=5)] == expected

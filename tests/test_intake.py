"""What vdr takes in, as users' folders hold it: page images, damaged and encrypted PDFs, a file
that hangs poppler. Every readable page indexed, every other one named, nothing left running."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from vdr import Index
from vdr.catalog import document_statuses
from vdr.cli import main
from vdr.encoders.base import Encoder
from vdr.encoders.textgrid import TextGridEncoder
from vdr.indexer import pdf
from vdr.indexer.pipeline import index_paths
from vdr.ledger import Ledger
from vdr.page_images import PageImages
from vdr.server.app import create_app
from vdr.store import edge

from conftest import REPO, SAMPLES, make_pdf, running_server

sys.path.insert(0, str(REPO / "benches"))  # the bench's files, so both judge the same ones
import bad_pdfs

SCAN_DPI = 200
LETTERS = [
    [("Harbour dredging permit", 72, 120, 30), ("granted to the port authority", 72, 170, 22)],
    [("Quarterly solar generation", 72, 120, 30), ("per site and per month", 72, 170, 22)],
    [("Replacing worn brake pads", 72, 120, 30), ("on a mountain bicycle", 72, 170, 22)],
    [("Minutes of the annual assembly", 72, 120, 30), ("of the housing cooperative", 72, 170, 22)],
]


def scans(folder: Path, pdf_of_pages: Path) -> Path:
    """Page images as a scanner writes them: page 1 of `pdf_of_pages` as a PNG, pages 2-4 as
    one multi-page TIFF, both at SCAN_DPI with the resolution recorded."""
    stem = folder / "page"
    subprocess.run(
        ["pdftoppm", "-r", str(SCAN_DPI), "-gray", "-png", str(pdf_of_pages), str(stem)],
        check=True,
    )
    pages = [Image.open(png) for png in sorted(folder.glob("page-*.png"))]
    pages[0].save(folder / "permit.png", dpi=(SCAN_DPI, SCAN_DPI))
    pages[1].save(
        folder / "binder.tiff",
        save_all=True,
        append_images=pages[2:],
        compression="tiff_deflate",
        dpi=(SCAN_DPI, SCAN_DPI),
    )
    for page in pages:
        page.close()
    for png in folder.glob("page-*.png"):
        png.unlink()
    return folder


def test_png_and_multipage_tiff_scans_index_search_and_heatmap_like_pdfs(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    del encoder  # loaded once for the session; the index gets the same cached model
    (tmp_path / "scans").mkdir()
    folder = scans(tmp_path / "scans", make_pdf(tmp_path / "letters.pdf", LETTERS))
    index_dir = str(tmp_path / "index")
    assert main(["index", str(folder), "--index", index_dir, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert sorted(Path(p).name for p in report["added"]) == ["binder.tiff", "permit.png"]
    assert report["pages_encoded"] == 4 and report["skipped"] == []
    with Index(Path(index_dir)) as index:
        shown = {Path(s.path).name: (s.status, s.pages) for s in document_statuses(index)}
        assert shown == {"binder.tiff": ("indexed", 3), "permit.png": ("indexed", 1)}
        for query, name, page in [
            ("harbour dredging permit", "permit.png", 1),
            ("quarterly solar generation per site", "binder.tiff", 1),
            ("annual assembly of the housing cooperative", "binder.tiff", 3),
        ]:
            top = index.search(query, k=1)[0]
            assert (Path(top.doc_path).name, top.page, top.matched) == (name, page, True)
        (image,) = [d for d in index.documents() if d.doc_path.endswith("binder.tiff")]
        page_id = f"{image.doc_id}-2"
        # stored at the dpi a PDF page is: 8.27 x 11.69 inches (A4) at 150 dpi
        assert index.page_image(page_id).size == pytest.approx((1240, 1754), abs=2)
        assert "brake" in {w.text.lower() for w in index.page(page_id).words}  # read by OCR
    out = tmp_path / "brakes.png"
    heatmap = ["heatmap", "worn brake pads", "--page", page_id, "--index", index_dir, "-o"]
    assert main([*heatmap, str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (query words 0:worn, 1:brake")
    with Image.open(out) as drawn:
        assert drawn.format == "PNG" and drawn.width == 1240
    # unchanged: nothing read again
    assert main(["index", str(folder), "--index", index_dir, "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["pages_encoded"] == 0 and len(again["unchanged"]) == 2


def test_page_images_upload_like_pdfs_and_a_broken_one_is_named(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    (tmp_path / "scans").mkdir()
    folder = scans(tmp_path / "scans", make_pdf(tmp_path / "letters.pdf", LETTERS))
    broken = (folder / "permit.png").read_bytes()[:300]  # a download cut short
    with Index(tmp_path / "index") as index, running_server(create_app(index)) as url:
        files = [
            ("file", ("binder.tiff", (folder / "binder.tiff").read_bytes(), "image/tiff")),
            ("file", ("half.png", broken, "image/png")),
        ]
        answer = httpx.post(f"{url}/documents", files=files, timeout=120)
        assert answer.status_code == 207
        tiff, half = answer.json()["files"]
        assert (tiff["status"], tiff["document"]["pages"]) == ("indexed", 3)
        assert half["status"] == "refused"
        assert half["message"] == (
            "the image is damaged or cut short: page 1 cannot be read (image file is truncated)"
        )
        top = index.search("replacing worn brake pads", k=1)[0]
        assert (top.doc_id, top.page) == (tiff["document"]["doc_id"], 2)


def test_a_bad_page_among_good_ones_leaves_a_partial_document(
    tmp_path: Path, encoder: TextGridEncoder, capsys: pytest.CaptureFixture[str]
) -> None:
    del encoder
    folder = tmp_path / "pdfs"
    folder.mkdir()
    bad_pdfs.one_bad_page(folder / "tides.pdf", n_pages=5, bad=3)
    index_dir = str(tmp_path / "index")
    with Index(Path(index_dir)) as index:
        report = index.add([folder])
        assert report.skipped == [] and report.pages_encoded == 4
        assert report.notes == [
            (
                str(folder / "tides.pdf"),
                "page 3 of 5 cannot be read (it is 2 x 14,400 pt, one side over 1,000 times the "
                "other: a line, not a page), the other 4 are indexed",
            )
        ]
        top = index.search("ledger sheet 4 of the tide tables", k=1)[0]
        assert top.page == 4
        assert sorted(int(p.rsplit("-", 1)[1]) for p in index.images.page_ids()) == [1, 2, 4, 5]
        assert index.add([folder]).unchanged == [str(folder / "tides.pdf")]  # complete as it is
        doc_id = top.doc_id
    assert main(["docs", "show", doc_id, "--index", index_dir]) == 0
    shown = capsys.readouterr().out
    assert "status: partial, 4 of 5 pages indexed" in shown
    assert "pages that could not be read: 3" in shown


@pytest.mark.parametrize("damage", ["offset", "misspelt"])
def test_a_damaged_header_poppler_reads_is_indexed_with_a_note(
    damage: str, tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    folder = tmp_path / "pdfs"
    folder.mkdir()
    target = folder / "report.pdf"
    if damage == "offset":
        bad_pdfs.offset_header(target)
    else:
        target.write_bytes((SAMPLES / "solar_report.pdf").read_bytes().replace(b"%PDF-", b"%PFD-"))
    with Index(tmp_path / "index") as index:
        report = index.add([folder])
        assert report.skipped == [] and report.pages_encoded == 3
        ((path, note),) = report.notes
        assert path == str(target)
        assert note.startswith("indexed although damaged (a damaged or misplaced PDF header")
        top = index.search("quarterly generation per site table", k=1)[0]
        assert (Path(top.doc_path).name, top.page) == ("report.pdf", 2)


def test_an_unreadable_file_is_named_not_a_pdf_and_a_certificate_one_as_such(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    folder = tmp_path / "pdfs"
    folder.mkdir()
    bad_pdfs.certificate_encrypted(folder / "sealed.pdf")
    (folder / "notes.pdf").write_text("meeting notes, typed in a text editor\n" * 40)
    with Index(tmp_path / "index") as index:
        skipped = dict(index.add([folder]).skipped)
    assert skipped == {
        str(folder / "notes.pdf"): "not a PDF file: no PDF header, and poppler cannot read it",
        str(folder / "sealed.pdf"): "the file is encrypted with a certificate (public-key "
        "security), which vdr cannot open",
    }


def test_passwords_open_encrypted_pdfs_and_a_wrong_one_is_named(
    tmp_path: Path,
    encoder: TextGridEncoder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del encoder
    folder = tmp_path / "pdfs"
    folder.mkdir()
    bad_pdfs.encrypted(folder / "locked.pdf")  # user password "secret"
    index_dir = str(tmp_path / "index")

    def run(*extra: str) -> dict:
        assert main(["index", str(folder), "--index", index_dir, "--json", *extra]) == 0
        return json.loads(capsys.readouterr().out)

    assert run()["skipped"] == [
        [
            str(folder / "locked.pdf"),
            "the file is encrypted: give its password with --password or in the file named by "
            "VDR_PDF_PASSWORDS",
        ]
    ]
    wrong = run("--password", "sesame")
    assert wrong["remembered"] == []  # a password given: examined again
    assert wrong["skipped"][0][1] == "the file is encrypted and the password given does not open it"
    listed = tmp_path / "passwords.txt"
    listed.write_text("sesame\nopen up\nsecret\n")
    monkeypatch.setenv("VDR_PDF_PASSWORDS", str(listed))
    opened = run()
    assert opened["skipped"] == [] and opened["pages_encoded"] == 1
    monkeypatch.delenv("VDR_PDF_PASSWORDS")
    with Index(Path(index_dir)) as index:
        assert index.search("confidential", k=1)[0].doc_path.endswith("locked.pdf")


def test_an_unchanged_folder_with_refusals_reruns_without_reading_a_file_or_loading_a_model(
    tmp_path: Path, encoder: TextGridEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    bad_pdfs.corrupt(folder / "corrupt.pdf")
    bad_pdfs.certificate_encrypted(folder / "sealed.pdf")
    make_pdf(folder / "good.pdf", [[("harbour dredging permit", 72, 72, 14)]])
    store, images = edge.EdgeStore(tmp_path / "store", encoder.dim), PageImages(tmp_path / "pages")
    ledger = Ledger(tmp_path)
    first = index_paths([folder], lambda: encoder, store, images, ledger, progress=False)
    assert len(first.skipped) == 2 and first.remembered == []

    def no_model() -> Encoder:
        raise AssertionError("an unchanged folder loaded the model")

    def no_poppler(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"an unchanged folder ran poppler: {args}")

    monkeypatch.setattr(pdf, "_poppler", no_poppler)
    again = index_paths([folder], no_model, store, images, Ledger(tmp_path), progress=False)
    assert again.skipped == first.skipped and again.outcomes == []
    assert sorted(Path(p).name for p in again.remembered) == ["corrupt.pdf", "sealed.pdf"]
    assert again.unchanged == [str(folder / "good.pdf")]
    store.close()


def test_a_file_that_hangs_poppler_is_stopped_and_does_not_hold_up_the_others(
    tmp_path: Path, encoder: TextGridEncoder, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    bad_pdfs.hangs_poppler(folder / "a_hangs.pdf")  # first in the folder's order
    make_pdf(folder / "b_permit.pdf", [[("harbour dredging permit", 72, 72, 14)]])
    make_pdf(folder / "c_brakes.pdf", [[("replacing worn brake pads", 72, 72, 14)]])
    monkeypatch.setattr(pdf, "POPPLER_TIMEOUT_S", 3.0)
    store, images = edge.EdgeStore(tmp_path / "store", encoder.dim), PageImages(tmp_path / "pages")
    report = index_paths([folder], lambda: encoder, store, images, Ledger(tmp_path), progress=False)
    budget = pdf.poppler_budget_s(folder / "a_hangs.pdf")
    assert report.skipped == [
        (
            str(folder / "a_hangs.pdf"),
            f"reading the text layer took over {budget:.1f} s, the budget for a file of its "
            "size (VDR_POPPLER_TIMEOUT_S), so poppler was stopped",
        )
    ]
    # The others were indexed while poppler was still on the hanging file, not after it.
    assert [Path(o.path).name for o in report.outcomes] == [
        "b_permit.pdf",
        "c_brakes.pdf",
        "a_hangs.pdf",
    ]
    assert store.count() == 2
    store.close()


def poppler_on(path: Path) -> list[int]:
    """Pids of the processes whose command line names `path` (poppler's tools do)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(path).encode() in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue  # gone while we looked
    return pids


def test_a_sigkilled_vdr_index_leaves_no_poppler_behind(tmp_path: Path) -> None:
    folder = tmp_path / "pdfs"
    folder.mkdir()
    hangs = folder / "hangs.pdf"
    bad_pdfs.hangs_poppler(hangs)
    env = {**os.environ, "VDR_POPPLER_TIMEOUT_S": "300"}
    command = [sys.executable, "-m", "vdr.cli", "index", str(folder), "--index"]
    vdr = subprocess.Popen([*command, str(tmp_path / "index"), "--quiet"], env=env, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not [p for p in poppler_on(hangs) if p != vdr.pid]:
            assert vdr.poll() is None and time.monotonic() < deadline, "poppler never started"
            time.sleep(0.2)
        vdr.send_signal(signal.SIGKILL)
        vdr.wait()
        time.sleep(5)
        assert poppler_on(hangs) == []
    finally:
        vdr.kill()
        for pid in poppler_on(hangs):
            os.kill(pid, signal.SIGKILL)

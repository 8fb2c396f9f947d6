"""Searches are answered while documents are uploaded and deleted, and the index stays whole:
a short run of benches/load_search.py's clients and writer against the app served for real."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from vdr import Index
from vdr.doctor import check
from vdr.encoders.textgrid import TextGridEncoder
from vdr.server.app import create_app

from conftest import REPO, SAMPLES, make_pdf, running_server

sys.path.insert(0, str(REPO / "benches"))
from load_search import check_pages, search_load, upload_files_astray, write_until

CLIENTS = 8
SECONDS = 5
QUERIES = ["brake pad replacement", "chain lubrication", "quarterly generation per site"]


def test_searches_uploads_and_deletes_together(tmp_path: Path, encoder: TextGridEncoder) -> None:
    del encoder  # loaded once per session; the index below shares it
    originals = tmp_path / "originals"
    originals.mkdir()
    shutil.copy(SAMPLES / "bike_maintenance.pdf", originals)
    pool = [
        Path(shutil.copy(SAMPLES / "solar_report.pdf", tmp_path)),
        make_pdf(tmp_path / "notes.pdf", [[("harbour dredging logbook", 72, 100, 16)]] * 2),
        make_pdf(tmp_path / "memo.pdf", [[("volcano eruption memo", 72, 100, 16)]]),
    ]
    with Index(tmp_path / "index") as index:
        index.add([originals])
        before = {d.doc_id: d.n_pages for d in index.documents()}
        with running_server(create_app(index)) as url, ThreadPoolExecutor(1) as writing:
            stop = threading.Event()
            # At least upload, delete, upload: the searches run as long as the writer does.
            writer = writing.submit(write_until, url, pool, time.time() + SECONDS, min_writes=3)
            writer.add_done_callback(lambda _: stop.set())
            searches = search_load(url, QUERIES, CLIENTS, stop)
            log = writer.result()
        checkup = check(index)
        page_ids = [p["page_id"] for p in index.store.payloads(["page_id"])]
    assert [c.failure for c in searches if c.failure] == [] and log.failures == []
    assert len(log.uploads) >= 2 and len(log.deletes) >= 1 and len(searches) > CLIENTS
    assert checkup.healthy, checkup
    assert check_pages(page_ids, {**before, **log.kept}).exact
    assert upload_files_astray(index.path, {**before, **log.kept}, log.kept) == []

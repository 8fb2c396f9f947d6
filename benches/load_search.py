"""Search latency and throughput under concurrent clients, with an upload indexed mid-run.

    python benches/load_search.py [SET_DIR] [--clients 16] [--searches 200] [--index DIR]

Serves an index of SET_DIR/pdfs (default ../shared/bench/dev) with `vdr serve`'s app on a
loopback port; each client thread sends its share of the set's queries round-robin through
POST /search (k=10, with evidence). While they run, one PDF is uploaded and indexed, so some
searches are answered while the index is being written. Reports errors, p50/p95/p99 latency
and throughput as a markdown table with the machine noted.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from vdr import Index
from vdr.eval import load_set
from vdr.server.app import create_app

from conftest import SAMPLES, running_server
from index_throughput import DEFAULT_PDFS, machine


def client_loop(
    url: str, queries: list[str], count: int, offset: int, out: list, errors: list
) -> None:
    with httpx.Client(base_url=url, timeout=120) as client:
        for i in range(count):
            query = queries[(offset + i) % len(queries)]
            started = time.perf_counter()
            try:
                response = client.post("/search", json={"query": query, "k": 10})
                ok = response.status_code == 200 and response.json()["results"]
            except httpx.HTTPError as error:
                ok, response = False, error
            out.append((started, time.perf_counter() - started))
            if not ok:
                errors.append(f"{query!r}: {response}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--searches", type=int, default=200, help="searches per client")
    parser.add_argument("--index", type=Path, help="index folder to build or reuse")
    args = parser.parse_args()
    queries = [q.text for q in load_set(args.set_dir)[0]]
    folder = args.index or Path(tempfile.mkdtemp(prefix="vdr-load-")) / "index"
    with Index(folder) as index:
        index.add([args.set_dir / "pdfs"])
        index.encoder  # noqa: B018  (load the model before the clock starts)
        pages = index.store.count()
        upload = Path(tempfile.mkdtemp(prefix="vdr-upload-")) / "report.pdf"
        shutil.copy(SAMPLES / "solar_report.pdf", upload)
        with running_server(create_app(index)) as url:
            timings: list[tuple[float, float]] = []
            errors: list[str] = []
            threads = [
                threading.Thread(
                    target=client_loop,
                    args=(url, queries, args.searches, c * 7, timings, errors),
                )
                for c in range(args.clients)
            ]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            time.sleep(2)  # let the clients get going, then index a PDF under their load
            with httpx.Client(base_url=url, timeout=600) as uploader:
                index_start = time.perf_counter()
                files = {"file": (upload.name, upload.read_bytes(), "application/pdf")}
                uploaded = uploader.post("/documents", files=files)
                index_end = time.perf_counter()
                doc_id = uploaded.json().get("doc_id") if uploaded.status_code == 201 else None
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            if doc_id:
                with httpx.Client(base_url=url, timeout=60) as cleaner:
                    cleaner.delete(f"/documents/{doc_id}")
    latency = np.array([t for _, t in timings]) * 1000
    during = sum(index_start <= s <= index_end for s, _ in timings)
    print(
        f"{args.clients} clients x {args.searches} searches on {args.set_dir} "
        f"({pages} pages), {datetime.date.today()}, {machine()}\n"
    )
    print("| searches | errors | p50 ms | p95 ms | p99 ms | searches/s | during upload |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    p50, p95, p99 = np.percentile(latency, [50, 95, 99])
    print(
        f"| {len(latency)} | {len(errors)} | {p50:.0f} | {p95:.0f} | {p99:.0f} "
        f"| {len(latency) / elapsed:.1f} | {during} |"
    )
    print(f"\nupload: HTTP {uploaded.status_code}, indexed in {index_end - index_start:.1f} s")
    for error in errors[:5]:
        print("error:", error)


if __name__ == "__main__":
    main()

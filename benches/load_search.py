"""Search load on a `vdr serve` process while another process uploads and deletes PDFs.

Afterwards `vdr doctor` and a page count judge what the index holds (issue 9).

    python benches/load_search.py [SET_DIR] [--clients 32] [--seconds 60] [--index DIR]

1. `vdr index SET_DIR/pdfs --index DIR` (default ../shared/bench/dev; DIR defaults to a
   temporary folder, and on one that holds the PDFs already nothing is encoded).
2. `vdr serve --index DIR` as its own process on a free loopback port. The documents it lists
   (GET /documents) before the run are the originals.
3. For --seconds, --clients threads each send the set's queries round-robin, each from its own
   offset, through POST /search (k=10; the server attaches evidence to every hit). Meanwhile a
   second process, this script with --writer, uploads PDFs and deletes documents it uploaded
   (it holds at most WRITER_HOLDS of them at a time). Its pool: the sample PDFs (one image-only,
   read by OCR), 2-page excerpts of EXCERPTS dev PDFs (new documents), and one dev PDF as it is
   (indexed already: answered 200 and left alone).
4. The server is stopped with Ctrl-C (SIGINT), so it closes the index; `vdr doctor --json`
   must find the index healthy, and the store must hold exactly the originals' pages and those
   of the writer's uploads it did not delete, each once; the uploads folder must hold exactly
   the files of those uploads.

A request fails on a transport error or any answer but 2xx (a search also when it finds
nothing; with the dev set indexed every query matches something). Prints a markdown table
under a heading naming the data, date, machine, load average and command; exits 1 when a
request failed, a page was lost, duplicated or left over, or the doctor found a problem.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import random
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vdr import Index
from vdr.eval import load_set

from index_throughput import DEFAULT_PDFS, REPO, machine

SAMPLES = REPO / "samples" / "pdfs"
# Generous: on 2 shared cores, 32 clients queue for seconds; a timeout would be our failure,
# not the server's. A write under that load (an OCR page) takes longer still.
SEARCH_TIMEOUT_S = 300
WRITE_TIMEOUT_S = 600
# The writer's own uploads it keeps at once; at this many it deletes one before uploading more.
# 1: uploads and deletes alternate, so that a run of a few slow uploads has deletes too.
WRITER_HOLDS = 1
# Dev PDFs whose first two pages become new documents for the writer to upload.
EXCERPTS = 3
# `vdr serve`'s exit status after Ctrl-C, once it has closed the index.
INTERRUPTED = 130
# How long `vdr serve` may take to answer /healthz (torch import and model load, on busy cores).
SERVE_START_S = 300


@dataclass(frozen=True)
class Call:
    """One request: when it started (epoch seconds, comparable across processes), how long it
    took, and why it failed (None: it did not)."""

    started: float
    seconds: float
    failure: str | None = None


@dataclass
class WriterLog:
    """What the writer did. kept: its uploads (answered 201) not deleted since, doc id -> pages.
    An upload answered 200 found its content indexed already and changed nothing."""

    uploads: list[Call] = field(default_factory=list)
    new: int = 0
    deletes: list[Call] = field(default_factory=list)
    kept: dict[str, int] = field(default_factory=dict)

    @property
    def failures(self) -> list[str]:
        return [c.failure for c in self.uploads + self.deletes if c.failure]

    @classmethod
    def from_json(cls, text: str) -> WriterLog:
        raw = json.loads(text)
        return cls(
            uploads=[Call(**c) for c in raw["uploads"]],
            new=raw["new"],
            deletes=[Call(**c) for c in raw["deletes"]],
            kept=raw["kept"],
        )


@dataclass(frozen=True)
class PageCheck:
    """The store's pages against the pages it should hold (page ids, sorted)."""

    expected: int
    found: int
    lost: list[str]  # expected but absent
    duplicated: list[str]  # held more than once
    stray: list[str]  # held but not expected (a deleted document's page, say)

    @property
    def exact(self) -> bool:
        return not (self.lost or self.duplicated or self.stray)


def search_until(
    url: str, queries: Sequence[str], offset: int, stop: threading.Event, calls: list[Call]
) -> None:
    """One client: POST /search with queries[offset], queries[offset + 1], ... until `stop`."""
    with httpx.Client(base_url=url, timeout=SEARCH_TIMEOUT_S) as client:
        number = offset
        while not stop.is_set():
            query = queries[number % len(queries)]
            number += 1
            started, clock = time.time(), time.perf_counter()
            try:
                response = client.post("/search", json={"query": query, "k": 10})
                failure = None
                if response.status_code != 200 or not response.json()["results"]:
                    failure = f"HTTP {response.status_code} {response.text[:300]}"
            except httpx.HTTPError as error:
                failure = f"{type(error).__name__}: {error}"
            seconds = time.perf_counter() - clock
            calls.append(Call(started, seconds, failure and f"search {query!r}: {failure}"))


def search_load(
    url: str, queries: Sequence[str], clients: int, stop: threading.Event
) -> list[Call]:
    """`clients` threads searching until `stop` is set; every search they made (list.append is
    atomic under the GIL, so they share one list)."""
    calls: list[Call] = []
    threads = [
        threading.Thread(target=search_until, args=(url, queries, c * 7, stop, calls))
        for c in range(clients)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return calls


def write_until(
    url: str, pdfs: Sequence[Path], until: float, min_writes: int = 0, seed: int = 0
) -> WriterLog:
    """Upload PDFs and delete the writer's own uploads until `until` (epoch seconds) and at least
    `min_writes` requests; a request under way at `until` is finished.

    Uploads a random PDF of `pdfs` it does not hold while it holds fewer than WRITER_HOLDS of
    its uploads, else deletes a random one of them (with WRITER_HOLDS 1: upload, delete,
    upload, ...). A document deleted may be uploaded again later, as new.
    """
    rng = random.Random(seed)
    log = WriterLog()
    ids: dict[Path, str] = {}  # what each PDF was answered with, once uploaded
    with httpx.Client(base_url=url, timeout=WRITE_TIMEOUT_S) as client:
        while time.time() < until or len(log.uploads) + len(log.deletes) < min_writes:
            absent = [p for p in pdfs if ids.get(p) not in log.kept]
            started, clock = time.time(), time.perf_counter()
            if len(log.kept) < WRITER_HOLDS and absent:
                pdf = rng.choice(absent)
                try:
                    files = {"file": (pdf.name, pdf.read_bytes(), "application/pdf")}
                    response = client.post("/documents", files=files)
                    failure = None
                    if response.status_code in (200, 201):
                        (uploaded,) = response.json()["files"]
                        doc = uploaded["document"]
                        ids[pdf] = doc["doc_id"]
                        if response.status_code == 201:
                            log.kept[doc["doc_id"]] = doc["pages"]
                            log.new += 1
                    else:
                        failure = f"upload {pdf.name}: HTTP {response.status_code} {response.text}"
                except httpx.HTTPError as error:
                    failure = f"upload {pdf.name}: {type(error).__name__}: {error}"
                log.uploads.append(Call(started, time.perf_counter() - clock, failure))
            else:
                doc_id = rng.choice(sorted(log.kept))
                try:
                    response = client.delete(f"/documents/{doc_id}")
                    failure = None
                    if response.status_code == 200:
                        del log.kept[doc_id]
                    else:
                        failure = f"delete {doc_id}: HTTP {response.status_code} {response.text}"
                except httpx.HTTPError as error:
                    failure = f"delete {doc_id}: {type(error).__name__}: {error}"
                log.deletes.append(Call(started, time.perf_counter() - clock, failure))
    return log


def check_pages(page_ids: Sequence[str], expected: dict[str, int]) -> PageCheck:
    """Compare the page ids a store holds (one per point) with documents' page counts."""
    from vdr.store.base import page_id_of

    held = Counter(page_ids)
    wanted = {page_id_of(doc, n) for doc, pages in expected.items() for n in range(1, pages + 1)}
    return PageCheck(
        expected=len(wanted),
        found=len(page_ids),
        lost=sorted(wanted - held.keys()),
        duplicated=sorted(p for p, n in held.items() if n > 1),
        stray=sorted(held.keys() - wanted),
    )


def upload_files_astray(index: Path, present: Iterable[str], kept: Iterable[str]) -> list[str]:
    """Doc ids of files in the index's uploads folder (named DOC_ID-NAME by the server) whose
    document is not `present`, and of `kept` uploads without their file; none when all is well.
    """
    folder = index / "uploads"
    held = {p.name.split("-", 1)[0] for p in folder.iterdir()} if folder.exists() else set()
    return sorted((held - set(present)) | (set(kept) - held))


def writer_pool(set_pdfs: Path, folder: Path) -> list[Path]:
    """The PDFs the writer uploads, copied or made in `folder` (see the module docstring)."""
    originals = sorted(set_pdfs.glob("*.pdf"))
    pool = [Path(shutil.copy(p, folder)) for p in sorted(SAMPLES.glob("*.pdf"))]
    for pdf in originals[:EXCERPTS]:
        pages = [folder / f"{pdf.stem}-{n}.pdf" for n in (1, 2)]
        for number, page in enumerate(pages, 1):
            run = ["pdfseparate", "-f", str(number), "-l", str(number), str(pdf), str(page)]
            subprocess.run(run, check=True, capture_output=True)
        excerpt = folder / f"{pdf.stem}-excerpt.pdf"
        # capture_output: poppler warns on stderr about harmless flaws of some dev PDFs.
        subprocess.run(
            ["pdfunite", *map(str, pages), str(excerpt)], check=True, capture_output=True
        )
        for page in pages:
            page.unlink()
        pool.append(excerpt)
    smallest = min(originals, key=lambda p: p.stat().st_size)
    pool.append(Path(shutil.copy(smallest, folder)))
    return pool


def vdr(*args: str, timeout: float = 3600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vdr.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


class Server:
    """`vdr serve --index DIR` in its own process on a free loopback port."""

    def __init__(self, index: Path) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        # Read when the server fails, so it lives as long as the server does.
        self.log: IO[str] = tempfile.TemporaryFile("w+")  # noqa: SIM115
        command = ["serve", "--index", str(index), "--port", str(port)]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "vdr.cli", *command],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
        deadline = time.monotonic() + SERVE_START_S
        while True:
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                sys.exit(f"`vdr serve` did not start:\n{self.output()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=5).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.5)

    def stop(self) -> int:
        """Ctrl-C (SIGINT): uvicorn finishes the requests under way, then `vdr serve` closes the
        index and exits 130. Its exit status.

        Not SIGTERM: uvicorn re-raises that signal once it has shut down, and its default
        action ends the process before the index is closed.
        """
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()


def percentiles(seconds: Sequence[float]) -> tuple[float, float, float]:
    """p50, p95, p99 in milliseconds (nan when there is nothing to measure)."""
    if not seconds:
        return (float("nan"),) * 3
    p50, p95, p99 = np.percentile(np.array(seconds) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


def run_writer(args: argparse.Namespace) -> None:
    """--writer mode: write_until, its log as JSON on stdout."""
    log = write_until(args.writer, args.pool, args.until, seed=args.seed)
    print(json.dumps(asdict(log)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("set_dir", nargs="?", type=Path, default=DEFAULT_PDFS.parent)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--index", type=Path, help="index folder to build or reuse")
    parser.add_argument("--seed", type=int, default=0, help="the writer's choices")
    # The writer process's own arguments, given by the parent.
    parser.add_argument("--writer", metavar="URL", help=argparse.SUPPRESS)
    parser.add_argument("--until", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--pool", type=Path, nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        run_writer(args)
        return

    load_at_start = os.getloadavg()[0]  # others' jobs slow every request down: say how busy
    queries = [q.text for q in load_set(args.set_dir)[0]]
    scratch = Path(tempfile.mkdtemp(prefix="vdr-load-"))
    folder = (args.index or scratch / "index").absolute()
    indexed = vdr("index", str(args.set_dir / "pdfs"), "--index", str(folder), "--quiet")
    if indexed.returncode != 0:
        sys.exit(f"vdr index failed: {indexed.stderr[-2000:]}")
    (scratch / "pool").mkdir()
    pool = writer_pool(args.set_dir / "pdfs", scratch / "pool")

    server = Server(folder)
    originals = {d["doc_id"]: d["pages"] for d in httpx.get(f"{server.url}/documents").json()}
    until = time.time() + args.seconds
    own = ["--writer", server.url, "--until", str(until), "--seed", str(args.seed)]
    writer = subprocess.Popen(
        [sys.executable, __file__, *own, "--pool", *map(str, pool)],
        stdout=subprocess.PIPE,
        text=True,
    )
    stop = threading.Event()
    threading.Timer(max(0.0, until - time.time()), stop.set).start()
    started = time.time()
    searches = search_load(server.url, queries, args.clients, stop)
    elapsed = time.time() - started
    written, _ = writer.communicate(timeout=WRITE_TIMEOUT_S)
    exit_status = server.stop()
    load_at_end = os.getloadavg()[0]
    log = WriterLog.from_json(written) if writer.returncode == 0 else WriterLog()

    doctor = vdr("doctor", "--index", str(folder), "--json")
    healthy = doctor.returncode == 0 and json.loads(doctor.stdout)["healthy"]
    with Index(folder, create=False) as index:
        pages = check_pages(
            [p["page_id"] for p in index.store.payloads(["page_id"])], {**originals, **log.kept}
        )
    files_astray = upload_files_astray(folder, {**originals, **log.kept}, log.kept)
    shutil.rmtree(scratch, ignore_errors=True)  # the writer's pool, and the index unless --index

    failures = [c.failure for c in searches if c.failure] + log.failures
    if writer.returncode != 0:
        failures.append(f"the writer process exited {writer.returncode}")
    problems = failures[:10] + [f"upload files astray: {files_astray}"] * bool(files_astray)
    if not healthy:
        problems.append(f"vdr doctor: {doctor.stdout.strip()[-2000:]} {doctor.stderr[-500:]}")
    for name in ("lost", "duplicated", "stray"):
        if getattr(pages, name):
            problems.append(f"pages {name}: {getattr(pages, name)[:10]}")
    said = server.output()
    if exit_status not in (0, INTERRUPTED) or "Traceback" in said:
        problems.append(f"`vdr serve` exited {exit_status} and said:\n{said[-3000:]}")

    heading = (
        f"### Search under load with uploads and deletes: "
        f"{os.path.relpath(args.set_dir.resolve(), REPO)}/pdfs "
        f"({len(originals)} documents, {sum(originals.values())} pages), "
        f"{datetime.date.today()}, {machine()}, load average {load_at_start:.1f} at start "
        f"and {load_at_end:.1f} at end, "
        f"`{shlex.join(['python', 'benches/load_search.py', *sys.argv[1:]])}`"
    )
    print(report(heading, args.clients, elapsed, searches, log, len(failures), healthy, pages))
    for problem in problems:
        print("problem:", problem)
    sys.exit(1 if problems else 0)


def report(
    heading: str,
    clients: int,
    elapsed: float,
    searches: Sequence[Call],
    log: WriterLog,
    failed: int,
    healthy: bool,
    pages: PageCheck,
) -> str:
    """The run as a markdown table under `heading`, and a paragraph on the writes."""
    answered = [c.seconds for c in searches if not c.failure]
    p50, p95, p99 = percentiles(answered)
    writes = log.uploads + log.deletes
    during = sum(
        any(w.started <= c.started <= w.started + w.seconds for w in writes) for c in searches
    )
    upload_s = [c.seconds for c in log.uploads if not c.failure]
    delete_s = [c.seconds for c in log.deletes if not c.failure]
    return "\n".join(
        [
            heading,
            "",
            "| clients | seconds | searches answered | failed requests | p50 ms | p95 ms "
            "| p99 ms | searches/s | uploads (new) | deletes | `vdr doctor` "
            "| pages lost / duplicated / stray |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
            f"| {clients} | {elapsed:.0f} | {len(answered)} | {failed} | {p50:.0f} | {p95:.0f} "
            f"| {p99:.0f} | {len(answered) / elapsed:.1f} | {len(log.uploads)} ({log.new}) "
            f"| {len(log.deletes)} | {'healthy' if healthy else 'PROBLEMS'} "
            f"| {len(pages.lost)} / {len(pages.duplicated)} / {len(pages.stray)} |",
            "",
            f"seconds: until the last search answered (none starts after --seconds). "
            f"{during} searches started while an upload or delete was under way; an upload "
            f"took {percentiles(upload_s)[0] / 1000:.1f} s (median, max "
            f"{max(upload_s, default=float('nan')):.1f} s), a delete "
            f"{percentiles(delete_s)[0]:.0f} ms (median). Afterwards the index held "
            f"{pages.found} pages, as expected: the originals' and those of the uploads the "
            f"writer kept ({len(log.kept)})."
            if pages.exact
            else f"Afterwards the index held {pages.found} pages, {pages.expected} expected.",
        ]
    )


if __name__ == "__main__":
    main()

"""Shared fixtures: real sample PDFs, PDFs built on the spot, the real default encoder, and a
store fixture that runs each store test against Qdrant Edge and qdrant-client's :memory: mode."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from reportlab.lib.pagesizes import A4
from reportlab.pdfgen.canvas import Canvas

from vdr.encoders import load_encoder
from vdr.encoders.textgrid import TextGridEncoder
from vdr.store import Store, open_store

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "pdfs"
DEV_SET = REPO.parent / "shared" / "bench" / "dev"
BACKENDS = ["edge", "memory"]

# A placed string: (text, x, y, font size) with x, y in points from the page's top-left.
Placed = tuple[str, float, float, float]


@pytest.fixture(scope="session")
def encoder() -> TextGridEncoder:
    """The real default encoder (MiniLM from its wheel), loaded once per test session and
    shared with every Index the tests open (load_encoder caches it)."""
    loaded = load_encoder()
    assert isinstance(loaded, TextGridEncoder)
    return loaded


@pytest.fixture(params=BACKENDS)
def store(
    request: pytest.FixtureRequest, tmp_path: Path, encoder: TextGridEncoder
) -> Iterator[Store]:
    """An empty store on each backend: embedded Qdrant Edge, and qdrant-client in memory
    standing in for a Qdrant server (the --qdrant-url code path)."""
    url = ":memory:" if request.param == "memory" else None
    opened = open_store(tmp_path / "qdrant", encoder.dim, qdrant_url=url)
    yield opened
    opened.close()


@pytest.fixture()
def samples(tmp_path: Path) -> Path:
    """A writable copy of the sample PDFs."""
    folder = tmp_path / "samples"
    shutil.copytree(SAMPLES, folder)
    return folder


def make_pdf(path: Path, pages: Sequence[Sequence[Placed]], size: tuple[float, float] = A4) -> Path:
    """A real PDF with a text layer: each page draws its strings at the given positions."""
    canvas = Canvas(str(path), pagesize=size, invariant=1)
    for placed in pages:
        for text, x, y, font_size in placed:
            canvas.setFont("Helvetica", font_size)
            canvas.drawString(x, size[1] - y, text)
        canvas.showPage()
    canvas.save()
    return path


def rasterise(pdf: Path, page: int, out: Path, dpi: int = 150) -> Path:
    """An image-only PDF (no text layer) of one page of `pdf`, as a scanner would make it."""
    stem = out.with_suffix("")
    subprocess.run(
        [
            "pdftoppm",
            "-r",
            str(dpi),
            "-f",
            str(page),
            "-l",
            str(page),
            "-singlefile",
            "-png",
            str(pdf),
            str(stem),
        ],
        check=True,
    )
    png = stem.with_suffix(".png")
    with Image.open(png) as image:
        image.convert("L").save(out, format="PDF", resolution=dpi)
    png.unlink()
    return out


@contextlib.contextmanager
def running_server(app: Any) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a free loopback port in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.05)
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)

"""The HTTP API under hostile or unlucky clients: oversized and stalled requests, slow heads,
requests past their deadline, ids and file names that try to leave the index folder, failures
that must not show their traceback, API keys, CORS, and other vdr commands on a served index.

Every server here is real (uvicorn on a loopback port); raw sockets stand in for clients that
no well-behaved HTTP library would imitate.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from vdr import Index
from vdr.catalog import document_statuses
from vdr.cli import _parser, main
from vdr.encoders.textgrid import TextGridEncoder
from vdr.server.app import MAX_JSON_BODY_BYTES, create_app, server_config

from conftest import REPO, SAMPLES, make_pdf

API_KEY = "k3y-for-tests"
# The sample PDFs with a text layer: the scanned one would spend most of a test's time in OCR.
TEXT_PDFS = [SAMPLES / "bike_maintenance.pdf", SAMPLES / "solar_report.pdf"]


@contextlib.contextmanager
def serving(app: Any, head_timeout_s: float = 10.0) -> Iterator[tuple[str, int]]:
    """`app` served as `vdr serve` serves it (server_config) on a free loopback port."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(server_config(app, "127.0.0.1", port, head_timeout_s=head_timeout_s))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}", port
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def read_response(sock: socket.socket, wait_s: float = 30) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of one HTTP/1.1 answer read off a raw socket (body as far as
    Content-Length says)."""
    sock.settimeout(wait_s)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection without answering: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(status_line.split()[1]), headers, body


def raw(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request sent byte for byte as given, and its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        return read_response(sock)


def closed_by_server(sock: socket.socket, within_s: float) -> bool:
    """Whether the server closes `sock` (EOF or reset) within `within_s` seconds."""
    sock.settimeout(within_s)
    try:
        return sock.recv(65536) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder) -> Iterator[Index]:
    del encoder
    with Index(tmp_path_factory.mktemp("security") / "index") as opened:
        opened.add(TEXT_PDFS)
        yield opened


@pytest.fixture(scope="module")
def served(index: Index) -> Iterator[tuple[str, int]]:
    with serving(create_app(index, max_upload_mb=1)) as address:
        yield address


@pytest.fixture(scope="module")
def api(served: tuple[str, int]) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served[0], timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def page_id(index: Index) -> str:
    return f"{index.documents()[0].doc_id}-1"


# -- 1. sizes -------------------------------------------------------------------------------


def test_an_oversized_json_body_is_refused_before_it_is_read(served: tuple[str, int]) -> None:
    # 50 MB announced, 1 KB sent: the answer must not wait for the rest.
    head = (
        b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", served[1]), timeout=30) as sock:
        sock.sendall(head + b"{" + b" " * 1023)
        status, headers, body = read_response(sock, wait_s=10)
        assert status == 413 and "exceeds 64 KiB" in json.loads(body)["detail"]
        assert headers["connection"] == "close" and closed_by_server(sock, 10)


def send_chunked_until_answered(
    port: int, head: bytes, first: bytes, chunk: bytes, most: int
) -> tuple[int, bytes, int]:
    """Sends a chunked body (`first`, then `chunk` over and over) until the server answers or
    `most` bytes went out; returns the status, the answer's body and the bytes sent."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head + b"Transfer-Encoding: chunked\r\n\r\n")
        sent = 0
        for piece in [first] + [chunk] * (most // len(chunk)):
            readable, _, _ = select.select([sock], [], [], 0.02)
            if readable:
                break
            sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            sent += len(piece)
        status, _, body = read_response(sock)
        return status, body, sent


def test_a_chunked_json_body_is_cut_off_at_the_limit(served: tuple[str, int]) -> None:
    head = b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    status, body, sent = send_chunked_until_answered(
        served[1], head, b'{"query": "', b"a" * 16384, 20 * 2**20
    )
    assert status == 413 and "exceeds" in json.loads(body)["detail"]
    assert sent < 8 * MAX_JSON_BODY_BYTES  # refused near the limit, not after 20 MB


def test_uploads_over_the_limit_are_refused_without_reading_them(
    served: tuple[str, int], api: httpx.Client
) -> None:
    announced = (
        b"POST /documents HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
        b"Content-Length: 209715200\r\n\r\n"
    )
    status, _, body = raw(served[1], announced)
    assert status == 413 and "exceeds 1 MB" in json.loads(body)["detail"]

    part = (
        b'--b\r\nContent-Disposition: form-data; name="file"; filename="big.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF-1.4\n"
    )
    head = (
        b"POST /documents HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
    )
    status, body, sent = send_chunked_until_answered(
        served[1], head, part, b"0" * 65536, 100 * 2**20
    )
    assert status == 413 and "exceeds 1 MB" in json.loads(body)["detail"]
    assert sent < 3 * 2**20

    # Just over the limit, within the multipart allowance: the route's own count refuses it.
    over = b"%PDF-1.4\n" + b"0" * 2**20
    response = api.post("/documents", files={"file": ("over.pdf", over, "application/pdf")})
    assert response.status_code == 413 and "exceeds 1 MB" in response.json()["detail"]
    assert api.get("/stats").json()["documents"] == 2


def test_query_strings_are_bounded(api: httpx.Client, page_id: str) -> None:
    url = f"/pages/{page_id}/similarity"
    response = api.get(url, params={"query": "x" * 14000})
    assert response.status_code == 414 and "query string" in response.json()["detail"]
    # The longest query the API takes, in 4-byte characters, still fits.
    longest = api.get(url, params={"query": "\U0001d11e" * 1000})
    assert longest.status_code != 414 and longest.status_code < 500


# -- 2. time --------------------------------------------------------------------------------


def test_a_request_past_its_deadline_answers_503_and_an_upload_still_lands(
    tmp_path: Path, encoder: TextGridEncoder
) -> None:
    del encoder
    with Index(tmp_path / "index") as index:
        index.add([SAMPLES / "bike_maintenance.pdf"])
        # Bodies may pause (a loaded machine delays the loop by more than 1 ms): this is about
        # slow handling, not slow clients.
        app = create_app(index, request_timeout_s=0.001, body_timeout_s=60)
        with serving(app) as (url, _), httpx.Client(base_url=url, timeout=120) as client:
            late = client.post("/search", json={"query": "derailleur cable tension"})
            assert late.status_code == 503
            assert "longer than 0.001 s" in late.json()["detail"]
            assert client.get("/healthz").status_code == 200

            pdf = make_pdf(tmp_path / "late.pdf", [[("glacier survey ledger", 72, 100, 16)]] * 3)
            upload = client.post(
                "/documents", files={"file": (pdf.name, pdf.read_bytes(), "application/pdf")}
            )
            assert upload.status_code == 503 and "background" in upload.json()["detail"]
            cut = pdf.read_bytes()[:400]  # refused in the background, after the 503
            upload = client.post("/documents", files={"file": ("cut.pdf", cut, "application/pdf")})
            assert upload.status_code == 503
        # Stopped at once, the server first let the uploads finish: `vdr serve` closes the
        # index next, and the upload is whole in it.
        (doc,) = [d for d in index.documents() if d.doc_path.endswith("late.pdf")]
        assert doc.n_pages == 3 and index.store.count() == 2 + 3
        assert index.search("glacier survey", k=1)[0].doc_id == doc.doc_id
        # The refusal is kept with its reason, where `vdr docs` and GET /documents read it.
        (cut_short,) = [s for s in document_statuses(index) if s.path.endswith("cut.pdf")]
        assert (cut_short.status, cut_short.message) == (
            "refused",
            "the file is cut short (it has no %%EOF end) and cannot be read",
        )


def test_a_stalled_body_answers_408(index: Index) -> None:
    with serving(create_app(index, request_timeout_s=0.5)) as (_, port):
        started = time.monotonic()
        status, _, body = raw(
            port,
            b"POST /search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"query": ',
        )
        assert status == 408 and "stalled" in json.loads(body)["detail"]
        assert time.monotonic() - started < 10


def test_a_head_sent_too_slowly_loses_its_connection(index: Index) -> None:
    with serving(create_app(index), head_timeout_s=1.0) as (_, port):
        with socket.create_connection(("127.0.0.1", port)) as sock:
            started = time.monotonic()
            closed = False
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:
                try:
                    sock.sendall(bytes([byte]))
                except (BrokenPipeError, ConnectionResetError):
                    closed = True
                    break
                if closed_by_server(sock, 0.2):  # a byte every 0.2 s, never a whole head
                    closed = True
                    break
            assert closed and time.monotonic() - started < 5
        # A normal client is unaffected, also on a kept-alive connection.
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            assert client.get("/healthz").status_code == client.get("/healthz").status_code == 200


# -- 3. ids and file names ------------------------------------------------------------------

TRAVERSALS = [
    "../../../etc/passwd",
    "..%2F..%2F..%2Fetc%2Fpasswd",
    "%2e%2e%2f%2e%2e%2fvdr.json",
    "%2E%2E",
    "..",
    "%2Fetc%2Fpasswd",
    "0000000000000000-1%00.jpg",
    "%00",
    "0000000000000000-1/../../vdr.json",
    "..%5C..%5Cvdr.json",
    "%252e%252e%252fvdr.json",
]


@pytest.mark.parametrize("target", TRAVERSALS)
def test_ids_cannot_leave_the_index_folder(
    served: tuple[str, int], index: Index, target: str
) -> None:
    for method, path in [
        ("GET", f"/pages/{target}/image"),
        ("GET", f"/pages/{target}/heatmap?query=permit"),
        ("GET", f"/pages/{target}/similarity?query=permit"),
        ("DELETE", f"/documents/{target}"),
    ]:
        status, _, body = raw(served[1], f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        assert 400 <= status < 500, (method, path, status)
        text = body.decode(errors="replace")
        assert "root:" not in text and '"pool_factor"' not in text and str(index.path) not in text
    assert len(index.documents()) == 2


def test_a_document_filter_cannot_be_a_path(api: httpx.Client) -> None:
    for doc in ("../x", "/etc/passwd", "0000000000000000\x00", "%2e%2e%2f"):
        response = api.post("/search", json={"query": "permit", "doc": doc})
        assert response.status_code == 404, doc


@pytest.mark.parametrize(
    "filename",
    ["../../../escaped.pdf", "/tmp/absolute.pdf", "..\\..\\windows.pdf", "nul\x00byte.pdf", ".."],
)
def test_an_upload_name_never_places_the_file(
    api: httpx.Client, index: Index, tmp_path: Path, filename: str
) -> None:
    pdf = make_pdf(tmp_path / "x.pdf", [[(f"aurora notes {filename!r}", 72, 100, 14)]])
    response = api.post(
        "/documents", files={"file": (filename, pdf.read_bytes(), "application/pdf")}
    )
    assert response.status_code == 201, response.text
    doc = response.json()["files"][0]["document"]
    (stored,) = (index.path / "uploads").glob(f"{doc['doc_id']}-*")
    assert "/" not in stored.name and "\x00" not in stored.name
    assert "/" not in doc["doc_path"] and str(index.path) not in doc["doc_path"]
    for outside in ("escaped.pdf", "windows.pdf"):
        assert not (index.path.parent / outside).exists()
        assert not (index.path / outside).exists()
    assert not Path("/tmp/absolute.pdf").exists()
    assert api.delete(f"/documents/{doc['doc_id']}").status_code == 200
    assert not stored.exists()


# -- 4. failures ----------------------------------------------------------------------------


def test_an_unforeseen_failure_answers_500_without_its_trace(
    tmp_path: Path, encoder: TextGridEncoder, caplog: pytest.LogCaptureFixture
) -> None:
    del encoder
    with Index(tmp_path / "index") as index:
        index.add([SAMPLES / "bike_maintenance.pdf"])
        page_id = f"{index.documents()[0].doc_id}-1"
        index.images.path(page_id).write_bytes(b"not a JPEG")  # a damaged index
        with (
            caplog.at_level(logging.ERROR, logger="vdr.server"),
            serving(create_app(index)) as (url, _),
        ):
            response = httpx.get(f"{url}/pages/{page_id}/image", timeout=60)
    assert response.status_code == 500
    body = response.json()
    assert body["detail"] == "internal error" and len(body["error_id"]) == 8
    assert str(tmp_path) not in response.text and "Traceback" not in response.text
    assert body["error_id"] in caplog.text and "cannot identify image file" in caplog.text


def test_refusals_of_bad_uploads_do_not_show_the_servers_folders(
    api: httpx.Client, index: Index
) -> None:
    for content in (b"%PDF-1.4\n" + b"\x00garbage" * 200, b"%PDF-1.7\n1 0 obj\n<<>>\nendobj\n"):
        response = api.post("/documents", files={"file": ("bad.pdf", content, "application/pdf")})
        assert response.status_code == 422
        assert str(index.path) not in response.text and "/uploads/" not in response.text


# -- 5. API key -----------------------------------------------------------------------------


def test_a_missing_or_wrong_key_gets_the_same_401(index: Index) -> None:
    with (
        serving(create_app(index, api_key=API_KEY)) as (url, _),
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        refusals = [
            client.get("/stats"),
            client.get("/stats", headers={"X-API-Key": "wrong"}),
            client.get("/stats", headers={"X-API-Key": API_KEY[:-1]}),
            client.get("/stats", headers={"X-API-Key": API_KEY + "x"}),
            client.get("/stats", headers={"Authorization": "Bearer wrong"}),
            client.get("/stats", headers={"Authorization": f"Basic {API_KEY}"}),
            client.get("/stats", headers={"Authorization": f"Bearer {API_KEY[:-1]}"}),
        ]
        assert {r.status_code for r in refusals} == {401}
        assert len({r.text for r in refusals}) == 1 and API_KEY not in refusals[0].text
        for headers in ({"X-API-Key": API_KEY}, {"Authorization": f"Bearer {API_KEY}"}):
            assert client.get("/stats", headers=headers).status_code == 200


# -- 6. CORS --------------------------------------------------------------------------------

ORIGIN = "https://app.example.com"


def cors_answers(client: httpx.Client, origin: str) -> list[httpx.Response]:
    preflight = client.options(
        "/search",
        headers={"Origin": origin, "Access-Control-Request-Method": "POST"},
    )
    return [preflight, client.post("/search", json={"query": "permit"}, headers={"Origin": origin})]


def test_no_cors_headers_unless_configured(api: httpx.Client) -> None:
    for response in cors_answers(api, ORIGIN):
        assert not any(h.startswith("access-control-") for h in response.headers)


def test_cors_for_exactly_the_configured_origins(index: Index) -> None:
    app = create_app(index, cors_origins=[ORIGIN, "http://localhost:3000"])
    with serving(app) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        preflight, search = cors_answers(client, ORIGIN)
        assert preflight.status_code == 200 and search.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == ORIGIN
        assert search.headers["access-control-allow-origin"] == ORIGIN
        for response in cors_answers(client, "https://evil.example.com"):
            assert "access-control-allow-origin" not in response.headers


def test_serve_takes_cors_origins_and_timeout_from_flags_or_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = _parser().parse_args(["serve", "--cors-origin", ORIGIN, "--cors-origin", "http://a"])
    assert args.cors_origin == [ORIGIN, "http://a"] and args.request_timeout == 120
    monkeypatch.setenv("VDR_CORS_ORIGINS", f"{ORIGIN}, http://b")
    monkeypatch.setenv("VDR_REQUEST_TIMEOUT", "7.5")
    args = _parser().parse_args(["serve"])
    assert args.cors_origin == [ORIGIN, "http://b"]
    assert args.request_timeout == 7.5
    assert _parser().parse_args(["serve", "--cors-origin", "http://c"]).cors_origin == [
        ORIGIN,
        "http://b",
        "http://c",
    ]
    monkeypatch.setenv("VDR_REQUEST_TIMEOUT", "soon")  # a usage error of serve alone
    assert _parser().parse_args(["search", "permit"]).query == "permit"
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve"])


# -- 7. a served index ----------------------------------------------------------------------


def vdr(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str, key: str = ""
) -> tuple[int, str, str]:
    """`vdr ARGS` run in this process (its models are loaded already) with VDR_API_KEY set to
    `key` or unset: exit status, stdout, stderr."""
    if key:
        monkeypatch.setenv("VDR_API_KEY", key)
    else:
        monkeypatch.delenv("VDR_API_KEY", raising=False)
    capsys.readouterr()
    status = main(list(args))
    out, err = capsys.readouterr()
    return status, out, err


def test_other_commands_on_a_served_index_talk_to_the_server(
    tmp_path: Path,
    encoder: TextGridEncoder,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    del encoder
    folder = tmp_path / "index"
    with Index(folder) as index:
        index.add(TEXT_PDFS)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    # A real `vdr serve` in its own process, holding the index's lock as a user's would.
    server = subprocess.Popen(
        [sys.executable, "-m", "vdr.cli", "serve", "--index", str(folder), "--port", str(port)],
        cwd=REPO,
        env={**os.environ, "VDR_API_KEY": API_KEY},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            assert time.monotonic() < deadline, "vdr serve did not start"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        where = ["--index", str(folder)]

        status, out, err = vdr(
            capsys, monkeypatch, "search", "brake pad", *where, "--json", "-k", "2", key=API_KEY
        )
        assert status == 0, err
        hits = json.loads(out)
        assert Path(hits[0]["doc_path"]).name == "bike_maintenance.pdf" and len(hits) == 2
        assert "pad" in hits[0]["evidence"]["snippet"].lower()
        assert f"asked `vdr serve` at {url}" in err

        status, out, _ = vdr(
            capsys, monkeypatch, "search", "quarterly generation", *where, key=API_KEY
        )
        assert status == 0 and "solar_report.pdf p." in out.splitlines()[0]

        for command, words in [
            (["search", "permit"], "set VDR_API_KEY"),
            (["index", str(SAMPLES)], f"is served by `vdr serve` at {url}"),
        ]:
            status, _, err = vdr(capsys, monkeypatch, *command, *where)
            lines = err.strip().splitlines()
            assert status == 1 and len(lines) == 1, err
            assert lines[0].startswith(f"vdr {command[0]}: ") and words in lines[0]
            assert url in lines[0]

        # SIGTERM (what systemd and `docker stop` send) stops it cleanly, the index closed.
        server.terminate()
        assert server.wait(timeout=60) == 0
        assert server.stderr and "vdr serve: stopped" in server.stderr.read()
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(timeout=60)

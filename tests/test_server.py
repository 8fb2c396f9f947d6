"""The HTTP API, served for real by uvicorn on a loopback port, route by route."""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from PIL import Image

from vdr import Index
from vdr.doctor import check
from vdr.encoders.textgrid import TextGridEncoder
from vdr.server.app import create_app

from conftest import SAMPLES, make_pdf, running_server

API_KEY = "s3cret-key"
# Clients sending one PDF at the same moment (a double click, or a retry racing the original).
UPLOADERS = 4


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory, encoder: TextGridEncoder) -> Iterator[Index]:
    del encoder
    with Index(tmp_path_factory.mktemp("server") / "index") as opened:
        opened.add([SAMPLES])
        yield opened


@pytest.fixture(scope="module")
def api(index: Index) -> Iterator[httpx.Client]:
    with (
        running_server(create_app(index)) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        yield client


def top_page(api: httpx.Client, query: str) -> dict:
    response = api.post("/search", json={"query": query, "k": 3})
    assert response.status_code == 200, response.text
    return response.json()["results"][0]


def test_health_stats_and_openapi(api: httpx.Client) -> None:
    assert api.get("/healthz").json() == {"status": "ok"}
    stats = api.get("/stats").json()
    assert stats["documents"] == 3 and stats["pages"] == 6 and stats["vectors"] > 6
    assert stats["model"] == "textgrid-minilm" and stats["store"] == "embedded"
    paths = api.get("/openapi.json").json()["paths"]
    assert {"/search", "/pages/{page_id}/heatmap", "/documents/{doc_id}"} <= set(paths)
    assert "<html" in api.get("/").text.lower()


def test_search_returns_pages_words_and_evidence(api: httpx.Client) -> None:
    body = api.post("/search", json={"query": "brake pad replacement", "k": 2}).json()
    assert body["words"] == ["brake", "pad", "replacement"] and body["took_ms"] > 0
    first = body["results"][0]
    assert Path(first["doc_path"]).name == "bike_maintenance.pdf" and first["page"] == 2
    assert "pad" in first["evidence"]["snippet"].lower()
    assert first["image_url"] == f"/pages/{first['page_id']}/image"
    assert api.get(first["heatmap_url"]).headers["content-type"] == "image/png"


@pytest.mark.parametrize("mode", ["hybrid", "late", "bm25"])
def test_each_search_mode(api: httpx.Client, mode: str) -> None:
    body = api.post("/search", json={"query": "brake pad replacement", "k": 3, "mode": mode}).json()
    assert Path(body["results"][0]["doc_path"]).name == "bike_maintenance.pdf"


def test_page_image_and_thumbnail(api: httpx.Client) -> None:
    page_id = top_page(api, "harbour dredging permit")["page_id"]
    full = Image.open(io.BytesIO(api.get(f"/pages/{page_id}/image").content))
    thumb = Image.open(
        io.BytesIO(api.get(f"/pages/{page_id}/image", params={"width": 200}).content)
    )
    assert thumb.width == 200 and full.width > 200 and thumb.format == "JPEG"


def test_heatmaps_per_word_and_whole_query(api: httpx.Client) -> None:
    page_id = top_page(api, "quarterly generation per site")["page_id"]
    url = f"/pages/{page_id}/heatmap"
    whole = api.get(url, params={"query": "quarterly generation", "width": 300})
    word = api.get(url, params={"query": "quarterly generation", "token": 1, "width": 300})
    assert whole.status_code == word.status_code == 200 and whole.content != word.content
    bad = api.get(url, params={"query": "quarterly generation", "token": 2})
    assert bad.status_code == 422 and "word count" in bad.json()["detail"]


def test_similarity_numbers(api: httpx.Client) -> None:
    page_id = top_page(api, "brake pad replacement")["page_id"]
    body = api.get(f"/pages/{page_id}/similarity", params={"query": "brake pads"}).json()
    rows, cols = body["grid"]
    assert body["words"] == ["brake", "pads"] and len(body["maps"]) == len(body["tokens"])
    assert all(len(m) == rows and all(len(r) == cols for r in m) for m in body["maps"])
    values = [v for m in body["maps"] for r in m for v in r if v is not None]
    assert values and max(values) <= 1.0001


def test_upload_search_and_delete(api: httpx.Client, tmp_path: Path) -> None:
    pdf = make_pdf(
        tmp_path / "volcano notes.pdf", [[("volcano eruption logbook", 72, 100, 16)]] * 2
    )
    response = api.post(
        "/documents", files={"file": (pdf.name, pdf.read_bytes(), "application/pdf")}
    )
    assert response.status_code == 201, response.text
    doc = response.json()
    assert doc["pages"] == 2 and doc["doc_id"] in {
        d["doc_id"] for d in api.get("/documents").json()
    }
    assert top_page(api, "volcano eruption")["doc_id"] == doc["doc_id"]
    assert api.delete(f"/documents/{doc['doc_id']}").json() == {"deleted": doc["doc_id"]}
    assert doc["doc_id"] not in {d["doc_id"] for d in api.get("/documents").json()}
    assert api.delete(f"/documents/{doc['doc_id']}").status_code == 404


def test_one_pdf_uploaded_by_several_clients_at_once_is_indexed_once(
    api: httpx.Client, index: Index, tmp_path: Path
) -> None:
    pdf = make_pdf(tmp_path / "survey.pdf", [[("glacier survey notes", 72, 100, 16)]] * 2)
    together = threading.Barrier(UPLOADERS)

    def upload() -> httpx.Response:
        with httpx.Client(base_url=api.base_url, timeout=120) as client:
            files = {"file": (pdf.name, pdf.read_bytes(), "application/pdf")}
            together.wait()
            return client.post("/documents", files=files)

    with ThreadPoolExecutor(UPLOADERS) as pool:
        answers = [f.result() for f in [pool.submit(upload) for _ in range(UPLOADERS)]]
    # One indexes it; the others wait for it and find it indexed.
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [200] * (UPLOADERS - 1) + [201], [a.text for a in answers]
    doc_id = answers[0].json()["doc_id"]
    assert [d["doc_id"] for d in api.get("/documents").json()].count(doc_id) == 1
    assert len(list((index.path / "uploads").glob(f"{doc_id}-*"))) == 1
    assert check(index).healthy
    assert api.delete(f"/documents/{doc_id}").status_code == 200
    assert not list((index.path / "uploads").glob(f"{doc_id}-*"))


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"just some notes", "not a PDF"), (b"%PDF-1.4\n" + b"\x00garbage" * 200, "corrupt")],
)
def test_bad_uploads_are_refused(api: httpx.Client, content: bytes, words: str) -> None:
    response = api.post("/documents", files={"file": ("bad.pdf", content, "application/pdf")})
    assert response.status_code == 422 and words in response.json()["detail"]
    assert api.get("/stats").json()["documents"] == 3


@pytest.mark.parametrize(
    "body",
    [
        {"query": ""},
        {"query": "x" * 5000},
        {"query": "ok", "k": 0},
        {"query": "ok", "k": -1},
        {"query": "ok", "k": 10_000},
        {"k": 3},
        {"query": "   "},
        {"query": "ok", "doc": "../x"},
        {"query": "ok", "mode": "fuzzy"},
    ],
)
def test_bad_searches_answer_4xx(api: httpx.Client, body: dict) -> None:
    response = api.post("/search", json=body)
    assert 400 <= response.status_code < 500 and "detail" in response.json()


def test_malformed_json_and_bad_ids_answer_4xx(api: httpx.Client) -> None:
    response = api.post(
        "/search", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 422
    for page_id in ("0000000000000000-1", "..%2F..%2Fetc%2Fpasswd", "%2E%2E", "abc"):
        response = api.get(f"/pages/{page_id}/image")
        assert response.status_code == 404, page_id
        assert "root:" not in response.text
    assert api.delete("/documents/..%2Fsecret").status_code == 404


def test_api_key_guards_every_route_but_health(index: Index) -> None:
    app = create_app(index, api_key=API_KEY)
    with running_server(app) as url, httpx.Client(base_url=url, timeout=120) as client:
        page_id = f"{index.documents()[0].doc_id}-1"
        guarded = [
            client.post("/search", json={"query": "permit"}),
            client.get("/stats"),
            client.get("/documents"),
            client.get(f"/pages/{page_id}/image"),
            client.get(f"/pages/{page_id}/heatmap", params={"query": "permit"}),
            client.get(f"/pages/{page_id}/similarity", params={"query": "permit"}),
            client.post("/search", json={"query": "permit"}, headers={"X-API-Key": "wrong"}),
        ]
        for response in guarded:
            assert response.status_code == 401
            assert ".pdf" not in response.text and "samples" not in response.text
        assert client.get("/healthz").status_code == 200
        ok = client.post("/search", json={"query": "permit"}, headers={"X-API-Key": API_KEY})
        assert ok.status_code == 200 and ok.json()["results"]
        bearer = client.get("/stats", headers={"Authorization": f"Bearer {API_KEY}"})
        assert bearer.status_code == 200 and json.loads(bearer.text)["pages"] == 6


def test_uploading_indexed_content_keeps_the_document_where_it_is(api: httpx.Client) -> None:
    original = SAMPLES / "solar_report.pdf"
    response = api.post(
        "/documents", files={"file": ("copy.pdf", original.read_bytes(), "application/pdf")}
    )
    assert response.status_code == 200
    assert response.json()["doc_path"] == str(original) and response.json()["pages"] == 3
    assert api.get("/stats").json()["documents"] == 3

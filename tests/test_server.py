"""The HTTP API, served for real by uvicorn on a loopback port, route by route."""

from __future__ import annotations

import io
import json
import logging
import re
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
    (uploaded,) = response.json()["files"]
    assert (uploaded["name"], uploaded["status"]) == ("volcano notes.pdf", "indexed")
    doc = uploaded["document"]
    assert doc["doc_path"] == "volcano notes.pdf"  # an upload shows as its own name
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
    (doc_id,) = {a.json()["files"][0]["document"]["doc_id"] for a in answers}
    assert [d["doc_id"] for d in api.get("/documents").json()].count(doc_id) == 1
    assert len(list((index.path / "uploads").glob(f"{doc_id}-*"))) == 1
    assert check(index).healthy
    assert api.delete(f"/documents/{doc_id}").status_code == 200
    assert not list((index.path / "uploads").glob(f"{doc_id}-*"))


@pytest.mark.parametrize(
    ("content", "words"),
    [(b"just some notes", "not a PDF"), (b"%PDF-1.4\n" + b"\x00garbage" * 200, "cut short")],
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
    (uploaded,) = response.json()["files"]
    assert uploaded["status"] == "known"
    assert uploaded["document"]["doc_path"] == "solar_report.pdf"  # where it was indexed from
    assert uploaded["document"]["pages"] == 3
    assert api.get("/stats").json()["documents"] == 3


def pdf_part(path: Path) -> tuple[str, tuple[str, bytes, str]]:
    return ("file", (path.name, path.read_bytes(), "application/pdf"))


def test_every_file_of_a_multi_file_upload_is_indexed(api: httpx.Client, tmp_path: Path) -> None:
    first = make_pdf(
        tmp_path / "tides.pdf", [[("spring tide tables for the estuary", 72, 100, 16)]]
    )
    second = make_pdf(tmp_path / "kiln.pdf", [[("pottery kiln firing schedule", 72, 100, 16)]] * 2)
    response = api.post("/documents", files=[pdf_part(first), pdf_part(second)])
    assert response.status_code == 201, response.text
    files = response.json()["files"]
    assert [(f["name"], f["status"], f["document"]["pages"]) for f in files] == [
        ("tides.pdf", "indexed", 1),
        ("kiln.pdf", "indexed", 2),
    ]
    assert top_page(api, "pottery kiln firing")["doc_path"] == "kiln.pdf"
    assert top_page(api, "spring tide tables")["doc_path"] == "tides.pdf"
    for f in files:
        assert api.delete(f"/documents/{f['document']['doc_id']}").status_code == 200


def test_a_good_and_a_bad_file_index_the_good_one_and_name_the_bad(
    api: httpx.Client, tmp_path: Path
) -> None:
    good = make_pdf(tmp_path / "orchard.pdf", [[("apple orchard pruning calendar", 72, 100, 16)]])
    response = api.post(
        "/documents",
        files=[
            ("file", ("broken.pdf", b"%PDF-1.7\n" + b"\x00" * 500, "application/pdf")),
            pdf_part(good),
        ],
    )
    assert response.status_code == 207, response.text
    bad, indexed = response.json()["files"]
    assert (bad["name"], bad["status"], bad["document"]) == ("broken.pdf", "refused", None)
    assert bad["message"] == "the file is cut short (it has no %%EOF end) and cannot be read"
    assert indexed["status"] == "indexed" and indexed["document"]["doc_path"] == "orchard.pdf"
    # The refusal stays listed with its reason, beside the documents.
    listed = {d["doc_path"]: d for d in api.get("/documents").json()}
    assert listed["broken.pdf"]["status"] == "refused"
    assert listed["broken.pdf"]["message"] == bad["message"]
    assert listed["orchard.pdf"]["status"] == "indexed"
    # All bad: 422, every file named.
    response = api.post(
        "/documents",
        files=[("file", ("a.pdf", b"notes", "text/plain")), ("file", ("b.pdf", b"", "x/y"))],
    )
    assert response.status_code == 422
    assert [f["name"] for f in response.json()["files"]] == ["a.pdf", "b.pdf"]
    assert "'a.pdf' cannot be indexed" in response.json()["detail"]
    assert api.delete(f"/documents/{indexed['document']['doc_id']}").status_code == 200
    # A refusal is forgotten like a document is deleted.
    for entry in api.get("/documents").json():
        if entry["status"] == "refused":
            assert api.delete(f"/documents/{entry['doc_id']}").status_code == 200
    assert all(d["status"] != "refused" for d in api.get("/documents").json())


def test_paths_are_relative_to_the_folder_indexed_unless_asked(
    api: httpx.Client, index: Index
) -> None:
    hit = top_page(api, "harbour dredging permit")
    assert hit["doc_path"] == "scanned_letter.pdf"
    listed = {d["doc_path"] for d in api.get("/documents").json() if d["status"] != "refused"}
    assert {"solar_report.pdf", "bike_maintenance.pdf", "scanned_letter.pdf"} <= listed
    assert not any(str(SAMPLES) in path for path in listed)
    with (
        running_server(create_app(index, absolute_paths=True)) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        answer = client.post("/search", json={"query": "harbour dredging permit", "k": 1})
        assert answer.json()["results"][0]["doc_path"] == str(SAMPLES / "scanned_letter.pdf")


def test_a_hit_links_its_file_at_the_page(api: httpx.Client) -> None:
    hit = top_page(api, "harbour dredging permit")
    assert hit["file_url"] == f"/documents/{hit['doc_id']}/file#page={hit['page']}"
    response = api.get(hit["file_url"].split("#")[0])
    assert response.status_code == 200 and response.headers["content-type"] == "application/pdf"
    assert response.content == (SAMPLES / "scanned_letter.pdf").read_bytes()
    assert api.get("/documents/0123456789abcdef/file").status_code == 404


def test_search_pages_through_results_with_offset(api: httpx.Client) -> None:
    query = {"query": "maintenance report permit solar"}
    everything = api.post("/search", json={**query, "k": 6}).json()
    pages = [r["page_id"] for r in everything["results"]]
    assert len(pages) == 6 and not everything["more"]
    first = api.post("/search", json={**query, "k": 4}).json()
    second = api.post("/search", json={**query, "k": 4, "offset": 4}).json()
    assert first["more"] and not second["more"] and second["offset"] == 4
    assert [r["page_id"] for r in first["results"] + second["results"]] == pages
    assert api.post("/search", json={**query, "k": 50, "offset": 60}).status_code == 422


def test_page_images_are_cached_by_etag(api: httpx.Client) -> None:
    hit = top_page(api, "brake pads")
    for url in (hit["image_url"], hit["heatmap_url"]):
        first = api.get(url)
        etag = first.headers["etag"]
        assert first.status_code == 200 and "max-age=" in first.headers["cache-control"]
        again = api.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and not again.content
        assert api.get(url, headers={"If-None-Match": '"other"'}).status_code == 200
    heatmaps = {api.get(hit["heatmap_url"] + f"&token={t}").headers["etag"] for t in (0, 1)}
    assert len(heatmaps) == 2  # each word's map is its own image


def test_each_request_is_logged_with_route_status_and_time(
    api: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="vdr.access"):
        page_id = top_page(api, "brake pads")["page_id"]
        api.get(f"/pages/{page_id}/image")
        api.get("/pages/0000000000000000-1/image")
    lines = [r.getMessage() for r in caplog.records if r.name == "vdr.access"]
    assert any(re.fullmatch(r"POST /search 200 [0-9.]+ ms", line) for line in lines), lines
    assert any(re.fullmatch(r"GET /pages/\{page_id\}/image 200 [0-9.]+ ms", line) for line in lines)
    assert any(re.fullmatch(r"GET /pages/\{page_id\}/image 404 [0-9.]+ ms", line) for line in lines)
    assert not any(page_id in line for line in lines)  # ids stay out of the log


def test_the_schema_declares_the_api_key_and_docs_need_no_network(index: Index) -> None:
    with (
        running_server(create_app(index, api_key=API_KEY)) as url,
        httpx.Client(base_url=url, timeout=120) as client,
    ):
        schema = client.get("/openapi.json").json()
        schemes = schema["components"]["securitySchemes"]
        assert schemes["APIKeyHeader"] == {
            "type": "apiKey",
            "in": "header",
            "name": "X-API-Key",
            "description": "the server's key (VDR_API_KEY)",
        }
        assert schemes["HTTPBearer"]["scheme"] == "bearer"
        assert {"APIKeyHeader": []} in schema["paths"]["/search"]["post"]["security"]
        assert "security" not in schema["paths"]["/healthz"]["get"]
        docs = client.get("/docs").text
        assets = re.findall(r"""(?:src|href)=["']([^"']+\.(?:js|css))["']""", docs)
        assert assets and all(a.startswith("/") for a in assets), assets  # none from a CDN
        for asset in assets:
            assert client.get(asset).status_code == 200, asset

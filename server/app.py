"""The HTTP API and web page over one open Index (see `vdr serve`).

Searches run in FastAPI's worker threads alongside each other; writes (uploads, deletes) are
serialised by a lock and never block searches: the embedded store answers queries while it
is being written to. Every route but /healthz requires the API key when one is set.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import re
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import numpy as np
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field

from vdr.errors import NotFound, VdrError
from vdr.heatmap import overlay
from vdr.index import Index

STATIC = Path(__file__).resolve().parent / "static"
MAX_QUERY_CHARS = 1000
MAX_K = 100
DEFAULT_MAX_UPLOAD_MB = 100
_PAGE_ID = re.compile(r"^[0-9a-f]{16}-[0-9]{1,6}$")
_DOC_ID = re.compile(r"^[0-9a-f]{16}$")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    doc: str | None = Field(default=None, description="restrict to this document id")
    mode: Literal["hybrid", "late", "bm25"] = Field(
        default="hybrid",
        description="hybrid: MaxSim fused with BM25 over the page's words (default); late: "
        "MaxSim only; bm25: the words only",
    )


class EvidenceOut(BaseModel):
    snippet: str
    words: list[str]
    boxes: list[list[float]] = Field(description="(x0, y0, x1, y1) in PDF points, from top-left")
    size: list[float] = Field(description="(width, height) of the page in PDF points")


class ResultOut(BaseModel):
    page_id: str
    doc_id: str
    doc_path: str
    page: int = Field(description="1-based page number")
    score: float
    image_url: str
    heatmap_url: str
    evidence: EvidenceOut | None = None


class SearchResponse(BaseModel):
    query: str
    words: list[str] = Field(description="the query's words, as heatmap tokens")
    took_ms: float
    results: list[ResultOut]


class DocumentOut(BaseModel):
    doc_id: str
    doc_path: str
    pages: int


class SimilarityOut(BaseModel):
    tokens: list[str]
    words: list[str]
    word_of: list[int] = Field(description="for each token, the index of its word")
    grid: list[int] = Field(description="(rows, cols) of the page's patch grid")
    maps: list[list[list[float | None]]] = Field(description="[tokens][rows][cols]; null: empty")


class ErrorOut(BaseModel):
    detail: str | list[Any] = Field(description="what was wrong with the request")


_ERROR_TEXT = {
    401: "a valid API key is required",
    404: "no such page or document (or not a valid id)",
    413: "the upload is too large",
    422: "the request is malformed or the input cannot be used",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI descriptions of the error answers a route gives (401 on every guarded one)."""
    return {code: {"model": ErrorOut, "description": _ERROR_TEXT[code]} for code in (401, *codes)}


class StatsOut(BaseModel):
    documents: int
    pages: int
    vectors: int
    model: str
    store: str
    pool_factor: int


def create_app(
    index: Index, api_key: str | None = None, max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB
) -> FastAPI:
    """A FastAPI app serving `index`, which stays open for the app's lifetime."""
    app = FastAPI(title="vdr", description="Visual-document retrieval over PDFs", version="0.1.0")
    writing = threading.Lock()
    uploads = index.path / "uploads"

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        if not given or not hmac.compare_digest(given.encode(), api_key.encode()):
            raise HTTPException(401, "a valid API key is required (X-API-Key header)")

    guarded = [Depends(require_key)]

    @app.exception_handler(VdrError)
    def vdr_error(_: Request, error: VdrError) -> JSONResponse:
        # Well-formed input the library cannot use (a query with no words, a corrupt PDF): 422.
        status = 404 if isinstance(error, NotFound) else 422
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/stats", dependencies=guarded, responses=_errors())
    def stats() -> StatsOut:
        return StatsOut(
            documents=len(index.documents()),
            pages=index.store.count(),
            vectors=index.store.vector_count(),
            model=index.model,
            store=index.qdrant_url or "embedded",
            pool_factor=index.pool_factor,
        )

    @app.post("/search", dependencies=guarded, responses=_errors(404, 422))
    def search(request: SearchRequest) -> SearchResponse:
        if not request.query.strip():
            raise HTTPException(422, "the query is blank")
        if request.doc is not None:
            _check_id(request.doc, _DOC_ID, "document")
        started = time.perf_counter()
        hits = index.search(
            request.query,
            k=request.k,
            doc_ids=[request.doc] if request.doc else None,
            mode=request.mode,
        )
        took = (time.perf_counter() - started) * 1000
        words = list(index.query_words(request.query))
        return SearchResponse(
            query=request.query,
            words=words,
            took_ms=round(took, 2),
            results=[_result(hit, request.query) for hit in hits],
        )

    @app.get(
        "/pages/{page_id}/image",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, **_errors(404, 422)},
    )
    def page_image(
        page_id: str, width: Annotated[int | None, Query(ge=16, le=4000)] = None
    ) -> Response:
        _check_id(page_id, _PAGE_ID, "page")
        return _image_response(_narrowed(index.page_image(page_id), width), "JPEG")

    @app.get(
        "/pages/{page_id}/heatmap",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, **_errors(404, 422)},
    )
    def heatmap(
        page_id: str,
        query: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        token: Annotated[
            int | None, Query(ge=0, description="word number; none: whole query")
        ] = None,
        width: Annotated[int | None, Query(ge=16, le=4000)] = None,
    ) -> Response:
        _check_id(page_id, _PAGE_ID, "page")
        maps = index.similarity(query, page_id)
        if token is not None and token >= len(maps.words):
            raise HTTPException(
                422, f"token must be below {len(maps.words)}, the query's word count"
            )
        grid_map = maps.whole_query() if token is None else maps.word_maps()[token]
        image = _narrowed(index.page_image(page_id), width)
        title = query if token is None else maps.words[token]
        return _image_response(overlay(image, grid_map, title=title), "PNG")

    @app.get("/pages/{page_id}/similarity", dependencies=guarded, responses=_errors(404, 422))
    def similarity(
        page_id: str, query: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)]
    ) -> SimilarityOut:
        _check_id(page_id, _PAGE_ID, "page")
        maps = index.similarity(query, page_id)
        values = np.round(maps.maps.astype(np.float64), 4)
        return SimilarityOut(
            tokens=list(maps.tokens),
            words=list(maps.words),
            word_of=list(maps.word_of),
            grid=list(maps.maps.shape[1:]),
            maps=np.where(np.isfinite(values), values, None).tolist(),
        )

    @app.get("/documents", dependencies=guarded, responses=_errors())
    def documents() -> list[DocumentOut]:
        return [
            DocumentOut(doc_id=d.doc_id, doc_path=d.doc_path, pages=d.n_pages)
            for d in index.documents()
        ]

    @app.post("/documents", dependencies=guarded, status_code=201, responses=_errors(413, 422))
    def upload(
        file: Annotated[UploadFile, File(description="a PDF")], response: Response
    ) -> DocumentOut:
        """Index an uploaded PDF before answering: 201, or 200 when its content is indexed
        already."""
        data = file.file.read(max_upload_mb * 2**20 + 1)
        if len(data) > max_upload_mb * 2**20:
            raise HTTPException(413, f"the upload exceeds {max_upload_mb} MB")
        name = Path(file.filename or "upload.pdf").name or "upload.pdf"
        digest = hashlib.sha256(data).hexdigest()[:16]
        # Look, write and index under one lock: two uploads of one PDF (a double click) would
        # otherwise both find it missing and rewrite its file while the other indexes it, and
        # a delete of it racing this upload could take the file or the pages just indexed.
        with writing:
            known = [d for d in index.documents() if d.doc_id == digest]
            if known:  # already indexed (perhaps from its own folder): keep it where it is
                response.status_code = 200
                doc = known[0]
                return DocumentOut(doc_id=digest, doc_path=doc.doc_path, pages=doc.n_pages)
            uploads.mkdir(exist_ok=True)
            target = uploads / f"{digest}-{_safe_name(name)}"
            target.write_bytes(data)
            report = index.add([target])
            indexed = [d for d in index.documents() if d.doc_id == digest]
        if report.skipped:
            target.unlink(missing_ok=True)
            raise HTTPException(422, f"'{name}' cannot be indexed: {report.skipped[0][1]}")
        doc = indexed[0]
        return DocumentOut(doc_id=doc.doc_id, doc_path=doc.doc_path, pages=doc.n_pages)

    @app.delete("/documents/{doc_id}", dependencies=guarded, responses=_errors(404, 422))
    def delete(doc_id: str) -> dict[str, str]:
        _check_id(doc_id, _DOC_ID, "document")
        with writing:  # the file too: an upload of the same PDF may write it again next
            doomed = [d for d in index.documents() if d.doc_id == doc_id]
            index.remove([doc_id])
            for doc in doomed:  # an uploaded file goes with its document
                path = Path(doc.doc_path)
                if path.parent == uploads:
                    path.unlink(missing_ok=True)
        return {"deleted": doc_id}

    def _result(hit: Any, query: str) -> ResultOut:
        evidence = hit.evidence
        return ResultOut(
            page_id=hit.page_id,
            doc_id=hit.doc_id,
            doc_path=hit.doc_path,
            page=hit.page,
            score=round(hit.score, 5),
            image_url=f"/pages/{hit.page_id}/image",
            heatmap_url=f"/pages/{hit.page_id}/heatmap?{urlencode({'query': query})}",
            evidence=None
            if evidence is None
            else EvidenceOut(
                snippet=evidence.snippet,
                words=list(evidence.words),
                boxes=[[round(v, 2) for v in box] for box in evidence.boxes],
                size=[round(v, 2) for v in evidence.size],
            ),
        )

    return app


def _check_id(value: str, pattern: re.Pattern[str], kind: str) -> None:
    if not pattern.fullmatch(value):
        raise HTTPException(404, f"'{value[:80]}' is not a {kind} id")


def _bearer(header: str | None) -> str | None:
    if header and header.lower().startswith("bearer "):
        return header[7:].strip()
    return None


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name)[:100] or "upload.pdf"


def _narrowed(image: Any, width: int | None) -> Any:
    """The image scaled down to `width` pixels (aspect kept); never scaled up."""
    if width and width < image.width:
        return image.resize((width, round(image.height * width / image.width)))
    return image


def _image_response(image: Any, kind: str) -> Response:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
    media = "image/jpeg" if kind == "JPEG" else "image/png"
    return Response(buffer.getvalue(), media_type=media, headers={"Cache-Control": "no-store"})

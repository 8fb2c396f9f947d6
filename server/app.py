"""The HTTP API and web page over one open Index (see `vdr serve`).

Searches run in FastAPI's worker threads alongside each other; writes (uploads, deletes) are
serialised by a lock and never block searches: the embedded store answers queries while it
is being written to. Every route but /healthz, the web page and the API's docs requires the
API key when one is set (declared in the OpenAPI schema: X-API-Key header or a bearer token).

Around the routes, the middleware of server/middleware.py bounds what a client can make the
server hold or wait for, logs each request, and turns anything unforeseen into a 500 with an
error id.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import mimetypes
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, BinaryIO, Literal
from urllib.parse import quote, urlencode

import numpy as np
from fastapi import FastAPI, File, HTTPException, Query, Request, Security, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field

from vdr.errors import NotFound, VdrError
from vdr.heatmap import overlay
from vdr.index import UPLOADS_DIR, Index
from vdr.indexer.discover import DOC_ID_HEX
from vdr.search import matched
from vdr.server.middleware import (
    MAX_JSON_BODY_BYTES,
    MAX_QUERY_CHARS,
    MULTIPART_OVERHEAD_BYTES,
    AccessLog,
    BodyLimits,
    Deadline,
    InternalErrors,
    LateWork,
    server_config,
)

__all__ = ["MAX_JSON_BODY_BYTES", "create_app", "server_config"]

STATIC = Path(__file__).resolve().parent / "static"
MAX_K = 100
DEFAULT_MAX_UPLOAD_MB = 100
# A request's handling (once its body has arrived) and any pause inside a body are bounded by
# this; searches take milliseconds, so only a stuck request or a huge scanned upload (OCR at
# 3-4 s a page) reaches it.
DEFAULT_REQUEST_TIMEOUT_S = 120.0
# How long a client may reuse a page image or heatmap before asking again (with If-None-Match):
# a page id names content, so its image changes only when `vdr doctor --repair` renders it anew.
IMAGE_MAX_AGE_S = 86400
_PAGE_ID = re.compile(r"^[0-9a-f]{16}-[0-9]{1,6}$")
_DOC_ID = re.compile(r"^[0-9a-f]{16}$")


class SearchRequest(BaseModel):
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    offset: int = Field(
        default=0, ge=0, lt=MAX_K, description="skip this many of the best pages (pagination)"
    )
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
    doc_path: str = Field(description="relative to the folder indexed; an upload's own name")
    page: int = Field(description="1-based page number")
    score: float
    matched: bool | None = Field(
        description="the page clears the calibrated no-match threshold; null: no threshold "
        "for this index's encoder"
    )
    image_url: str
    heatmap_url: str
    file_url: str = Field(description="the document's file, opened at this page (#page=N)")
    evidence: EvidenceOut | None = None


class SearchResponse(BaseModel):
    query: str
    words: list[str] = Field(description="the query's words, as heatmap tokens")
    took_ms: float
    matched: bool | None = Field(
        description="some result matched the query (false: nothing did, the results are only "
        "the nearest pages); null: no threshold for this index's encoder"
    )
    offset: int = Field(description="the rank of the first result, less one")
    more: bool = Field(description="there are pages past these (ask again with a higher offset)")
    results: list[ResultOut]


class DocumentOut(BaseModel):
    doc_id: str
    doc_path: str = Field(description="relative to the folder indexed; an upload's own name")
    pages: int
    status: Literal["indexed", "partial", "refused"] = Field(
        description="indexed: every page; partial: the pages that could be read; refused: none"
    )
    message: str = Field(default="", description="what went wrong, in one sentence")
    bad_pages: list[int] = Field(default=[], description="1-based pages that could not be read")


class UploadedOut(BaseModel):
    name: str = Field(description="the file's name as uploaded")
    status: Literal["indexed", "partial", "known", "refused"] = Field(
        description="known: its content was indexed already (the document stays where it is)"
    )
    message: str = ""
    document: DocumentOut | None = Field(description="null when refused")


class UploadOut(BaseModel):
    files: list[UploadedOut] = Field(description="one per `file` part, in the order sent")


class SimilarityOut(BaseModel):
    tokens: list[str]
    words: list[str]
    word_of: list[int] = Field(description="for each token, the index of its word")
    grid: list[int] = Field(description="(rows, cols) of the page's patch grid")
    maps: list[list[list[float | None]]] = Field(description="[tokens][rows][cols]; null: empty")


class ErrorOut(BaseModel):
    detail: str | list[Any] = Field(description="what was wrong with the request")


_ERROR_TEXT = {
    207: "some files were indexed, others not: each file's outcome is in `files`",
    401: "a valid API key is required",
    404: "no such page or document (or not a valid id)",
    408: "the request body stalled",
    413: "the body is too large",
    414: "the query string is too long",
    422: "the request is malformed or the input cannot be used",
    500: "an unforeseen failure (its id is in the server's log with the trace)",
    503: "the request outlived the server's request timeout (an upload is still indexed)",
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
    index: Index,
    api_key: str | None = None,
    max_upload_mb: int = DEFAULT_MAX_UPLOAD_MB,
    *,
    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    body_timeout_s: float | None = None,
    cors_origins: Sequence[str] = (),
    absolute_paths: bool = False,
) -> FastAPI:
    """A FastAPI app serving `index`, which stays open for the app's lifetime.

    api_key:           required on every route but /healthz, / and the docs when set
    max_upload_mb:     largest file accepted by POST /documents (each part)
    request_timeout_s: longest a request may be handled before it answers 503 (the work goes
                       on in the background)
    body_timeout_s:    longest pause inside a request body before it answers 408 (a slow
                       client, where request_timeout_s bounds a slow server); by default
                       request_timeout_s
    cors_origins:      browser origins allowed to call the API from their pages; none (the
                       default) sends no CORS headers at all
    absolute_paths:    show documents' absolute paths on this machine (Index.display_path);
                       by default paths relative to the folder indexed, uploads by their name
    """
    late = LateWork()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await late.drain()  # the caller closes the index next: let late writes finish first

    # FastAPIOffline serves Swagger UI and ReDoc from the assets its package ships: /docs
    # works with no network.
    app = FastAPIOffline(
        title="vdr",
        description="Visual-document retrieval over PDFs",
        version="0.1.0",
        lifespan=lifespan,
        responses={500: _errors(500)[500]},
    )
    # add_middleware puts each new layer outside the ones before it.
    app.add_middleware(InternalErrors)
    app.add_middleware(
        Deadline,
        timeout_s=request_timeout_s,
        body_timeout_s=request_timeout_s if body_timeout_s is None else body_timeout_s,
        late=late,
    )
    app.add_middleware(BodyLimits, upload_bytes=max_upload_mb * 2**20 + MULTIPART_OVERHEAD_BYTES)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    app.add_middleware(AccessLog)
    writing = threading.Lock()
    uploads = index.path / UPLOADS_DIR
    # Heatmaps depend on vdr's rendering as well as the page: one server's are not another's.
    render_tag = secrets.token_hex(4)
    key_header = APIKeyHeader(
        name="X-API-Key", auto_error=False, description="the server's key (VDR_API_KEY)"
    )
    bearer = HTTPBearer(auto_error=False, description="the server's key as a bearer token")

    # Defaults, not Annotated[...]: annotations are strings here (PEP 563), which FastAPI
    # resolves in the module's globals, where these local schemes are not.
    def require_key(
        key: str | None = Security(key_header),
        token: HTTPAuthorizationCredentials | None = Security(bearer),  # noqa: B008
    ) -> None:
        assert api_key is not None  # a dependency only of a server with a key
        given = key or (token.credentials.strip() if token else "")
        # Digests of equal length, compared in constant time: neither the key's content nor its
        # length shows in how long a wrong key takes to refuse.
        if not given or not hmac.compare_digest(_digest(given), _digest(api_key)):
            raise HTTPException(401, "a valid API key is required (X-API-Key header)")

    # Declared through FastAPI's security classes, so the schema names the scheme and Swagger
    # UI's Authorize button sends it; a server without a key declares none.
    guarded = [Security(require_key)] if api_key is not None else []

    @app.exception_handler(VdrError)
    def vdr_error(_: Request, error: VdrError) -> JSONResponse:
        # Well-formed input the library cannot use (a query with no words, a corrupt PDF): 422.
        status = 404 if isinstance(error, NotFound) else 422
        return JSONResponse({"detail": unplaced(str(error))}, status_code=status)

    def unplaced(message: str) -> str:
        """`message` without the server's own folders (a tool's error may quote a file's path):
        where the index lives is none of a client's business."""
        return message.replace(f"{uploads}/", "").replace(str(index.path), "<index>")

    def shown(doc_path: str) -> str:
        return index.display_path(doc_path, absolute=absolute_paths)

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
        if request.offset + request.k > MAX_K:
            raise HTTPException(422, f"offset + k must be at most {MAX_K}")
        if request.doc is not None:
            _check_id(request.doc, _DOC_ID, "document")
        started = time.perf_counter()
        end = request.offset + request.k
        # One page more than asked for tells whether there is a next one.
        hits = index.search(
            request.query,
            k=min(end + 1, MAX_K),
            doc_ids=[request.doc] if request.doc else None,
            mode=request.mode,
        )
        took = (time.perf_counter() - started) * 1000
        words = list(index.query_words(request.query))
        return SearchResponse(
            query=request.query,
            words=words,
            took_ms=round(took, 2),
            matched=matched(hits[:end]),
            offset=request.offset,
            more=len(hits) > end,
            results=[_result(hit, request.query) for hit in hits[request.offset : end]],
        )

    @app.get(
        "/pages/{page_id}/image",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"image/jpeg": {}}}, 304: {"description": "unchanged"}}
        | _errors(404, 422),
    )
    def page_image(
        page_id: str,
        request: Request,
        width: Annotated[int | None, Query(ge=16, le=4000)] = None,
    ) -> Response:
        _check_id(page_id, _PAGE_ID, "page")
        return cached(
            request,
            page_id,
            ("image", width),
            lambda: _image_response(_narrowed(index.page_image(page_id), width), "JPEG"),
        )

    @app.get(
        "/pages/{page_id}/heatmap",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 304: {"description": "unchanged"}}
        | _errors(404, 422),
    )
    def heatmap(
        page_id: str,
        request: Request,
        query: Annotated[str, Query(min_length=1, max_length=MAX_QUERY_CHARS)],
        token: Annotated[
            int | None, Query(ge=0, description="word number; none: whole query")
        ] = None,
        width: Annotated[int | None, Query(ge=16, le=4000)] = None,
    ) -> Response:
        _check_id(page_id, _PAGE_ID, "page")

        def render() -> Response:
            maps = index.similarity(query, page_id)
            if token is not None and token >= len(maps.words):
                raise HTTPException(
                    422, f"token must be below {len(maps.words)}, the query's word count"
                )
            grid_map = maps.whole_query() if token is None else maps.word_maps()[token]
            image = _narrowed(index.page_image(page_id), width)
            title = query if token is None else maps.words[token]
            return _image_response(overlay(image, grid_map, title=title), "PNG")

        parts = ("heatmap", render_tag, index.model, query, token, width)
        return cached(request, page_id, parts, render)

    def cached(
        request: Request, page_id: str, parts: tuple[Any, ...], make: Callable[[], Response]
    ) -> Response:
        """`make()`'s image with an ETag (of the page image's file and `parts`) and a
        Cache-Control that lets the client keep it; 304 when the client holds it already."""
        try:
            stat = index.images.path(page_id).stat()
        except OSError:  # no image: make() says which error
            return make()
        key = repr((page_id, stat.st_mtime_ns, stat.st_size, *parts))
        etag = f'"{_digest(key)[:16].hex()}"'
        headers = {"ETag": etag, "Cache-Control": f"private, max-age={IMAGE_MAX_AGE_S}"}
        if _etag_matches(request.headers.get("if-none-match"), etag):
            return Response(status_code=304, headers=headers)
        response = make()
        response.headers.update(headers)
        return response

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

    def listed(doc_id: str, path: str, pages: int) -> DocumentOut:
        """A document as GET /documents lists it, with what its ledger entry says."""
        outcome = index.outcome(doc_id)
        return DocumentOut(
            doc_id=doc_id,
            doc_path=shown(path),
            pages=pages,
            status=outcome.status if outcome else "indexed",
            message=unplaced(outcome.message) if outcome else "",
            bad_pages=list(outcome.bad_pages) if outcome else [],
        )

    def document_out(doc_id: str) -> DocumentOut | None:
        """The document's listing: its pages in the store, or its refusal; None if neither."""
        stored = next((d for d in index.documents() if d.doc_id == doc_id), None)
        if stored is not None:
            return listed(doc_id, stored.doc_path, stored.n_pages)
        outcome = index.outcome(doc_id)
        if outcome is not None and outcome.status == "refused":
            return listed(doc_id, outcome.path, outcome.pages)
        return None

    @app.get("/documents", dependencies=guarded, responses=_errors())
    def documents() -> list[DocumentOut]:
        """Every document, then every refused file with its reason (uploads too, also those
        refused after their request timed out)."""
        stored = index.documents()
        ids = {d.doc_id for d in stored}
        refused = [o for o in index.outcomes() if o.status == "refused" and o.doc_id not in ids]
        return [listed(d.doc_id, d.doc_path, d.n_pages) for d in stored] + [
            listed(o.doc_id, o.path, o.pages) for o in refused
        ]

    @app.get(
        "/documents/{doc_id}/file",
        dependencies=guarded,
        response_class=Response,
        responses={200: {"content": {"application/pdf": {}}}, **_errors(404)},
    )
    def document_file(doc_id: str) -> Response:
        """The document's file as indexed (open it at a page with #page=N). Only bytes whose
        content id is `doc_id` are sent: a file changed or replaced since it was indexed
        answers 404, so no path the store names can serve anything but what was indexed."""
        _check_id(doc_id, _DOC_ID, "document")
        stored = next((d for d in index.documents() if d.doc_id == doc_id), None)
        if stored is None:
            raise HTTPException(404, f"no document '{doc_id}' in the index")
        name = index.display_path(stored.doc_path).rsplit("/", 1)[-1]
        try:
            handle = Path(stored.doc_path).open("rb")  # noqa: SIM115 (the response closes it)
        except OSError:
            raise HTTPException(404, f"the file of '{name}' is gone since it was indexed") from None
        if _content_id(handle) != doc_id:
            handle.close()
            raise HTTPException(404, f"the file of '{name}' has changed since it was indexed")
        media = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return StreamingResponse(
            _chunks(handle),
            media_type=media,
            headers={
                "Content-Disposition": f"inline; filename*=UTF-8''{quote(name, safe='')}",
                "ETag": f'"{doc_id}"',
                "Cache-Control": "private, no-cache",
            },
        )

    @app.post(
        "/documents",
        dependencies=guarded,
        status_code=201,
        response_model=UploadOut,
        responses={207: {"model": UploadOut, "description": _ERROR_TEXT[207]}} | _errors(413, 422),
    )
    def upload(
        file: Annotated[list[UploadFile], File(description="one or more files, a part each")],
        response: Response,
    ) -> UploadOut | JSONResponse:
        """Index every uploaded file before answering, each in its own part named `file`.

        201: all indexed (200: all indexed already); 207: some indexed, some not; 422 (413 when
        every file is too large): none indexed. Each answer lists every file's outcome."""
        outcomes = [upload_one(part) for part in file]
        good = [o for o in outcomes if o.status != "refused"]
        if not good:
            too_large = all(o.message.startswith("the upload exceeds") for o in outcomes)
            detail = "; ".join(f"'{o.name}' cannot be indexed: {o.message}" for o in outcomes)
            body = UploadOut(files=outcomes).model_dump()
            return JSONResponse({"detail": detail, **body}, status_code=413 if too_large else 422)
        if len(good) < len(outcomes):
            response.status_code = 207
        elif all(o.status == "known" for o in outcomes):
            response.status_code = 200
        return UploadOut(files=outcomes)

    def upload_one(part: UploadFile) -> UploadedOut:
        name = Path(part.filename or "upload.pdf").name or "upload.pdf"
        data = part.file.read(max_upload_mb * 2**20 + 1)
        if len(data) > max_upload_mb * 2**20:
            return UploadedOut(
                name=name,
                status="refused",
                message=f"the upload exceeds {max_upload_mb} MB",
                document=None,
            )
        digest = hashlib.sha256(data).hexdigest()[:DOC_ID_HEX]
        # Look, write and index under one lock: two uploads of one PDF (a double click) would
        # otherwise both find it missing and rewrite its file while the other indexes it, and
        # a delete of it racing this upload could take the file or the pages just indexed.
        with writing:
            if any(d.doc_id == digest for d in index.documents()):
                # Indexed already (perhaps from its own folder): it stays where it is.
                return UploadedOut(name=name, status="known", document=document_out(digest))
            uploads.mkdir(exist_ok=True)
            target = uploads / f"{digest}-{_safe_name(name)}"
            target.write_bytes(data)
            index.add([target])
            outcome = index.outcome(digest)
            if outcome is not None and outcome.status == "refused":
                target.unlink(missing_ok=True)  # its refusal stays listed, with its reason
        document = document_out(digest)
        if document is None or document.status == "refused":
            reason = document.message if document else "no page of it could be read"
            return UploadedOut(name=name, status="refused", message=reason, document=None)
        return UploadedOut(
            name=name, status=document.status, message=document.message, document=document
        )

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
            doc_path=shown(hit.doc_path),
            page=hit.page,
            score=round(hit.score, 5),
            matched=hit.matched,
            image_url=f"/pages/{hit.page_id}/image",
            heatmap_url=f"/pages/{hit.page_id}/heatmap?{urlencode({'query': query})}",
            file_url=f"/documents/{hit.doc_id}/file#page={hit.page}",
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


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def _etag_matches(header: str | None, etag: str) -> bool:
    """Whether an If-None-Match header names `etag` (weakly compared, as RFC 9110 asks)."""
    if not header:
        return False
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or etag in tags


def _content_id(handle: BinaryIO) -> str:
    """The content id (as vdr.indexer.discover.content_id) of an open file, left at its start."""
    digest = hashlib.sha256()
    for chunk in iter(lambda: handle.read(1 << 20), b""):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()[:DOC_ID_HEX]


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        yield from iter(lambda: handle.read(1 << 20), b"")


def _safe_name(name: str) -> str:
    """`name` as a file name inside uploads/: no separators or control characters, at most
    200 bytes; the rest (spaces, accents) kept, since it is the name the document shows."""
    cleaned = re.sub(r"[\x00-\x1f\x7f/\\]+", "_", name).encode()[:200].decode(errors="ignore")
    return cleaned.strip() or "upload.pdf"


def _narrowed(image: Any, width: int | None) -> Any:
    """The image scaled down to `width` pixels (aspect kept); never scaled up."""
    if width and width < image.width:
        return image.resize((width, round(image.height * width / image.width)))
    return image


def _image_response(image: Any, kind: str) -> Response:
    buffer = io.BytesIO()
    image.save(buffer, format=kind, **({"quality": 85} if kind == "JPEG" else {}))
    media = "image/jpeg" if kind == "JPEG" else "image/png"
    return Response(buffer.getvalue(), media_type=media)

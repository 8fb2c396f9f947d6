"""The HTTP API and web page over one open Index (see `vdr serve`).

Searches run in FastAPI's worker threads alongside each other; writes (uploads, deletes) are
serialised by a lock and never block searches: the embedded store answers queries while it
is being written to. Every route but /healthz requires the API key when one is set.

Around the routes, plain ASGI middleware bounds what a client can make the server hold or wait
for: body and query-string sizes (413/414, checked before a byte of the body is read), a
deadline per request (503; the work itself finishes in the background, so an upload that
outlives it is still indexed whole), a stalled body (408), and headers sent too slowly (the
connection is closed, see server_config). Anything unforeseen answers 500 with an error id,
never a traceback; the trace goes to the server's log under that id.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import re
import secrets
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlencode

import h11
import numpy as np
import uvicorn
from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from vdr.errors import NotFound, VdrError
from vdr.heatmap import overlay
from vdr.index import Index

STATIC = Path(__file__).resolve().parent / "static"
MAX_QUERY_CHARS = 1000
MAX_K = 100
DEFAULT_MAX_UPLOAD_MB = 100
# Largest JSON body taken: a SearchRequest at its largest (MAX_QUERY_CHARS characters, each
# written as a 6-byte \uXXXX escape) is ~6 KB, so 64 KiB refuses nothing a client needs.
MAX_JSON_BODY_BYTES = 64 * 2**10
# Room for the multipart framing (boundaries, part headers) around an upload's bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 2**10
# Longest query string taken: a MAX_QUERY_CHARS query of 4-byte UTF-8 characters,
# percent-encoded (12 bytes each), plus the short parameters beside it.
MAX_QUERY_STRING_BYTES = MAX_QUERY_CHARS * 12 + 2**10
# A request's handling (once its body has arrived) and any pause inside a body are bounded by
# this; searches take milliseconds, so only a stuck request or a huge scanned upload (OCR at
# 3-4 s a page) reaches it.
DEFAULT_REQUEST_TIMEOUT_S = 120.0
# A client must send a request's whole head within this; uvicorn's own keep-alive timeout is
# reset by every byte, so a client trickling header bytes would otherwise hold its connection.
HEADER_TIMEOUT_S = 10.0
log = logging.getLogger("vdr.server")
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
) -> FastAPI:
    """A FastAPI app serving `index`, which stays open for the app's lifetime.

    api_key:           required on every route but /healthz when set
    max_upload_mb:     largest PDF accepted by POST /documents
    request_timeout_s: longest a request may be handled before it answers 503 (the work goes
                       on in the background)
    body_timeout_s:    longest pause inside a request body before it answers 408 (a slow
                       client, where request_timeout_s bounds a slow server); by default
                       request_timeout_s
    cors_origins:      browser origins allowed to call the API from their pages; none (the
                       default) sends no CORS headers at all
    """
    late = _LateWork()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await late.drain()  # the caller closes the index next: let late writes finish first

    app = FastAPI(
        title="vdr",
        description="Visual-document retrieval over PDFs",
        version="0.1.0",
        lifespan=lifespan,
        responses={500: _errors(500)[500]},
    )
    # add_middleware puts each new layer outside the ones before it.
    app.add_middleware(_InternalErrors)
    app.add_middleware(
        _Deadline,
        timeout_s=request_timeout_s,
        body_timeout_s=request_timeout_s if body_timeout_s is None else body_timeout_s,
        late=late,
    )
    app.add_middleware(_BodyLimits, upload_bytes=max_upload_mb * 2**20 + MULTIPART_OVERHEAD_BYTES)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["X-API-Key", "Authorization", "Content-Type"],
        )
    writing = threading.Lock()
    uploads = index.path / "uploads"

    def require_key(request: Request) -> None:
        if api_key is None:
            return
        given = request.headers.get("x-api-key") or _bearer(request.headers.get("authorization"))
        # Digests of equal length, compared in constant time: neither the key's content nor its
        # length shows in how long a wrong key takes to refuse.
        if not given or not hmac.compare_digest(_digest(given), _digest(api_key)):
            raise HTTPException(401, "a valid API key is required (X-API-Key header)")

    guarded = [Depends(require_key)]

    @app.exception_handler(VdrError)
    def vdr_error(_: Request, error: VdrError) -> JSONResponse:
        # Well-formed input the library cannot use (a query with no words, a corrupt PDF): 422.
        status = 404 if isinstance(error, NotFound) else 422
        return JSONResponse({"detail": unplaced(str(error))}, status_code=status)

    def unplaced(message: str) -> str:
        """`message` without the server's own folders (a tool's error may quote a file's path):
        where the index lives is none of a client's business."""
        return message.replace(f"{uploads}/", "").replace(str(index.path), "<index>")

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
            reason = unplaced(report.skipped[0][1])
            raise HTTPException(422, f"'{name}' cannot be indexed: {reason}")
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


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


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


def server_config(
    app: ASGIApp, host: str, port: int, head_timeout_s: float = HEADER_TIMEOUT_S
) -> uvicorn.Config:
    """How `vdr serve` runs `app`: uvicorn over h11 with a deadline on request heads.

    uvicorn offers a keep-alive timeout (an idle connection between requests is closed after
    5 s) and h11's cap on a request head's size (16 KiB), but nothing bounds how long a head
    may take to arrive; _H11WithHeadDeadline adds that (head_timeout_s).
    """
    protocol = type("H11Protocol", (_H11WithHeadDeadline,), {"head_timeout_s": head_timeout_s})
    return uvicorn.Config(app, host=host, port=port, http=protocol, log_level="warning")


class _H11WithHeadDeadline(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request head (request line and
    headers) is not complete head_timeout_s after the connection opened or the previous response
    ended. The clock is not reset by each byte, so trickling bytes (slowloris) does not keep a
    connection open."""

    head_timeout_s = HEADER_TIMEOUT_S
    _head_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_head()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is in
            self._stop_head_clock()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._await_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def _await_head(self) -> None:
        self._stop_head_clock()
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._head_deadline = self.loop.call_later(self.head_timeout_s, self._head_too_slow)

    def _stop_head_clock(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_too_slow(self) -> None:
        self._head_deadline = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def _header(scope: Scope, name: bytes) -> bytes | None:
    return next((value for key, value in scope["headers"] if key == name), None)


async def _answer(
    scope: Scope, send: Send, status: int, detail: str, headers: dict[str, str], **extra: str
) -> None:
    """A JSON error answered from middleware, outside FastAPI's handlers."""
    response = JSONResponse({"detail": detail, **extra}, status_code=status, headers=headers)
    await response(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.disconnect"}


class _BodyLimits:
    """Refuses an oversized request before the app reads it.

    A Content-Length over the limit answers 413 at once, without reading the body; a body
    without one (chunked) is counted as it arrives and refused (413) as soon as it passes the
    limit. Either way the connection is then closed, so the rest of the body is never read.
    Limits: upload_bytes for POST /documents, MAX_JSON_BODY_BYTES for any other body,
    MAX_QUERY_STRING_BYTES for the query string (414).
    """

    def __init__(self, app: ASGIApp, upload_bytes: int) -> None:
        self.app = app
        self.upload_bytes = upload_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if len(scope["query_string"]) > MAX_QUERY_STRING_BYTES:
            detail = f"the query string is longer than {MAX_QUERY_STRING_BYTES} bytes"
            await _answer(scope, send, 414, detail, {})
            return
        upload = scope["method"] == "POST" and scope["path"] == "/documents"
        limit = self.upload_bytes if upload else MAX_JSON_BODY_BYTES
        detail = (
            f"the upload exceeds {(limit - MULTIPART_OVERHEAD_BYTES) // 2**20} MB"
            if upload
            else f"the request body exceeds {limit // 2**10} KiB"
        )
        length = _header(scope, b"content-length")
        if length is not None and not length.isdigit():  # h11 refuses it; other servers may not
            await _answer(
                scope, send, 400, "Content-Length is not a number", {"connection": "close"}
            )
            return
        if length is not None and int(length) > limit:
            await _answer(scope, send, 413, detail, {"connection": "close"})
            return
        received = 0
        refused = False

        async def counted() -> Message:
            nonlocal received, refused
            message = await receive()
            received += len(message.get("body", b""))
            if received > limit:
                refused = True
                raise HTTPException(413, detail)  # FastAPI answers it as it reads the body
            return message

        async def closing(message: Message) -> None:
            if refused and message["type"] == "http.response.start":
                message = {**message, "headers": [*message["headers"], (b"connection", b"close")]}
            await send(message)

        await self.app(scope, counted, closing)


class _LateWork:
    """Requests that outlived their deadline and run on, so that shutdown can wait for them."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[None]] = set()

    def add(self, task: asyncio.Task[None]) -> None:
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def drain(self) -> None:
        if self.tasks:
            log.warning("waiting for %d requests past their deadline to finish", len(self.tasks))
            await asyncio.gather(*self.tasks, return_exceptions=True)


class _Deadline:
    """Answers 503 for a request not handled within timeout_s of its body's arrival, and 408
    when its body pauses for longer than body_timeout_s.

    Routes run in worker threads, which cannot be interrupted, so the request's work is not
    cancelled: it runs on (held by `late`) and its own answer is dropped. An upload that outlives
    the deadline is therefore indexed whole and appears in GET /documents once done.
    """

    def __init__(
        self, app: ASGIApp, timeout_s: float, body_timeout_s: float, late: _LateWork
    ) -> None:
        self.app = app
        self.timeout_s = timeout_s
        self.body_timeout_s = body_timeout_s
        self.late = late

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] == "/healthz":
            await self.app(scope, receive, send)
            return
        has_body = _header(scope, b"transfer-encoding") is not None or (
            _header(scope, b"content-length") not in (None, b"0")
        )
        body_in = asyncio.Event()
        if not has_body:
            body_in.set()
        started = abandoned = False

        async def timed_receive() -> Message:
            if body_in.is_set():  # after the body: a wait for disconnect, not bounded
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout_s)
            except asyncio.TimeoutError:  # not yet the builtin TimeoutError on Python 3.10
                body_in.set()
                raise HTTPException(
                    408, f"the request body stalled for over {self.body_timeout_s:g} s"
                ) from None
            if message["type"] != "http.request" or not message.get("more_body", False):
                body_in.set()
            return message

        async def own_send(message: Message) -> None:
            nonlocal started
            if abandoned:
                return
            started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, timed_receive, own_send))
        body_wait = asyncio.ensure_future(body_in.wait())
        await asyncio.wait({task, body_wait}, return_when=asyncio.FIRST_COMPLETED)
        body_wait.cancel()
        await asyncio.wait({task}, timeout=self.timeout_s)
        if task.done() or started:  # in time, or already answering: see it through
            await task
            return
        abandoned = True
        self.late.add(task)
        if scope["method"] == "POST" and scope["path"] == "/documents":
            detail = (
                f"the upload is still being indexed after {self.timeout_s:g} s; it goes on in "
                "the background and GET /documents lists it once done"
            )
        else:
            detail = f"the request took longer than {self.timeout_s:g} s, the server's limit"
        await _answer(scope, send, 503, detail, {"retry-after": "5"})


class _InternalErrors:
    """The safety net: an exception no route turned into a 4xx answers 500 with an error id
    and nothing of the exception (its text may hold paths); the trace is logged with the id."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watched_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        except Exception:
            error_id = secrets.token_hex(4)
            log.exception("error %s in %s %s", error_id, scope["method"], scope["path"])
            if not started:
                await _answer(scope, send, 500, "internal error", {}, error_id=error_id)

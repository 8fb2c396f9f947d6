"""ASGI middleware and the uvicorn protocol that bound what a client can make the server hold
or wait for (see server/app.py for the routes they wrap).

Body and query-string sizes (413/414, checked before a byte of the body is read), a deadline
per request (503; the work itself finishes in the background, so an upload that outlives it is
still indexed whole), a stalled body (408), headers sent too slowly (the connection is closed,
see server_config), an access log line per request, and a safety net: anything unforeseen
answers 500 with an error id, never a traceback; the trace goes to the server's log under it.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time

import h11
import uvicorn
from fastapi import HTTPException
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MAX_QUERY_CHARS = 1000
# Largest JSON body taken: a SearchRequest at its largest (MAX_QUERY_CHARS characters, each
# written as a 6-byte \uXXXX escape) is ~6 KB, so 64 KiB refuses nothing a client needs.
MAX_JSON_BODY_BYTES = 64 * 2**10
# Room for the multipart framing (boundaries, part headers) around an upload's bytes.
MULTIPART_OVERHEAD_BYTES = 64 * 2**10
# Longest query string taken: a MAX_QUERY_CHARS query of 4-byte UTF-8 characters,
# percent-encoded (12 bytes each), plus the short parameters beside it.
MAX_QUERY_STRING_BYTES = MAX_QUERY_CHARS * 12 + 2**10
# A client must send a request's whole head within this; uvicorn's own keep-alive timeout is
# reset by every byte, so a client trickling header bytes would otherwise hold its connection.
HEADER_TIMEOUT_S = 10.0
log = logging.getLogger("vdr.server")
access_log = logging.getLogger("vdr.access")


def server_config(
    app: ASGIApp, host: str, port: int, head_timeout_s: float = HEADER_TIMEOUT_S
) -> uvicorn.Config:
    """How `vdr serve` runs `app`: uvicorn over h11 with a deadline on request heads.

    uvicorn offers a keep-alive timeout (an idle connection between requests is closed after
    5 s) and h11's cap on a request head's size (16 KiB), but nothing bounds how long a head
    may take to arrive; _H11WithHeadDeadline adds that (head_timeout_s).
    """
    protocol = type("H11Protocol", (_H11WithHeadDeadline,), {"head_timeout_s": head_timeout_s})
    access_log.setLevel(logging.INFO)  # `vdr serve` logs warnings only, but for requests
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


class BodyLimits:
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


class LateWork:
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


class Deadline:
    """Answers 503 for a request not handled within timeout_s of its body's arrival, and 408
    when its body pauses for longer than body_timeout_s.

    Routes run in worker threads, which cannot be interrupted, so the request's work is not
    cancelled: it runs on (held by `late`) and its own answer is dropped. An upload that outlives
    the deadline is therefore indexed whole and appears in GET /documents once done.
    """

    def __init__(
        self, app: ASGIApp, timeout_s: float, body_timeout_s: float, late: LateWork
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


class InternalErrors:
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


class AccessLog:
    """One line per request on the "vdr.access" logger (INFO): method, route (the path's
    template, so ids and queries stay out of the log), status and milliseconds.

    The line is written as the response's last part leaves, before the client can have it, so
    that whoever reads the log after an answer finds that answer's line there."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0
        logged = False

        def log_once() -> None:
            nonlocal logged
            if not logged:
                logged = True
                route = getattr(scope.get("route"), "path", None) or "(no route)"
                took = (time.perf_counter() - started) * 1000
                access_log.info("%s %s %d %.1f ms", scope["method"], route, status, took)

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                log_once()
            await send(message)

        try:
            await self.app(scope, receive, watched_send)
        finally:
            log_once()  # a request that ended without a whole response: cut short, or failed

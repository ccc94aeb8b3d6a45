"""A small HTTP/1.1 server for the gateway listener, on asyncio protocols and httptools.

The other listeners run on uvicorn. The gateway listener is the one path every channel request
takes, and there uvicorn's ASGI message exchange, its per-request objects and the middleware
stack cost more than the gateway's own work (docs/benchmarks.md, docs/decisions.md). This
server parses with the same parser uvicorn uses (httptools, i.e. llhttp) and hands the handler
one :class:`Request` with the whole body; the handler returns one :class:`Response`.

What it does: keep-alive and pipelining (answers in order, reading paused while a few requests
wait), bodies by ``Content-Length`` or chunked, ``Expect: 100-continue``, limits on the head
(431) and the body (413, answered by the handler so it is logged like any other refusal), a
read timeout for requests that arrive too slowly (408), an idle timeout for kept-alive
connections, write back-pressure, and a graceful stop that lets running requests finish. The
listener's :class:`~gridgate.web.connections.ConnectionGuard` caps its connections (overall and
per client address) and sets the deadlines of quiet ones: the first byte, the head (408), a
shorter keep-alive under pressure.
Upgrades (WebSocket, h2c) are not served: such a request is answered over HTTP/1.1 and the
connection is closed after it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, Protocol, cast, runtime_checkable
from urllib.parse import unquote

import httptools
import orjson
import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gridgate.errors import (
    PROBLEM_CONTENT_TYPE,
    GridgateError,
    HeadersTooLarge,
    MalformedRequest,
    RequestTimeout,
    RequestTooLarge,
    problem_body,
)
from gridgate.web.connections import ConnectionGuard
from gridgate.web.middleware import new_trace_id

__all__ = [
    "BACKLOG",
    "KEEP_ALIVE_S",
    "Handler",
    "HttpServer",
    "Limits",
    "Request",
    "Response",
    "call_asgi",
    "problem_answer",
    "request_from_asgi",
    "send_asgi",
]

_log = structlog.get_logger("gridgate.http")
_NO_BODY_STATUS = frozenset({204, 304})
_STATUS_LINES = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n" for status in HTTPStatus
}
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
#: Longer than any client's idle time between calls (registry heartbeats every 5 s): a
#: connection closed by the server just as a client reuses it fails that call. Every
#: listener uses it, uvicorn's too.
KEEP_ALIVE_S = 65.0
#: Connections the kernel queues for a listener before it accepts them.
BACKLOG = 2048


@dataclass(slots=True)
class Request:
    """One request, read in full."""

    method: str
    #: The path as sent (still percent-encoded), without the query.
    path: str
    query: str
    #: Names in lower case, in the order sent.
    headers: list[tuple[str, str]]
    body: bytes
    client_ip: str
    client_port: int = 0
    http_version: str = "1.1"
    #: Set when the server will not read the request in full (its body is too large): the
    #: handler answers it like a refusal of its own, so it is traced and logged as usual.
    rejected: GridgateError | None = None


@dataclass(slots=True)
class Response:
    """One answer; the server adds ``content-length``, ``date`` and ``connection``."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may send, and how long it may take."""

    max_body_bytes: int = 1_048_576
    #: Request line and headers together (Node.js's default; nginx allows 4 × 8 KiB).
    max_head_bytes: int = 16_384
    max_headers: int = 100
    #: A kept-alive connection with no request in flight is closed after this long.
    keep_alive_s: float = KEEP_ALIVE_S
    #: From the first byte of a request to its last (slow clients get 408 and are closed).
    read_timeout_s: float = 30.0
    #: Requests read ahead while an earlier one is answered; reading pauses beyond this.
    max_pipelined: int = 8


@runtime_checkable
class Handler(Protocol):
    """What the server calls for each request, and the limits it sets on requests."""

    @property
    def limits(self) -> Limits:
        """Body and head sizes, timeouts."""
        ...

    async def handle(self, request: Request) -> Response:
        """Answer ``request``; exceptions become a 500 problem answer."""
        ...


def problem_answer(error: GridgateError, trace_id: str | None = None) -> Response:
    """``error`` as an ``application/problem+json`` answer."""
    trace_id = trace_id or new_trace_id()
    return Response(
        error.status,
        [
            ("content-type", PROBLEM_CONTENT_TYPE),
            ("x-trace-id", trace_id),
            *error.headers.items(),
        ],
        orjson.dumps(problem_body(error, trace_id)),
    )


class _Connection(asyncio.Protocol):
    """One client connection: reads requests, answers them in order."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.loop = server.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client_ip = ""
        self.client_port = 0
        # The request being read.
        self.reading = False
        self.head_done = False
        self.head_bytes = 0
        self.started = 0.0
        self.url = b""
        self.raw_headers: list[tuple[bytes, bytes]] = []
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []
        self.body_bytes = 0
        # Answering.
        self.busy = False
        self.pending: deque[tuple[Request, bool]] = deque()
        self.read_paused = False
        self.write_paused = False
        self.drained: asyncio.Future[None] | None = None
        #: No more requests are read on this connection (error, upgrade, refused body).
        self.stop_reading = False
        #: An error answered once the requests before it are answered; then the connection closes.
        self.final: GridgateError | None = None
        self.idle_since = self.loop.time()
        #: No byte of a request came yet (the first-byte deadline applies, not the keep-alive).
        self.fresh = True
        self.task: asyncio.Task[None] | None = None
        #: After an answer that leaves part of the request unread: read and drop what still
        #: arrives until then, so the client gets to read the answer (nginx's lingering close).
        self.linger_until = 0.0
        #: A request read while another was answered asked for 100 Continue.
        self.continue_owed = False

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)
        if not self.server.guard.admit(self, self.transport):
            self.stop_reading = True  # refused: answered 503 and closed already
            return
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and len(peer) >= 2:
            self.client_ip, self.client_port = str(peer[0]), int(peer[1])
        self.server.connections.add(self)
        if self.server.stopping:
            transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.guard.release(self)  # nothing to release for a refused connection
        self.server.forget(self)
        self.stop_reading = True
        self.pending.clear()
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        if self.drained is not None and not self.drained.done():
            self.drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        if self.stop_reading:
            return
        # A read that starts inside a head counts toward it; one that starts after a body
        # (pipelining) is not counted, so another request's body is never taken for a head.
        in_head = self.reading and not self.head_done
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            # The request before the upgrade was read; it is answered, then we close.
            self.stop_reading = True
        except httptools.HttpParserError:
            self.fail(MalformedRequest("the request is not valid HTTP/1.1"))
            return
        if in_head and self.reading and not self.head_done and not self.stop_reading:
            self.head_bytes += len(data)
            if self.head_bytes > self.limits.max_head_bytes:
                self.fail(HeadersTooLarge("the request line and headers are too large"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.stop_reading:
            return  # bytes after an error or a refused body: never handled
        self.reading = True
        self.fresh = False
        self.head_done = False
        self.head_bytes = 0
        self.started = self.loop.time()
        self.url = b""
        self.raw_headers = []
        self.body = []
        self.body_bytes = 0

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        if not self.reading:
            return
        self.head_done = True
        limits = self.limits
        raw = self.raw_headers
        size = len(self.url) + sum(len(n) + len(v) + 4 for n, v in raw)
        if size > limits.max_head_bytes or len(raw) > limits.max_headers:
            self.fail(HeadersTooLarge("the request line and headers are too large"))
            return
        headers = self.headers = [
            (name.decode("latin-1").lower(), value.decode("latin-1")) for name, value in raw
        ]
        expect = False
        for name, value in headers:
            if name == "content-length":
                declared = int(value)  # llhttp has checked it is a number
                if declared > limits.max_body_bytes:
                    self.refuse_body()
                    return
            elif name == "expect" and value.lower() == "100-continue":
                expect = True
        if expect and self.parser.get_http_version() != "1.0":
            if self.busy:
                self.continue_owed = True  # sent once the answers before it are written
            elif self.transport is not None:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self.stop_reading:
            return
        self.body_bytes += len(body)
        if self.body_bytes > self.limits.max_body_bytes:
            self.refuse_body()
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.reading:
            return  # already handed over (a refused body)
        self.reading = False
        self.enqueue(self.request(b"".join(self.body)), self.parser.should_keep_alive())

    # -- requests -----------------------------------------------------------------------------

    def request(self, body: bytes) -> Request:
        url = self.url
        if url[:1] == b"/":
            path, _, query = url.partition(b"?")
        elif url == b"*":
            path, query = url, b""
        else:  # absolute form (a client that takes us for a proxy)
            try:
                parsed = httptools.parse_url(url)
            except httptools.HttpParserInvalidURLError:
                path, query = b"/", b""
            else:
                path, query = parsed.path or b"/", parsed.query or b""
        return Request(
            method=self.parser.get_method().decode("latin-1"),
            path=path.decode("latin-1"),
            query=query.decode("latin-1"),
            headers=self.headers,
            body=body,
            client_ip=self.client_ip,
            client_port=self.client_port,
            http_version=self.parser.get_http_version(),
        )

    def refuse_body(self) -> None:
        """Hand the request over without its body (413), and read nothing more."""
        request = self.request(b"")
        request.rejected = RequestTooLarge(
            f"the body must be at most {self.limits.max_body_bytes} bytes"
        )
        self.reading = False
        self.stop_reading = True
        self.enqueue(request, keep_alive=False)

    def enqueue(self, request: Request, keep_alive: bool) -> None:
        if self.busy:
            self.pending.append((request, keep_alive))
            if len(self.pending) >= self.limits.max_pipelined and self.transport is not None:
                self.transport.pause_reading()
                self.read_paused = True
            return
        self.busy = True
        self.task = self.loop.create_task(self.answer(request, keep_alive))

    def fail(self, error: GridgateError) -> None:
        """Answer ``error`` once the requests before it are answered, then close."""
        self.stop_reading = True
        self.reading = False
        if self.busy:
            self.final = error
        else:
            self.write(problem_answer(error), keep_alive=False, head=False)
            self.linger()

    async def answer(self, request: Request, keep_alive: bool) -> None:
        handler = self.server.handler
        while True:
            try:
                response = await handler.handle(request)
            except Exception as error:  # a bug: a 500 problem, never a stack trace
                _log.error("http_handler_failed", exc_info=error)
                response = problem_answer(GridgateError())
            keep_alive = keep_alive and not self.server.stopping
            if self.stop_reading and not self.pending and self.final is None:
                keep_alive = False
            self.write(
                response,
                keep_alive=keep_alive,
                head=request.method == "HEAD",
                http10=request.http_version == "1.0",
            )
            if not keep_alive:
                if request.rejected is not None:
                    self.linger()
                else:
                    self.close()
                return
            if self.write_paused:
                self.drained = self.loop.create_future()
                await self.drained
                self.drained = None
            if not self.pending:
                break
            request, keep_alive = self.pending.popleft()
            if self.read_paused and self.transport is not None:
                self.read_paused = False
                self.transport.resume_reading()
        self.busy = False
        self.idle_since = self.loop.time()
        if self.final is not None:
            self.fail(self.final)
        elif self.continue_owed:
            self.continue_owed = False
            if self.reading and self.transport is not None and not self.transport.is_closing():
                self.transport.write(_CONTINUE)

    def write(
        self, response: Response, *, keep_alive: bool, head: bool, http10: bool = False
    ) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        try:
            data = self.head(response, keep_alive=keep_alive, http10=http10)
        except ValueError as error:  # the handler's bug: a 500, never a broken answer
            _log.error("http_answer_unwritable", error=str(error))
            response = problem_answer(GridgateError())
            data = self.head(response, keep_alive=keep_alive, http10=http10)
        body = response.body
        if head or not body or response.status in _NO_BODY_STATUS or response.status < 200:
            transport.write(data)
        else:
            transport.write(data + body)

    def head(self, response: Response, *, keep_alive: bool, http10: bool) -> bytes:
        """Status line and headers; ValueError when a header cannot be sent as it is."""
        status = response.status
        lines = [_STATUS_LINES.get(status) or f"HTTP/1.1 {status} Unknown\r\n"]
        dated = False
        for name, value in response.headers:
            lines.append(f"{name}: {value}\r\n")
            if name == "date":
                dated = True
        if status >= 200 and status not in _NO_BODY_STATUS:
            lines.append(f"content-length: {len(response.body)}\r\n")
        if not dated:
            lines.append(self.server.date_line)
        if not keep_alive:
            lines.append("connection: close\r\n")
        elif http10:
            lines.append("connection: keep-alive\r\n")
        lines.append("\r\n")
        text = "".join(lines)
        # One line per header: a CR or LF inside a name or value would split the answer.
        if text.count("\n") != len(lines) or text.count("\r") != len(lines):
            raise ValueError("a header name or value holds a line break")
        return text.encode("latin-1")  # UnicodeEncodeError is a ValueError

    def close(self) -> None:
        self.stop_reading = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def linger(self) -> None:
        """Close our side now, the connection once the client stops sending (or in 5 s)."""
        transport = self.transport
        self.stop_reading = True
        if transport is None or transport.is_closing():
            return
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self.linger_until = self.loop.time() + 5.0
        if self.read_paused:
            self.read_paused = False
            transport.resume_reading()

    def sweep(self, now: float) -> None:
        """Close what waited too long: a slow head or request (408), a connection that sends
        nothing, an idle keep-alive (shorter while the listener is under pressure)."""
        if self.linger_until:
            if now > self.linger_until:
                self.close()
        elif self.reading:
            if not self.head_done and now - self.started > self.server.guard.policy.head_s:
                self.server.guard.closed_early("head")
                self.fail(RequestTimeout("the request head did not arrive in time"))
            elif now - self.started > self.limits.read_timeout_s:
                self.server.guard.closed_early("request")
                self.fail(RequestTimeout("the request did not arrive in full in time"))
        elif not self.busy:
            limit, reason = self.server.guard.idle_deadline(
                self.limits.keep_alive_s, fresh=self.fresh
            )
            if now - self.idle_since > limit:
                if reason is not None:
                    self.server.guard.closed_early(reason)
                self.close()


class HttpServer:
    """Serves one :class:`Handler` on one listening socket."""

    def __init__(self, handler: Handler, guard: ConnectionGuard | None = None) -> None:
        self.handler = handler
        self.limits = handler.limits
        #: Caps and deadlines of the listener's connections (none by default).
        self.guard = guard or ConnectionGuard("http")
        self.connections: set[_Connection] = set()
        self.stopping = False
        self.date_line = ""
        self._server: asyncio.AbstractServer | None = None
        self._sweeper: asyncio.Task[None] | None = None
        #: Set when the last connection closes, once stop() waits for that.
        self._all_closed: asyncio.Event | None = None

    def forget(self, connection: _Connection) -> None:
        """``connection`` is closed."""
        self.connections.discard(connection)
        if not self.connections and self._all_closed is not None:
            self._all_closed.set()

    async def start(self, sock: socket.socket) -> None:
        """Listen on ``sock`` (bound already)."""
        self.loop = asyncio.get_running_loop()
        self._tick()
        self._server = await self.loop.create_server(
            lambda: _Connection(self), sock=sock, backlog=BACKLOG
        )
        self._sweeper = self.loop.create_task(self._sweep())

    def _tick(self) -> None:
        self.date_line = f"date: {formatdate(usegmt=True)}\r\n"

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(1)
            self._tick()
            self.guard.sweep(self.loop.time())

    def abort(self) -> None:
        """Close every connection now, answered or not (a second Ctrl-C)."""
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()

    async def stop(self, timeout_s: float) -> None:
        """Stop accepting, close idle connections, let running requests finish (up to
        ``timeout_s``), then close whatever is left."""
        self.stopping = True
        if self._server is not None:
            self._server.close()
        for connection in list(self.connections):
            if not connection.busy or connection.linger_until:
                connection.close()
        if self.connections:
            self._all_closed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._all_closed.wait(), timeout_s)
        for connection in list(self.connections):
            if connection.transport is not None:
                connection.transport.abort()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self._server is not None:
            await self._server.wait_closed()
        self.guard.close()


# -- ASGI on either side ------------------------------------------------------------------------


async def request_from_asgi(scope: Scope, receive: Receive, max_body_bytes: int) -> Request:
    """The :class:`Request` of an ASGI ``http`` scope (for tests and embedding)."""
    headers = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope["headers"]]
    client = scope.get("client") or ("", 0)
    request = Request(
        method=scope["method"],
        path=(scope.get("raw_path") or scope["path"].encode()).decode("latin-1"),
        query=scope.get("query_string", b"").decode("latin-1"),
        headers=headers,
        body=b"",
        client_ip=client[0],
        client_port=client[1],
        http_version=scope.get("http_version", "1.1"),
    )
    chunks: list[bytes] = []
    size = 0
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_body_bytes:
            request.rejected = RequestTooLarge(f"the body must be at most {max_body_bytes} bytes")
            return request
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    request.body = b"".join(chunks)
    return request


async def send_asgi(send: Send, response: Response) -> None:
    """Send ``response`` as ASGI messages."""
    raw = [
        (k.encode("latin-1"), v.encode("latin-1"))
        for k, v in response.headers
        if k != "content-length"
    ]
    raw.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": raw})
    await send({"type": "http.response.body", "body": response.body})


async def call_asgi(app: ASGIApp, request: Request) -> Response:
    """Run an ASGI ``app`` for one request (the probes on the gateway listener)."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version,
        "method": request.method,
        "scheme": "http",
        "path": unquote(request.path),
        "raw_path": request.path.encode("latin-1"),
        "query_string": request.query.encode("latin-1"),
        "root_path": "",
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in request.headers],
        "client": (request.client_ip, request.client_port),
        "server": None,
        "state": {},
    }
    sent = False
    status = 500
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": request.body, "more_body": False}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            headers.extend(
                (k.decode("latin-1").lower(), v.decode("latin-1"))
                for k, v in message.get("headers", [])
                if k.lower() != b"content-length"
            )
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Response(status, headers, b"".join(chunks))

"""Keep-alive HTTP/1.1 connections from the gateway to business systems.

One :class:`UpstreamPool` holds, per ``host:port``, the idle connections and a cap on how many
are open at once (callers over the cap wait for one to come back). A call writes the request
head and body in one write and reads the answer with httptools (llhttp), the parser the
gateway's own listener uses. Measured against aiohttp's client, which it replaces on this path,
it costs a fraction per call (docs/benchmarks.md): no per-call request/response objects,
no stream readers, one timer per call.

Errors say what happened, so the dispatcher knows what is safe to retry:
:class:`ConnectFailed` (nothing was sent), :class:`ConnectionBroken` (sent, no complete
answer), :class:`AnswerTooLarge`, :class:`BadAnswer`; the deadline raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from dataclasses import dataclass
from typing import cast

import httptools

__all__ = [
    "AnswerTooLarge",
    "BadAnswer",
    "ConnectFailed",
    "ConnectionBroken",
    "RawAnswer",
    "UpstreamError",
    "UpstreamPool",
]


class UpstreamError(Exception):
    """A call to a business system did not produce a usable answer."""


class ConnectFailed(UpstreamError):
    """No connection could be opened: nothing was sent."""


class ConnectionBroken(UpstreamError):
    """The connection closed before the whole answer arrived."""


class BadAnswer(UpstreamError):
    """The answer is not valid HTTP/1.1."""


class AnswerTooLarge(UpstreamError):
    """The answer's body is larger than the gateway accepts."""


@dataclass(slots=True)
class RawAnswer:
    """An answer as received: status, header bytes as sent, the whole body."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One connection to a business system, carrying one call at a time."""

    def __init__(self, origin: _Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[RawAnswer] | None = None
        self.head = False
        self.headers: list[tuple[bytes, bytes]] = []
        self.body: list[bytes] = []
        self.size = 0
        self.framed = False  # Content-Length or chunked: the end is known without a close
        self.headers_done = False
        self.answered = False
        self.reusable = False
        self.closed = False
        self.idle_since = 0.0

    # -- asyncio ------------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream transport (uvloop's is not an asyncio.Transport subclass).
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.origin.forget(self)
        waiter = self.waiter
        if waiter is None or waiter.done():
            return
        if self.headers_done and not self.framed and exc is None:
            # An answer delimited by the (orderly) close of the connection: this is its end.
            self.reusable = False
            self.finish(self.parser.get_status_code())
        else:
            waiter.set_exception(ConnectionBroken("the business system closed the connection"))

    def data_received(self, data: bytes) -> None:
        if self.waiter is None:
            # Bytes nobody asked for: the connection cannot be trusted any more.
            self.abort()
            return
        try:
            self.parser.feed_data(data)
        except (httptools.HttpParserError, httptools.HttpParserUpgrade) as exc:
            self.fail(BadAnswer(f"the business system's answer is not valid HTTP: {exc!r}"))

    # -- httptools callbacks ------------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.answered:
            # Bytes after the answer (in the same read): never trust this connection again.
            self.reusable = False

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.headers_done:  # trailer fields of a chunked body are not headers
            self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.headers_done = True
        for name, value in self.headers:
            lowered = name.lower()
            if lowered == b"content-length" or (
                lowered == b"transfer-encoding" and b"chunked" in value.lower()
            ):
                self.framed = True
        status = self.parser.get_status_code()
        if self.head and status >= 200:
            # An answer to HEAD has no body whatever its headers say; llhttp cannot be told,
            # so the answer ends here and the connection is not used again.
            self.reusable = False
            self.finish(status)

    def on_body(self, body: bytes) -> None:
        if self.answered:
            return
        self.size += len(body)
        if self.size > self.origin.pool.max_answer_bytes:
            self.fail(AnswerTooLarge("the business system's answer is too large"))
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if self.answered:
            return
        status = self.parser.get_status_code()
        if status < 200:
            # 100 Continue and other interim answers: the real one follows.
            self.headers, self.body, self.size = [], [], 0
            self.headers_done = self.framed = False
            return
        self.reusable = self.parser.should_keep_alive() and not self.head
        self.finish(status)

    # -- calls --------------------------------------------------------------------------------

    def start(self, waiter: asyncio.Future[RawAnswer], *, head: bool) -> None:
        self.waiter = waiter
        self.head = head
        self.headers, self.body, self.size = [], [], 0
        self.headers_done = self.framed = self.reusable = self.answered = False

    def finish(self, status: int) -> None:
        self.answered = True
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(RawAnswer(status, self.headers, b"".join(self.body)))
        self.headers, self.body = [], []  # the answer keeps its own lists

    def fail(self, error: BaseException) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        self.abort()

    def expire(self) -> None:
        """The deadline passed: the call fails, the connection (mid-answer) is dropped."""
        if self.waiter is not None and not self.waiter.done():
            self.fail(TimeoutError())

    def abort(self) -> None:
        self.reusable = False
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


class _Origin:
    """The connections to one ``host:port``."""

    def __init__(self, pool: UpstreamPool, host: str, port: int) -> None:
        self.pool = pool
        self.host = host
        self.port = port
        self.host_header = f"host: {f'[{host}]' if ':' in host else host}:{port}\r\n"
        self.idle: list[_Connection] = []
        self.busy = 0
        self.waiters: deque[asyncio.Future[None]] = deque()

    def take_idle(self, now: float) -> _Connection | None:
        """An idle connection with a slot, if the cap allows one now (no suspension)."""
        if self.busy >= self.pool.per_origin or self.waiters:
            return None
        connection = self._reusable(now)
        if connection is not None:
            self.busy += 1
        return connection

    def _reusable(self, now: float) -> _Connection | None:
        """The newest idle connection still fit for a call; stale ones are dropped."""
        while self.idle:
            connection = self.idle.pop()
            if not connection.closed and now - connection.idle_since < self.pool.idle_timeout_s:
                return connection
            connection.abort()
        return None

    async def acquire(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        """A connection of this origin for one call (waits while the cap is reached)."""
        if self.busy >= self.pool.per_origin:
            waiter: asyncio.Future[None] = loop.create_future()
            self.waiters.append(waiter)
            try:
                async with asyncio.timeout_at(deadline):
                    await waiter  # the releasing call hands its slot over
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self.release_slot()  # handed over just as we gave up: pass it on
                else:
                    waiter.cancel()
                raise
        else:
            self.busy += 1
        try:
            return self._reusable(loop.time()) or await self.connect(loop, deadline)
        except BaseException:
            self.release_slot()
            raise

    async def connect(self, loop: asyncio.AbstractEventLoop, deadline: float) -> _Connection:
        try:
            async with asyncio.timeout_at(deadline):
                _transport, connection = await loop.create_connection(
                    lambda: _Connection(self), self.host, self.port
                )
        except TimeoutError:
            raise  # the deadline, not the business system (TimeoutError is an OSError)
        except OSError as exc:
            raise ConnectFailed(f"cannot connect to {self.host}:{self.port}: {exc}") from None
        return connection

    def release(self, connection: _Connection, loop: asyncio.AbstractEventLoop) -> None:
        """The call on ``connection`` is over: keep it for the next one if it can be."""
        connection.waiter = None
        if connection.reusable and not connection.closed and not self.pool.closed:
            connection.idle_since = loop.time()
            self.idle.append(connection)
        elif not connection.closed:
            connection.abort()
        self.release_slot()

    def release_slot(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the first waiting call
                return
        self.busy -= 1

    def forget(self, connection: _Connection) -> None:
        with contextlib.suppress(ValueError):
            self.idle.remove(connection)


class UpstreamPool:
    """Keep-alive connections to business systems, ``per_origin`` at most per ``host:port``."""

    def __init__(
        self,
        *,
        per_origin: int = 256,
        idle_timeout_s: float = 4.0,
        max_answer_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        self.per_origin = per_origin
        #: Idle connections older than this are not reused: business systems close idle
        #: keep-alive connections after a few seconds (uvicorn and Node.js after 5), and a
        #: call on a connection closing under it would fail for nothing.
        self.idle_timeout_s = idle_timeout_s
        self.max_answer_bytes = max_answer_bytes
        self.closed = False
        self._origins: dict[tuple[str, int], _Origin] = {}
        #: The loop of the first call (asyncio.get_running_loop() makes a system call).
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the pool's connections belong to."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        return self._loop

    async def request(
        self,
        host: str,
        port: int,
        head: str,
        body: bytes,
        *,
        deadline: float,
        method: str = "GET",
    ) -> RawAnswer:
        """Send one request and read its answer before ``deadline`` (the loop's clock).

        ``head`` is the request line and headers without ``Host`` and the blank line: the pool
        adds both.
        """
        if self.closed:
            raise ConnectFailed("the gateway is stopping")
        loop = self.loop
        origin = self._origins.get((host, port))
        if origin is None:
            origin = self._origins[(host, port)] = _Origin(self, host, port)
        connection = origin.take_idle(loop.time()) or await origin.acquire(loop, deadline)
        waiter: asyncio.Future[RawAnswer] = loop.create_future()
        connection.start(waiter, head=method == "HEAD")
        timer = loop.call_at(deadline, connection.expire)
        try:
            transport = connection.transport
            assert transport is not None  # noqa: S101 - connected by acquire
            data = (head + origin.host_header + "\r\n").encode("latin-1")
            transport.write(data + body if body else data)
            return await waiter
        except BaseException:
            connection.abort()
            raise
        finally:
            timer.cancel()
            origin.release(connection, loop)

    async def close(self) -> None:
        """Close every idle connection; calls in flight end on their own."""
        self.closed = True
        for origin in self._origins.values():
            for connection in origin.idle:
                connection.abort()
            origin.idle.clear()

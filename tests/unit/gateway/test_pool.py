"""The upstream pool against scripted business systems, and the dispatcher's retries over it.

Every business system here is an ``asyncio.start_server`` on 127.0.0.1 whose bytes the test
writes itself, so it can misbehave on purpose: cut an answer short, send garbage, stay silent,
talk when nobody asked. Most tests run with ``per_origin=1`` and end with one more call, which
would wait out its deadline if the failure before it had kept the only slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import pytest

from gridgate.errors import UpstreamTimeout, UpstreamUnavailable
from gridgate.gateway.pool import (
    AnswerTooLarge,
    BadAnswer,
    ConnectFailed,
    ConnectionBroken,
    RawAnswer,
    UpstreamPool,
    _Origin,
)
from gridgate.gateway.upstream import Dispatcher, Outbound
from gridgate.registry.client import InstanceInfo
from gridgate.registry.outlier import OutlierDetector

HOST = "127.0.0.1"
#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 5.0


# -- scripted business systems -------------------------------------------------------------------


class Conn:
    """One connection accepted by a scripted business system."""

    def __init__(
        self,
        upstream: Upstream,
        index: int,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.upstream = upstream
        self.index = index
        self.reader = reader
        self.writer = writer
        #: Set when the script is over; for a script that reads until the gateway goes away,
        #: that is when the gateway closed or aborted the connection.
        self.ended = asyncio.Event()

    async def request(self) -> bytes:
        """One whole request (head, then a body of its Content-Length), as received."""
        head = await self.reader.readuntil(b"\r\n\r\n")
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        raw = head + await self.reader.readexactly(length)
        self.upstream.requests.append(raw)
        return raw

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def until_gone(self) -> None:
        """Read (and drop) whatever comes until the gateway closes the connection."""
        with contextlib.suppress(ConnectionError):
            while await self.reader.read(65536):
                pass

    def reset(self) -> None:
        """Close with a TCP reset rather than a FIN."""
        sock = self.writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()


Script = Callable[[Conn], Awaitable[None]]


class Upstream:
    """A business system running ``script`` on every connection it accepts."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.server: asyncio.Server | None = None
        self.port = 0
        self.conns: list[Conn] = []
        self.requests: list[bytes] = []
        #: Bytes of a request cut short when the gateway went away (should stay empty).
        self.leftover = b""
        self.open = 0
        self.max_open = 0
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def connections(self) -> int:
        """Connections accepted so far."""
        return len(self.conns)

    async def start(self, sock: socket.socket | None = None) -> Upstream:
        if sock is None:
            self.server = await asyncio.start_server(self._handle, HOST, 0)
        else:
            self.server = await asyncio.start_server(self._handle, sock=sock)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.append(task)
        conn = Conn(self, len(self.conns), reader, writer)
        self.conns.append(conn)
        self.open += 1
        self.max_open = max(self.max_open, self.open)
        try:
            await self.script(conn)
        except asyncio.IncompleteReadError as exc:
            self.leftover += exc.partial  # the gateway went away between or inside requests
        except (ConnectionError, asyncio.CancelledError):
            pass  # the gateway reset the connection, or the test is over
        finally:
            self.open -= 1
            writer.close()
            conn.ended.set()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
        for conn in self.conns:
            conn.writer.transport.abort()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


class Upstreams:
    """Starts scripted business systems and stops them all when the test ends."""

    def __init__(self) -> None:
        self.started: list[Upstream] = []

    async def start(self, script: Script, sock: socket.socket | None = None) -> Upstream:
        upstream = Upstream(script)
        self.started.append(upstream)
        return await upstream.start(sock)


class Pools:
    """Makes pools and closes them all when the test ends."""

    def __init__(self) -> None:
        self.made: list[UpstreamPool] = []

    def __call__(
        self,
        *,
        per_origin: int = 1,
        idle_timeout_s: float = 4.0,
        max_answer_bytes: int = 1 << 20,
    ) -> UpstreamPool:
        pool = UpstreamPool(
            per_origin=per_origin,
            idle_timeout_s=idle_timeout_s,
            max_answer_bytes=max_answer_bytes,
        )
        self.made.append(pool)
        return pool


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    started = Upstreams()
    yield started
    for upstream in started.started:
        await upstream.stop()


@pytest.fixture
async def pools() -> AsyncIterator[Pools]:
    made = Pools()
    yield made
    for pool in made.made:
        await pool.close()


# -- helpers -------------------------------------------------------------------------------------


def ok(body: bytes = b"ok", *, status: str = "200 OK", extra: bytes = b"") -> bytes:
    """A whole keep-alive answer framed by Content-Length."""
    return f"HTTP/1.1 {status}\r\ncontent-length: {len(body)}\r\n".encode() + extra + b"\r\n" + body


def keep_alive(answer: bytes = b"", delay_s: float = 0.0) -> Script:
    """Answer every request on the connection with ``answer`` (``ok()`` by default)."""

    async def script(conn: Conn) -> None:
        while True:
            await conn.request()
            if delay_s:
                await asyncio.sleep(delay_s)
            await conn.send(answer or ok())

    return script


def first_then_fine(first: Script) -> Script:
    """``first`` on the first connection, well-behaved keep-alive on every later one."""
    fine = keep_alive()

    async def script(conn: Conn) -> None:
        await (first if conn.index == 0 else fine)(conn)

    return script


def soon(seconds: float = GUARD_S) -> float:
    """A deadline on the loop's clock."""
    return asyncio.get_running_loop().time() + seconds


async def get(
    pool: UpstreamPool,
    port: int,
    path: str = "/",
    *,
    timeout_s: float = GUARD_S,
    method: str = "GET",
) -> RawAnswer:
    head = f"{method} {path} HTTP/1.1\r\n"
    return await pool.request(HOST, port, head, b"", deadline=soon(timeout_s), method=method)


def origin(pool: UpstreamPool, port: int) -> _Origin:
    return pool._origins[(HOST, port)]


async def until(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (or fail after GUARD_S)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0.002)


async def ended(conn: Conn) -> None:
    """Wait until the business system saw the gateway close ``conn``."""
    async with asyncio.timeout(GUARD_S):
        await conn.ended.wait()


def closed_port() -> int:
    """A port nothing listens on."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


@contextlib.contextmanager
def unanswered_port() -> Iterator[int]:
    """A port whose listen queue is full: a connect there hangs (SYNs are dropped)."""
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(0)
    port: int = listener.getsockname()[1]
    fillers = []
    try:
        for _ in range(8):
            filler = socket.socket()
            filler.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                filler.connect((HOST, port))
            fillers.append(filler)
        yield port
    finally:
        for filler in fillers:
            filler.close()
        listener.close()


# -- what the business system receives -----------------------------------------------------------


async def test_the_business_system_receives_the_head_the_host_header_and_the_body(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(ok(b"done")))
    pool = pools()
    head = (
        "POST /api/v1/bills?month=2024-05 HTTP/1.1\r\n"
        "x-a: 1\r\n"
        "content-type: application/json\r\n"
        "content-length: 7\r\n"
    )

    answer = await pool.request(
        HOST, upstream.port, head, b'{"a":1}', deadline=soon(), method="POST"
    )
    await pool.close()
    await ended(upstream.conns[0])

    assert answer == RawAnswer(200, [(b"content-length", b"4")], b"done")
    assert upstream.requests == [
        head.encode() + f"host: 127.0.0.1:{upstream.port}\r\n\r\n".encode() + b'{"a":1}'
    ]
    assert upstream.leftover == b""  # nothing after the body


async def test_a_call_without_body_sends_the_head_and_host_only(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools()

    await get(pool, upstream.port, "/x")
    await pool.close()
    await ended(upstream.conns[0])

    assert upstream.requests == [
        f"GET /x HTTP/1.1\r\nhost: 127.0.0.1:{upstream.port}\r\n\r\n".encode()
    ]
    assert upstream.leftover == b""


async def test_header_values_are_sent_as_latin_1_bytes(upstreams: Upstreams, pools: Pools) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools()

    await pool.request(
        HOST, upstream.port, "GET / HTTP/1.1\r\nx-name: café\r\n", b"", deadline=soon()
    )

    assert b"x-name: caf\xe9\r\n" in upstream.requests[0]


async def test_a_large_request_body_arrives_whole(upstreams: Upstreams, pools: Pools) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools()
    body = bytes(range(256)) * 4096  # 1 MiB: more than one write of the socket
    head = f"PUT /blob HTTP/1.1\r\ncontent-length: {len(body)}\r\n"

    answer = await pool.request(HOST, upstream.port, head, body, deadline=soon(), method="PUT")

    assert answer.status == 200
    assert upstream.requests[0].endswith(b"\r\n\r\n" + body)


async def test_an_ipv6_host_header_is_bracketed(upstreams: Upstreams, pools: Pools) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    upstream = Upstream(keep_alive())
    upstreams.started.append(upstream)
    try:
        upstream.server = await asyncio.start_server(upstream._handle, "::1", 0)
    except OSError:
        pytest.skip("no IPv6 loopback")
    upstream.port = upstream.server.sockets[0].getsockname()[1]
    pool = pools()

    await pool.request("::1", upstream.port, "GET / HTTP/1.1\r\n", b"", deadline=soon())

    assert f"host: [::1]:{upstream.port}\r\n".encode() in upstream.requests[0]


# -- keep-alive and the cap per origin -----------------------------------------------------------


async def test_sequential_calls_share_one_keep_alive_connection(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools(per_origin=4)

    for n in range(3):
        assert (await get(pool, upstream.port, f"/{n}")).body == b"ok"

    assert upstream.connections == 1
    assert len(upstream.requests) == 3
    assert len(origin(pool, upstream.port).idle) == 1
    assert origin(pool, upstream.port).busy == 0


async def test_calls_over_the_cap_wait_for_a_connection_instead_of_opening_more(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(delay_s=0.05))
    pool = pools(per_origin=2)
    busiest = 0

    async def watch() -> None:
        nonlocal busiest
        while True:
            if (HOST, upstream.port) in pool._origins:
                busiest = max(busiest, origin(pool, upstream.port).busy)
            await asyncio.sleep(0.002)

    watcher = asyncio.create_task(watch())
    answers = await asyncio.gather(*(get(pool, upstream.port, f"/{n}") for n in range(5)))
    watcher.cancel()

    assert [answer.status for answer in answers] == [200] * 5
    assert len(upstream.requests) == 5
    assert upstream.connections == 2
    assert upstream.max_open == 2
    assert busiest == 2
    assert origin(pool, upstream.port).busy == 0
    assert len(origin(pool, upstream.port).idle) == 2


async def test_waiting_calls_get_a_connection_in_the_order_they_came(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(delay_s=0.01))
    pool = pools(per_origin=1)

    await asyncio.gather(*(get(pool, upstream.port, f"/{n}") for n in range(4)))

    lines = [request.split(b" ")[1] for request in upstream.requests]
    assert lines == [b"/0", b"/1", b"/2", b"/3"]


async def test_a_waiter_whose_deadline_passes_raises_timeout_and_keeps_no_slot(
    upstreams: Upstreams, pools: Pools
) -> None:
    release = asyncio.Event()

    async def script(conn: Conn) -> None:
        while True:
            request = await conn.request()
            if request.startswith(b"GET /slow "):
                await release.wait()
            await conn.send(ok())

    upstream = await upstreams.start(script)
    pool = pools(per_origin=1)
    slow = asyncio.create_task(get(pool, upstream.port, "/slow"))
    await until(lambda: len(upstream.requests) == 1)

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await get(pool, upstream.port, "/impatient", timeout_s=0.1)
    assert time.monotonic() - started < 1
    assert origin(pool, upstream.port).busy == 1  # still only the slow call's

    release.set()
    assert (await slow).status == 200
    assert (await get(pool, upstream.port, "/after")).status == 200

    assert origin(pool, upstream.port).busy == 0
    assert upstream.connections == 1
    assert [r.split(b" ")[1] for r in upstream.requests] == [b"/slow", b"/after"]


async def test_a_cancelled_waiter_keeps_no_slot(upstreams: Upstreams, pools: Pools) -> None:
    release = asyncio.Event()

    async def script(conn: Conn) -> None:
        while True:
            await conn.request()
            await release.wait()
            await conn.send(ok())

    upstream = await upstreams.start(script)
    pool = pools(per_origin=1)
    holder = asyncio.create_task(get(pool, upstream.port, "/holder"))
    await until(lambda: len(upstream.requests) == 1)
    waiter = asyncio.create_task(get(pool, upstream.port, "/waiter"))
    await until(lambda: len(origin(pool, upstream.port).waiters) == 1)

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await holder

    assert origin(pool, upstream.port).busy == 0
    assert (await get(pool, upstream.port, "/after", timeout_s=1)).status == 200


async def test_a_slot_handed_over_just_as_its_waiter_gives_up_passes_on(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools(per_origin=1)
    await get(pool, upstream.port)
    place = origin(pool, upstream.port)
    place.busy = 1  # a call holds the only slot
    waiter = asyncio.create_task(get(pool, upstream.port, "/waiter"))
    await until(lambda: len(place.waiters) == 1)

    place.release_slot()  # that call ends and hands its slot over ...
    waiter.cancel()  # ... in the same step as the waiter gives up
    with pytest.raises(asyncio.CancelledError):
        await waiter

    assert place.busy == 0
    assert (await get(pool, upstream.port, "/after", timeout_s=1)).status == 200


# -- how answers end -----------------------------------------------------------------------------


async def test_a_chunked_answer_is_reassembled_and_its_connection_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def script(conn: Conn) -> None:
        while True:
            await conn.request()
            await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await asyncio.sleep(0.01)
            await conn.send(b"6;ext=1\r\n world\r\n")
            await asyncio.sleep(0.01)
            await conn.send(b"0\r\n\r\n")

    upstream = await upstreams.start(script)
    pool = pools()

    first = await get(pool, upstream.port)
    second = await get(pool, upstream.port)

    assert first == RawAnswer(200, [(b"transfer-encoding", b"chunked")], b"hello world")
    assert second.body == b"hello world"
    assert upstream.connections == 1


async def test_a_large_answer_in_many_segments_is_complete(
    upstreams: Upstreams, pools: Pools
) -> None:
    body = bytes(range(256)) * 2048  # 512 KiB
    upstream = await upstreams.start(keep_alive(ok(body)))
    pool = pools()

    assert (await get(pool, upstream.port)).body == body


async def test_an_answer_ended_by_closing_the_connection_is_complete_and_not_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npart one, ")
        await asyncio.sleep(0.02)
        await conn.send(b"part two")
        # returning closes the connection: that is the end of the body

    upstream = await upstreams.start(script)
    pool = pools()

    first = await get(pool, upstream.port)
    second = await get(pool, upstream.port)

    assert first == RawAnswer(200, [(b"connection", b"close")], b"part one, part two")
    assert second.body == b"part one, part two"
    assert upstream.connections == 2


async def test_an_http_1_0_answer_without_length_ends_with_the_connection(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n\r\nold school")

    upstream = await upstreams.start(script)
    pool = pools()

    answer = await get(pool, upstream.port)

    assert (answer.status, answer.body) == (200, b"old school")


async def test_a_connection_close_answer_with_length_is_not_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    # The business system says it will close, but keeps the connection open: the pool must not
    # send another request on it.
    upstream = await upstreams.start(keep_alive(ok(extra=b"connection: close\r\n")))
    pool = pools()

    await get(pool, upstream.port)
    await ended(upstream.conns[0])
    await get(pool, upstream.port)

    assert upstream.connections == 2
    assert len(upstream.requests) == 2


async def test_an_http_1_0_answer_without_keep_alive_is_not_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(b"HTTP/1.0 200 OK\r\ncontent-length: 2\r\n\r\nok"))
    pool = pools()

    await get(pool, upstream.port)
    await get(pool, upstream.port)

    assert upstream.connections == 2


async def test_a_204_answer_without_length_completes_and_is_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"))
    pool = pools()

    first = await get(pool, upstream.port, timeout_s=1)
    await get(pool, upstream.port, timeout_s=1)

    assert first == RawAnswer(204, [(b"x-a", b"1")], b"")
    assert upstream.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\ncontent-type: text/plain\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n",
    ],
    ids=["content-length", "chunked"],
)
async def test_an_answer_to_head_completes_without_a_body_and_is_not_reused(
    upstreams: Upstreams, pools: Pools, answer: bytes
) -> None:
    upstream = await upstreams.start(keep_alive(answer))
    pool = pools()

    started = time.monotonic()
    head = await get(pool, upstream.port, method="HEAD")
    assert time.monotonic() - started < 1  # not waiting for the announced body
    await ended(upstream.conns[0])  # dropped: llhttp still expects that body
    after = await get(pool, upstream.port, method="HEAD")

    assert head.status == 200
    assert head.body == b""
    assert (b"content-type", b"text/plain") in head.headers
    assert after.status == 200
    assert upstream.connections == 2


@pytest.mark.parametrize("split", [False, True], ids=["one-segment", "two-segments"])
async def test_an_interim_100_continue_is_skipped_for_the_real_answer(
    upstreams: Upstreams, pools: Pools, split: bool
) -> None:
    interim = b"HTTP/1.1 100 Continue\r\nx-interim: 1\r\n\r\n"
    final = ok(b"created", status="201 Created")

    async def script(conn: Conn) -> None:
        while True:
            await conn.request()
            if split:
                await conn.send(interim)
                await asyncio.sleep(0.02)
                await conn.send(final)
            else:
                await conn.send(interim + final)

    upstream = await upstreams.start(script)
    pool = pools()
    head = "POST /x HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: 2\r\n"

    answer = await pool.request(HOST, upstream.port, head, b"{}", deadline=soon(), method="POST")
    again = await get(pool, upstream.port)

    assert answer == RawAnswer(201, [(b"content-length", b"7")], b"created")
    assert again.status == 201
    assert upstream.connections == 1


async def test_early_hints_before_an_answer_to_head_are_skipped(
    upstreams: Upstreams, pools: Pools
) -> None:
    answer = b"HTTP/1.1 103 Early Hints\r\nlink: </a.css>\r\n\r\n" + ok(b"", extra=b"x-b: 2\r\n")
    upstream = await upstreams.start(keep_alive(answer))
    pool = pools()

    head = await get(pool, upstream.port, method="HEAD", timeout_s=1)

    assert head == RawAnswer(200, [(b"content-length", b"0"), (b"x-b", b"2")], b"")


# -- answers the pool refuses --------------------------------------------------------------------


@pytest.mark.parametrize(
    "answer",
    [
        ok(b"x" * 101),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3c\r\n"
        + b"x" * 60
        + b"\r\n3c\r\n"
        + b"x" * 60
        + b"\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\n" + b"x" * 150,
    ],
    ids=["content-length", "chunked", "until-close"],
)
async def test_an_answer_over_the_limit_raises_answer_too_large_and_drops_the_connection(
    upstreams: Upstreams, pools: Pools, answer: bytes
) -> None:
    async def first(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer)
        await conn.until_gone()

    upstream = await upstreams.start(first_then_fine(first))
    pool = pools(max_answer_bytes=100)

    with pytest.raises(AnswerTooLarge):
        await get(pool, upstream.port)
    await ended(upstream.conns[0])

    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"
    assert upstream.connections == 2


async def test_an_answer_of_exactly_the_limit_is_accepted_and_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(ok(b"x" * 100)))
    pool = pools(max_answer_bytes=100)

    assert len((await get(pool, upstream.port)).body) == 100
    assert len((await get(pool, upstream.port)).body) == 100
    assert upstream.connections == 1


@pytest.mark.parametrize(
    "answer",
    [
        b"garbage\r\n\r\n",
        b"HTTP/1.1 abc OK\r\ncontent-length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: lots\r\n\r\n",
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nabc",
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        b"HTTP/1.1 200 OK\r\nbad header\r\n\r\n",
    ],
    ids=["not-http", "status", "length", "two-lengths", "chunk-size", "header-line"],
)
async def test_invalid_http_raises_bad_answer_and_drops_the_connection(
    upstreams: Upstreams, pools: Pools, answer: bytes
) -> None:
    async def first(conn: Conn) -> None:
        await conn.request()
        await conn.send(answer)
        await conn.until_gone()

    upstream = await upstreams.start(first_then_fine(first))
    pool = pools()

    with pytest.raises(BadAnswer):
        await get(pool, upstream.port)
    await ended(upstream.conns[0])

    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"


# -- connections that break ----------------------------------------------------------------------


async def _close_at_once(conn: Conn) -> None:
    pass


async def _close_after_the_request(conn: Conn) -> None:
    await conn.request()


async def _close_inside_the_head(conn: Conn) -> None:
    await conn.request()
    await conn.send(b"HTTP/1.1 200 OK\r\ncontent-le")


async def _close_inside_a_sized_body(conn: Conn) -> None:
    await conn.request()
    await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")


async def _close_inside_a_chunked_body(conn: Conn) -> None:
    await conn.request()
    await conn.send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")


async def _reset_inside_a_sized_body(conn: Conn) -> None:
    await conn.request()
    await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nhalf.")
    await asyncio.sleep(0.02)
    conn.reset()


@pytest.mark.parametrize(
    "first",
    [
        _close_at_once,
        _close_after_the_request,
        _close_inside_the_head,
        _close_inside_a_sized_body,
        _close_inside_a_chunked_body,
        _reset_inside_a_sized_body,
    ],
    ids=lambda script: script.__name__.strip("_"),
)
async def test_a_connection_closed_before_the_whole_answer_raises_connection_broken(
    upstreams: Upstreams, pools: Pools, first: Script
) -> None:
    upstream = await upstreams.start(first_then_fine(first))
    pool = pools()

    with pytest.raises(ConnectionBroken):
        await get(pool, upstream.port)

    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"
    assert origin(pool, upstream.port).busy == 0


async def test_nothing_listening_raises_connect_failed(pools: Pools) -> None:
    pool = pools()

    with pytest.raises(ConnectFailed):
        await get(pool, closed_port())


async def test_failed_connects_keep_no_slot(upstreams: Upstreams, pools: Pools) -> None:
    # Bound but not listening: connections are refused until the business system starts.
    sock = socket.socket()
    sock.bind((HOST, 0))
    port = sock.getsockname()[1]
    pool = pools(per_origin=1)

    for _ in range(3):
        with pytest.raises(ConnectFailed):
            await get(pool, port, timeout_s=1)
    await upstreams.start(keep_alive(), sock=sock)

    assert (await get(pool, port, timeout_s=1)).status == 200
    assert origin(pool, port).busy == 0


async def test_a_silent_business_system_raises_timeout_and_its_connection_is_aborted(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.until_gone()

    upstream = await upstreams.start(first_then_fine(silent))
    pool = pools()

    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await get(pool, upstream.port, timeout_s=0.2)
    assert 0.15 < time.monotonic() - started < 1
    await ended(upstream.conns[0])

    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"
    assert upstream.connections == 2


async def test_a_deadline_passing_mid_answer_raises_timeout(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def trickle(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n")
        for _ in range(100):
            await conn.send(b"x")
            await asyncio.sleep(0.01)

    upstream = await upstreams.start(first_then_fine(trickle))
    pool = pools()

    with pytest.raises(TimeoutError):
        await get(pool, upstream.port, timeout_s=0.2)
    await ended(upstream.conns[0])

    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"


async def test_a_cancelled_call_aborts_its_connection_and_frees_its_slot(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.until_gone()

    upstream = await upstreams.start(first_then_fine(silent))
    pool = pools()
    call = asyncio.create_task(get(pool, upstream.port))
    await until(lambda: len(upstream.requests) == 1)

    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await ended(upstream.conns[0])

    assert origin(pool, upstream.port).busy == 0
    assert origin(pool, upstream.port).idle == []
    assert (await get(pool, upstream.port, timeout_s=1)).body == b"ok"
    assert upstream.connections == 2


# -- idle connections ----------------------------------------------------------------------------


async def test_a_connection_the_business_system_closed_while_idle_is_not_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def one_call(conn: Conn) -> None:
        await conn.request()
        await conn.send(ok())  # keep-alive, then closes anyway (an idle timeout of its own)

    upstream = await upstreams.start(one_call)
    pool = pools()

    await get(pool, upstream.port)
    await until(lambda: origin(pool, upstream.port).idle == [])  # the FIN arrived
    second = await get(pool, upstream.port, timeout_s=1)

    assert second.body == b"ok"
    assert upstream.connections == 2


async def test_idle_connections_older_than_the_idle_timeout_are_not_reused(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools(idle_timeout_s=0.2)

    await get(pool, upstream.port)
    await asyncio.sleep(0.05)
    await get(pool, upstream.port)
    assert upstream.connections == 1  # younger than the timeout: reused

    await asyncio.sleep(0.3)
    await get(pool, upstream.port)

    assert upstream.connections == 2
    await ended(upstream.conns[0])  # the stale one was closed, not left open


async def test_unsolicited_bytes_on_an_idle_connection_drop_it(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def chatty(conn: Conn) -> None:
        await conn.request()
        await conn.send(ok())
        await asyncio.sleep(0.02)
        await conn.send(ok(b"nobody asked"))
        await conn.until_gone()

    upstream = await upstreams.start(first_then_fine(chatty))
    pool = pools()

    await get(pool, upstream.port)
    await ended(upstream.conns[0])
    assert origin(pool, upstream.port).idle == []
    second = await get(pool, upstream.port, timeout_s=1)

    assert second.body == b"ok"
    assert upstream.connections == 2


async def test_close_closes_idle_connections_and_refuses_later_calls(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive())
    pool = pools(per_origin=4)
    await asyncio.gather(*(get(pool, upstream.port) for _ in range(3)))
    assert len(origin(pool, upstream.port).idle) == 3

    await pool.close()
    for conn in upstream.conns:
        await ended(conn)

    with pytest.raises(ConnectFailed):
        await get(pool, upstream.port)
    assert upstream.connections == 3
    assert origin(pool, upstream.port).idle == []


async def test_a_call_in_flight_during_close_ends_and_its_connection_is_closed(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(delay_s=0.05))
    pool = pools()
    call = asyncio.create_task(get(pool, upstream.port))
    await until(lambda: len(upstream.requests) == 1)

    await pool.close()

    assert (await call).body == b"ok"
    await ended(upstream.conns[0])
    assert origin(pool, upstream.port).idle == []


# -- edge cases these tests found (fixed) ------------------------------------------------


async def test_bytes_after_a_complete_answer_never_become_the_next_calls_answer(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        # One write: the answer, then the start of a second answer nobody asked for.
        await conn.send(ok(b"a") + b"HTTP/1.1 299 Stale\r\ncontent-length: 10\r\n\r\nstale")
        while True:
            await conn.request()
            await conn.send(ok(b"fresh", status="201 Created"))

    upstream = await upstreams.start(script)
    pool = pools()

    first = await get(pool, upstream.port, timeout_s=1)
    second = await get(pool, upstream.port, timeout_s=1)

    assert (first.status, first.body) == (200, b"a")
    # The connection that talked out of turn is dropped: the next call opens a new one (whose
    # script starts over) and never sees the stale bytes.
    assert (second.status, second.body) == (200, b"a")
    assert upstream.connections == 2


async def test_a_second_answer_in_the_same_segment_adds_no_headers_to_the_first(
    upstreams: Upstreams, pools: Pools
) -> None:
    upstream = await upstreams.start(keep_alive(ok(b"a") + ok(b"b", extra=b"x-extra: 1\r\n")))
    pool = pools()

    first = await get(pool, upstream.port, timeout_s=1)

    # Today: [(b'content-length', b'1'), (b'x-extra', b'1'), (b'content-length', b'1')]
    assert first.headers == [(b"content-length", b"1")]


async def test_a_reset_inside_an_answer_ended_by_close_raises_connection_broken(
    upstreams: Upstreams, pools: Pools
) -> None:
    async def script(conn: Conn) -> None:
        await conn.request()
        await conn.send(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\npartial")
        await asyncio.sleep(0.02)
        conn.reset()

    upstream = await upstreams.start(script)
    pool = pools()

    # Today: RawAnswer(status=200, headers=[(b'connection', b'close')], body=b'partial')
    with pytest.raises(ConnectionBroken):
        await get(pool, upstream.port, timeout_s=1)


async def test_an_unasked_protocol_switch_raises_bad_answer(
    upstreams: Upstreams, pools: Pools
) -> None:
    answer = (
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
    )
    upstream = await upstreams.start(keep_alive(answer))
    pool = pools()

    with pytest.raises(BadAnswer):
        await get(pool, upstream.port, timeout_s=1)


async def test_trailer_fields_are_not_answer_headers(upstreams: Upstreams, pools: Pools) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-checksum\r\n\r\n"
        b"5\r\nhello\r\n0\r\nx-checksum: abc\r\n\r\n"
    )
    upstream = await upstreams.start(keep_alive(answer))
    pool = pools()

    first = await get(pool, upstream.port, timeout_s=1)

    assert first.body == b"hello"
    # Today the list ends with (b'x-checksum', b'abc').
    assert first.headers == [(b"transfer-encoding", b"chunked"), (b"trailer", b"x-checksum")]


async def test_a_connect_outlasting_the_deadline_raises_timeout(pools: Pools) -> None:
    pool = pools()
    # Today: ConnectFailed('cannot connect to 127.0.0.1:<port>: ')
    with unanswered_port() as port, pytest.raises(TimeoutError):
        await get(pool, port, timeout_s=0.2)


async def test_a_connect_outlasting_the_deadline_ends_at_the_deadline(pools: Pools) -> None:
    # What does hold today: the call ends on time, and keeps no slot.
    pool = pools(per_origin=1)
    with unanswered_port() as port:
        started = time.monotonic()
        with pytest.raises((TimeoutError, ConnectFailed)):
            await get(pool, port, timeout_s=0.2)
        assert time.monotonic() - started < 1
        assert origin(pool, port).busy == 0


# -- the dispatcher over the pool ----------------------------------------------------------------


@dataclass
class Instances:
    """Discovery stand-in: fixed instances, real outlier detection, reports kept in order."""

    listed: list[InstanceInfo]
    outlier: OutlierDetector = field(
        default_factory=lambda: OutlierDetector(consecutive_failures=3)
    )
    reports: list[tuple[str, bool]] = field(default_factory=list)

    def instances(self, service: str) -> list[InstanceInfo]:
        return list(self.listed) if service == "svc" else []

    def report(self, instance_id: str, *, ok: bool) -> None:
        self.reports.append((instance_id, ok))
        if ok:
            self.outlier.record_success(instance_id)
        else:
            self.outlier.record_failure(instance_id)


def instance(instance_id: str, port: int) -> InstanceInfo:
    return InstanceInfo(instance_id, "svc", HOST, port, 100, None, {}, True)


def outbound(
    method: str = "GET", *, idempotent: bool, body: bytes = b"", timeout_s: float = GUARD_S
) -> Outbound:
    return Outbound(
        method=method,
        target="/api/v1/bills?month=2024-05",
        headers=[("accept", "application/json")],
        body=body,
        service="svc",
        balancer="round_robin",  # equal weights: i1 first, then i2 on the retry
        balance_key=None,
        idempotent=idempotent,
        timeout_s=timeout_s,
        interface="bills",
    )


@pytest.fixture
async def dispatcher() -> AsyncIterator[Dispatcher]:
    subject = Dispatcher()
    yield subject
    await subject.close()


async def test_a_payment_refused_by_the_first_instance_is_sent_to_the_second(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    second = await upstreams.start(keep_alive(ok(b"paid")))
    source = Instances([instance("i1", closed_port()), instance("i2", second.port)])
    dispatcher.source = source

    answer = await dispatcher.call(outbound("POST", idempotent=False, body=b'{"amount":1}'))

    assert (answer.status, answer.body, answer.instance) == (200, b"paid", "i2")
    assert source.reports == [("i1", False), ("i2", True)]
    assert second.requests == [
        b"POST /api/v1/bills?month=2024-05 HTTP/1.1\r\naccept: application/json\r\n"
        b"content-length: 12\r\n"
        + f"host: 127.0.0.1:{second.port}\r\n\r\n".encode()
        + b'{"amount":1}'
    ]


@pytest.mark.parametrize(
    "first",
    [_close_after_the_request, _close_inside_a_sized_body, _reset_inside_a_sized_body],
    ids=lambda script: script.__name__.strip("_"),
)
async def test_a_payment_that_reached_the_first_instance_is_never_sent_again(
    upstreams: Upstreams, dispatcher: Dispatcher, first: Script
) -> None:
    broken = await upstreams.start(first)
    second = await upstreams.start(keep_alive())
    source = Instances([instance("i1", broken.port), instance("i2", second.port)])
    dispatcher.source = source

    with pytest.raises(UpstreamUnavailable):
        await dispatcher.call(outbound("POST", idempotent=False, body=b'{"amount":1}'))

    assert len(broken.requests) == 1
    assert second.connections == 0
    assert source.reports == [("i1", False)]


async def test_a_payment_given_invalid_http_is_not_sent_again(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    broken = await upstreams.start(keep_alive(b"nonsense\r\n\r\n"))
    second = await upstreams.start(keep_alive())
    dispatcher.source = Instances([instance("i1", broken.port), instance("i2", second.port)])

    with pytest.raises(UpstreamUnavailable):
        await dispatcher.call(outbound("POST", idempotent=False, body=b"{}"))

    assert second.connections == 0


async def test_an_idempotent_call_answered_5xx_is_retried_on_another_instance(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    failing = await upstreams.start(keep_alive(ok(b"down", status="503 Service Unavailable")))
    second = await upstreams.start(keep_alive(ok(b"bills")))
    source = Instances([instance("i1", failing.port), instance("i2", second.port)])
    dispatcher.source = source

    answer = await dispatcher.call(outbound(idempotent=True))

    assert (answer.status, answer.body, answer.instance) == (200, b"bills", "i2")
    assert source.reports == [("i1", False), ("i2", True)]
    assert len(failing.requests) == len(second.requests) == 1


async def test_an_idempotent_call_whose_connection_broke_is_retried_on_another_instance(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    broken = await upstreams.start(_close_inside_a_sized_body)
    second = await upstreams.start(keep_alive(ok(b"bills")))
    dispatcher.source = Instances([instance("i1", broken.port), instance("i2", second.port)])

    answer = await dispatcher.call(outbound(idempotent=True))

    assert (answer.status, answer.instance) == (200, "i2")


async def test_a_non_idempotent_call_answered_5xx_is_not_retried(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    failing = await upstreams.start(keep_alive(ok(b"down", status="500 Internal Server Error")))
    second = await upstreams.start(keep_alive())
    dispatcher.source = Instances([instance("i1", failing.port), instance("i2", second.port)])

    answer = await dispatcher.call(outbound("POST", idempotent=False))

    assert (answer.status, answer.instance) == (500, "i1")
    assert second.connections == 0


async def test_a_silent_instance_raises_upstream_timeout_without_retry(
    upstreams: Upstreams, dispatcher: Dispatcher
) -> None:
    async def silent(conn: Conn) -> None:
        await conn.request()
        await conn.until_gone()

    quiet = await upstreams.start(silent)
    second = await upstreams.start(keep_alive())
    source = Instances([instance("i1", quiet.port), instance("i2", second.port)])
    dispatcher.source = source

    with pytest.raises(UpstreamTimeout):
        await dispatcher.call(outbound(idempotent=True, timeout_s=0.2))

    assert second.connections == 0
    assert source.reports == [("i1", False)]


async def test_a_connect_outlasting_the_timeout_raises_upstream_timeout(
    dispatcher: Dispatcher,
) -> None:
    with unanswered_port() as port:
        dispatcher.source = Instances([instance("i1", port)])
        with pytest.raises(UpstreamTimeout):
            await dispatcher.call(outbound(idempotent=False, timeout_s=0.2))


@pytest.mark.parametrize(
    "framing",
    [
        b"transfer-encoding: chunked\r\n\r\n4\r\ndata\r\n0\r\n\r\n",
        b"content-length: 4\r\n\r\ndata",
    ],
    ids=["chunked", "content-length"],
)
async def test_hop_by_hop_answer_headers_and_the_trace_id_are_not_passed_on(
    upstreams: Upstreams, dispatcher: Dispatcher, framing: bytes
) -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Trace-Id: from-the-business-system\r\n"
        b"Content-Type: application/json\r\n"
        b"X-Custom: v\r\n" + framing
    )
    upstream = await upstreams.start(keep_alive(answer))
    dispatcher.source = Instances([instance("i1", upstream.port)])

    result = await dispatcher.call(outbound(idempotent=True))

    assert result.body == b"data"
    assert result.headers == [("content-type", "application/json"), ("x-custom", "v")]

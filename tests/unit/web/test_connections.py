"""Connection caps and deadlines on uvicorn listeners; fitting caps to the descriptor limit."""

from __future__ import annotations

import asyncio
import contextlib
import resource
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import pytest
import uvicorn
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.requests import Request as StarletteRequest
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from gridgate.server import _QuietServer
from gridgate.web.connections import (
    DEMO_CAP,
    METRICS,
    MIN_CAP,
    ConnectionBudget,
    ConnectionGuard,
    ConnectionPolicy,
    raise_descriptor_limit,
)
from gridgate.web.uvicorn_protocol import guarded_protocol
from tests.conftest import make_settings
from tests.support.wire import GUARD_S, read_answer, read_refusal, read_rest, request, until

Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter


async def _hello(request: StarletteRequest) -> PlainTextResponse:
    return PlainTextResponse(f"hello {request.url.path}")


APP = Starlette(routes=[Route("/{path:path}", _hello, methods=["GET", "POST"])])


@dataclass
class Uvicorn:
    guard: ConnectionGuard
    server: _QuietServer
    port: int
    writers: list[Writer] = field(default_factory=list)

    async def connect(self, local: str | None = None) -> tuple[Reader, Writer]:
        local_addr = (local, 0) if local else None
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", self.port, local_addr=local_addr
        )
        self.writers.append(writer)
        return reader, writer

    async def ask(self, path: str, local: str | None = None) -> tuple[Reader, Writer]:
        """A new kept-alive connection that asked for ``path`` and got 200."""
        reader, writer = await self.connect(local)
        writer.write(request(path))
        answer = await read_answer(reader)
        assert (answer.status, answer.body) == (200, f"hello {path}".encode())
        return reader, writer

    def sweep_later(self, seconds: float) -> None:
        """Run the guard's sweep as if ``seconds`` had passed."""
        self.guard.sweep(asyncio.get_running_loop().time() + seconds)


Start = Callable[[str, ConnectionPolicy], Awaitable[Uvicorn]]


@pytest.fixture
async def start() -> AsyncIterator[Start]:
    """Starts uvicorn listeners under a guard, as ``gridgate.server.serve`` does."""
    running: list[tuple[Uvicorn, asyncio.Task[None]]] = []

    async def run(name: str, policy: ConnectionPolicy) -> Uvicorn:
        guard = ConnectionGuard(name, policy)
        config = uvicorn.Config(
            APP,
            http=guarded_protocol(guard),
            lifespan="off",
            log_config=None,
            access_log=False,
            timeout_keep_alive=GUARD_S,
        )
        server = _QuietServer(config, guard)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await until(lambda: server.started)
        served = Uvicorn(guard, server, sock.getsockname()[1])
        running.append((served, task))
        return served

    yield run
    for served, task in running:
        for writer in served.writers:
            writer.close()
        served.server.should_exit = True
        await asyncio.wait_for(task, GUARD_S)


# -- uvicorn listeners ---------------------------------------------------------------------------


async def test_uvicorn_refuses_connections_over_its_caps(start: Start) -> None:
    served = await start(
        "uv-caps", ConnectionPolicy(max_connections=3, max_per_address=2, exempt=frozenset())
    )
    first = await served.ask("/a", local="127.0.0.2")
    await served.ask("/b", local="127.0.0.2")
    refused, _ = await served.connect(local="127.0.0.2")
    await read_refusal(refused)
    await served.ask("/c", local="127.0.0.3")
    full, _ = await served.connect(local="127.0.0.4")
    await read_refusal(full)
    # uvicorn never saw the refused connections; the kept ones still serve.
    assert len(served.server.server_state.connections) == len(served.guard.open) == 3
    reader, writer = first
    writer.write(request("/again"))
    assert (await read_answer(reader)).body == b"hello /again"
    assert METRICS.refused[("uv-caps", "address_full")] == 1
    assert METRICS.refused[("uv-caps", "listener_full")] == 1
    text = generate_latest().decode()
    assert 'gridgate_connections_refused_total{listener="uv-caps",reason="listener_full"} 1.0' in (
        text
    )
    assert 'gridgate_connections_open{listener="uv-caps"} 3.0' in text
    assert 'gridgate_connections_max{listener="uv-caps"} 3.0' in text
    writer.close()
    await until(lambda: len(served.guard.open) == 2)
    await served.ask("/freed", local="127.0.0.4")


async def test_uvicorn_closes_a_connection_that_sends_nothing(start: Start) -> None:
    served = await start("uv-first-byte", ConnectionPolicy(first_byte_s=1.0))
    used, writer = await served.ask("/used")
    began = time.monotonic()
    silent, _ = await served.connect()
    # Swept once a second by the server's tick: uvicorn alone never closes it.
    assert await read_rest(silent) == b""
    assert time.monotonic() - began >= 1.0
    assert METRICS.timed_out[("uv-first-byte", "first_byte")] == 1
    writer.write(request("/kept"))
    assert (await read_answer(used)).body == b"hello /kept"


async def test_uvicorn_answers_408_to_a_head_that_does_not_end(start: Start) -> None:
    served = await start("uv-head", ConnectionPolicy(head_s=1.0))
    reader, writer = await served.connect()
    writer.write(b"GET /slow HTTP/1.1\r\nHost: test\r\n")
    await until(lambda: any(c.head_since is not None for c in served.guard.open))  # type: ignore[attr-defined]
    served.sweep_later(0.5)
    kept, kept_writer = await served.ask("/kept")  # not yet: the head may still come
    served.sweep_later(2.0)
    answer = await read_answer(reader)
    assert (answer.status, answer.header("connection")) == (408, "close")
    assert answer.problem()["code"] == "request.timeout"
    assert await read_rest(reader) == b""
    assert METRICS.timed_out[("uv-head", "head")] == 1
    kept_writer.write(request("/after"))  # an idle keep-alive is not a slow head
    assert (await read_answer(kept)).body == b"hello /after"


async def test_uvicorn_shortens_idle_keep_alive_under_pressure(start: Start) -> None:
    served = await start(
        "uv-pressure", ConnectionPolicy(max_connections=4, pressure_keep_alive_s=1.0)
    )
    idle = [await served.ask(f"/{index}") for index in range(3)]
    served.sweep_later(2.0)  # 3 of 4 is not above 3/4: uvicorn's keep-alive applies
    for index, (reader, writer) in enumerate(idle):
        writer.write(request(f"/again{index}"))
        assert (await read_answer(reader)).status == 200
    idle.append(await served.ask("/fourth"))
    assert served.guard.under_pressure
    served.sweep_later(0.5)
    assert len(served.guard.open) == 4
    served.sweep_later(2.0)
    for reader, _ in idle:
        assert await read_rest(reader) == b""
    assert METRICS.timed_out[("uv-pressure", "idle_under_pressure")] == 4


async def test_a_slow_answer_is_not_idleness(start: Start) -> None:
    async def slow(_request: StarletteRequest) -> PlainTextResponse:
        await asyncio.sleep(0.5)
        return PlainTextResponse("late")

    APP.router.routes.insert(0, Route("/slow", slow))
    try:
        served = await start(
            "uv-slow",
            ConnectionPolicy(
                max_connections=1, first_byte_s=0.1, head_s=0.1, pressure_keep_alive_s=0.1
            ),
        )
        reader, writer = await served.connect()
        writer.write(request("/slow"))
        await until(lambda: any(c.cycle is not None for c in served.guard.open))  # type: ignore[attr-defined]
        served.sweep_later(5.0)
        assert (await read_answer(reader)).body == b"late"
    finally:
        APP.router.routes.pop(0)


class FakeTransport:
    def __init__(self, peer: tuple[str, int, int, int]) -> None:
        self.peer = peer
        self.written = b""
        self.closed = False

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default

    def write(self, data: bytes) -> None:
        self.written += data

    def close(self) -> None:
        self.closed = True


class FakeConnection:
    def sweep(self, now: float) -> None:
        pass


def test_an_ipv6_client_is_counted_by_its_64_prefix() -> None:
    guard = ConnectionGuard("v6-test", ConnectionPolicy(max_per_address=2))
    for peer in ("2001:db8:1:2::1", "2001:db8:1:2:ffff::9"):
        assert guard.admit(FakeConnection(), FakeTransport((peer, 1, 0, 0)))
    same_64 = FakeTransport(("2001:db8:1:2:abcd::1", 1, 0, 0))
    assert not guard.admit(FakeConnection(), same_64)
    assert same_64.closed and same_64.written.startswith(b"HTTP/1.1 503 Service Unavailable\r\n")
    assert guard.admit(FakeConnection(), FakeTransport(("2001:db8:1:3::1", 1, 0, 0)))
    # An IPv4 client on a dual-stack listener is counted as its IPv4 address.
    mapped = FakeConnection()
    assert guard.admit(mapped, FakeTransport(("::ffff:192.0.2.7", 1, 0, 0)))
    assert guard.by_address == {"2001:db8:1:2::/64": 2, "2001:db8:1:3::/64": 1, "192.0.2.7": 1}
    guard.release(mapped)
    assert "192.0.2.7" not in guard.by_address


# -- fitting caps to the descriptors -------------------------------------------------------------

BUDGET = ConnectionBudget(
    gateway=ConnectionPolicy(max_connections=16_384, max_per_address=256),
    admin=ConnectionPolicy(max_connections=256, max_per_address=64),
    internal=ConnectionPolicy(max_connections=1024, max_per_address=512),
    reserve=4096,
)


def test_caps_that_fit_are_kept() -> None:
    names = ["gateway", "admin", "registry", "accounts"]
    assert BUDGET.fit(names, 1_048_576) == [BUDGET.gateway, BUDGET.admin, *[BUDGET.internal] * 2]


def test_caps_are_lowered_by_one_factor_to_leave_the_reserve() -> None:
    names = ["gateway", "admin", "registry", "demo-billing", "demo-billing"]
    descriptors = 20_000
    fitted = BUDGET.fit(names, descriptors)
    caps = [policy.max_connections or 0 for policy in fitted]
    assert sum(caps) + len(names) <= descriptors - BUDGET.reserve
    assert sum(caps) + len(names) > descriptors - BUDGET.reserve - len(names)  # not lowered more
    gateway, admin, registry, demo, again = caps
    assert gateway / 16_384 == pytest.approx(admin / 256, rel=0.01)
    assert demo == again  # each instance counts: two demo-billing listeners
    assert registry / 1024 == pytest.approx(demo / 256, rel=0.01)  # demo systems want 256
    assert gateway > registry > admin
    for policy in fitted:
        assert policy.max_per_address is not None
        assert policy.max_connections is not None
        assert policy.max_per_address <= policy.max_connections


def test_with_few_descriptors_half_are_kept_free_and_no_cap_falls_below_the_floor() -> None:
    fitted = BUDGET.fit(["gateway", "admin", "registry"], 1024)
    caps = [policy.max_connections or 0 for policy in fitted]
    gateway, admin, registry = caps
    assert admin == MIN_CAP  # 256 x 509/17664 would be 7
    assert registry == 1024 * 509 // 17_664
    assert gateway == 16_384 * 509 // 17_664
    # Half of the descriptors stay free (but for what the floor adds).
    assert sum(caps) + 3 <= 512 + MIN_CAP


def test_budget_follows_the_settings(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        gateway_max_connections=100,
        gateway_max_connections_per_address=7,
        admin_max_connections=50,
        internal_max_connections=60,
        gateway_trusted_proxies="10.0.0.1",
        connection_first_byte_timeout_s=3,
        request_head_timeout_s=4,
        keep_alive_under_pressure_s=2,
    )
    budget = ConnectionBudget.from_settings(settings)
    expected = ConnectionPolicy(
        max_connections=100,
        max_per_address=7,
        exempt=frozenset({"10.0.0.1"}),
        first_byte_s=3,
        head_s=4,
        pressure_keep_alive_s=2,
    )
    assert budget.wanted("gateway") == expected
    assert budget.wanted("admin") == replace(expected, max_connections=50, max_per_address=64)
    assert budget.wanted("registry") == replace(expected, max_connections=60, max_per_address=512)
    assert budget.wanted("demo-notices") == replace(
        expected, max_connections=60, max_per_address=60
    )
    defaults = ConnectionBudget.from_settings(make_settings(tmp_path))
    assert defaults.wanted("demo-billing").max_connections == DEMO_CAP
    assert defaults.wanted("registry").max_connections == 1024
    assert not defaults.warn_when_lowered  # development: a small limit is normal


@pytest.fixture
def low_soft_limit() -> Iterator[int]:
    """The soft descriptor limit lowered to 512 (restored after the test)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard <= 512:
        pytest.skip("the hard limit leaves nothing to raise")
    resource.setrlimit(resource.RLIMIT_NOFILE, (512, hard))
    try:
        yield hard
    finally:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_the_soft_descriptor_limit_is_raised_to_the_hard_limit(low_soft_limit: int) -> None:
    soft, hard = raise_descriptor_limit()
    assert hard == low_soft_limit
    assert resource.getrlimit(resource.RLIMIT_NOFILE) == (soft, hard)
    assert soft == hard or (hard == resource.RLIM_INFINITY and soft > 512)
    # A second call changes nothing.
    assert raise_descriptor_limit() == (soft, hard)

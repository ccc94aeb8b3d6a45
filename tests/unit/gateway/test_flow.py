"""Flow control: the FIFO concurrency gate, gates per interface, rate limits on memory and Redis."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack

import pytest
from redis.asyncio import Redis

from gridgate.errors import Overloaded, RateLimited
from gridgate.gateway.flow import ConcurrencyGate, Gates, RateLimiter, limits_uri
from tests.support.redis import RedisServer

#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 10


async def until(condition: Callable[[], bool]) -> None:
    """Let other tasks run until ``condition`` holds (or fail after GUARD_S)."""
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await asyncio.sleep(0)


class Line:
    """Tasks that take a slot of a gate in the order started, each holding it until told."""

    def __init__(self, gate: ConcurrencyGate) -> None:
        self.gate = gate
        self.order: list[str] = []
        self.done = asyncio.Event()  # holders leave once this is set
        self.tasks: dict[str, asyncio.Task[None]] = {}

    async def _hold(self, name: str) -> None:
        async with self.gate.slot():
            self.order.append(name)
            await self.done.wait()

    async def join(self, name: str) -> asyncio.Task[None]:
        """Start ``name`` and return once it holds a slot or waits in line."""
        before = (self.gate.running, self.gate.waiting, len(self.order))
        task = self.tasks[name] = asyncio.create_task(self._hold(name))
        await until(lambda: (self.gate.running, self.gate.waiting, len(self.order)) != before)
        return task


def gate(limit: int = 1, max_queue: int = 10, max_wait_s: float = GUARD_S) -> ConcurrencyGate:
    return ConcurrencyGate(limit, max_queue=max_queue, max_wait_s=max_wait_s)


async def test_runs_at_once_below_the_limit() -> None:
    subject = gate(limit=2)
    async with subject.slot() as first, subject.slot() as second:
        assert (first, second) == (0.0, 0.0)
        assert (subject.running, subject.waiting) == (2, 0)
    assert subject.running == 0


async def test_waiters_run_in_the_order_they_came() -> None:
    line = Line(gate(limit=1))
    holder = line.gate.slot()
    await holder.__aenter__()
    for n in range(5):
        await line.join(f"w{n}")
    assert (line.gate.running, line.gate.waiting) == (1, 5)

    await holder.__aexit__(None, None, None)
    line.done.set()
    await asyncio.gather(*line.tasks.values())

    assert line.order == ["w0", "w1", "w2", "w3", "w4"]
    assert (line.gate.running, line.gate.waiting) == (0, 0)


async def test_a_newcomer_never_overtakes_the_line() -> None:
    line = Line(gate(limit=1))
    holder = line.gate.slot()
    await holder.__aenter__()
    await line.join("waiter")

    # The slot passes to the waiter on release, before the waiter even runs again.
    await holder.__aexit__(None, None, None)
    await line.join("newcomer")
    assert (line.gate.running, line.gate.waiting) == (1, 1)
    line.done.set()
    await asyncio.gather(*line.tasks.values())

    assert line.order == ["waiter", "newcomer"]


async def test_a_full_queue_refuses_at_once() -> None:
    line = Line(gate(limit=1, max_queue=2, max_wait_s=3.5))
    for name in ("holder", "w1", "w2"):
        await line.join(name)

    with pytest.raises(Overloaded) as refused:
        async with line.gate.slot():
            pass

    assert refused.value.extra["retry_after"] == 4
    assert refused.value.headers["Retry-After"] == "4"
    assert (line.gate.running, line.gate.waiting) == (1, 2)
    line.done.set()
    await asyncio.gather(*line.tasks.values())


async def test_no_queue_refuses_when_busy() -> None:
    subject = gate(limit=1, max_queue=0)
    async with subject.slot():
        with pytest.raises(Overloaded):
            async with subject.slot():
                pass


async def test_a_wait_past_max_wait_is_refused() -> None:
    subject = gate(limit=1, max_wait_s=0.01)
    async with subject.slot():
        with pytest.raises(Overloaded) as refused:
            async with subject.slot():
                pass
        assert refused.value.headers["Retry-After"] == "1"
        assert (subject.running, subject.waiting) == (1, 0)
    assert subject.running == 0


async def test_a_queued_request_reports_its_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    subject = gate(limit=1)
    loop = asyncio.get_running_loop()
    real_time, skipped = loop.time, [0.0]
    # The loop's clock jumps by 2 s while the request waits, instead of the test sleeping.
    monkeypatch.setattr(loop, "time", lambda: real_time() + skipped[0])
    waited: list[float] = []

    async def wait_in_line() -> None:
        async with subject.slot() as waited_s:
            waited.append(waited_s)

    async with subject.slot() as at_once:
        task = asyncio.create_task(wait_in_line())
        await until(lambda: subject.waiting == 1)
        skipped[0] = 2.0
    await task

    assert at_once == 0.0
    assert waited[0] >= 2.0


async def test_a_cancelled_waiter_leaves_without_leaking_a_slot() -> None:
    line = Line(gate(limit=1))
    await line.join("holder")
    waiter = await line.join("waiter")

    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert (line.gate.running, line.gate.waiting) == (1, 0)
    line.done.set()
    await line.tasks["holder"]

    assert line.gate.running == 0
    async with line.gate.slot() as waited_s:
        assert waited_s == 0.0


async def test_a_waiter_cancelled_as_it_gets_the_slot_passes_it_on() -> None:
    line = Line(gate(limit=1))
    holder = line.gate.slot()
    await holder.__aenter__()
    first = await line.join("first")
    await line.join("second")

    await holder.__aexit__(None, None, None)  # hands the slot to "first" …
    first.cancel()  # … which is cancelled before it could run
    with pytest.raises(asyncio.CancelledError):
        await first
    line.done.set()
    await line.tasks["second"]

    assert line.order == ["second"]
    assert (line.gate.running, line.gate.waiting) == (0, 0)


async def test_raising_the_limit_admits_waiters_at_once() -> None:
    line = Line(gate(limit=1))
    for name in ("holder", "w1", "w2", "w3"):
        await line.join(name)

    line.gate.resize(3, max_queue=10, max_wait_s=GUARD_S)
    await until(lambda: len(line.order) == 3)

    assert line.order == ["holder", "w1", "w2"]
    assert (line.gate.running, line.gate.waiting) == (3, 1)
    line.done.set()
    await asyncio.gather(*line.tasks.values())


async def test_lowering_the_limit_waits_for_holders_to_leave() -> None:
    subject = gate(limit=3)
    async with AsyncExitStack() as holders:
        for _ in range(3):
            await holders.enter_async_context(subject.slot())
        subject.resize(1, max_queue=10, max_wait_s=GUARD_S)
        line = Line(subject)
        await line.join("newcomer")
        assert (subject.running, subject.waiting) == (3, 1)
    # Two of the three leaving made room for none; the third made room for one.
    await until(lambda: line.order == ["newcomer"])
    assert (subject.running, subject.waiting) == (1, 0)
    line.done.set()
    await line.tasks["newcomer"]


@pytest.mark.parametrize(
    ("limit", "max_queue", "max_wait_s"), [(0, 1, 1.0), (1, -1, 1.0), (1, 1, -0.5)]
)
def test_bounds_are_checked(limit: int, max_queue: int, max_wait_s: float) -> None:
    with pytest.raises(ValueError, match="limit"):
        ConcurrencyGate(limit, max_queue=max_queue, max_wait_s=max_wait_s)


async def test_gates_queue_per_key_without_holding_global_slots() -> None:
    gates = Gates(gate(limit=2))
    held = asyncio.Event()
    release = asyncio.Event()

    async def call(key: str, limit: int | None) -> None:
        async with gates.slot(key, limit=limit, max_queue=10, max_wait_s=GUARD_S):
            held.set()
            await release.wait()

    slow = [asyncio.create_task(call("customer.bills", 1)) for _ in range(3)]
    await until(
        lambda: "customer.bills" in gates.gates and gates.gates["customer.bills"].waiting == 2
    )
    assert gates.global_gate is not None
    assert gates.global_gate.running == 1  # the two in line hold no global slot

    async with gates.slot("notices.outages", limit=None, max_queue=0, max_wait_s=0) as waited_s:
        assert waited_s == 0.0
        assert gates.global_gate.running == 2
    assert "notices.outages" not in gates.gates  # no limit, no gate
    release.set()
    await asyncio.gather(*slow)


async def test_gates_apply_a_changed_limit() -> None:
    gates = Gates()
    async with gates.slot("customer.bills", limit=1, max_queue=10, max_wait_s=1):
        pass
    async with gates.slot("customer.bills", limit=5, max_queue=20, max_wait_s=2):
        changed = gates.gates["customer.bills"]
        assert (changed.limit, changed.max_queue, changed.max_wait_s) == (5, 20, 2)


async def test_gates_refuse_when_the_global_gate_is_full() -> None:
    gates = Gates(gate(limit=1, max_queue=0))
    async with gates.slot("a", limit=None, max_queue=0, max_wait_s=0):
        with pytest.raises(Overloaded):
            async with gates.slot("b", limit=5, max_queue=10, max_wait_s=1):
                pass
        assert gates.gates["b"].running == 0  # the key's slot was given back


@pytest.mark.parametrize(
    ("url", "uri"),
    [
        ("memory://", "async+memory://"),
        ("redis://127.0.0.1:6379/6", "async+redis://127.0.0.1:6379/6"),
        ("rediss://:pw@redis.example:6380/0", "async+rediss://:pw@redis.example:6380/0"),
        ("unix:///run/redis.sock?db=2", "async+redis+unix:///run/redis.sock?db=2"),
        ("async+redis://127.0.0.1/1", "async+redis://127.0.0.1/1"),
    ],
)
def test_limits_uri(url: str, uri: str) -> None:
    assert limits_uri(url) == uri


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "postgresql://db/x"])
def test_limits_uri_refuses_other_urls(url: str) -> None:
    with pytest.raises(ValueError, match="URL"):
        limits_uri(url)


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[RateLimiter]:
    """A rate limiter with empty counters on each storage."""
    if request.param == "memory":
        yield RateLimiter()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/6")
    await client.flushdb()
    await client.aclose()
    subject = RateLimiter(f"async+redis://127.0.0.1:{server.port}/6")
    try:
        yield subject
    finally:
        await subject.close()


async def test_the_limit_passes_then_refuses(limiter: RateLimiter) -> None:
    for _ in range(5):
        await limiter.hit("channel:wechat", 5)

    with pytest.raises(RateLimited) as refused:
        await limiter.hit("channel:wechat", 5)

    assert refused.value.extra["retry_after"] >= 1
    assert int(refused.value.headers["Retry-After"]) >= 1


async def test_keys_are_counted_apart(limiter: RateLimiter) -> None:
    await limiter.hit("channel:wechat", 1)
    await limiter.hit("channel:alipay", 1)
    with pytest.raises(RateLimited):
        await limiter.hit("channel:wechat", 1)


async def test_a_burst_passes_at_once_then_the_rate_holds(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.hit("iface:customer.bills", 1, burst=3)

    with pytest.raises(RateLimited) as refused:
        await limiter.hit("iface:customer.bills", 1, burst=3)

    assert 1 <= refused.value.extra["retry_after"] <= 3


@pytest.mark.parametrize(("per_second", "burst"), [(0, None), (5, 4)])
async def test_rate_bounds_are_checked(per_second: int, burst: int | None) -> None:
    with pytest.raises(ValueError, match="per_second"):
        await RateLimiter().hit("k", per_second, burst=burst)


async def test_redis_keys_live_under_the_prefix(redis_server: RedisServer) -> None:
    url = f"redis://127.0.0.1:{redis_server.port}/6"
    client = Redis.from_url(url)
    await client.flushdb()
    subject = RateLimiter(url)
    try:
        await subject.hit("channel:wechat", 10)
        keys = [key async for key in client.scan_iter()]
    finally:
        await subject.close()
        await client.aclose()

    assert keys
    assert all(key.startswith(b"gg:rate:") for key in keys)

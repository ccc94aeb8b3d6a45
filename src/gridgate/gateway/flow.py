"""Flow control (流量控制, R12, R24): concurrency gates with a bounded FIFO wait queue, rate limits.

A :class:`ConcurrencyGate` lets ``limit`` requests run at once; later ones wait in line (R12)
up to ``max_queue`` of them and up to ``max_wait_s`` each, beyond which they are refused with
:class:`~gridgate.errors.Overloaded` — the excess is delayed first and rejected only past the
bound, as nginx's limit-conn and Sentinel's queueing do. A :class:`RateLimiter` holds a key
under N requests per second (R24) and refuses the excess with
:class:`~gridgate.errors.RateLimited`.
"""

from __future__ import annotations

import asyncio
import functools
import math
import time
from collections import OrderedDict, deque
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import StorageError
from limits.storage import storage_from_string
from redis.asyncio import ConnectionPool

from gridgate.errors import Overloaded, RateLimited
from gridgate.gateway.shared_store import UNREACHABLE, unavailable

__all__ = ["ConcurrencyGate", "Gates", "Held", "RateLimiter", "limits_uri"]


class ConcurrencyGate:
    """At most ``limit`` holders at once; others wait in strict FIFO order, within bounds.

    ``async with gate.slot() as waited_s:`` runs the block holding a slot; ``waited_s`` is the
    time spent in the queue. A released slot passes straight to the first waiter, so a
    newcomer never overtakes the line and a release wakes exactly one task.
    """

    def __init__(self, limit: int, *, max_queue: int, max_wait_s: float) -> None:
        self._running = 0
        # Insertion-ordered, with O(1) removal of a waiter that gives up from anywhere in line.
        self._waiters: OrderedDict[asyncio.Future[None], None] = OrderedDict()
        self._limit = self._max_queue = 0
        self._max_wait_s = 0.0
        self.resize(limit, max_queue=max_queue, max_wait_s=max_wait_s)

    @property
    def limit(self) -> int:
        """How many may hold a slot at once."""
        return self._limit

    @property
    def max_queue(self) -> int:
        """How many may wait in line before newcomers are refused."""
        return self._max_queue

    @property
    def max_wait_s(self) -> float:
        """How long a request may wait in line."""
        return self._max_wait_s

    @property
    def running(self) -> int:
        """How many hold a slot now (may exceed ``limit`` for a while after it was lowered)."""
        return self._running

    @property
    def waiting(self) -> int:
        """How many wait in line now."""
        return len(self._waiters)

    @property
    def retry_after(self) -> int:
        """The Retry-After (whole seconds, at least 1) given to a refused request."""
        # A queue no longer than max_wait_s ahead: by then every current waiter has either
        # run or given up, so trying again sooner would likely meet the same line.
        return max(1, math.ceil(self._max_wait_s))

    def resize(self, limit: int, *, max_queue: int, max_wait_s: float) -> None:
        """Change the bounds at runtime; current holders and waiters are never cut short.

        A raised ``limit`` admits waiters at once; a lowered one takes effect as holders
        leave. A lowered ``max_queue`` turns newcomers away until the line is short enough;
        a new ``max_wait_s`` applies to requests that start waiting from now on.
        """
        if limit < 1 or max_queue < 0 or not max_wait_s >= 0:
            raise ValueError("need limit >= 1, max_queue >= 0 and max_wait_s >= 0")
        self._limit, self._max_queue, self._max_wait_s = limit, max_queue, max_wait_s
        while self._running < self._limit and self._wake_first():
            self._running += 1

    def _wake_first(self) -> bool:
        # Hand a slot to the first waiter still waiting; False if there is none.
        while self._waiters:
            waiter, _ = self._waiters.popitem(last=False)
            if not waiter.done():
                waiter.set_result(None)
                return True
        return False

    def _refuse(self, detail: str) -> Overloaded:
        return Overloaded(detail, retry_after=self.retry_after)

    def try_acquire(self) -> bool:
        """Take a slot if one is free and nobody waits (no suspension); True if taken."""
        if self._running < self._limit and not self._waiters:
            self._running += 1
            return True
        return False

    def release(self) -> None:
        """Give back a slot taken with :meth:`try_acquire` or :meth:`acquire`."""
        # Hand the slot over unless the limit was lowered below the holders still running.
        if self._running <= self._limit and self._wake_first():
            return
        self._running -= 1

    async def acquire(self, max_wait_s: float | None = None) -> float:
        """Take a slot, waiting in line if need be; the seconds waited (``max_wait_s``
        overrides the gate's own)."""
        if self.try_acquire():
            return 0.0
        max_wait_s = self._max_wait_s if max_wait_s is None else max_wait_s
        if len(self._waiters) >= self._max_queue or max_wait_s <= 0:
            raise self._refuse("too many requests are waiting")
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters[waiter] = None
        started = loop.time()
        try:
            async with asyncio.timeout(max_wait_s):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return loop.time() - started  # the slot came just as time ran out: use it
            self._waiters.pop(waiter, None)
            raise self._refuse(f"no slot within {max_wait_s:g} s") from None
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self._waiters.pop(waiter, None)
            raise
        return loop.time() - started

    @asynccontextmanager
    async def slot(self, *, max_wait_s: float | None = None) -> AsyncIterator[float]:
        """Hold a slot for the block; yields the seconds waited (``max_wait_s`` overrides)."""
        waited_s = await self.acquire(max_wait_s)
        try:
            yield waited_s
        finally:
            self.release()


class Gates:
    """An optional global gate plus one gate per key (interface), created on first use.

    A request takes its key's gate first, then the global one. Every request takes the two
    in the same order, so no two requests can each hold what the other waits for (no
    deadlock). Key first, so that the line for one slow interface forms in its own gate and
    does not occupy global slots that other interfaces need. The wait in both together stays
    within the key's ``max_wait_s``.
    """

    def __init__(self, global_gate: ConcurrencyGate | None = None) -> None:
        self._global = global_gate
        self._gates: dict[str, ConcurrencyGate] = {}

    @property
    def global_gate(self) -> ConcurrencyGate | None:
        """The gate every request passes, if any."""
        return self._global

    @property
    def gates(self) -> Mapping[str, ConcurrencyGate]:
        """The per-key gates made so far (read-only view, for metrics)."""
        return MappingProxyType(self._gates)

    def _gate(self, key: str, limit: int, max_queue: int, max_wait_s: float) -> ConcurrencyGate:
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = ConcurrencyGate(
                limit, max_queue=max_queue, max_wait_s=max_wait_s
            )
        elif (gate.limit, gate.max_queue, gate.max_wait_s) != (limit, max_queue, max_wait_s):
            gate.resize(limit, max_queue=max_queue, max_wait_s=max_wait_s)  # catalog reload
        return gate

    async def enter(
        self, key: str, *, limit: int | None, max_queue: int, max_wait_s: float
    ) -> Held:
        """Take the key's slot (none if ``limit`` is None), then a global one.

        Hand the result to :meth:`leave` when done. When both have a free slot this never
        suspends: the request path pays two comparisons, not a queue.
        """
        gate = None if limit is None else self._gate(key, limit, max_queue, max_wait_s)
        global_gate = self._global
        key_taken = gate is None or gate.try_acquire()
        if key_taken and (global_gate is None or global_gate.try_acquire()):
            return Held(gate, global_gate, 0.0)
        waited_s = 0.0
        if gate is not None and not key_taken:
            waited_s = await gate.acquire()
        try:
            if global_gate is not None:
                budget = min(global_gate.max_wait_s, max_wait_s - waited_s)
                waited_s += await global_gate.acquire(max_wait_s=budget)
        except BaseException:
            if gate is not None:
                gate.release()
            raise
        return Held(gate, global_gate, waited_s)

    def leave(self, held: Held) -> None:
        """Give back what :meth:`enter` took (global first, as in any nesting)."""
        if held.global_gate is not None:
            held.global_gate.release()
        if held.gate is not None:
            held.gate.release()

    @asynccontextmanager
    async def slot(
        self, key: str, *, limit: int | None, max_queue: int, max_wait_s: float
    ) -> AsyncIterator[float]:
        """Hold the key's slot (none if ``limit`` is None), then a global one; yields waited s."""
        held = await self.enter(key, limit=limit, max_queue=max_queue, max_wait_s=max_wait_s)
        try:
            yield held.waited_s
        finally:
            self.leave(held)


@dataclass(frozen=True, slots=True)
class Held:
    """The slots one request holds."""

    gate: ConcurrencyGate | None
    global_gate: ConcurrencyGate | None
    waited_s: float


def limits_uri(url: str) -> str:
    """The ``limits`` async storage URI for a store URL (``redis://h:p/0`` → ``async+redis://…``)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"not a storage URL: {url!r}")
    if scheme.startswith("async+"):
        return url
    if scheme == "unix":  # redis-py's spelling of a Redis socket
        return f"async+redis+unix://{rest}"
    if scheme in {"memory", "redis", "rediss"}:
        return f"async+{url}"
    raise ValueError(f"no rate-limit storage for {scheme!r} URLs")


@functools.lru_cache(maxsize=4096)
def _item(per_second: int, burst: int | None) -> RateLimitItem:
    if per_second < 1:
        raise ValueError("per_second must be at least 1")
    if burst is None:
        return RateLimitItemPerSecond(per_second)
    if burst < per_second:
        raise ValueError("burst must be at least per_second")
    # `burst` at once, then no more than `per_second` on average: limits counts whole
    # seconds, so the window is rounded up and the average errs on the low side.
    return RateLimitItemPerSecond(burst, math.ceil(burst / per_second))


class _LocalWindows:
    """Exact moving windows in this process: the times of the hits still inside each window.

    What ``limits``' moving window keeps, without its per-call lock and task switches: on the
    event loop nothing interleaves, and a hit costs a fraction of a microsecond instead of ~10
    (docs/benchmarks.md). Keys whose window has emptied are swept every so many hits.
    """

    _SWEEP_EVERY = 10_000

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._hits: dict[tuple[str, int], deque[float]] = {}
        self._until_sweep = self._SWEEP_EVERY

    def _times(self, key: str, window_s: int, now: float) -> deque[float]:
        times = self._hits.get((key, window_s))
        if times is None:
            times = self._hits[(key, window_s)] = deque()
        horizon = now - window_s
        while times and times[0] <= horizon:
            times.popleft()
        return times

    async def hit(self, key: str, amount: int, window_s: int) -> float | None:
        """Count one hit; ``None`` when it fits, else the seconds until one would."""
        now = self._clock()
        times = self._times(key, window_s, now)
        if len(times) >= amount:
            return times[len(times) - amount] + window_s - now
        times.append(now)
        self._until_sweep -= 1
        if not self._until_sweep:
            self._sweep(now)
        return None

    def _sweep(self, now: float) -> None:
        self._until_sweep = self._SWEEP_EVERY
        stale = [k for k, times in self._hits.items() if not times or times[-1] <= now - k[1]]
        for key in stale:
            del self._hits[key]


class _SharedWindows:
    """The same call over ``limits``' moving window in Redis (its Lua script).

    The storage wraps Redis errors in ``limits``' ``StorageError``; an unreachable Redis
    becomes :class:`~gridgate.errors.ServiceUnavailable`, any other error stays a bug.
    """

    def __init__(self, limiter: MovingWindowRateLimiter) -> None:
        self._limiter = limiter

    async def hit(self, key: str, amount: int, window_s: int) -> float | None:
        """Count one hit; ``None`` when it fits, else the seconds until one would."""
        item = RateLimitItemPerSecond(amount, window_s)
        try:
            if await self._limiter.hit(item, key):
                return None
            stats = await self._limiter.get_window_stats(item, key)
        except StorageError as exc:
            cause = exc.storage_error
            if isinstance(cause, UNREACHABLE):
                raise unavailable("rate_limits", cause) from exc
            raise
        return stats.reset_time - time.time()


class RateLimiter:
    """Requests per second per key, in process (``memory://``) or shared through Redis.

    The moving window is exact: never more than the limit in any window, and Retry-After is
    when the oldest hit leaves it. A fixed window would let twice the limit through around a
    window edge, which is what a fragile business system must not see. The price is one
    timestamp per hit in the window (up to ``limit`` per key, at most what the node actually
    serves in a window). Through Redis the ``limits`` library keeps the windows (its moving
    window in Lua); in process a :class:`_LocalWindows` does, to the same contract. On Redis
    the timestamps come from each gateway node's clock, so keep them in sync. A Redis that
    cannot be reached raises :class:`~gridgate.errors.ServiceUnavailable` (fail closed: no
    request passes a window that was not counted).
    """

    def __init__(self, storage_uri: str = "memory://", *, key_prefix: str = "gg:rate") -> None:
        uri = limits_uri(storage_uri)
        self._pool: ConnectionPool | None = None
        self._windows: _LocalWindows | _SharedWindows
        if uri.startswith("async+memory"):
            self._windows = _LocalWindows()
            return
        # redis-py (with hiredis) is a dependency already; limits would default to coredis.
        options: dict[str, Any] = {
            "implementation": "redispy",
            "key_prefix": key_prefix,
            "wrap_exceptions": True,
        }
        scheme = uri.partition("://")[0]
        if scheme in {"async+redis", "async+rediss", "async+redis+unix"}:
            # Our own pool, so that close() can release its connections.
            plain = uri.removeprefix("async+").replace("redis+unix://", "unix://", 1)
            self._pool = options["connection_pool"] = ConnectionPool.from_url(plain)
        storage = storage_from_string(uri, **options)
        self._windows = _SharedWindows(MovingWindowRateLimiter(storage))

    async def hit(self, key: str, per_second: int, *, burst: int | None = None) -> None:
        """Count one request for ``key``; raise RateLimited if it is over the limit.

        Without ``burst``: at most ``per_second`` in any second. With it: at most ``burst`` in
        any ``ceil(burst / per_second)`` seconds, so a burst passes at once.
        """
        item = _item(per_second, burst)
        wait = await self._windows.hit(key, item.amount, item.get_expiry())
        if wait is None:
            return
        raise RateLimited(
            f"more than {item.amount} requests in {item.get_expiry()} s",
            retry_after=max(1, math.ceil(wait)),
        )

    async def close(self) -> None:
        """Release the Redis connections, if any."""
        if self._pool is not None:
            await self._pool.aclose()

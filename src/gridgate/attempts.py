"""Failed attempts with growing waits: the platform's one mechanism against guessing (ASVS 2.2.1).

Every "too many failures" rule counts here: operator sign-in per client address and per user
name, customer sign-in per phone and per address, service passwords per 户号 and across 户号
per account, device and address. Tallies live in this process (:class:`MemoryAttemptStore`)
or in Redis, so that every node sees them (:class:`RedisAttemptStore`).

A :class:`Backoff` rule counts attempts under a key. The first ``free`` pass at once; from then
on each further attempt must wait ``base_s`` after the last one, doubling per attempt up to
``cap_s``. A tally is forgotten ``window_s`` after its last attempt. An attempt is counted
*before* the caller checks the secret, so concurrent guesses cannot slip past the count; the
caller then refunds it (:meth:`AttemptStore.refund`, which also takes back its time) or clears
the tally (:meth:`AttemptStore.reset`) when the secret was right. An attempt refused because a rule
must still wait is counted nowhere: hammering does not lengthen a wait, and the wait told
(``Retry-After``) is exact. A store also remembers marks (:meth:`AttemptStore.mark`), such
as where a user signed in before.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple, Protocol

from redis.asyncio import Redis

__all__ = [
    "AttemptStore",
    "Backoff",
    "MemoryAttemptStore",
    "RedisAttemptStore",
]

#: 2**62 times any base is beyond every cap: larger exponents add nothing.
_MAX_DOUBLINGS = 62


class Backoff(NamedTuple):
    """Attempts counted under ``key``: ``free`` of them pass, then waits of ``base_s``
    doubling per attempt up to ``cap_s``; forgotten ``window_s`` after the last attempt."""

    key: str
    free: int
    base_s: float
    cap_s: float
    window_s: float

    def delay(self, attempts: int) -> float:
        """How long after the last of ``attempts`` attempts the next one may come."""
        if attempts < self.free:
            return 0.0
        return float(min(self.base_s * 2 ** min(attempts - self.free, _MAX_DOUBLINGS), self.cap_s))

    def under(self, key: str) -> Backoff:
        """The same rule, counting under ``key``."""
        return self._replace(key=key)


class AttemptStore(Protocol):
    """Where attempt tallies live, each forgotten after its rule's window, and marks."""

    async def attempt(self, rules: Sequence[Backoff]) -> float:
        """Count one attempt on every rule, or on none if one must still wait: 0, or the
        seconds until every rule lets an attempt through."""
        ...

    async def refund(self, keys: Sequence[str]) -> None:
        """Take back one counted attempt of each key (it was no failure), and its time: the
        attempt before it is the last again, so a success neither starts a wait nor keeps a
        tally alive. (Of concurrent attempts, the one before may be another's.)"""
        ...

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the tallies of ``keys``."""
        ...

    async def mark(self, key: str, ttl_s: float) -> None:
        """Remember ``key`` for ``ttl_s`` seconds from now (apart from every tally)."""
        ...

    async def marked(self, key: str) -> bool:
        """Whether ``key`` is remembered."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
        ...


@dataclass(slots=True)
class _Tally:
    count: int
    last: float
    window_s: float
    #: The time of the attempt before the last, restored when the last is refunded.
    before: float = 0.0


class MemoryAttemptStore:
    """Tallies of one process (development, single node, tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._tallies: dict[str, _Tally] = {}
        self._marks: dict[str, float] = {}  # key -> until
        self._sweep_at = self._marks_sweep_at = 1024

    def _live(self, key: str, now: float) -> _Tally | None:
        tally = self._tallies.get(key)
        if tally is not None and now - tally.last >= tally.window_s:
            del self._tallies[key]
            return None
        return tally

    async def attempt(self, rules: Sequence[Backoff]) -> float:
        """Count one attempt on every rule, or on none if one must still wait."""
        now = self._clock()
        if len(self._tallies) >= self._sweep_at:
            # Each time the map doubles: amortised O(1), memory bounded by live tallies.
            self._tallies = {k: t for k, t in self._tallies.items() if now - t.last < t.window_s}
            self._sweep_at = max(1024, 2 * len(self._tallies))
        waits = [0.0]
        for rule in rules:
            tally = self._live(rule.key, now)
            if tally is not None:
                waits.append(tally.last + rule.delay(tally.count) - now)
        wait = max(waits)
        if wait > 0:
            return wait
        for rule in rules:
            tally = self._live(rule.key, now)
            count, last = (tally.count, tally.last) if tally is not None else (0, 0.0)
            self._tallies[rule.key] = _Tally(
                count + 1, now, max(rule.window_s, rule.cap_s), before=last
            )
        return 0.0

    async def refund(self, keys: Sequence[str]) -> None:
        """Take back one counted attempt of each key, and its time."""
        now = self._clock()
        for key in keys:
            tally = self._live(key, now)
            if tally is not None and tally.count > 0:
                tally.count -= 1
                tally.last = tally.before

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the tallies of ``keys``."""
        for key in keys:
            self._tallies.pop(key, None)

    async def mark(self, key: str, ttl_s: float) -> None:
        """Remember ``key`` for ``ttl_s`` seconds from now."""
        now = self._clock()
        if len(self._marks) >= self._marks_sweep_at:
            self._marks = {k: until for k, until in self._marks.items() if until > now}
            self._marks_sweep_at = max(1024, 2 * len(self._marks))
        self._marks[key] = now + ttl_s

    async def marked(self, key: str) -> bool:
        """Whether ``key`` is remembered."""
        until = self._marks.get(key)
        if until is not None and until <= self._clock():
            del self._marks[key]
            return False
        return until is not None

    async def close(self) -> None:
        """Forget every tally and mark."""
        self._tallies.clear()
        self._marks.clear()


# KEYS: tallies (hashes with n = attempts, t = last attempt in ms, b = the one before); ARGV[1]:
# now in ms, then per key: free, base_ms, cap_ms, window_ms. Check every rule first, then count
# on all.
_ATTEMPT = """
local now = tonumber(ARGV[1])
local counts, lasts = {}, {}
local wait = 0
for i, key in ipairs(KEYS) do
  local o = 1 + (i - 1) * 4
  local free, base, cap = tonumber(ARGV[o + 1]), tonumber(ARGV[o + 2]), tonumber(ARGV[o + 3])
  local window = tonumber(ARGV[o + 4])
  local n = tonumber(redis.call('HGET', key, 'n') or '0')
  local last = tonumber(redis.call('HGET', key, 't') or '0')
  if now - last >= math.max(window, cap) then n, last = 0, 0 end
  counts[i], lasts[i] = n, last
  if n >= free then
    local left = last + math.min(base * 2 ^ math.min(n - free, 62), cap) - now
    if left > wait then wait = left end
  end
end
if wait > 0 then return math.ceil(wait) end
for i, key in ipairs(KEYS) do
  local o = 1 + (i - 1) * 4
  redis.call('HSET', key, 'n', counts[i] + 1, 't', now, 'b', lasts[i])
  redis.call('PEXPIRE', key, math.max(tonumber(ARGV[o + 4]), tonumber(ARGV[o + 3])))
end
return 0
"""
# HSET on an existing hash keeps its TTL; a missing one is not created.
_REFUND = """
for _, key in ipairs(KEYS) do
  local n = tonumber(redis.call('HGET', key, 'n') or '0')
  if n > 0 then
    redis.call('HSET', key, 'n', n - 1, 't', redis.call('HGET', key, 'b') or '0')
  end
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisAttemptStore:
    """Tallies shared by every node: one hash per key (``<prefix><key>``) with a TTL; marks
    are strings (``<prefix>mark:<key>``) holding the time they end.

    Times come from this node's ``clock`` (keep the nodes' clocks in sync, as for the
    gateway's rate windows); TTLs only clean up, the window is judged from the stored time.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        prefix: str = "gg:attempts:",
        owns_client: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._prefix = prefix
        self._owns_client = owns_client
        self._clock = clock
        self._attempt = redis.register_script(_ATTEMPT)
        self._refund = redis.register_script(_REFUND)

    async def attempt(self, rules: Sequence[Backoff]) -> float:
        """Count one attempt on every rule, or on none if one must still wait."""
        if not rules:
            return 0.0
        args: list[int] = [int(self._clock() * 1000)]
        for rule in rules:
            args += [rule.free, _ms(rule.base_s), _ms(rule.cap_s), _ms(rule.window_s)]
        keys = [self._prefix + rule.key for rule in rules]
        return int(await self._attempt(keys=keys, args=args)) / 1000

    async def refund(self, keys: Sequence[str]) -> None:
        """Take back one counted attempt of each key, and its time."""
        if keys:
            await self._refund(keys=[self._prefix + key for key in keys])

    async def reset(self, keys: Sequence[str]) -> None:
        """Forget the tallies of ``keys``."""
        if keys:
            await self._redis.delete(*(self._prefix + key for key in keys))

    async def mark(self, key: str, ttl_s: float) -> None:
        """Remember ``key`` for ``ttl_s`` seconds: its end, judged by this node's clock."""
        until = int((self._clock() + ttl_s) * 1000)
        await self._redis.set(f"{self._prefix}mark:{key}", until, px=_ms(ttl_s))

    async def marked(self, key: str) -> bool:
        """Whether ``key`` is remembered."""
        until = await self._redis.get(f"{self._prefix}mark:{key}")
        return until is not None and int(until) > self._clock() * 1000

    async def close(self) -> None:
        """Close the client if this store made it; a lent one stays open."""
        if self._owns_client:
            await self._redis.aclose()

"""Single-use nonces (防重放): a signed request is accepted once, a replay within its window never.

The gateway asks :meth:`NonceStore.first_use` after the signature checks out. A request is
acceptable while its timestamp is within ``WINDOW_S`` of the clock, so the nonce must be
remembered until ``timestamp + WINDOW_S`` (up to twice the window from now), not merely for
``WINDOW_S``. Nonces are remembered per channel: two channels may pick the same one.

A store never forgets an unexpired nonce to make room: a full store refuses new ones with
:class:`~gridgate.errors.Overloaded` (503 ``flow.overloaded``), since a forgotten nonce could
be replayed. A Redis that cannot be reached answers
:class:`~gridgate.errors.ServiceUnavailable` (503 ``service.unavailable``): an unchecked
nonce is never accepted.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

from redis.asyncio import Redis

from gridgate.errors import Overloaded
from gridgate.gateway.shared_store import UNREACHABLE, unavailable

__all__ = ["MemoryNonceStore", "NonceStore", "RedisNonceStore"]

# Expired entries the memory store drops per call: more than the one a call can add, so
# purging keeps pace with arrivals without ever stalling one request on a big sweep.
_PURGE_PER_CALL = 8


def _check_ttl(ttl_s: float) -> None:
    if not ttl_s > 0:  # also refuses NaN
        raise ValueError("ttl_s must be positive")


class NonceStore(Protocol):
    """Remembers which nonces each channel has used, for a time."""

    async def first_use(self, channel: str, nonce: str, ttl_s: float) -> bool:
        """True the first time ``nonce`` is seen for ``channel`` within ``ttl_s``, else False;
        :class:`~gridgate.errors.Overloaded` when it cannot remember one more,
        :class:`~gridgate.errors.ServiceUnavailable` when its shared store is down."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
        ...


class MemoryNonceStore:
    """Nonces of one gateway process, in a dict plus a heap ordered by expiry.

    ``max_entries`` should exceed the peak number of signed requests per nonce lifetime (the
    default of one million covers some 1,600 requests per second for 600 s; each entry costs
    a few hundred bytes). When it is full of unexpired nonces, a new nonce is refused with
    :class:`~gridgate.errors.Overloaded` until the earliest one expires: dropping one instead
    would let it be replayed.
    """

    def __init__(
        self, max_entries: int = 1_000_000, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max_entries = max_entries
        self._clock = clock
        self._expiry: dict[tuple[str, str], float] = {}
        # (expiry, channel, nonce); an entry is stale when the dict holds another expiry.
        self._heap: list[tuple[float, str, str]] = []

    def __len__(self) -> int:
        """The number of nonces remembered (expired ones may linger until purged)."""
        return len(self._expiry)

    def _pop_earliest(self) -> bool:
        # Drop the heap's first entry and, unless stale, its nonce; True if a nonce went.
        expiry, channel, nonce = heapq.heappop(self._heap)
        key = (channel, nonce)
        if self._expiry.get(key) == expiry:
            del self._expiry[key]
            return True
        return False

    def _purge(self, now: float) -> None:
        for _ in range(_PURGE_PER_CALL):
            if not self._heap or self._heap[0][0] > now:
                return
            self._pop_earliest()

    async def first_use(self, channel: str, nonce: str, ttl_s: float) -> bool:
        """True the first time ``nonce`` is seen for ``channel`` within ``ttl_s``, else False."""
        _check_ttl(ttl_s)
        now = self._clock()
        self._purge(now)
        key = (channel, nonce)
        expiry = self._expiry.get(key)
        if expiry is not None and expiry > now:
            return False
        if expiry is None and len(self._expiry) >= self._max_entries:
            self._make_room(now)  # a new key, not an expired one reused in place
        expiry = now + ttl_s
        self._expiry[key] = expiry
        heapq.heappush(self._heap, (expiry, channel, nonce))
        return True

    def _make_room(self, now: float) -> None:
        # Only expired nonces may go; with none, refuse the newcomer (the request fails, and
        # its nonce stays unused: the channel can send it again once there is room).
        while self._heap and self._heap[0][0] <= now:
            self._pop_earliest()
        if len(self._expiry) < self._max_entries:
            return
        # The earliest live expiry says when room is made; stale heap heads only say sooner.
        while self._heap:
            expiry, channel, nonce = self._heap[0]
            if self._expiry.get((channel, nonce)) == expiry:
                break
            heapq.heappop(self._heap)
        wait_s = self._heap[0][0] - now if self._heap else 1.0
        raise Overloaded(
            "the gateway remembers too many nonces; try again shortly",
            retry_after=max(1, math.ceil(wait_s)),
        )

    async def close(self) -> None:
        """Forget every nonce."""
        self._expiry.clear()
        self._heap.clear()


class RedisNonceStore:
    """Nonces shared by every gateway node: one key per nonce, ``SET NX EX``.

    Keys are ``<prefix><channel>:<nonce>``; a nonce has no ``:`` (api.md), so keys of two
    channels cannot collide. Redis counts whole seconds, so the ttl is rounded up.
    """

    def __init__(self, redis: Redis, *, prefix: str = "gg:nonce:", owns_client: bool = False):
        self._redis = redis
        self._prefix = prefix
        self._owns_client = owns_client

    @classmethod
    def from_url(cls, url: str, **options: Any) -> RedisNonceStore:
        """A store with its own client for ``url``, closed by :meth:`close`."""
        return cls(Redis.from_url(url), owns_client=True, **options)

    async def first_use(self, channel: str, nonce: str, ttl_s: float) -> bool:
        """True the first time ``nonce`` is seen for ``channel`` within ``ttl_s``, else False."""
        _check_ttl(ttl_s)
        # Rounding up keeps a nonce at least as long as asked; a moment longer is harmless.
        seconds = max(1, math.ceil(ttl_s))
        try:
            created = await self._redis.set(
                f"{self._prefix}{channel}:{nonce}", 1, nx=True, ex=seconds
            )
        except UNREACHABLE as exc:
            raise unavailable("nonces", exc) from exc
        return bool(created)

    async def close(self) -> None:
        """Close the client if this store made it (``from_url``); a lent one stays open."""
        if self._owns_client:
            await self._redis.aclose()

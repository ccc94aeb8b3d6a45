"""Registry store fixtures: every contract test runs on the memory and the Redis store."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gridgate.registry.interfaces import RegistryStore, Timings
from gridgate.registry.memory import MemoryRegistryStore
from gridgate.registry.redis_store import RedisRegistryStore
from tests.support.redis import RedisServer

#: The Nacos defaults, spelled out because the tests count seconds against them.
TIMINGS = Timings(heartbeat_interval_s=5, unhealthy_after_s=15, remove_after_s=30)


class FakeClock:
    """A store clock that moves only when a test says so."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock | None:
    """The store clock; parametrize ``clock`` with ``None`` for the store's own clock."""
    return FakeClock()


@pytest.fixture
def log_size() -> int:
    """The change-log length of the store; parametrize ``log_size`` to shrink it."""
    return 1000


@pytest.fixture(params=["memory", "redis"])
async def store(
    request: pytest.FixtureRequest, clock: FakeClock | None, log_size: int
) -> AsyncIterator[RegistryStore]:
    """An empty store of each implementation."""
    if request.param == "memory":
        yield MemoryRegistryStore(TIMINGS, clock=clock, log_size=log_size)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(server.url)
    await client.flushdb()
    # Short blocking slices, so that a 0.2 s wait already takes several.
    redis_store = RedisRegistryStore(client, TIMINGS, clock=clock, log_size=log_size, block_s=0.05)
    try:
        yield redis_store
    finally:
        await redis_store.close()
        await client.aclose()

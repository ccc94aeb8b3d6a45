"""The nonce store contract, on the memory and the Redis implementation alike."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
from redis.asyncio import Redis

from gridgate.errors import Overloaded
from gridgate.gateway.nonces import MemoryNonceStore, NonceStore, RedisNonceStore
from tests.support.redis import RedisServer
from tests.unit.registry.conftest import FakeClock

#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 10
NONCE = "nonce-000000000001"


@dataclass
class Harness:
    """A store and a way to let every nonce it holds outlive its ttl."""

    store: NonceStore
    expire_all: Callable[[], Awaitable[None]]


def redis_db(server: RedisServer, db: int) -> str:
    """The URL of database ``db`` on the session's server (tests keep out of each other's)."""
    return f"redis://127.0.0.1:{server.port}/{db}"


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """An empty store of each implementation."""
    if request.param == "memory":
        clock = FakeClock()

        async def advance() -> None:
            clock.advance(3600)

        yield Harness(MemoryNonceStore(clock=clock), advance)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(redis_db(server, 5))
    await client.flushdb()

    async def expire() -> None:
        # Redis counts real time; rather than wait out a ttl, cut each one to a millisecond.
        keys = [key async for key in client.scan_iter("gg:nonce:*")]
        for key in keys:
            await client.pexpire(key, 1)
        deadline = time.monotonic() + GUARD_S
        while await client.exists(*keys) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    store = RedisNonceStore(client)
    try:
        yield Harness(store, expire)
    finally:
        await store.close()
        await client.aclose()


async def test_first_use_then_replay(harness: Harness) -> None:
    assert await harness.store.first_use("wechat", NONCE, 600)
    assert not await harness.store.first_use("wechat", NONCE, 600)
    assert not await harness.store.first_use("wechat", NONCE, 600)


async def test_channels_have_their_own_nonces(harness: Harness) -> None:
    assert await harness.store.first_use("wechat", NONCE, 600)
    assert await harness.store.first_use("alipay", NONCE, 600)
    assert await harness.store.first_use("wechat", "nonce-000000000002", 600)


async def test_a_nonce_is_usable_again_after_its_ttl(harness: Harness) -> None:
    assert await harness.store.first_use("wechat", NONCE, 1)
    await harness.expire_all()

    assert await harness.store.first_use("wechat", NONCE, 600)
    assert not await harness.store.first_use("wechat", NONCE, 600)


async def test_concurrent_uses_admit_exactly_one(harness: Harness) -> None:
    results = await asyncio.gather(
        *(harness.store.first_use("wechat", NONCE, 600) for _ in range(20))
    )

    assert results.count(True) == 1


@pytest.mark.parametrize("ttl_s", [0, -1, float("nan")])
async def test_a_ttl_must_be_positive(harness: Harness, ttl_s: float) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        await harness.store.first_use("wechat", NONCE, ttl_s)


async def test_memory_keeps_a_nonce_for_exactly_its_ttl() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock=clock)
    assert await store.first_use("wechat", NONCE, 600)

    clock.advance(599.9)
    assert not await store.first_use("wechat", NONCE, 600)
    clock.advance(0.1)
    assert await store.first_use("wechat", NONCE, 600)


async def test_memory_purges_expired_nonces_as_it_goes() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(clock=clock)
    for n in range(100):
        await store.first_use("wechat", f"nonce-{n:012d}", 10)
    clock.advance(11)

    for n in range(100):
        await store.first_use("alipay", f"nonce-{n:012d}", 10)

    assert len(store) == 100  # the wechat ones are gone, a few per call


async def test_memory_when_full_refuses_new_nonces_and_forgets_none() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(3, clock=clock)
    for n in range(3):
        assert await store.first_use("wechat", f"nonce-{n:012d}", 600)

    with pytest.raises(Overloaded) as refused:
        await store.first_use("wechat", "nonce-newcomer-0001", 600)

    assert refused.value.code == "flow.overloaded" and refused.value.status == 503
    assert 1 <= int(refused.value.headers["Retry-After"]) <= 600
    # Nothing was forgotten to make room: every nonce already used is still a replay.
    for n in range(3):
        assert not await store.first_use("wechat", f"nonce-{n:012d}", 600)
    assert len(store) == 3


async def test_memory_when_full_retry_after_is_when_the_earliest_nonce_expires() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(2, clock=clock)
    await store.first_use("wechat", "nonce-soon-000000001", 30)
    await store.first_use("wechat", "nonce-late-000000001", 600)
    clock.advance(10)

    with pytest.raises(Overloaded) as refused:
        await store.first_use("wechat", "nonce-newcomer-0001", 600)

    assert refused.value.headers["Retry-After"] == "20"


async def test_memory_when_full_makes_room_from_expired_nonces_only() -> None:
    clock = FakeClock()
    store = MemoryNonceStore(3, clock=clock)
    await store.first_use("wechat", "nonce-soon-000000001", 100)
    await store.first_use("wechat", "nonce-late-000000001", 600)
    await store.first_use("wechat", "nonce-late-000000002", 600)
    clock.advance(100)

    assert await store.first_use("wechat", "nonce-late-000000003", 600)

    assert len(store) == 3
    assert not await store.first_use("wechat", "nonce-late-000000001", 600)
    assert not await store.first_use("wechat", "nonce-late-000000003", 600)


async def test_memory_when_full_still_answers_a_replay_as_a_replay() -> None:
    store = MemoryNonceStore(1, clock=FakeClock())
    assert await store.first_use("wechat", NONCE, 600)

    assert not await store.first_use("wechat", NONCE, 600)


def test_memory_needs_room_for_one() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryNonceStore(0)


async def test_redis_rounds_the_ttl_up_to_whole_seconds(redis_server: RedisServer) -> None:
    client = Redis.from_url(redis_db(redis_server, 5))
    await client.flushdb()
    store = RedisNonceStore(client, prefix="test:")
    try:
        await store.first_use("wechat", NONCE, 0.2)
        await store.first_use("wechat", "nonce-000000000002", 1.5)

        assert 0 < await client.pttl(f"test:wechat:{NONCE}") <= 1000
        assert 1000 < await client.pttl("test:wechat:nonce-000000000002") <= 2000
    finally:
        await client.aclose()


async def test_redis_store_from_url_closes_its_client(redis_server: RedisServer) -> None:
    store = RedisNonceStore.from_url(redis_db(redis_server, 5))
    assert await store.first_use("from-url", f"{time.time_ns():032d}", 5)
    await store.close()

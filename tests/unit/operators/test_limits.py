"""Operator sign-in limits per address and per user name, on the platform's attempt store."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest
from redis.asyncio import Redis

from gridgate.attempts import Backoff, MemoryAttemptStore, RedisAttemptStore
from gridgate.errors import TooManyFailures
from gridgate.operators.limits import SignInLimits
from tests.support.redis import RedisServer
from tests.unit.registry.conftest import FakeClock

#: Three free failures per address, then 60 s doubling up to 240 s.
PER_ADDRESS = Backoff("", free=3, base_s=60, cap_s=240, window_s=86_400)
#: Two free failures per name, then 900 s doubling up to 3600 s.
PER_NAME = Backoff("", free=2, base_s=900, cap_s=3600, window_s=86_400)


class RecordingStore(MemoryAttemptStore):
    """The in-process store, remembering every key it was given."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.keys: set[str] = set()

    async def attempt(self, rules: Sequence[Backoff]) -> float:
        self.keys.update(rule.key for rule in rules)
        return await super().attempt(rules)

    async def mark(self, key: str, ttl_s: float) -> None:
        self.keys.add(key)
        await super().mark(key, ttl_s)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def store(clock: FakeClock) -> RecordingStore:
    return RecordingStore(clock)


@pytest.fixture
def limits(store: RecordingStore) -> SignInLimits:
    return SignInLimits(
        store, per_address=PER_ADDRESS, per_name=PER_NAME, name_key=b"k" * 32, known_for_s=86_400
    )


async def _refused(limits: SignInLimits, name: str, address: str | None) -> int:
    with pytest.raises(TooManyFailures) as refused:
        await limits.attempt(name, address)
    assert (refused.value.code, refused.value.status) == ("auth.too_many_failures", 429)
    assert refused.value.headers["Retry-After"] == str(refused.value.extra["retry_after"])
    return int(refused.value.extra["retry_after"])


async def test_an_address_spraying_names_waits_longer_after_each_wait(
    limits: SignInLimits, clock: FakeClock
) -> None:
    for name in ("a1", "a2", "a3"):
        await limits.attempt(name, "203.0.113.1")  # counted, and never given back: failures
    waits = []
    for attempt in range(4):
        waits.append(await _refused(limits, f"b{attempt}", "203.0.113.1"))
        clock.advance(waits[-1])
        await limits.attempt(f"c{attempt}", "203.0.113.1")
    assert waits == [60, 120, 240, 240]
    # Refused tries while waiting are not counted: the wait counts down, exactly.
    clock.advance(40)
    assert await _refused(limits, "root", "203.0.113.1") == 200
    # None of it counted against root's name: from elsewhere root may still try.
    await limits.attempt("root", "198.51.100.1")


async def test_a_name_waits_from_every_address_and_the_store_never_sees_it(
    limits: SignInLimits, store: RecordingStore
) -> None:
    await limits.attempt("Root", "203.0.113.1")
    await limits.attempt("root ", "2001:db8::1")
    assert await _refused(limits, "root", "192.0.2.44") == 900
    assert await _refused(limits, "ROOT", None) == 900
    # A user name (maybe a password typed in the wrong box) is kept only as a keyed digest.
    plain = hashlib.sha256(b"root").hexdigest()[:32]
    assert store.keys and not any("root" in key.lower() or plain in key for key in store.keys)


async def test_addresses_of_one_ipv6_64_share_a_tally(limits: SignInLimits) -> None:
    for host in range(3):
        await limits.attempt(f"user{host}", f"2001:db8:0:7::{host + 1}")
    await _refused(limits, "someone", "2001:db8:0:7:ffff::1")
    await limits.attempt("someone", "2001:db8:0:8::1")


async def test_strangers_hammering_a_name_do_not_keep_its_operator_out(
    limits: SignInLimits, clock: FakeClock
) -> None:
    await limits.succeeded(await limits.attempt("root", "198.51.100.7"))  # root's office
    # Strangers fail twice, then try again each time the wait ends: the name keeps waiting …
    for net in range(2):
        await limits.attempt("root", f"10.0.{net}.1")
    for net in range(2, 5):
        clock.advance(await _refused(limits, "root", f"10.0.{net}.1"))
        await limits.attempt("root", f"10.0.{net}.2")
    assert await _refused(limits, "root", "10.9.9.9") == 3600
    # … but not for root at the office, whose tries are counted on a tally of their own.
    office = await limits.attempt("root", "198.51.100.7")
    await limits.attempt("root", "198.51.100.7")  # a typo
    await limits.succeeded(office)
    # Signing in from the office cleared that tally, not the strangers'.
    assert await _refused(limits, "root", "10.9.9.9") == 3600
    for _ in range(2):
        await limits.attempt("root", "198.51.100.7")
    assert await _refused(limits, "root", "198.51.100.7") == 900  # the office has its limit
    # The same operator from a new address waits like any stranger.
    assert await _refused(limits, "root", "192.0.2.1") == 3600


async def test_success_clears_the_name_and_gives_the_address_its_try_back(
    limits: SignInLimits,
) -> None:
    await limits.attempt("root", "203.0.113.1")  # a typo
    await limits.succeeded(await limits.attempt("root", "203.0.113.2"))
    # The name starts afresh: two more failures pass before it waits again.
    await limits.attempt("root", "203.0.113.3")
    await limits.attempt("root", "203.0.113.4")
    await _refused(limits, "root", "203.0.113.5")
    # 203.0.113.2 had its successful try given back: three failures pass there.
    for name in ("x", "y", "z"):
        await limits.attempt(name, "203.0.113.2")
    await _refused(limits, "w", "203.0.113.2")


async def test_forget_lifts_every_wait_of_a_name(limits: SignInLimits) -> None:
    await limits.succeeded(await limits.attempt("root", "198.51.100.7"))
    for address in ("10.0.0.1", "10.0.0.2", "198.51.100.7", "198.51.100.7"):
        await limits.attempt("root", address)
    await _refused(limits, "root", "10.0.0.3")
    await _refused(limits, "root", "198.51.100.7")
    await limits.forget("Root")
    await limits.attempt("root", "10.0.0.3")
    await limits.attempt("root", "198.51.100.7")


async def test_an_unchecked_try_is_given_back(limits: SignInLimits) -> None:
    for _ in range(5):
        await limits.unchecked(await limits.attempt("root", "203.0.113.1"))
    await limits.attempt("root", "203.0.113.1")


async def test_admin_nodes_sharing_redis_share_the_limits(redis_server: RedisServer) -> None:
    clock = FakeClock(1_000_000.0)
    client = Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/9")
    await client.flushdb()
    try:
        one, two = (
            SignInLimits(
                RedisAttemptStore(client, clock=clock),
                per_address=PER_ADDRESS,
                per_name=PER_NAME,
                name_key=b"k" * 32,
            )
            for _ in range(2)
        )
        await one.succeeded(await one.attempt("root", "198.51.100.7"))
        await one.attempt("root", "10.0.0.1")
        await two.attempt("root", "10.0.0.2")
        assert await _refused(one, "root", "10.0.0.3") == 900
        assert await _refused(two, "root", "10.0.0.3") == 900
        await two.attempt("root", "198.51.100.7")  # root's usual address, on the other node
        clock.advance(899)
        assert await _refused(two, "root", "10.0.0.3") == 1
        await two.forget("root")
        await one.attempt("root", "10.0.0.3")
    finally:
        await client.aclose()

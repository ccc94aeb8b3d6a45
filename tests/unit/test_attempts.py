"""Failed attempts with growing waits: the attempt-store contract on memory and real Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from gridgate.addresses import client_bucket
from gridgate.attempts import (
    AttemptStore,
    Backoff,
    MemoryAttemptStore,
    RedisAttemptStore,
)
from tests.support.redis import RedisServer
from tests.unit.registry.conftest import FakeClock

#: Five free attempts, then 30 s, 60 s … up to 240 s; forgotten a day after the last.
RULE = Backoff("sign-in:p1", 5, 30, 240, 86_400)


@pytest.fixture(params=["memory", "redis"])
async def store_and_clock(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[AttemptStore, FakeClock]]:
    """An empty store of each implementation, on a clock the test moves."""
    clock = FakeClock(1_000_000.0)
    if request.param == "memory":
        yield MemoryAttemptStore(clock=clock), clock
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/9")
    await client.flushdb()
    store = RedisAttemptStore(client, clock=clock)
    try:
        yield store, clock
    finally:
        await store.close()
        await client.aclose()


async def test_free_attempts_pass_then_the_waits_double_up_to_the_cap(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    for _ in range(5):
        assert await store.attempt([RULE]) == 0
    waits = []
    for _ in range(5):
        wait = await store.attempt([RULE])
        waits.append(wait)
        clock.advance(wait - 1)
        assert await store.attempt([RULE]) == pytest.approx(1)  # not a second early
        clock.advance(1)
        assert await store.attempt([RULE]) == 0
    assert waits == [30, 60, 120, 240, 240]


async def test_a_refused_attempt_is_not_counted(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    for _ in range(5):
        await store.attempt([RULE])
    for _ in range(20):
        assert await store.attempt([RULE]) == 30  # hammering does not make it longer
    clock.advance(30)
    assert await store.attempt([RULE]) == 0
    assert await store.attempt([RULE]) == 60


async def test_several_rules_count_together_or_not_at_all(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    account = Backoff("bind:account:a", 2, 60, 3600, 86_400)
    address = Backoff("bind:address:1.2.3.4", 20, 60, 3600, 86_400)
    assert await store.attempt([account, address]) == 0
    assert await store.attempt([account, address]) == 0
    assert await store.attempt([account, address]) == 60  # the account must wait …
    other = Backoff("bind:account:b", 2, 60, 3600, 86_400)
    for _ in range(18):  # … and its refused attempts did not count on the address
        clock.advance(0.001)
        assert await store.attempt([other, address]) == 0
        await store.reset([other.key])
    assert await store.attempt([other, address]) > 0  # the address has had its 20


async def test_refund_gives_one_attempt_back(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, _ = store_and_clock
    for _ in range(5):
        await store.attempt([RULE])
    await store.refund([RULE.key])
    assert await store.attempt([RULE]) == 0  # the fifth was taken back: one more is free
    assert await store.attempt([RULE]) == 30
    await store.refund(["never-counted"])
    assert await store.attempt([Backoff("never-counted", 1, 5, 5, 60)]) == 0


async def test_a_refunded_attempt_leaves_no_trace_of_its_time(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    for _ in range(5):
        await store.attempt([RULE])
    for _ in range(24):  # an hour apart, successes all day long …
        clock.advance(3600)
        assert await store.attempt([RULE]) == 0
        await store.refund([RULE.key])
    # … neither started a wait nor kept the failures alive: a day after the last failure,
    # five are free again.
    for _ in range(5):
        assert await store.attempt([RULE]) == 0
    assert await store.attempt([RULE]) == 30


async def test_reset_forgets_and_others_are_untouched(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, _ = store_and_clock
    neighbour = RULE._replace(key="sign-in:p2")
    for _ in range(6):
        await store.attempt([RULE])
        await store.attempt([neighbour])
    await store.reset([RULE.key])
    assert await store.attempt([RULE]) == 0
    assert await store.attempt([neighbour]) > 0


async def test_a_tally_is_forgotten_a_window_after_its_last_attempt(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    for _ in range(5):
        await store.attempt([RULE])
    clock.advance(86_399)
    assert await store.attempt([RULE]) == 0  # the wait (30 s) is over; the count is kept
    assert await store.attempt([RULE]) == 60
    clock.advance(86_400)
    for _ in range(5):
        assert await store.attempt([RULE]) == 0  # a day of quiet: counted from zero


async def test_concurrent_attempts_cannot_pass_the_count(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, _ = store_and_clock
    waits = await asyncio.gather(*(store.attempt([RULE]) for _ in range(40)))
    assert sum(1 for wait in waits if wait == 0) == RULE.free


def test_the_delay_of_a_rule() -> None:
    assert [RULE.delay(n) for n in range(9)] == [0, 0, 0, 0, 0, 30, 60, 120, 240]
    assert RULE.delay(10_000) == 240  # no overflow far past the cap


async def test_hammering_a_waiting_key_neither_counts_nor_lengthens_its_wait(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    for _ in range(5):
        await store.attempt([RULE])
    told = []
    for _ in range(10):
        clock.advance(2)
        told.append(await store.attempt([RULE]))
    assert told == [28 - 2 * n for n in range(10)]  # exact, and counting down
    clock.advance(10)
    assert await store.attempt([RULE]) == 0  # the wait ended when first told
    assert await store.attempt([RULE]) == 60  # one more failure: only one doubling


async def test_a_mark_is_remembered_for_its_time_apart_from_tallies(
    store_and_clock: tuple[AttemptStore, FakeClock],
) -> None:
    store, clock = store_and_clock
    assert not await store.marked("known:a")
    await store.mark("known:a", 3600)
    assert await store.marked("known:a")
    assert not await store.marked("known:b")
    await store.reset(["known:a"])  # tallies and marks do not mix
    assert await store.attempt([RULE.under("known:a")]) == 0
    assert await store.marked("known:a")
    clock.advance(3599)
    assert await store.marked("known:a")
    clock.advance(1)
    assert not await store.marked("known:a")
    await store.mark("known:a", 60)  # marked again: remembered again
    assert await store.marked("known:a")


async def test_closing_a_memory_store_forgets_everything() -> None:
    store = MemoryAttemptStore()
    for _ in range(6):
        await store.attempt([RULE])
    await store.mark("known:a", 60)
    await store.close()
    assert await store.attempt([RULE]) == 0
    assert not await store.marked("known:a")


def test_a_rule_counts_under_another_key() -> None:
    assert RULE.under("sign-in:p2") == Backoff("sign-in:p2", 5, 30, 240, 86_400)


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_an_ipv6_host_counts_as_its_64(address: str, bucket: str) -> None:
    assert client_bucket(address) == bucket

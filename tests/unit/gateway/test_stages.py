"""The request-path stages on their own: channel authentication, rate limits per client, and
the permission decision."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis

from gridgate.addresses import client_bucket
from gridgate.errors import ChannelBadSignature, LevelRequired, PermissionDenied, RateLimited
from gridgate.gateway.flow import RateLimiter
from gridgate.gateway.nonces import MemoryNonceStore
from gridgate.gateway.signing import sign
from gridgate.gateway.snapshot import (
    ChannelView,
    InterfaceView,
    PermissionView,
    Snapshot,
    compile_snapshot,
)
from gridgate.gateway.stages import ChannelAuth, Exchange, Permission, RateLimit
from gridgate.gateway.tokens import Claims
from gridgate.permissions.levels import Floor
from tests.support.redis import RedisServer

SECRET = "stage-test-secret-000000000001"
PATH = "/api/v1/notices/outages"


def _interface(**limits: Any) -> InterfaceView:
    return InterfaceView(
        code="notices.outages",
        method="GET",
        path=PATH,
        enabled=True,
        requires_client_auth=True,
        min_level=0,
        idempotent=True,
        timeout_s=1.0,
        target_service="notices",
        balancer="round_robin",
        rate_limit_per_s=None,
        max_concurrency=None,
        max_queue=0,
        max_wait_s=0.0,
        channels=frozenset({"app"}),
        **limits,
    )


def _snapshot(**limits: Any) -> Snapshot:
    channel = ChannelView("app", SECRET, True, (), None)
    return compile_snapshot(1, [channel], [_interface(**limits)])


def _exchange(
    snapshot: Snapshot,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
    client_ip: str = "203.0.113.7",
    account: str | None = None,
) -> Exchange:
    exchange = Exchange(
        method="GET",
        path=PATH,
        raw_query=query,
        headers=headers or {},
        raw_headers=[],
        body=b"",
        client_ip=client_ip,
        trace_id="0" * 32,
        snapshot=snapshot,
    )
    exchange.interface = snapshot.interfaces["notices.outages"]
    exchange.channel = snapshot.channels["app"]
    if account is not None:
        exchange.claims = Claims(account, 1, "app", "session-1", int(time.time()) + 900)
    return exchange


def _signed(query: str, timestamp: str, nonce: str = "nonce-stage-000000001") -> dict[str, str]:
    return {
        "x-gg-channel": "app",
        "x-gg-timestamp": timestamp,
        "x-gg-nonce": nonce,
        "x-gg-signature": sign(SECRET, "GET", PATH, query, timestamp, nonce, b""),
    }


# -- channel authentication -----------------------------------------------------------------


@pytest.mark.parametrize(
    "timestamp",
    [
        "١٧٦٣٧٧٩٢٠٠",  # Arabic-Indic digits: str.isdigit() and int() both take them
        "１７６３７７９２００",  # full-width digits: the same
        "1763779200²",  # a superscript: isdigit() takes it, int() raises (a 500)
        "9" * 5000,  # past int()'s 4,300-digit limit (a 500)
        "+1763779200",
        " 1763779200",
        "",
    ],
)
async def test_a_timestamp_of_anything_but_ascii_digits_is_a_bad_signature(
    timestamp: str,
) -> None:
    snapshot = _snapshot()
    # Correctly signed over the odd timestamp: only the format check can refuse it.
    exchange = _exchange(snapshot, headers=_signed("", timestamp))
    auth = ChannelAuth(MemoryNonceStore(), clock=lambda: 1763779200.0)

    with pytest.raises(ChannelBadSignature):
        await auth(exchange)


async def test_the_verified_query_is_the_canonical_one_forwarded() -> None:
    snapshot = _snapshot()
    exchange = _exchange(snapshot, query="b=2&&a+x&c", headers=_signed("b=2&&a+x&c", "1763779200"))

    await ChannelAuth(MemoryNonceStore(), clock=lambda: 1763779200.0)(exchange)

    assert exchange.raw_query == "a%2Bx=&b=2&c="


async def test_the_query_is_taken_as_the_bytes_received() -> None:
    # The listener hands the query over as latin-1 text of its bytes; a client signs its own
    # text as UTF-8. Both mean the same bytes, so they must sign alike.
    snapshot = _snapshot()
    received = "region=西湖".encode().decode("latin-1")
    exchange = _exchange(snapshot, query=received, headers=_signed("region=西湖", "1763779200"))

    await ChannelAuth(MemoryNonceStore(), clock=lambda: 1763779200.0)(exchange)

    assert exchange.raw_query == "region=%E8%A5%BF%E6%B9%96"


# -- rate limits per client address and per account --------------------------------------------


async def _hits(stage: RateLimit, exchange: Exchange, count: int) -> list[bool]:
    passed = []
    for _ in range(count):
        try:
            await stage(exchange)
            passed.append(True)
        except RateLimited as refused:
            assert int(refused.headers["Retry-After"]) >= 1
            passed.append(False)
    return passed


async def test_each_client_address_has_its_own_window() -> None:
    snapshot = _snapshot(client_rate_limit_per_s=2)
    stage = RateLimit(RateLimiter())

    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.7"), 3) == [
        True,
        True,
        False,
    ]
    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.8"), 1) == [True]


async def test_one_ipv6_subscriber_is_one_client() -> None:
    snapshot = _snapshot(client_rate_limit_per_s=1)
    stage = RateLimit(RateLimiter())

    # Two addresses of one /64 (a subscriber picks any of 2^64): one window.
    assert await _hits(stage, _exchange(snapshot, client_ip="2001:db8:1:2::7"), 1) == [True]
    assert await _hits(stage, _exchange(snapshot, client_ip="2001:db8:1:2:ffff::1"), 1) == [False]
    assert await _hits(stage, _exchange(snapshot, client_ip="2001:db8:1:3::7"), 1) == [True]


@pytest.mark.parametrize(
    ("address", "bucket"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("not-an-address", "not-an-address"),
    ],
)
def test_client_buckets(address: str, bucket: str) -> None:
    assert client_bucket(address) == bucket


async def test_each_account_has_its_own_window() -> None:
    snapshot = _snapshot(account_rate_limit_per_s=1)
    stage = RateLimit(RateLimiter())

    assert await _hits(stage, _exchange(snapshot, account="acc-1"), 2) == [True, False]
    assert await _hits(stage, _exchange(snapshot, account="acc-2"), 1) == [True]
    # Without a token there is no account to count.
    assert await _hits(stage, _exchange(snapshot), 3) == [True, True, True]


async def test_refused_by_the_client_window_spends_nothing_of_the_channel() -> None:
    limited = _snapshot(client_rate_limit_per_s=1)
    channel = ChannelView("app", SECRET, True, (), 2)
    snapshot = compile_snapshot(1, [channel], limited.interfaces.values())
    stage = RateLimit(RateLimiter())

    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.7"), 5) == [
        True,
        False,
        False,
        False,
        False,
    ]
    # The channel (2/s) counted only the one that passed: another client still gets in.
    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.8"), 1) == [True]


async def test_gateway_defaults_apply_where_the_interface_sets_none() -> None:
    snapshot = _snapshot()
    stage = RateLimit(RateLimiter(), client_default=1, account_default=1)

    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.7"), 2) == [True, False]
    assert await _hits(stage, _exchange(snapshot, client_ip="203.0.113.9", account="a"), 2) == [
        True,
        False,
    ]
    # The interface's own value wins over the default.
    wider = _snapshot(client_rate_limit_per_s=3)
    assert await _hits(stage, _exchange(wider, client_ip="198.51.100.1"), 4) == [
        True,
        True,
        True,
        False,
    ]


@pytest.fixture
async def redis_url(redis_server: RedisServer) -> AsyncIterator[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/7"
    client = Redis.from_url(url)
    await client.flushdb()
    await client.aclose()
    yield url


async def test_client_windows_are_shared_by_gateway_nodes_through_redis(redis_url: str) -> None:
    snapshot = _snapshot(client_rate_limit_per_s=2, account_rate_limit_per_s=3)
    first, second = RateLimiter(redis_url), RateLimiter(redis_url)
    try:
        node_a, node_b = RateLimit(first), RateLimit(second)
        client = _exchange(snapshot, client_ip="2001:db8::7")
        assert await _hits(node_a, client, 1) + await _hits(node_b, client, 2) == [
            True,
            True,
            False,
        ]
        account = _exchange(snapshot, client_ip="", account="acc-9")
        assert await _hits(node_a, account, 2) + await _hits(node_b, account, 2) == [
            True,
            True,
            True,
            False,
        ]
    finally:
        await first.close()
        await second.close()


# -- permission ------------------------------------------------------------------------------


def _permission(snapshot: Snapshot, channel: str, level: int) -> str:
    """What the Permission stage answers a caller of ``level`` on ``channel``."""
    exchange = _exchange(snapshot)
    exchange.channel = snapshot.channels[channel]
    exchange.claims = Claims("acc-1", level, channel, "session-1", int(time.time()) + 900)
    try:
        Permission()(exchange)
    except PermissionDenied:
        return "perm.denied"
    except LevelRequired as refused:
        return f"level {refused.extra['required_level']}"
    return "ok"


def test_a_floor_raises_the_level_on_its_channel_only() -> None:
    channels = [ChannelView(code, SECRET, True, (), None) for code in ("app", "web", "wx")]
    interface = _interface()
    snapshot = compile_snapshot(1, channels, [interface], floors=[Floor("app", interface.code, 2)])

    assert [_permission(snapshot, "app", level) for level in (0, 2)] == ["level 2", "ok"]
    # A floor is not a permission: the interface stays open to the other channels.
    assert _permission(snapshot, "web", 0) == "ok"
    assert interface.code not in snapshot.permissioned


def test_a_refusing_floor_refuses_on_its_channel_only() -> None:
    channels = [ChannelView(code, SECRET, True, (), None) for code in ("app", "web", "wx")]
    interface = _interface()
    snapshot = compile_snapshot(
        1,
        channels,
        [interface],
        [PermissionView("app", interface.code, 0), PermissionView("web", interface.code, 1)],
        floors=[Floor("app", interface.code, None), Floor("web", interface.code, 0)],
    )

    assert _permission(snapshot, "app", 2) == "perm.denied"
    # A floor never lowers what the permission asks, nor opens it to a channel without one.
    assert _permission(snapshot, "web", 0) == "level 1"
    assert _permission(snapshot, "wx", 2) == "perm.denied"

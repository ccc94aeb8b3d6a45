"""SMS codes: the code-store contract on memory and Redis, the service's rules, the providers."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import stat
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
import structlog
from redis.asyncio import Redis

from gridgate.accounts.sms import (
    CodeStore,
    ConsoleSmsProvider,
    HttpSmsProvider,
    Limit,
    MemoryCodeStore,
    RedisCodeStore,
    SmsCodeInvalid,
    SmsCodes,
    SmsDeliveryFailed,
    SmsNotices,
    SmsTooFrequent,
    provider_for,
    text_for,
)
from gridgate.errors import ConfigurationError, InvalidRequest
from tests.support.redis import RedisServer
from tests.unit.registry.conftest import FakeClock

#: Long enough never to cut a passing test short; a failing one still ends.
GUARD_S = 10
KEY = b"k" * 32
PHONE = "13800000001"
IP = "203.0.113.7"
# 2025-11-22 10:00 Beijing time: the day's window ends 14 h later.
MORNING = 1_763_776_800.0


@dataclass
class Sent:
    """One message a fake provider was asked to deliver."""

    phone: str
    text: str
    purpose: str
    code: str


@dataclass
class FakeProvider:
    """Remembers messages instead of sending them."""

    sent: list[Sent] = field(default_factory=list)

    async def send(self, phone: str, text: str, *, purpose: str, code: str) -> None:
        self.sent.append(Sent(phone, text, purpose, code))


@dataclass
class Harness:
    """A store, the clock the service should use with it, and a way to outlive TTLs."""

    store: CodeStore
    clock: Callable[[], float]
    expire: Callable[[str], Awaitable[None]]  # argument: "code" or "rate"
    redis: Redis | None = None


@pytest.fixture(params=["memory", "redis"])
async def harness(request: pytest.FixtureRequest) -> AsyncIterator[Harness]:
    """An empty store of each implementation."""
    if request.param == "memory":
        clock = FakeClock(MORNING)

        async def advance(_: str) -> None:
            clock.advance(2 * 86_400)

        yield Harness(MemoryCodeStore(clock=clock), clock, advance)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    client = Redis.from_url(f"redis://127.0.0.1:{server.port}/8")
    await client.flushdb()

    async def expire(kind: str) -> None:
        # Redis counts real time; rather than wait out a TTL, cut each one to a millisecond.
        keys = [key async for key in client.scan_iter(f"gg:sms:{kind}:*")]
        for key in keys:
            await client.pexpire(key, 1)
        deadline = time.monotonic() + GUARD_S
        while keys and await client.exists(*keys) and time.monotonic() < deadline:
            await asyncio.sleep(0.005)

    store = RedisCodeStore(client)
    try:
        yield Harness(store, time.time, expire, client)
    finally:
        await store.close()
        await client.aclose()


def service(h: Harness, provider: FakeProvider, **options: int) -> SmsCodes:
    """The service on the harness's store, with ample IP room unless a test says otherwise."""
    return SmsCodes(h.store, provider, key=KEY, clock=h.clock, **{"ip_max": 1000, **options})


# --- the store contract -------------------------------------------------------------------


async def test_store_gives_a_code_once(harness: Harness) -> None:
    await harness.store.put_code("p:login", b"digest", attempts=5, ttl_s=300)

    assert await harness.store.take_attempt("p:login") == b"digest"
    assert await harness.store.consume("p:login", b"digest")
    assert not await harness.store.consume("p:login", b"digest")
    assert await harness.store.take_attempt("p:login") is None


async def test_store_counts_attempts(harness: Harness) -> None:
    await harness.store.put_code("p:login", b"digest", attempts=2, ttl_s=300)

    assert await harness.store.take_attempt("p:login") == b"digest"
    assert await harness.store.take_attempt("p:login") == b"digest"
    assert await harness.store.take_attempt("p:login") is None
    assert await harness.store.consume("p:login", b"digest")  # a taken attempt may still win


async def test_store_replaces_a_code(harness: Harness) -> None:
    await harness.store.put_code("p:login", b"old", attempts=1, ttl_s=300)
    await harness.store.take_attempt("p:login")
    await harness.store.put_code("p:login", b"new", attempts=1, ttl_s=300)

    assert not await harness.store.consume("p:login", b"old")
    assert await harness.store.take_attempt("p:login") == b"new"


async def test_store_forgets_expired_codes(harness: Harness) -> None:
    await harness.store.put_code("p:login", b"digest", attempts=5, ttl_s=300)
    await harness.expire("code")

    assert await harness.store.take_attempt("p:login") is None
    assert not await harness.store.consume("p:login", b"digest")


async def test_store_limits_are_all_or_nothing(harness: Harness) -> None:
    tight, loose = Limit("tight", 60, 1), Limit("loose", 3600, 5)
    assert await harness.store.acquire([tight, loose]) == 0

    assert 0 < await harness.store.acquire([tight, loose]) <= 60
    assert 0 < await harness.store.acquire([loose, tight]) <= 60
    # The refused calls counted on neither limit: four more fit under "loose".
    for _ in range(4):
        assert await harness.store.acquire([loose]) == 0
    assert 3540 < await harness.store.acquire([loose]) <= 3600


async def test_store_limits_reopen_after_their_window(harness: Harness) -> None:
    assert await harness.store.acquire([Limit("x", 60, 1)]) == 0
    await harness.expire("rate")

    assert await harness.store.acquire([Limit("x", 60, 1)]) == 0


async def test_store_consume_admits_exactly_one(harness: Harness) -> None:
    await harness.store.put_code("p:login", b"digest", attempts=5, ttl_s=300)

    results = await asyncio.gather(
        *(harness.store.consume("p:login", b"digest") for _ in range(20))
    )

    assert results.count(True) == 1


async def test_redis_store_sets_ttls(redis_server: RedisServer) -> None:
    client = Redis.from_url(f"redis://127.0.0.1:{redis_server.port}/8")
    await client.flushdb()
    store = RedisCodeStore(client, prefix="t:")
    try:
        await store.put_code("p:login", b"digest", attempts=5, ttl_s=300)
        await store.acquire([Limit("x", 60, 1)])

        assert 299_000 < await client.pttl("t:code:p:login") <= 300_000
        assert 59_000 < await client.pttl("t:rate:x") <= 60_000
    finally:
        await client.aclose()


# --- the service --------------------------------------------------------------------------


async def stored_values(h: Harness) -> list[bytes]:
    """Every value the store holds for codes."""
    if h.redis is None:
        assert isinstance(h.store, MemoryCodeStore)
        return [code.digest for code in h.store._codes.values()]
    values: list[bytes] = []
    async for key in h.redis.scan_iter("gg:sms:code:*"):
        for value in (await h.redis.hgetall(key)).values():
            values.append(value if isinstance(value, bytes) else value.encode())
    return values


async def test_code_is_six_digits_and_stored_only_hashed(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)

    assert await sms.send(PHONE, "login", client_ip=IP) == (300, 60)

    [sent] = provider.sent
    assert sent.code.isascii() and sent.code.isdigit() and len(sent.code) == 6
    assert sent.code in sent.text and "5 分钟" in sent.text
    values = await stored_values(harness)
    expected = hmac.new(KEY, f"{PHONE}|login|{sent.code}".encode(), hashlib.sha256).digest()
    assert expected in values
    assert not any(sent.code.encode() in value for value in values)


async def test_a_code_verifies_once(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    code = provider.sent[0].code

    await sms.verify(PHONE, "login", code)
    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "login", code)


async def test_an_expired_code_fails(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    await harness.expire("code")

    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "login", provider.sent[0].code)


async def test_memory_code_lives_exactly_its_ttl() -> None:
    clock = FakeClock(MORNING)
    provider = FakeProvider()
    sms = SmsCodes(MemoryCodeStore(clock=clock), provider, key=KEY, clock=clock)
    await sms.send(PHONE, "login", client_ip=IP)
    clock.advance(299.9)
    await sms.verify(PHONE, "login", provider.sent[0].code)

    clock.advance(60)
    await sms.send(PHONE, "login", client_ip=IP)
    clock.advance(300)
    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "login", provider.sent[1].code)


@pytest.mark.parametrize(
    ("phone", "purpose"), [(PHONE, "register"), ("13800000002", "login"), (PHONE, "nonsense")]
)
async def test_a_code_is_bound_to_its_phone_and_purpose(
    harness: Harness, phone: str, purpose: str
) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    code = provider.sent[0].code

    with pytest.raises(SmsCodeInvalid):
        await sms.verify(phone, purpose, code)
    await sms.verify(PHONE, "login", code)  # the failed try did not burn it


async def test_five_wrong_tries_burn_the_code(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    code = provider.sent[0].code
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    for _ in range(5):
        with pytest.raises(SmsCodeInvalid):
            await sms.verify(PHONE, "login", wrong)
    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "login", code)


async def test_concurrent_guesses_get_no_more_than_five_tries(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    code = provider.sent[0].code
    guesses = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 10)]

    results = await asyncio.gather(
        *(sms.verify(PHONE, "login", guess) for guess in [*guesses, code]), return_exceptions=True
    )

    assert all(isinstance(result, SmsCodeInvalid) for result in results[:-1])
    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "login", code)


async def test_concurrent_verification_admits_exactly_one(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "login", client_ip=IP)
    code = provider.sent[0].code

    results = await asyncio.gather(
        *(sms.verify(PHONE, "login", code) for _ in range(5)), return_exceptions=True
    )

    assert results.count(None) == 1
    assert all(isinstance(result, SmsCodeInvalid) for result in results if result is not None)


async def test_a_new_code_replaces_the_previous_one() -> None:
    clock = FakeClock(MORNING)
    provider = FakeProvider()
    sms = SmsCodes(MemoryCodeStore(clock=clock), provider, key=KEY, clock=clock)
    await sms.send(PHONE, "login", client_ip=IP)
    clock.advance(60)
    await sms.send(PHONE, "login", client_ip=IP)
    old, new = provider.sent[0].code, provider.sent[1].code

    if old != new:  # one time in a million the two codes are equal
        with pytest.raises(SmsCodeInvalid):
            await sms.verify(PHONE, "login", old)
    await sms.verify(PHONE, "login", new)


async def test_resend_within_a_minute_is_refused() -> None:
    clock = FakeClock(MORNING)
    sms = SmsCodes(MemoryCodeStore(clock=clock), FakeProvider(), key=KEY, clock=clock)
    await sms.send(PHONE, "login", client_ip=IP)
    clock.advance(20)

    with pytest.raises(SmsTooFrequent) as refused:
        await sms.send(PHONE, "register", client_ip=IP)  # any purpose: the limit is the phone's
    assert refused.value.extra["retry_after"] == 40
    assert refused.value.headers["Retry-After"] == "40"
    assert (refused.value.code, refused.value.status) == ("sms.too_frequent", 429)

    clock.advance(40)
    await sms.send(PHONE, "register", client_ip=IP)


async def test_redis_resend_within_a_minute_is_refused(harness: Harness) -> None:
    sms = service(harness, FakeProvider())
    await sms.send(PHONE, "login", client_ip=IP)

    with pytest.raises(SmsTooFrequent) as refused:
        await sms.send(PHONE, "login", client_ip=IP)
    assert 0 < refused.value.extra["retry_after"] <= 60


async def test_eleventh_send_of_the_day_is_refused() -> None:
    clock = FakeClock(MORNING)
    sms = SmsCodes(MemoryCodeStore(clock=clock), FakeProvider(), key=KEY, clock=clock)
    for _ in range(10):
        await sms.send(PHONE, "login", client_ip=IP)
        clock.advance(61)

    with pytest.raises(SmsTooFrequent) as refused:
        await sms.send(PHONE, "login", client_ip=IP)
    assert refused.value.extra["retry_after"] == 14 * 3600 - 610  # until Beijing midnight

    clock.advance(14 * 3600 - 610)
    await sms.send(PHONE, "login", client_ip=IP)


async def test_sends_per_client_address_are_limited() -> None:
    clock = FakeClock(MORNING)
    sms = SmsCodes(MemoryCodeStore(clock=clock), FakeProvider(), key=KEY, clock=clock, ip_max=3)
    for n in range(3):
        await sms.send(f"1380000000{n}", "login", client_ip=IP)

    with pytest.raises(SmsTooFrequent) as refused:
        await sms.send("13800000009", "login", client_ip=IP)
    assert refused.value.extra["retry_after"] == 3600
    await sms.send("13800000009", "login", client_ip="203.0.113.8")

    clock.advance(3600)
    await sms.send("13800000008", "login", client_ip=IP)


async def test_an_ipv6_network_counts_as_one_address() -> None:
    clock = FakeClock(MORNING)
    sms = SmsCodes(MemoryCodeStore(clock=clock), FakeProvider(), key=KEY, clock=clock, ip_max=1)
    await sms.send("13800000001", "login", client_ip="2001:db8:1:2::1")

    with pytest.raises(SmsTooFrequent):
        await sms.send("13800000002", "login", client_ip="2001:db8:1:2:ffff::9")
    await sms.send("13800000003", "login", client_ip="2001:db8:1:3::1")


@pytest.mark.parametrize(
    "phone", ["12800000001", "1380000000", "138000000012", "１３８００００００01", "13800000001\n"]
)
async def test_only_mainland_mobile_numbers_get_codes(phone: str) -> None:
    provider = FakeProvider()
    sms = SmsCodes(MemoryCodeStore(), provider, key=KEY)

    with pytest.raises(InvalidRequest) as refused:
        await sms.send(phone, "login", client_ip=IP)
    assert refused.value.extra["field"] == "phone"
    assert provider.sent == []


async def test_unknown_purposes_are_refused() -> None:
    sms = SmsCodes(MemoryCodeStore(), FakeProvider(), key=KEY)

    with pytest.raises(InvalidRequest) as refused:
        await sms.send(PHONE, "transfer", client_ip=IP)
    assert refused.value.extra["field"] == "purpose"


@pytest.mark.parametrize("code", ["", "12345", "1234567", "１２３４５６", "12345\n"])
async def test_malformed_codes_fail_alike(code: str) -> None:
    sms = SmsCodes(MemoryCodeStore(), FakeProvider(), key=KEY)

    with pytest.raises(SmsCodeInvalid) as refused:
        await sms.verify(PHONE, "login", code)
    assert (refused.value.code, refused.value.status) == ("sms.code_invalid", 400)


async def test_a_code_sent_for_an_account_serves_that_account_only(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    await sms.send(PHONE, "bind", client_ip=IP, holder="owner")
    code = provider.sent[0].code
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"

    # Someone else's guesses, even of the right code, neither pass nor use up its attempts.
    for guess in [code, *[wrong] * 10]:
        with pytest.raises(SmsCodeInvalid):
            await sms.verify(PHONE, "bind", guess, holder="stranger")
    with pytest.raises(SmsCodeInvalid):
        await sms.verify(PHONE, "bind", code)  # nor without an account
    await sms.verify(PHONE, "bind", code, holder="owner")


async def test_an_undelivered_send_is_limited_like_any_other(harness: Harness) -> None:
    provider = FakeProvider()
    sms = service(harness, provider)
    answer = await sms.send(PHONE, "bind", client_ip=IP, holder="a", deliver=False)

    assert answer == (300, 60) and provider.sent == []
    with pytest.raises(SmsTooFrequent):
        await sms.send(PHONE, "bind", client_ip=IP, holder="b")


# --- notices ------------------------------------------------------------------------------


async def test_a_notice_is_sent_once_per_key_and_interval() -> None:
    clock = FakeClock(MORNING)
    provider = FakeProvider()
    notices = SmsNotices(provider, MemoryCodeStore(clock=clock))
    for _ in range(5):
        notices.send_later(PHONE, "有人尝试绑定", purpose="bind_notice", once_per=("k", 3600))
    notices.send_later("13800000002", "another", purpose="bind_notice", once_per=("k2", 3600))
    await notices.drain()

    assert [(m.phone, m.text, m.purpose, m.code) for m in provider.sent] == [
        (PHONE, "有人尝试绑定", "bind_notice", ""),
        ("13800000002", "another", "bind_notice", ""),
    ]
    clock.advance(3600)
    notices.send_later(PHONE, "again", purpose="bind_notice", once_per=("k", 3600))
    await notices.drain()
    assert provider.sent[-1].text == "again"


async def test_a_notice_that_cannot_be_delivered_is_logged_not_raised() -> None:
    http = mock_gateway(500, [])
    notices = SmsNotices(HttpSmsProvider("https://sms.example/send", http=http), MemoryCodeStore())

    with structlog.testing.capture_logs() as captured:
        notices.send_later(PHONE, "t", purpose="bind_notice")
        await notices.drain()
    await http.aclose()

    assert any(e["event"] == "sms_notice_failed" for e in captured)
    assert PHONE not in repr(captured)


def test_a_short_key_is_refused() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        SmsCodes(MemoryCodeStore(), FakeProvider(), key=b"short")


def test_text_is_chinese_with_code_and_minutes() -> None:
    assert text_for("123456", 5) == "【网上国网】验证码 123456，5 分钟内有效，请勿告诉他人。"


# --- providers ----------------------------------------------------------------------------


async def test_console_provider_appends_a_private_json_line(tmp_path: Path) -> None:
    outbox = tmp_path / "sms-outbox.jsonl"
    provider = ConsoleSmsProvider(outbox, clock=lambda: MORNING)
    await provider.send(PHONE, "text one", purpose="login", code="123456")
    await provider.send(PHONE, "text two", purpose="bind", code="654321")

    assert stat.S_IMODE(outbox.stat().st_mode) == 0o600
    lines = [orjson.loads(line) for line in outbox.read_bytes().splitlines()]
    assert lines[0] == {
        "ts": "2025-11-22T02:00:00Z",
        "phone": PHONE,
        "purpose": "login",
        "code": "123456",
        "text": "text one",
    }
    assert lines[1]["code"] == "654321"


def mock_gateway(status: int, seen: list[httpx.Request]) -> httpx.AsyncClient:
    """A client whose every request the SMS gateway answers with ``status``."""

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json={})

    return httpx.AsyncClient(transport=httpx.MockTransport(answer))


async def test_http_provider_posts_phone_and_templated_text() -> None:
    seen: list[httpx.Request] = []
    async with mock_gateway(200, seen) as http:
        provider = HttpSmsProvider(
            "https://sms.example/send",
            template="code {code} ({minutes} min)",
            token="t0k",
            http=http,
        )
        await provider.send(PHONE, "ignored", purpose="login", code="123456")

    [request] = seen
    assert request.method == "POST" and str(request.url) == "https://sms.example/send"
    assert request.headers["Authorization"] == "Bearer t0k"
    assert orjson.loads(request.content) == {"phone": PHONE, "text": "code 123456 (5 min)"}


async def test_http_provider_without_token_sends_no_authorization() -> None:
    seen: list[httpx.Request] = []
    async with mock_gateway(204, seen) as http:
        await HttpSmsProvider("https://sms.example/send", http=http).send(
            PHONE, "t", purpose="login", code="123456"
        )

    assert "Authorization" not in seen[0].headers


async def test_http_provider_sends_a_notice_as_written() -> None:
    seen: list[httpx.Request] = []
    async with mock_gateway(200, seen) as http:
        provider = HttpSmsProvider("https://sms.example/send", template="code {code}", http=http)
        await provider.send(PHONE, "您的户号已绑定", purpose="bind_notice", code="")

    assert orjson.loads(seen[0].content) == {"phone": PHONE, "text": "您的户号已绑定"}


def refusing_client() -> httpx.AsyncClient:
    """A client whose requests never reach the gateway."""

    def fail(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    return httpx.AsyncClient(transport=httpx.MockTransport(fail))


@pytest.mark.parametrize("failure", ["status", "transport"])
async def test_http_provider_failures_are_logged_without_the_code(
    failure: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    http = mock_gateway(500, []) if failure == "status" else refusing_client()
    provider = HttpSmsProvider("https://sms.example/send", token="t0k", http=http)

    with structlog.testing.capture_logs() as captured, pytest.raises(SmsDeliveryFailed) as failed:
        await provider.send(PHONE, "t", purpose="login", code="987654")
    await http.aclose()

    assert (failed.value.code, failed.value.status) == ("sms.unavailable", 503)
    logged = repr(captured) + caplog.text
    assert "138****0001" in logged
    assert "987654" not in logged and PHONE not in logged and "t0k" not in logged


async def test_delivery_failure_reaches_the_caller() -> None:
    http = mock_gateway(502, [])
    provider = HttpSmsProvider("https://sms.example/send", http=http)
    sms = SmsCodes(MemoryCodeStore(), provider, key=KEY)

    with pytest.raises(SmsDeliveryFailed):
        await sms.send(PHONE, "login", client_ip=IP)
    await http.aclose()


def test_http_provider_needs_code_in_its_template() -> None:
    with pytest.raises(ConfigurationError, match="code"):
        HttpSmsProvider("https://sms.example/send", template="您的验证码已发送")


@pytest.mark.parametrize(
    ("kind", "production", "url"),
    [
        ("console", True, None),
        ("http", False, None),
        ("http", True, ""),
        ("carrier-pigeon", False, None),
    ],
)
def test_provider_for_refuses(kind: str, production: bool, url: str | None, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError):
        provider_for(kind, production=production, outbox=tmp_path / "o.jsonl", url=url)


def test_provider_for_builds_each_kind(tmp_path: Path) -> None:
    outbox = tmp_path / "sms-outbox.jsonl"

    console = provider_for("console", production=False, outbox=outbox, url=None)
    http = provider_for("http", production=True, outbox=outbox, url="https://sms.example/send")

    assert isinstance(console, ConsoleSmsProvider) and console.outbox == outbox
    assert isinstance(http, HttpSmsProvider)

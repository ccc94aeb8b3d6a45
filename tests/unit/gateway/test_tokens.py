"""User-token verification: signatures, claims, key rotation, revocation, JWKS and Redis feeds."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from redis.asyncio import Redis

from gridgate.errors import InvalidToken
from gridgate.gateway.tokens import (
    Claims,
    JwksFetcher,
    JwksVerifier,
    MemoryRevocationList,
    RedisRevocationFeed,
    keys_from_jwks,
)
from tests.support.redis import RedisServer

ISSUER = "https://accounts.gridgate.test"
AUDIENCE = "gridgate-gateway"
JWKS_URL = "http://accounts.test/.well-known/jwks.json"
DEADLINE_S = 10.0
_DROP = object()


def _b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _raw_public(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def jwk(key: Ed25519PrivateKey, kid: str) -> dict[str, str]:
    """The public JWK of ``key`` as the accounts service publishes it."""
    x = _b64url(_raw_public(key))
    return {"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": x, "use": "sig", "alg": "EdDSA"}


def jwks(*pairs: tuple[Ed25519PrivateKey, str]) -> dict[str, Any]:
    return {"keys": [jwk(key, kid) for key, kid in pairs]}


def claims(**changes: object) -> dict[str, Any]:
    """A valid payload; a change to ``_DROP`` removes the claim."""
    now = int(time.time())
    payload: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "acc-0001",
        "lvl": 1,
        "ch": "app",
        "sid": "sess-0001",
        "iat": now,
        "exp": now + 900,
    }
    payload.update(changes)
    return {name: value for name, value in payload.items() if value is not _DROP}


def sign(key: Ed25519PrivateKey, kid: str = "k1", /, **changes: object) -> str:
    return jwt.encode(claims(**changes), key, algorithm="EdDSA", headers={"kid": kid})


def forge_hs256(secret: bytes, kid: str = "k1") -> str:
    """An HS256 token keyed with public key material: the classic algorithm confusion."""
    header = _b64url(json.dumps({"alg": "HS256", "typ": "JWT", "kid": kid}).encode())
    body = _b64url(json.dumps(claims()).encode())
    mac = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64url(mac)}"


class Clock:
    """A clock that moves only when the test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def revoked() -> MemoryRevocationList:
    return MemoryRevocationList()


@pytest.fixture
def verifier(key: Ed25519PrivateKey, revoked: MemoryRevocationList) -> JwksVerifier:
    found = JwksVerifier(ISSUER, AUDIENCE, revoked=revoked)
    found.set_keys(jwks((key, "k1")))
    return found


def test_valid_token_gives_its_claims(verifier: JwksVerifier, key: Ed25519PrivateKey) -> None:
    exp = int(time.time()) + 900
    assert verifier.verify(sign(key, exp=exp, lvl=2, sid="s-9")) == Claims(
        account_id="acc-0001", level=2, channel="app", session_id="s-9", expires_at=exp
    )


def test_expired_token_is_refused(verifier: JwksVerifier, key: Ed25519PrivateKey) -> None:
    with pytest.raises(InvalidToken, match="expired"):
        verifier.verify(sign(key, exp=int(time.time()) - 60))


def test_expiry_leeway_absorbs_clock_skew(
    key: Ed25519PrivateKey, revoked: MemoryRevocationList
) -> None:
    lenient = JwksVerifier(ISSUER, AUDIENCE, revoked=revoked, leeway_s=120)
    lenient.set_keys(jwks((key, "k1")))
    assert lenient.verify(sign(key, exp=int(time.time()) - 30)).level == 1
    with pytest.raises(InvalidToken, match="expired"):
        lenient.verify(sign(key, exp=int(time.time()) - 600))


@pytest.mark.parametrize("lifetime_s", [961, 3600, 10 * 365 * 86_400])
def test_a_token_living_longer_than_the_cap_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey, lifetime_s: int
) -> None:
    now = int(time.time())
    with pytest.raises(InvalidToken, match="lifetime"):
        verifier.verify(sign(key, iat=now, exp=now + lifetime_s))
    # Backdating iat does not help: the span counts, and iat may not be in the future.
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, iat=now + lifetime_s - 900, exp=now + lifetime_s))


def test_the_lifetime_cap_is_the_verifiers_setting(
    key: Ed25519PrivateKey, revoked: MemoryRevocationList
) -> None:
    now = int(time.time())
    token = sign(key, iat=now, exp=now + 3600)
    lenient = JwksVerifier(ISSUER, AUDIENCE, revoked=revoked, max_lifetime_s=3600)
    lenient.set_keys(jwks((key, "k1")))
    assert lenient.verify(token).level == 1
    strict = JwksVerifier(ISSUER, AUDIENCE, revoked=revoked, max_lifetime_s=600)
    strict.set_keys(jwks((key, "k1")))
    with pytest.raises(InvalidToken, match="lifetime"):
        strict.verify(sign(key, iat=now, exp=now + 900))


def test_the_issued_lifetime_passes_by_default(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    from gridgate.accounts.tokens import ACCESS_TTL_S  # noqa: PLC0415

    now = int(time.time())
    assert verifier.verify(sign(key, iat=now, exp=now + ACCESS_TTL_S)).level == 1


def test_token_issued_in_the_future_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    with pytest.raises(InvalidToken, match="not yet valid"):
        verifier.verify(sign(key, iat=int(time.time()) + 600))


def test_tampered_payload_is_refused(verifier: JwksVerifier, key: Ed25519PrivateKey) -> None:
    header, _, signature = sign(key, lvl=0).split(".")
    raised = _b64url(json.dumps(claims(lvl=2)).encode())
    with pytest.raises(InvalidToken):
        verifier.verify(f"{header}.{raised}.{signature}")


def test_token_of_another_key_with_a_known_kid_is_refused(verifier: JwksVerifier) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(Ed25519PrivateKey.generate(), "k1"))


def test_alg_none_is_refused(verifier: JwksVerifier) -> None:
    unsigned = jwt.encode(claims(), "", algorithm="none", headers={"kid": "k1"})
    with pytest.raises(InvalidToken, match="algorithm"):
        verifier.verify(unsigned)


def test_hs256_keyed_with_the_public_key_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    for secret in (pem, _raw_public(key), jwk(key, "k1")["x"].encode()):
        with pytest.raises(InvalidToken, match="algorithm"):
            verifier.verify(forge_hs256(secret))


def test_critical_header_extensions_are_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    token = jwt.encode(claims(), key, algorithm="EdDSA", headers={"kid": "k1", "crit": ["exp"]})
    with pytest.raises(InvalidToken):
        verifier.verify(token)


@pytest.mark.parametrize("token", ["", "abc", "a.b.c", "x" * 5000, "e30.e30.e30"])
def test_garbage_is_refused(verifier: JwksVerifier, token: str) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(token)


def test_unknown_kid_is_refused_and_asks_for_fresh_keys(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    asked: list[bool] = []
    verifier.on_unknown_kid = lambda: asked.append(True)
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(sign(key, "k-new"))
    assert asked == [True]


def test_token_without_kid_is_refused(verifier: JwksVerifier, key: Ed25519PrivateKey) -> None:
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(jwt.encode(claims(), key, algorithm="EdDSA"))


@pytest.mark.parametrize(
    "changes",
    [
        {"iss": "https://evil.test"},
        {"aud": "another-service"},
        {"aud": ["another-service"]},
    ],
)
def test_wrong_issuer_or_audience_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey, changes: dict[str, object]
) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, **changes))


@pytest.mark.parametrize("name", ["iss", "aud", "sub", "lvl", "ch", "sid", "iat", "exp"])
def test_missing_claim_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey, name: str
) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, **{name: _DROP}))


@pytest.mark.parametrize(
    "changes",
    [
        {"lvl": 3},
        {"lvl": -1},
        {"lvl": "1"},
        {"lvl": True},
        {"lvl": 1.0},
        {"sub": 12345},
        {"sub": ""},
        {"ch": ["app"]},
        {"sid": ""},
        {"exp": str(int(time.time()) + 900)},
        {"iat": str(int(time.time()))},
    ],
)
def test_ill_typed_or_out_of_range_claim_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey, changes: dict[str, object]
) -> None:
    with pytest.raises(InvalidToken):
        verifier.verify(sign(key, **changes))


def test_revoked_session_is_refused(
    verifier: JwksVerifier, key: Ed25519PrivateKey, revoked: MemoryRevocationList
) -> None:
    revoked.revoke("sess-0001", time.time() + 900)
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(sign(key, sid="sess-0001"))
    assert verifier.verify(sign(key, sid="sess-0002")).session_id == "sess-0002"


def test_rotation_keeps_both_keys_valid_until_the_old_one_is_removed(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    new = Ed25519PrivateKey.generate()
    old_token, new_token = sign(key, "k1"), sign(new, "k2")
    verifier.set_keys(jwks((key, "k1"), (new, "k2")))
    assert verifier.verify(old_token).account_id == "acc-0001"
    assert verifier.verify(new_token).account_id == "acc-0001"
    verifier.set_keys(jwks((new, "k2")))
    assert verifier.key_ids == {"k2"}
    with pytest.raises(InvalidToken, match="unknown signing key"):
        verifier.verify(old_token)
    assert verifier.verify(new_token).account_id == "acc-0001"


def test_only_ed25519_signing_keys_are_taken_from_a_jwks(key: Ed25519PrivateKey) -> None:
    good = jwk(key, "good")
    x25519 = X25519PrivateKey.generate().public_key().public_bytes_raw()
    document = {
        "keys": [
            good,
            {"kty": "RSA", "kid": "rsa", "n": "AQAB", "e": "AQAB"},
            {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
            {"kty": "OKP", "crv": "X25519", "kid": "dh", "x": _b64url(x25519)},
            {**good, "kid": "enc", "use": "enc"},
            {**good, "kid": "other-alg", "alg": "ES256"},
            {**good, "kid": "short", "x": good["x"][:-2]},
            {**good, "kid": "private", "d": _b64url(b"\0" * 32)},
            {key: value for key, value in good.items() if key != "kid"},
            {**jwk(Ed25519PrivateKey.generate(), "good")},  # duplicate kid: first one wins
            "not-a-key",
        ]
    }
    assert set(keys_from_jwks(document)) == {"good"}


def test_jwks_without_usable_key_keeps_the_current_keys(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    documents: list[dict[str, Any]] = [
        {"keys": []},
        {"keys": [{"kty": "RSA", "kid": "k9"}]},
        {"nothing": 1},
    ]
    for document in documents:
        with pytest.raises(ValueError):
            verifier.set_keys(document)
    assert verifier.verify(sign(key)).level == 1


def test_revocations_expire_after_the_token_lifetime_and_grace() -> None:
    clock = Clock()
    revoked = MemoryRevocationList(grace_s=30, clock=clock)
    revoked.revoke("s1", clock.now + 900)
    revoked.revoke("s1", clock.now + 10)  # an earlier logout does not shorten the revocation
    assert revoked.is_revoked("s1")
    assert not revoked.is_revoked("s2")
    clock.now += 900 + 29
    assert revoked.is_revoked("s1")
    clock.now += 2
    assert not revoked.is_revoked("s1")
    revoked.purge()
    assert revoked._until == {}


# Redis feed ------------------------------------------------------------------------------


async def _until(condition: Callable[[], bool]) -> None:
    async with asyncio.timeout(DEADLINE_S):
        while not condition():
            await asyncio.sleep(0.01)


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_server.url.replace("/0", "/7"))
    await client.flushdb()
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture
def prefix() -> str:
    # Pub/sub channels are shared by all databases: a prefix of its own isolates each test.
    return f"gg:test:{uuid.uuid4().hex}:"


async def _stop(stopping: asyncio.Event, *tasks: asyncio.Task[None]) -> None:
    stopping.set()
    async with asyncio.timeout(DEADLINE_S):
        await asyncio.gather(*tasks)


async def test_a_logout_on_one_node_reaches_the_others(redis: Redis, prefix: str) -> None:
    here, there = MemoryRevocationList(), MemoryRevocationList()
    accounts = RedisRevocationFeed(redis, here, prefix=prefix)
    # No periodic reload during the test: after the first one only pub/sub can deliver.
    gateway = RedisRevocationFeed(redis, there, prefix=prefix, reload_s=3600)
    await accounts.publish("before-start", time.time() + 900)
    stopping = asyncio.Event()
    task = asyncio.create_task(gateway.run(stopping))
    try:
        await _until(lambda: there.is_revoked("before-start"))
        await accounts.publish("sess-1", time.time() + 900)
        await _until(lambda: there.is_revoked("sess-1"))
        assert here.is_revoked("sess-1")
        assert not there.is_revoked("sess-2")
    finally:
        await _stop(stopping, task)


async def test_a_missed_message_is_caught_up_by_the_reload(redis: Redis, prefix: str) -> None:
    there = MemoryRevocationList()
    gateway = RedisRevocationFeed(redis, there, prefix=prefix)
    stopping = asyncio.Event()
    task = asyncio.create_task(gateway.run(stopping))
    try:
        await RedisRevocationFeed(redis, MemoryRevocationList(), prefix=prefix).publish(
            "running", time.time() + 900
        )
        await _until(lambda: there.is_revoked("running"))  # the first reload is behind us
        await redis.publish(prefix + "events", b"not json")  # ignored, the loop carries on
        # Written to the set without a message, as if the message had been lost.
        await redis.zadd(prefix + "sessions", {"lost-msg": time.time() + 900})
        await _until(lambda: there.is_revoked("lost-msg"))
    finally:
        await _stop(stopping, task)


async def test_reload_drops_expired_revocations(redis: Redis, prefix: str) -> None:
    clock = Clock(time.time())
    there = MemoryRevocationList(grace_s=30, clock=clock)
    feed = RedisRevocationFeed(redis, there, prefix=prefix, clock=clock)
    await redis.zadd(prefix + "sessions", {"old": clock.now - 3600, "live": clock.now + 900})
    await feed.reload()
    assert not there.is_revoked("old")
    assert there.is_revoked("live")
    assert await redis.zscore(prefix + "sessions", "old") is None


# JWKS fetcher ----------------------------------------------------------------------------


class JwksServer:
    """A JWKS endpoint whose answer the test changes."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.status = 200
        self.requests = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert str(request.url) == JWKS_URL
        return httpx.Response(self.status, json=self.document)


def _fetcher(
    server: JwksServer, verifier: JwksVerifier, **options: float
) -> tuple[JwksFetcher, httpx.AsyncClient]:
    http = httpx.AsyncClient(transport=httpx.MockTransport(server))
    return JwksFetcher(JWKS_URL, verifier, http=http, **options), http


async def test_refresh_installs_the_served_keys(key: Ed25519PrivateKey) -> None:
    verifier = JwksVerifier(ISSUER, AUDIENCE, revoked=MemoryRevocationList())
    fetcher, http = _fetcher(JwksServer(jwks((key, "k1"))), verifier)
    async with http:
        await fetcher.refresh()
    assert verifier.verify(sign(key)).account_id == "acc-0001"


async def test_failed_refresh_keeps_the_old_keys(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    server = JwksServer({"keys": []})
    fetcher, http = _fetcher(server, verifier)
    async with http:
        with pytest.raises(ValueError):
            await fetcher.refresh()
        server.status = 503
        with pytest.raises(httpx.HTTPStatusError):
            await fetcher.refresh()
    assert verifier.verify(sign(key)).level == 1


async def test_unknown_kid_triggers_an_early_refresh(
    verifier: JwksVerifier, key: Ed25519PrivateKey
) -> None:
    new = Ed25519PrivateKey.generate()
    server = JwksServer(jwks((key, "k1")))
    fetcher, http = _fetcher(server, verifier, interval_s=3600, min_refresh_s=0)
    stopping = asyncio.Event()
    async with http:
        task = asyncio.create_task(fetcher.run(stopping))
        try:
            await _until(lambda: server.requests >= 1)
            server.document = jwks((key, "k1"), (new, "k2"))  # the accounts service rotates
            token = sign(new, "k2")

            def accepted() -> bool:
                try:
                    verifier.verify(token)
                except InvalidToken:
                    return False
                return True

            await _until(accepted)
        finally:
            await _stop(stopping, task)

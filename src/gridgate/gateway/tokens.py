"""End-user access tokens (访问令牌): local verification against the accounts service's JWKS.

The accounts service signs 15-minute JWTs with Ed25519 (``EdDSA``) and publishes its public keys
as a JWKS; several keys are valid at once so a rotation logs no one out. A gateway checks every
token locally and synchronously: no I/O on the request path. Keys arrive through
:class:`JwksFetcher`, logouts through :class:`RedisRevocationFeed` into an in-memory list.
"""

from __future__ import annotations

import asyncio
import re
import time
from base64 import urlsafe_b64decode
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import httpx
import jwt
import orjson
import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from redis.asyncio import Redis
from redis.exceptions import RedisError

from gridgate.errors import InvalidToken

__all__ = [
    "Claims",
    "JwksFetcher",
    "JwksVerifier",
    "MemoryRevocationList",
    "RedisRevocationFeed",
    "RevocationList",
    "TokenVerifier",
    "keys_from_jwks",
]

_log = structlog.get_logger("gridgate.gateway.tokens")
#: Far above any token we issue; refusing bigger ones bounds the work an attacker can cause.
MAX_TOKEN_LENGTH = 4096
#: The accounts service's access tokens live 900 s; a minute more spares a clock step.
DEFAULT_MAX_LIFETIME_S = 960.0
#: Verified tokens remembered at most (a few MB at the token size of this platform).
_VERIFIED_CACHE = 50_000
_REQUIRED = ["exp", "iat", "iss", "aud", "sub", "lvl", "ch", "sid"]
_ED25519_X = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding


@dataclass(frozen=True, slots=True)
class Claims:
    """What a verified token says: account, level (认证等级 0–2), channel, session, expiry."""

    account_id: str
    level: int
    channel: str
    session_id: str
    expires_at: int
    #: The 户号 bound to the account when the token was issued (claim ``cns``; data scope).
    customer_nos: frozenset[str] = frozenset()


class TokenVerifier(Protocol):
    """Turns a bearer token into :class:`Claims`, or raises :class:`InvalidToken`."""

    def verify(self, token: str) -> Claims:
        """The token's claims; synchronous and without I/O (it runs on every request)."""
        ...


class RevocationList(Protocol):
    """The sessions logged out whose tokens may still be unexpired."""

    def is_revoked(self, session_id: str) -> bool:
        """Whether tokens of this session must be refused (in-memory look-up)."""
        ...


class MemoryRevocationList:
    """Revoked session ids with the time (Unix seconds) after which their tokens are dead anyway.

    An entry outlives its ``until`` by ``grace_s``: the verifier accepts tokens up to its
    expiry leeway late, and the clocks of the accounts service and the gateways may differ.
    """

    def __init__(self, *, grace_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.grace_s = grace_s
        self._clock = clock
        self._until: dict[str, float] = {}
        self._next_purge = 0.0
        #: Told of each revocation (session id, refuse until): the engine refuses at once.
        self.listeners: list[Callable[[str, float], None]] = []

    def entries(self) -> dict[str, float]:
        """Session id → the time until which its tokens are refused (grace included)."""
        return {sid: until + self.grace_s for sid, until in self._until.items()}

    def revoke(self, session_id: str, until: float) -> None:
        """Refuse the session's tokens until ``until`` (plus the grace)."""
        self._until[session_id] = max(until, self._until.get(session_id, until))
        for listener in self.listeners:
            listener(session_id, self._until[session_id] + self.grace_s)
        now = self._clock()
        if now >= self._next_purge:  # amortised: without a feed nothing else purges
            self.purge()
            self._next_purge = now + 60.0

    def is_revoked(self, session_id: str) -> bool:
        """Whether the session is revoked now."""
        until = self._until.get(session_id)
        return until is not None and self._clock() < until + self.grace_s

    def purge(self) -> None:
        """Forget entries whose tokens have all expired."""
        horizon = self._clock() - self.grace_s
        for session_id in [s for s, until in self._until.items() if until <= horizon]:
            del self._until[session_id]


def keys_from_jwks(jwks: Mapping[str, Any]) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 signing keys of a JWKS (RFC 7517/8037) by ``kid``; other keys are skipped."""
    entries = jwks.get("keys")
    if not isinstance(entries, list):
        raise ValueError("a JWKS needs a 'keys' list")
    found: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict):
            _log.warning("jwks_key_skipped", reason="not an object")
            continue
        kid, x = entry.get("kid"), entry.get("x")
        if entry.get("kty") != "OKP" or entry.get("crv") != "Ed25519":
            reason = f"kty {entry.get('kty')!r} crv {entry.get('crv')!r} is not OKP/Ed25519"
        elif entry.get("use", "sig") != "sig" or entry.get("alg", "EdDSA") != "EdDSA":
            reason = "not an EdDSA signing key"
        elif "d" in entry:  # a published private key is compromised: never trust it
            reason = "private key material in a public JWKS"
        elif not isinstance(kid, str) or not kid:
            reason = "no kid"  # tokens name their key by kid, so such a key is unusable
        elif not isinstance(x, str) or not _ED25519_X.fullmatch(x):
            reason = "x is not a 32-byte base64url value"
        elif kid in found:
            reason = "duplicate kid, the first one is kept"
        else:
            try:
                found[kid] = Ed25519PublicKey.from_public_bytes(urlsafe_b64decode(x + "="))
                continue
            except ValueError:
                reason = "x is not an Ed25519 public key"
        _log.warning("jwks_key_skipped", kid=kid if isinstance(kid, str) else None, reason=reason)
    return found


def _text(value: object, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidToken(f"claim {name} must be a non-empty string")
    return value


def _claims(payload: Mapping[str, Any], max_lifetime_s: float) -> Claims:
    level, exp, iat = payload["lvl"], payload["exp"], payload["iat"]
    # bool is an int in Python, and PyJWT's int() checks would take "123" for a number.
    if type(level) is not int or not 0 <= level <= 2:
        raise InvalidToken("claim lvl must be 0, 1 or 2")
    if any(type(v) not in (int, float) for v in (exp, iat)):
        raise InvalidToken("claims exp and iat must be numbers")
    # A token minted to live for days (a leaked signing key, a mistaken issuer) would outlive
    # every logout feed and key rotation: refuse what the accounts service never issues.
    if exp - iat > max_lifetime_s:
        raise InvalidToken("token lifetime (exp - iat) too long")
    bound = payload.get("cns", [])
    if not isinstance(bound, list) or not all(isinstance(c, str) for c in bound):
        raise InvalidToken("claim cns must be a list of strings")
    return Claims(
        account_id=_text(payload["sub"], "sub"),
        level=level,
        channel=_text(payload["ch"], "ch"),
        session_id=_text(payload["sid"], "sid"),
        expires_at=int(exp),
        customer_nos=frozenset(bound),
    )


class JwksVerifier:
    """A :class:`TokenVerifier` for EdDSA tokens signed by one of the current JWKS keys."""

    def __init__(
        self,
        issuer: str,
        audience: str,
        *,
        revoked: RevocationList,
        leeway_s: float = 5.0,
        max_lifetime_s: float = DEFAULT_MAX_LIFETIME_S,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.leeway_s = leeway_s
        #: The longest ``exp - iat`` accepted (settings ``token_max_lifetime_s``).
        self.max_lifetime_s = max_lifetime_s
        self._revoked = revoked
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._verified: dict[str, Claims] = {}
        #: Called (on the event loop, without arguments) when a token names an unknown key;
        #: :class:`JwksFetcher` sets it to refresh early, as after a rotation.
        self.on_unknown_kid: Callable[[], None] | None = None
        #: The JWKS document whose keys are installed (None before the first).
        self.jwks: dict[str, Any] | None = None
        #: Called (on the event loop) when the set of key ids changed: the engine gets them.
        self.on_keys_changed: Callable[[], None] | None = None

    @property
    def key_ids(self) -> frozenset[str]:
        """The ids of the keys tokens may be signed with now."""
        return frozenset(self._keys)

    def set_keys(self, jwks: Mapping[str, Any]) -> None:
        """Replace the keys at once with the JWKS's; one without a usable key changes nothing."""
        keys = keys_from_jwks(jwks)
        if not keys:
            # Wiping every key would refuse every user; the issuer can sign with none of them.
            raise ValueError("the JWKS holds no usable Ed25519 key")
        changed = keys.keys() != self._keys.keys()
        self._verified = {}  # tokens of a removed key must be checked again
        self._keys = keys  # one reference swap: a concurrent verify sees old or new, never a mix
        self.jwks = dict(jwks)
        if changed:  # not at every refresh (a minute): a console shows what changes
            _log.info("jwks_keys_set", kids=sorted(keys))
            if self.on_keys_changed is not None:
                self.on_keys_changed()

    def verify(self, token: str) -> Claims:
        """The token's claims, or :class:`InvalidToken` for anything wrong with it.

        A token verified once is remembered until it expires: a customer's app sends the same
        token many times, and the signature check is a quarter of a request's cost. Expiry and
        revocation are still checked on every call; a key change forgets everything.
        """
        cached = self._verified.get(token)
        if cached is not None:
            if time.time() <= cached.expires_at + self.leeway_s:
                if self._revoked.is_revoked(cached.session_id):
                    raise InvalidToken("session revoked")
                return cached
            del self._verified[token]
        claims = self._verify(token)
        if len(self._verified) >= _VERIFIED_CACHE:
            self._verified.clear()  # crude but bounded: a full cache refills within seconds
        self._verified[token] = claims
        return claims

    def _verify(self, token: str) -> Claims:
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidToken("malformed token")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise InvalidToken("malformed token") from exc
        # Only EdDSA, decided here and not by the token: no "none", no HS* keyed with our
        # public key. Extensions we never issue (crit, b64) are refused rather than interpreted.
        if header.get("alg") != "EdDSA" or "crit" in header or "b64" in header:
            raise InvalidToken("unsupported token algorithm or header")
        kid = header.get("kid")
        key = self._keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            if isinstance(kid, str) and self.on_unknown_kid is not None:
                self.on_unknown_kid()
            raise InvalidToken("unknown signing key")
        try:
            payload = jwt.decode(
                token,
                key,
                algorithms=["EdDSA"],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_s,
                options={"require": _REQUIRED},
            )
        except jwt.ExpiredSignatureError as exc:
            raise InvalidToken("token expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise InvalidToken("token not yet valid") from exc
        except jwt.PyJWTError as exc:
            raise InvalidToken("invalid token") from exc
        claims = _claims(payload, self.max_lifetime_s)
        if self._revoked.is_revoked(claims.session_id):
            raise InvalidToken("session revoked")
        return claims


async def _wait(events: list[asyncio.Event], timeout_s: float) -> None:
    """Return when one of the events is set or after ``timeout_s``."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=max(timeout_s, 0), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)


class RedisRevocationFeed:
    """Keeps a :class:`MemoryRevocationList` in step with logouts recorded in Redis.

    ``<prefix>sessions`` is a sorted set of session ids scored by ``until``; every revocation
    is also published on ``<prefix>events`` for immediate effect. Every ``reload_s`` the set is
    re-read, so a lost message (a reconnect) delays a logout by at most that.
    """

    def __init__(
        self,
        redis: Redis,
        revocations: MemoryRevocationList,
        *,
        prefix: str = "gg:revoked:",
        reload_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._revocations = revocations
        self._key = prefix + "sessions"
        self._channel = prefix + "events"
        self._reload_s = reload_s
        self._clock = clock

    async def publish(self, session_id: str, until: float) -> None:
        """Revoke a session everywhere until ``until`` (Unix seconds); used at logout."""
        if not session_id:
            raise ValueError("session_id must not be empty")
        async with self._redis.pipeline(transaction=True) as pipe:
            # GT keeps the later ``until`` of two logouts of one session (and still adds).
            pipe.zadd(self._key, {session_id: until}, gt=True)
            pipe.publish(self._channel, orjson.dumps({"sid": session_id, "until": until}))
            await pipe.execute()
        self._revocations.revoke(session_id, until)

    async def reload(self) -> None:
        """Apply every revocation still in force and drop the expired ones from Redis."""
        horizon = self._clock() - self._revocations.grace_s
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(self._key, "-inf", f"({horizon!r}")
            pipe.zrangebyscore(self._key, repr(horizon), "+inf", withscores=True)
            _, members = await pipe.execute()
        for member, score in members:
            sid = member.decode() if isinstance(member, bytes) else str(member)
            self._revocations.revoke(sid, float(score))
        self._revocations.purge()

    def _apply(self, data: object) -> None:
        try:
            event = orjson.loads(data if isinstance(data, bytes | str) else b"")
            sid, until = event["sid"], float(event["until"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            _log.warning("revocation_message_ignored")  # the reload still finds real ones
            return
        if isinstance(sid, str) and sid:
            self._revocations.revoke(sid, until)

    async def _follow(self, stopping: asyncio.Event) -> None:
        async with self._redis.pubsub() as pubsub:
            await pubsub.subscribe(self._channel)
            # Subscribed before the first reload, so nothing falls between the two.
            await self.reload()
            next_reload = time.monotonic() + self._reload_s
            while not stopping.is_set():
                left = next_reload - time.monotonic()
                # Short waits so a stop is noticed within a fraction of a second.
                timeout = min(max(left, 0.0), 0.25)
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=timeout)
                if message is not None and message.get("type") == "message":
                    self._apply(message.get("data"))
                if time.monotonic() >= next_reload:
                    await self.reload()
                    next_reload = time.monotonic() + self._reload_s

    async def run(self, stopping: asyncio.Event) -> None:
        """Follow revocations until ``stopping`` is set, reconnecting after Redis failures."""
        while not stopping.is_set():
            try:
                await self._follow(stopping)
            except (RedisError, OSError) as exc:
                # Known revocations stay in memory; new ones wait for the reconnection.
                _log.warning(
                    "revocation_feed_failed", error_type=type(exc).__name__, error=str(exc)
                )
                await _wait([stopping], self._reload_s)


class JwksFetcher:
    """Loads the accounts service's JWKS into a :class:`JwksVerifier`, periodically and on demand.

    A token with an unknown ``kid`` asks for an early refresh (a key was just added), but no
    more often than ``min_refresh_s``: tokens with made-up kids must not flood the JWKS URL.
    """

    def __init__(
        self,
        url: str,
        verifier: JwksVerifier,
        *,
        http: httpx.AsyncClient | None = None,
        interval_s: float = 60.0,
        min_refresh_s: float = 5.0,
    ) -> None:
        self.url = url
        self._verifier = verifier
        self._http = http
        self._interval_s = interval_s
        self._min_refresh_s = min_refresh_s
        self._wanted = asyncio.Event()
        verifier.on_unknown_kid = self.request_refresh

    def request_refresh(self) -> None:
        """Ask the running loop to fetch the JWKS soon (call from the event loop thread)."""
        self._wanted.set()

    async def refresh(self) -> None:
        """Fetch the JWKS and install its keys; on any error the old keys stay and it raises."""
        if self._http is None:
            async with httpx.AsyncClient(timeout=5.0) as http:
                answer = await http.get(self.url)
        else:
            answer = await self._http.get(self.url)
        answer.raise_for_status()
        document = answer.json()
        if not isinstance(document, dict):
            raise ValueError("the JWKS is not a JSON object")
        self._verifier.set_keys(document)

    async def run(self, stopping: asyncio.Event) -> None:
        """Refresh every ``interval_s`` and when asked, until ``stopping`` is set."""
        while not stopping.is_set():
            self._wanted.clear()  # a request arriving during the fetch triggers another one
            wait_s = self._interval_s
            try:
                await self.refresh()
            except (httpx.HTTPError, ValueError) as exc:
                _log.warning("jwks_refresh_failed", url=self.url, error=str(exc))
                wait_s = self._min_refresh_s  # the old keys serve meanwhile; retry soon
            await _wait([stopping], self._min_refresh_s)
            await _wait([stopping, self._wanted], wait_s - self._min_refresh_s)

"""SMS one-time codes (短信验证码): send through a provider, keep only a keyed hash, verify once.

Codes live in a :class:`CodeStore` (memory for one process, Redis for a cluster), never in
the database and never in clear. Rules (OWASP ASVS 2.7): 6 digits from the CSPRNG, valid
``ttl_s``, bound to phone and purpose, single use, at most ``max_attempts`` comparisons;
sending limited per phone (``resend_s``, ``daily_max`` per Beijing calendar day) and per
client IP.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import structlog
from redis.asyncio import Redis

from gridgate.accounts.interfaces import CodeStore, Limit, SmsProvider
from gridgate.addresses import client_bucket
from gridgate.errors import ConfigurationError, GridgateError, InvalidRequest
from gridgate.pii import mask_phone

__all__ = [
    "PURPOSES",
    "CodeStore",
    "ConsoleSmsProvider",
    "HttpSmsProvider",
    "Limit",
    "MemoryCodeStore",
    "RedisCodeStore",
    "SmsCodeInvalid",
    "SmsCodes",
    "SmsDeliveryFailed",
    "SmsNotices",
    "SmsProvider",
    "SmsTooFrequent",
    "provider_for",
    "text_for",
]

PURPOSES = frozenset({"register", "login", "bind", "reset_password"})
DEFAULT_TEMPLATE = "【网上国网】验证码 {code}，{minutes} 分钟内有效，请勿告诉他人。"
# [0-9], not \d: \d also takes Arabic-Indic and full-width digits.
_PHONE = re.compile(r"1[3-9][0-9]{9}")
_CODE = re.compile(r"[0-9]{6}")
_DAY_S = 86_400
_BEIJING_OFFSET_S = 8 * 3600  # China has no daylight saving: a fixed offset is exact
_log = structlog.get_logger("gridgate.accounts.sms")


class SmsTooFrequent(GridgateError):
    """A send limit for this phone or client address is reached; retry after ``retry_after`` s."""

    code = "sms.too_frequent"
    status = 429
    title = "Too many SMS codes requested"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, retry_after=retry_after)
        self.headers["Retry-After"] = str(retry_after)


class SmsCodeInvalid(GridgateError):
    """The code is wrong, expired, used or exhausted (deliberately not saying which)."""

    code = "sms.code_invalid"
    status = 400
    title = "Invalid or expired SMS code"


class SmsDeliveryFailed(GridgateError):
    """The SMS gateway did not accept the message."""

    code = "sms.unavailable"
    status = 503
    title = "SMS service unavailable"


def text_for(code: str, minutes: int, template: str = DEFAULT_TEMPLATE) -> str:
    """The message carrying ``code``: ``template`` with ``{code}`` and ``{minutes}`` filled."""
    # Plain replacement, not str.format: a template may hold other braces.
    return template.replace("{code}", code).replace("{minutes}", str(minutes))


class ConsoleSmsProvider:
    """Development only: appends each message as a JSON line to ``outbox`` (mode 0600)."""

    def __init__(self, outbox: Path, *, clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self._clock = clock

    def _append(self, line: bytes) -> None:
        self.outbox.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.outbox, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.fchmod(fd, 0o600)  # also when the file was made by someone else's umask
            os.write(fd, line)  # one write with O_APPEND: concurrent lines never interleave
        finally:
            os.close(fd)

    async def send(self, phone: str, text: str, *, purpose: str, code: str) -> None:
        """Append ``{"ts", "phone", "purpose", "code", "text"}`` to the outbox."""
        ts = datetime.fromtimestamp(self._clock(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        record = {"ts": ts, "phone": phone, "purpose": purpose, "code": code, "text": text}
        await asyncio.to_thread(self._append, orjson.dumps(record) + b"\n")


class HttpSmsProvider:
    """Posts ``{"phone", "text"}`` as JSON to a real SMS gateway, text from ``template``."""

    def __init__(
        self,
        url: str,
        *,
        template: str = DEFAULT_TEMPLATE,
        token: str | None = None,
        http: httpx.AsyncClient | None = None,
        minutes: int = 5,
    ) -> None:
        if "{code}" not in template:
            raise ConfigurationError("the SMS template must contain {code}")
        self._url = url
        self._template = template
        self._minutes = minutes
        self._headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._owns_client = http is None
        self._http = http if http is not None else httpx.AsyncClient(timeout=5.0)

    async def send(self, phone: str, text: str, *, purpose: str, code: str) -> None:
        """Deliver the templated message (a notice's own ``text`` when ``code`` is empty);
        SmsDeliveryFailed unless the gateway answers 2xx."""
        if code:
            text = text_for(code, self._minutes, self._template)
        body = {"phone": phone, "text": text}
        # Log lines carry the masked phone and never the code: logs outlive the code's 5 minutes.
        try:
            answer = await self._http.post(self._url, json=body, headers=self._headers)
        except httpx.HTTPError as exc:
            _log.warning("sms_delivery_failed", phone=mask_phone(phone), error=type(exc).__name__)
            raise SmsDeliveryFailed from None
        if not answer.is_success:
            _log.warning("sms_delivery_failed", phone=mask_phone(phone), status=answer.status_code)
            raise SmsDeliveryFailed
        _log.info("sms_sent", phone=mask_phone(phone), purpose=purpose)

    async def close(self) -> None:
        """Close the HTTP client if this provider made it."""
        if self._owns_client:
            await self._http.aclose()


def provider_for(
    kind: str,
    *,
    production: bool,
    outbox: Path,
    url: str | None,
    template: str = DEFAULT_TEMPLATE,
    token: str | None = None,
    minutes: int = 5,
) -> SmsProvider:
    """The provider a setting names; refuses ``console`` in production and ``http`` sans URL."""
    if kind == "console":
        if production:
            raise ConfigurationError("the console SMS provider is refused in production")
        return ConsoleSmsProvider(outbox)
    if kind == "http":
        if not url:
            raise ConfigurationError("the http SMS provider needs a URL")
        return HttpSmsProvider(url, template=template, token=token, minutes=minutes)
    raise ConfigurationError(f"unknown SMS provider {kind!r} (console or http)")


@dataclass(slots=True)
class _Code:
    digest: bytes
    left: int
    expiry: float


class MemoryCodeStore:
    """Codes and counters of one process (development, single node, tests)."""

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._codes: dict[str, _Code] = {}
        self._counters: dict[str, tuple[int, float]] = {}  # key: (count, expiry)
        self._sweep_at = 1024

    def _live(self, key: str) -> _Code | None:
        code = self._codes.get(key)
        if code is not None and code.expiry <= self._clock():
            del self._codes[key]
            return None
        return code

    async def put_code(self, key: str, digest: bytes, *, attempts: int, ttl_s: float) -> None:
        """Store the code for ``key`` (phone and purpose), replacing any earlier one."""
        now = self._clock()
        # Sweep expired entries each time the maps double: amortised O(1), memory bounded.
        if len(self._codes) + len(self._counters) >= self._sweep_at:
            self._codes = {k: v for k, v in self._codes.items() if v.expiry > now}
            self._counters = {k: v for k, v in self._counters.items() if v[1] > now}
            self._sweep_at = max(1024, 2 * (len(self._codes) + len(self._counters)))
        self._codes[key] = _Code(digest, attempts, now + ttl_s)

    async def take_attempt(self, key: str) -> bytes | None:
        """Spend one attempt and return the digest; None if no code or no attempt is left."""
        code = self._live(key)
        if code is None or code.left <= 0:
            return None
        code.left -= 1
        return code.digest

    async def consume(self, key: str, digest: bytes) -> bool:
        """Delete the code if it still has ``digest``: True for the one caller that did."""
        code = self._live(key)
        if code is None or not hmac.compare_digest(code.digest, digest):
            return False
        del self._codes[key]
        return True

    async def acquire(self, limits: Sequence[Limit]) -> float:
        """Count one event on every limit, or on none if one is full: 0, or seconds to wait."""
        now = self._clock()
        current: dict[str, tuple[int, float]] = {}
        for lim in limits:
            count, expiry = self._counters.get(lim.key, (0, now))
            current[lim.key] = (count, expiry) if expiry > now else (0, now + lim.window_s)
        waits = [current[k][1] - now for k, _, most in limits if current[k][0] >= most]
        if waits:
            return max(waits)
        for key, (count, expiry) in current.items():
            self._counters[key] = (count + 1, expiry)
        return 0.0

    async def close(self) -> None:
        """Forget every code and counter."""
        self._codes.clear()
        self._counters.clear()


# The attempt is spent before the caller compares, so concurrent guesses never get more
# than ``attempts`` comparisons between them.
_TAKE_ATTEMPT = """
local left = tonumber(redis.call('HGET', KEYS[1], 'left') or '0')
if left <= 0 then return false end
redis.call('HINCRBY', KEYS[1], 'left', -1)
return redis.call('HGET', KEYS[1], 'digest')
"""
# Compare-and-delete: of concurrent verifications of the right code one deletes, the rest see
# nothing; a newer code sent meanwhile is left alone.
_CONSUME = """
if redis.call('HGET', KEYS[1], 'digest') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# KEYS: counters; ARGV: window_ms, max_count per key. Check all first, then count on all.
_ACQUIRE = """
local wait = 0
for i, key in ipairs(KEYS) do
  local window = tonumber(ARGV[2 * i - 1])
  if tonumber(redis.call('GET', key) or '0') >= tonumber(ARGV[2 * i]) then
    local ttl = redis.call('PTTL', key)
    if ttl < 0 then redis.call('PEXPIRE', key, window); ttl = window end
    if ttl > wait then wait = ttl end
  end
end
if wait > 0 then return wait end
for i, key in ipairs(KEYS) do
  if redis.call('INCR', key) == 1 then redis.call('PEXPIRE', key, ARGV[2 * i - 1]) end
end
return 0
"""


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisCodeStore:
    """Codes and counters shared by every node: a hash per code, a counter per limit key.

    Keys: ``<prefix>code:<phone>:<purpose>`` (fields ``digest``, ``left``) and
    ``<prefix>rate:<limit key>``; every key carries a TTL, so nothing outlives its window.
    """

    def __init__(self, redis: Redis, *, prefix: str = "gg:sms:", owns_client: bool = False):
        self._redis = redis
        self._prefix = prefix
        self._owns_client = owns_client
        self._take = redis.register_script(_TAKE_ATTEMPT)
        self._consume = redis.register_script(_CONSUME)
        self._acquire = redis.register_script(_ACQUIRE)

    async def put_code(self, key: str, digest: bytes, *, attempts: int, ttl_s: float) -> None:
        """Store the code for ``key`` (phone and purpose), replacing any earlier one."""
        key = f"{self._prefix}code:{key}"
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping={"digest": digest, "left": attempts})
            pipe.pexpire(key, _ms(ttl_s))
            await pipe.execute()

    async def take_attempt(self, key: str) -> bytes | None:
        """Spend one attempt and return the digest; None if no code or no attempt is left."""
        digest = await self._take(keys=[f"{self._prefix}code:{key}"])
        return bytes(digest) if digest is not None else None

    async def consume(self, key: str, digest: bytes) -> bool:
        """Delete the code if it still has ``digest``: True for the one caller that did."""
        return bool(await self._consume(keys=[f"{self._prefix}code:{key}"], args=[digest]))

    async def acquire(self, limits: Sequence[Limit]) -> float:
        """Count one event on every limit, or on none if one is full: 0, or seconds to wait."""
        keys = [f"{self._prefix}rate:{lim.key}" for lim in limits]
        args = [n for lim in limits for n in (_ms(lim.window_s), lim.max_count)]
        return int(await self._acquire(keys=keys, args=args)) / 1000

    async def close(self) -> None:
        """Close the client if this store made it (``from_url``); a lent one stays open."""
        if self._owns_client:
            await self._redis.aclose()


class SmsCodes:
    """Sends and verifies SMS codes bound to a phone and a purpose (register, login, bind …)."""

    def __init__(
        self,
        store: CodeStore,
        provider: SmsProvider,
        *,
        key: bytes,
        clock: Callable[[], float] = time.time,
        ttl_s: int = 300,
        max_attempts: int = 5,
        resend_s: int = 60,
        daily_max: int = 10,
        ip_window_s: int = 3600,
        ip_max: int = 30,
    ) -> None:
        if len(key) < 16:
            raise ValueError("the SMS code key needs at least 16 bytes")
        if min(ttl_s, max_attempts, resend_s, daily_max, ip_window_s, ip_max) < 1:
            raise ValueError("SMS code limits must be positive")
        self._store = store
        self._provider = provider
        self._key = key
        self._clock = clock
        self.ttl_s = ttl_s
        self.max_attempts = max_attempts
        self.resend_s = resend_s
        self._daily_max = daily_max
        self._ip_window_s = ip_window_s
        self._ip_max = ip_max

    def _digest(self, phone: str, purpose: str, code: str, holder: str | None) -> bytes:
        message = f"{phone}|{purpose}|{code}" + (f"|{holder}" if holder is not None else "")
        return hmac.new(self._key, message.encode(), hashlib.sha256).digest()

    @staticmethod
    def _code_key(phone: str, purpose: str, holder: str | None) -> str:
        return f"{phone}:{purpose}" + (f":{holder}" if holder is not None else "")

    def _limits(self, phone: str, client_ip: str) -> list[Limit]:
        # "Per day" is the Beijing calendar day, as Chinese SMS gateways count it.
        local = self._clock() + _BEIJING_OFFSET_S
        day = int(local // _DAY_S)
        return [
            Limit(f"phone:{phone}", self.resend_s, 1),
            Limit(f"day:{phone}:{day}", (day + 1) * _DAY_S - local, self._daily_max),
            Limit(f"ip:{client_bucket(client_ip)}", self._ip_window_s, self._ip_max),
        ]

    async def send(
        self,
        phone: str,
        purpose: str,
        *,
        client_ip: str,
        holder: str | None = None,
        deliver: bool = True,
    ) -> tuple[int, int]:
        """Send a fresh code; returns ``(expires_in, resend_after)`` in seconds.

        ``holder`` (an account id) binds the code to the account that asked for it: only that
        account can use it, and nobody else's wrong guesses use up its attempts. Without
        ``deliver`` every step but the delivery runs (limits, the stored code): the answer for
        a 户号 that does not exist, which must look like any other.
        """
        if not _PHONE.fullmatch(phone):
            raise InvalidRequest("phone must be a mainland China mobile number", field="phone")
        if purpose not in PURPOSES:
            raise InvalidRequest(f"purpose must be one of {sorted(PURPOSES)}", field="purpose")
        wait = await self._store.acquire(self._limits(phone, client_ip))
        if wait > 0:
            raise SmsTooFrequent(retry_after=max(1, math.ceil(wait)))
        code = f"{secrets.randbelow(1_000_000):06d}"
        # Stored before sending, so a quick reader can use it the moment it arrives; kept if
        # delivery fails, since a timed-out gateway may still have delivered it.
        digest = self._digest(phone, purpose, code, holder)
        await self._store.put_code(
            self._code_key(phone, purpose, holder),
            digest,
            attempts=self.max_attempts,
            ttl_s=self.ttl_s,
        )
        if deliver:
            text = text_for(code, max(1, self.ttl_s // 60))  # never promise more than the TTL
            await self._provider.send(phone, text, purpose=purpose, code=code)
        return self.ttl_s, self.resend_s

    async def send_to(self, phone: str, purpose: str, *, client_ip: str) -> tuple[int, int]:
        """The same as :meth:`send` (for a phone other than the caller's, e.g. a 户号's)."""
        return await self.send(phone, purpose, client_ip=client_ip)

    async def verify(
        self, phone: str, purpose: str, code: str, *, holder: str | None = None
    ) -> None:
        """Accept the code once (sent for ``holder``, if one was named); SmsCodeInvalid for
        every kind of failure alike."""
        if not (_PHONE.fullmatch(phone) and purpose in PURPOSES and _CODE.fullmatch(code)):
            raise SmsCodeInvalid
        # Before the look-up: the same work either way.
        candidate = self._digest(phone, purpose, code, holder)
        key = self._code_key(phone, purpose, holder)
        stored = await self._store.take_attempt(key)
        if (
            stored is None
            or not hmac.compare_digest(stored, candidate)
            or not await self._store.consume(key, stored)
        ):
            raise SmsCodeInvalid


class SmsNotices:
    """Text messages that inform rather than carry a code, sent off the request path.

    Sent in the background: how long an SMS gateway takes must not show in the answer (a
    notice goes only where a phone exists, so its time would tell who exists), and a notice
    that cannot be delivered must not fail the request it is about. ``once_per`` keeps a
    victim's phone from getting one message per attempt of an attacker: one per key and time.
    """

    def __init__(self, provider: SmsProvider, store: CodeStore) -> None:
        self._provider = provider
        self._store = store
        self._pending: set[asyncio.Task[None]] = set()

    def send_later(
        self, phone: str, text: str, *, purpose: str, once_per: tuple[str, float] | None = None
    ) -> None:
        """Send ``text`` to ``phone`` soon; with ``once_per=(key, seconds)`` at most once per
        ``seconds`` for ``key``."""
        task = asyncio.get_running_loop().create_task(self._send(phone, text, purpose, once_per))
        self._pending.add(task)  # a reference, or the task may be collected mid-flight
        task.add_done_callback(self._pending.discard)

    async def _send(
        self, phone: str, text: str, purpose: str, once_per: tuple[str, float] | None
    ) -> None:
        try:
            if once_per is not None:
                key, window_s = once_per
                if await self._store.acquire([Limit(f"notice:{key}", window_s, 1)]) > 0:
                    return
            await self._provider.send(phone, text, purpose=purpose, code="")
        except Exception as exc:  # a lost notice is logged, never raised
            _log.warning(
                "sms_notice_failed",
                phone=mask_phone(phone),
                purpose=purpose,
                error=type(exc).__name__,
            )

    async def drain(self) -> None:
        """Wait for the notices under way (at shutdown, and in tests)."""
        while self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

"""The stages of the request path (seed 000: entry → identity → permission → flow → dispatch).

Each stage is a small object with one job: it reads and enriches the :class:`Exchange` and
raises a domain error to end the request. The app runs them in order; the permissions issue
adds its own stages (data scope, field filtering) through the same interface. A stage that
may wait for a store (nonces, rate limits in Redis) is a coroutine; one that never waits is a
plain call, which spares every request a coroutine per stage.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from gridgate.addresses import client_bucket
from gridgate.errors import (
    AuthRequired,
    ChannelBadSignature,
    ChannelExpired,
    ChannelIpDenied,
    ChannelNotAuthorized,
    ChannelReplayed,
    ChannelUnknown,
    InvalidRequest,
    LevelRequired,
    MethodNotAllowed,
    NotBound,
    NotFound,
    NotReady,
    PermissionDenied,
)
from gridgate.gateway.flow import RateLimiter
from gridgate.gateway.nonces import NonceStore
from gridgate.gateway.signing import NONCE, WINDOW_S, verified_query
from gridgate.gateway.snapshot import ChannelView, InterfaceView, Snapshot
from gridgate.gateway.tokens import Claims, TokenVerifier

__all__ = [
    "ChannelAuth",
    "DataScope",
    "Exchange",
    "Permission",
    "RateLimit",
    "Route",
    "Stage",
    "UserAuth",
    "required_level",
]

#: Unix seconds in ASCII digits: ``str.isdigit`` also takes "²" and Arabic-Indic digits, and
#: ``int()`` refuses more than 4,300 digits with an exception (a 500, not a 401).
_TIMESTAMP = re.compile(r"[0-9]{1,20}")
#: The request-signing headers (api.md "Channel request signing").
_SIGNING_HEADERS = ("x-gg-channel", "x-gg-timestamp", "x-gg-nonce", "x-gg-signature")
_UNSIGNED = (
    "the request is not signed: send X-GG-Channel, X-GG-Timestamp, X-GG-Nonce and "
    "X-GG-Signature (docs/api.md, Channel request signing)"
)


@dataclass(slots=True)
class Exchange:
    """One request on its way through the stages, and what they learned about it."""

    method: str
    path: str
    raw_query: str
    headers: dict[str, str]
    raw_headers: list[tuple[str, str]]
    body: bytes
    client_ip: str
    trace_id: str
    snapshot: Snapshot
    started: float = field(default_factory=time.perf_counter)
    interface: InterfaceView | None = None
    params: dict[str, str] = field(default_factory=dict)
    channel: ChannelView | None = None
    claims: Claims | None = None
    queue_wait_s: float = 0.0
    upstream: str | None = None


class Stage(Protocol):
    """One step of the request path."""

    def __call__(self, exchange: Exchange) -> Awaitable[None] | None:
        """Check or enrich ``exchange``; raise a domain error to answer now. A stage that
        waits returns what to await (an ``async def __call__`` does)."""
        ...


class Route:
    """Method + path → interface, from the snapshot (no database on the request path)."""

    def __call__(self, exchange: Exchange) -> None:
        """Find the interface or answer 404/405 (503 until the first catalog is loaded)."""
        if exchange.snapshot.revision < 0:
            raise NotReady("the gateway is loading its catalog", retry_after=1)
        found = exchange.snapshot.router.match(exchange.method, exchange.path)
        if found is False:
            raise MethodNotAllowed(f"{exchange.method} is not served at this path")
        if found is None or found is True or not found.interface.enabled:
            raise NotFound("no interface is registered at this path")
        exchange.interface = found.interface
        exchange.params = found.params


class ChannelAuth:
    """Channel authentication (api.md): HMAC signature, clock window, single-use nonce, channel
    enabled, client address allowed, interface authorized for the channel."""

    def __init__(self, nonces: NonceStore, *, clock: Callable[[], float] = time.time) -> None:
        self.nonces = nonces
        self._now = clock

    async def __call__(self, exchange: Exchange) -> None:
        """Authenticate the channel, if the interface asks for it or headers are sent."""
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        code = exchange.headers.get("x-gg-channel")
        if code is None and not interface.requires_client_auth:
            return
        if code is None:
            # Not a wrong channel: no signature at all (a client that never signs, a probe).
            if not any(name in exchange.headers for name in _SIGNING_HEADERS):
                raise ChannelUnknown(_UNSIGNED)
            raise ChannelUnknown("X-GG-Channel is missing from a signed request")
        channel = exchange.snapshot.channels.get(code)
        if channel is None or not channel.enabled:
            raise ChannelUnknown("unknown or disabled channel (X-GG-Channel)")
        timestamp = exchange.headers.get("x-gg-timestamp", "")
        nonce = exchange.headers.get("x-gg-nonce", "")
        signature = exchange.headers.get("x-gg-signature", "")
        if not _TIMESTAMP.fullmatch(timestamp) or not NONCE.fullmatch(nonce) or not signature:
            raise ChannelBadSignature("X-GG-Timestamp, X-GG-Nonce and X-GG-Signature are required")
        canonical = verified_query(
            channel.secret,
            signature,
            exchange.method,
            exchange.path,
            # The query's bytes as received (the listener hands them over as latin-1 text).
            exchange.raw_query.encode("latin-1"),
            timestamp,
            nonce,
            exchange.body,
        )
        if canonical is None:
            raise ChannelBadSignature("the signature does not match the request")
        # What the business system reads is what was signed: `+` as %2B, `a` as `a=`, no
        # empty segments (api.md "Channel request signing").
        exchange.raw_query = canonical
        if abs(self._now() - int(timestamp)) > WINDOW_S:
            raise ChannelExpired(
                f"the timestamp is more than {WINDOW_S} s from the gateway's clock"
            )
        if not channel.allows(exchange.client_ip):
            raise ChannelIpDenied("this address may not call as this channel")
        # After the signature: only the channel itself can spend its nonces.
        if not await self.nonces.first_use(channel.code, nonce, WINDOW_S * 2):
            raise ChannelReplayed("this nonce was already used")
        if channel.code not in interface.channels:
            raise ChannelNotAuthorized(f"channel {channel.code!r} may not call this interface")
        exchange.channel = channel


class UserAuth:
    """Bearer access tokens, verified locally (signature, expiry, revoked sessions)."""

    def __init__(self, verifier: TokenVerifier | None) -> None:
        self.verifier = verifier

    def __call__(self, exchange: Exchange) -> None:
        """Verify a presented token; interfaces above level 0 need one."""
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        header = exchange.headers.get("authorization")
        if header is None:
            if interface.min_level > 0:
                raise AuthRequired("this interface needs a signed-in customer")
            return
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthRequired("use Authorization: Bearer <access_token>")
        if self.verifier is None:
            raise AuthRequired("customer sign-in is not available on this gateway")
        claims = self.verifier.verify(token.strip())
        if exchange.channel is not None and claims.channel != exchange.channel.code:
            raise PermissionDenied("the token was issued to another channel")
        exchange.claims = claims


def required_level(snapshot: Snapshot, channel: str, interface: InterfaceView) -> int | None:
    """The level a caller on ``channel`` needs for ``interface``; None when the channel may not.

    A handful of dictionary look-ups: this is the permission decision of every request. The
    interface permission says which channels may call; components and functions (``levels``)
    only raise the level on their channel, or refuse there when disabled.
    """
    required = interface.min_level
    code = interface.code
    if code in snapshot.permissioned:
        granted = snapshot.perm_levels.get((channel, code))
        if granted is None:
            return None
        required = max(required, granted)
    if code in snapshot.leveled and (channel, code) in snapshot.levels:
        floor = snapshot.levels[(channel, code)]
        if floor is None:
            return None
        required = max(required, floor)
    return required


def _stale_token_detail(required: int, token_level: int) -> str:
    """The detail of a level refusal with a token: its ``lvl`` is the level when it was issued.

    The gateway cannot know whether the account has risen since (a binding, a real-name
    approval) without asking the accounts service on every refusal; it says what to do if so.
    """
    return (
        f"this needs account level {required}; the token was issued at level {token_level}. "
        "If the account has since bound a 户号 or passed real-name verification, refresh the "
        "token (POST /api/v1/auth/token, grant_type refresh_token) and try again"
    )


class Permission:
    """Interface permissions and levels (R6, R9, R10): the channel must be allowed to call the
    interface, and the account's level (认证等级) must reach what the interface, the
    channel's permission and its component, and the functions covering it ask for."""

    def __call__(self, exchange: Exchange) -> None:
        """Answer ``perm.denied`` or ``perm.level_required`` (with the level needed)."""
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        channel = exchange.channel.code if exchange.channel is not None else ""
        required = required_level(exchange.snapshot, channel, interface)
        if required is None:
            raise PermissionDenied("this channel has no permission for this interface")
        if exchange.claims is None:
            if required > 0:
                raise LevelRequired(
                    f"this needs account level {required}: send a signed-in customer's token",
                    required_level=required,
                )
        elif exchange.claims.level < required:
            raise LevelRequired(
                _stale_token_detail(required, exchange.claims.level), required_level=required
            )


class DataScope:
    """A request that names a 户号 must name one the caller has bound (R11 data control)."""

    def __call__(self, exchange: Exchange) -> None:
        """Answer ``perm.not_bound`` for someone else's 户号."""
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        if interface.customer_scope is None:
            return
        where, _, name = interface.customer_scope.partition(":")
        value: object = None
        if where == "path":
            value = exchange.params.get(name)
        elif exchange.body:
            try:
                document = orjson.loads(exchange.body)
            except orjson.JSONDecodeError:
                raise InvalidRequest("the body is not valid JSON") from None
            if isinstance(document, dict):
                value = document.get(name)
        if value is None:
            return  # nothing named: nothing of anyone's to protect
        claims = exchange.claims
        if claims is None or str(value) not in claims.customer_nos:
            raise NotBound("this 户号 is not bound to your account (bind it, then sign in again)")


class RateLimit:
    """Requests per second per client address and per account on an interface, then per
    channel and per interface (catalog settings; gateway-wide defaults for the first two).

    A channel's secret ships inside its apps, so one client can sign as the channel: the
    per-client and per-account windows come first, and a request they refuse does not spend
    the channel's or the interface's budget.
    """

    def __init__(
        self,
        limiter: RateLimiter,
        *,
        client_default: int | None = None,
        account_default: int | None = None,
    ) -> None:
        self.limiter = limiter
        self.client_default = client_default
        self.account_default = account_default

    async def __call__(self, exchange: Exchange) -> None:
        """Count the request; answer 429 with Retry-After when a limit is spent."""
        interface = exchange.interface
        assert interface is not None  # noqa: S101 - Route runs first
        # Keys: interface codes hold no ':', so "<interface>:<address or account>" is unique.
        per_client = interface.client_rate_limit_per_s or self.client_default
        if per_client and exchange.client_ip:
            key = f"client:{interface.code}:{client_bucket(exchange.client_ip)}"
            await self.limiter.hit(key, per_client)
        per_account = interface.account_rate_limit_per_s or self.account_default
        if per_account and exchange.claims is not None:
            key = f"account:{interface.code}:{exchange.claims.account_id}"
            await self.limiter.hit(key, per_account)
        channel = exchange.channel
        if channel is not None and channel.rate_limit_per_s:
            await self.limiter.hit(f"channel:{channel.code}", channel.rate_limit_per_s)
        if interface.rate_limit_per_s:
            await self.limiter.hit(f"interface:{interface.code}", interface.rate_limit_per_s)

"""Who may use the service center: business systems write, the platform reads.

Writes authenticate with HTTP Basic as a business system, its code and password from the
catalog (R3). Heartbeats arrive every few seconds from every instance, so a verified password
is remembered (as a keyed digest, never in clear) for a short while instead of opening the
catalog on every call. Reads also accept the platform's Bearer token (gateways, tools).

A business system writes only the services it owns (:mod:`gridgate.registry.ownership`);
refused writes are audited, throttled so that they cannot flood the trail.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError

from gridgate.catalog.services import CatalogService
from gridgate.errors import AuthRequired, BadCredentials
from gridgate.operators.audit import Actor
from gridgate.registry.ownership import (
    CatalogOwnership,
    Refusal,
    RefusalThrottle,
    audit_refusal,
)
from gridgate.storage.crypto import SecretBox
from gridgate.storage.db import Database

__all__ = ["CallerAuth", "RegistryAuth", "parse_basic"]

_log = structlog.get_logger("gridgate.registry")
_REGISTRY = Actor(username="system:registry")


def parse_basic(authorization: str | None) -> tuple[str, str]:
    """The user and password of an HTTP Basic ``Authorization`` header, else an auth error."""
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not value:
        raise AuthRequired("business-system credentials (HTTP Basic) are required")
    try:
        code, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise BadCredentials("malformed Basic credentials") from None
    if not sep or not code or len(code) > 64 or len(password) > 128:
        raise BadCredentials("malformed Basic credentials")
    return code, password


class CallerAuth(Protocol):
    """Decides who calls the registry (the catalog-backed one, or a fixed one in tests)."""

    async def business_system(self, authorization: str | None) -> str:
        """The business-system code of the caller, for writes."""
        ...

    async def reader(self, authorization: str | None) -> str:
        """Who reads (``platform`` or a business-system code)."""
        ...

    async def owns(self, system: str, service: str) -> bool:
        """Whether business system ``system`` may write instances of ``service``."""
        ...

    async def refused(self, refusal: Refusal) -> None:
        """Note a refused write (the catalog-backed one audits it)."""
        ...


class RegistryAuth:
    """Checks registry callers; successes are cached for ``ttl_s`` seconds."""

    def __init__(
        self,
        db: Database,
        box: SecretBox,
        *,
        token: str | None,
        ttl_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._box = box
        self._token = token.encode() if token else None
        self._ttl_s = ttl_s
        self._clock = clock
        self._pepper = secrets.token_bytes(32)  # per process: the cache is useless elsewhere
        self._verified: dict[str, tuple[bytes, float]] = {}
        self._ownership = CatalogOwnership(db, ttl_s=ttl_s, clock=clock)
        self._throttle = RefusalThrottle(clock=clock)

    def _digest(self, code: str, password: str) -> bytes:
        return hmac.new(self._pepper, f"{code}\0{password}".encode(), hashlib.sha256).digest()

    async def business_system(self, authorization: str | None) -> str:
        """The business-system code of valid Basic credentials, else an auth error."""
        code, password = parse_basic(authorization)
        digest = self._digest(code, password)
        now = self._clock()
        cached = self._verified.get(code)
        if cached is not None and cached[1] > now and hmac.compare_digest(cached[0], digest):
            return code
        async with self._db.sessions() as session:
            valid = await CatalogService(
                session, self._box, _REGISTRY
            ).check_business_system_password(code, password)
        if not valid:
            self._verified.pop(code, None)
            raise BadCredentials("unknown business system or wrong password")
        self._verified[code] = (digest, now + self._ttl_s)
        return code

    async def reader(self, authorization: str | None) -> str:
        """Who reads: ``platform`` for the Bearer token, else a business system's code."""
        scheme, _, value = (authorization or "").partition(" ")
        if scheme.lower() == "bearer":
            if self._token is not None and hmac.compare_digest(value.strip().encode(), self._token):
                return "platform"
            raise BadCredentials("invalid registry token")
        return await self.business_system(authorization)

    async def owns(self, system: str, service: str) -> bool:
        """Whether ``system`` owns ``service`` (catalog, cached like passwords)."""
        return await self._ownership.owns(system, service)

    async def refused(self, refusal: Refusal) -> None:
        """Log the refusal and audit it, unless the throttle says it was just audited."""
        left_out = self._throttle.admit(refusal)
        if left_out is None:
            return
        _log.warning(
            "registry_write_refused",
            business_system=refusal.system,
            operation=refusal.operation,
            service=refusal.service,
            code=refusal.code,
            left_out=left_out,
        )
        try:
            await audit_refusal(self._db, refusal, left_out=left_out)
        except (SQLAlchemyError, OSError) as exc:
            # The refusal stands whether or not the trail can be written.
            _log.error("registry_refusal_not_audited", error_type=type(exc).__name__)

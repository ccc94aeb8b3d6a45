"""Which business system may write instances of which service (服务归属), and the audit of refusals.

The rule, from the catalog:

- a service named like a business system's code belongs to that system, and to no other;
- any other name belongs to the business systems that provide an interface whose
  ``target_service`` it is (the catalog routes that interface's calls to it);
- a name that is neither belongs to no one, and nobody may register it.

So the platform's own ``accounts`` and ``permissions`` services belong to the business systems
``accounts`` and ``permissions``, and a system with other credentials cannot take a share of
their calls.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError

from gridgate.catalog.models import BusinessSystem, Interface
from gridgate.operators.audit import Actor, record
from gridgate.storage.db import Database

__all__ = [
    "AUDIT_ACTION",
    "CatalogOwnership",
    "Ownership",
    "Refusal",
    "RefusalThrottle",
    "audit_refusal",
    "load_ownership",
]

_log = structlog.get_logger("gridgate.registry")

#: The audit-trail action of a refused registry write (api.md, Audit trail).
AUDIT_ACTION = "registry.refused"
_AUDIT_RESOURCE = "registry_service"
_ACTOR_PREFIX = "business_system:"
_ACTOR_MAX = 64  # the audit_events.actor column
_MAX_THROTTLE_KEYS = 10_000

Operation = Literal["register", "heartbeat", "deregister"]


@dataclass(frozen=True, slots=True)
class Ownership:
    """The owners of service names at one moment of the catalog."""

    #: Every business system's code: each names a service of that system alone.
    codes: frozenset[str] = frozenset()
    #: Other service names → the systems providing an interface that targets them.
    providers: Mapping[str, frozenset[str]] = field(default_factory=dict)

    def owns(self, system: str, service: str) -> bool:
        """Whether business system ``system`` may write instances of ``service``."""
        if service == system:
            return True
        if service in self.codes:
            return False
        return system in self.providers.get(service, frozenset())


async def load_ownership(db: Database) -> Ownership:
    """The ownership of service names as the catalog has it now."""
    async with db.sessions() as session:
        codes = frozenset(await session.scalars(select(BusinessSystem.code)))
        rows = await session.execute(
            select(Interface.target_service, BusinessSystem.code).join(
                BusinessSystem, Interface.provider_id == BusinessSystem.id
            )
        )
        providers: dict[str, set[str]] = {}
        for target, provider in rows:
            if target not in codes:
                providers.setdefault(target, set()).add(provider)
    return Ownership(codes, {name: frozenset(found) for name, found in providers.items()})


class CatalogOwnership:
    """Service ownership read from the catalog and kept for ``ttl_s`` seconds.

    A system writing the service named by its own code (every flow gridgate ships) needs no
    catalog read at all. An answer "not owned" is checked against a catalog read at most
    ``recheck_s`` old, so an interface just created counts at once, while a caller repeating
    refused writes causes at most one read per ``recheck_s``.
    """

    def __init__(
        self,
        db: Database,
        *,
        ttl_s: float = 30.0,
        recheck_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._db = db
        self._ttl_s = ttl_s
        self._recheck_s = recheck_s
        self._clock = clock
        self._lock = asyncio.Lock()
        self._current: Ownership | None = None
        self._loaded_at = -math.inf

    async def owns(self, system: str, service: str) -> bool:
        """Whether business system ``system`` may write instances of ``service``."""
        if service == system:
            return True
        if (await self._within(self._ttl_s)).owns(system, service):
            return True
        return (await self._within(self._recheck_s)).owns(system, service)

    async def _within(self, max_age_s: float) -> Ownership:
        current = self._current
        if current is not None and self._clock() - self._loaded_at <= max_age_s:
            return current
        async with self._lock:  # one catalog read for every caller waiting on it
            current = self._current
            if current is not None and self._clock() - self._loaded_at <= max_age_s:
                return current
            try:
                current = await load_ownership(self._db)
            except (SQLAlchemyError, OSError) as exc:
                if self._current is None:
                    raise
                # The catalog is unreachable: the last known owners are the best answer.
                _log.warning("registry_ownership_stale", error_type=type(exc).__name__)
                current = self._current
            self._current = current
            self._loaded_at = self._clock()
            return current


@dataclass(frozen=True, slots=True)
class Refusal:
    """A registry write refused: which business system tried what, and from where."""

    system: str
    operation: Operation
    service: str
    #: The error code answered (``registry.service_not_owned`` or ``perm.denied``).
    code: str
    instance_id: str | None = None
    host: str | None = None
    port: int | None = None
    client_ip: str | None = None
    trace_id: str | None = None


class RefusalThrottle:
    """Which refusals become audit events, so that refused writes cannot flood the trail.

    Within ``window_s``: one event per business system, operation and service (an instance
    retrying its heartbeat every few seconds is one event), and at most ``per_system`` events
    per business system. The refusals left out are counted and reported with that system's
    next event.
    """

    def __init__(
        self,
        *,
        window_s: float = 60.0,
        per_system: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._window_s = window_s
        self._per_system = per_system
        self._clock = clock
        self._quiet_until: dict[tuple[str, str, str], float] = {}
        self._budget: dict[str, tuple[float, int]] = {}  # system → (window end, events)
        self._skipped: dict[str, int] = {}

    def admit(self, refusal: Refusal) -> int | None:
        """``None`` to leave the refusal out; else how many of the system's were left out."""
        now = self._clock()
        key = (refusal.system, refusal.operation, refusal.service)
        if self._quiet_until.get(key, -math.inf) > now:
            self._skip(refusal.system)
            return None
        ends, events = self._budget.get(refusal.system, (-math.inf, 0))
        if ends <= now:
            ends, events = now + self._window_s, 0
        if events >= self._per_system:
            self._skip(refusal.system)
            return None
        self._budget[refusal.system] = (ends, events + 1)
        if len(self._quiet_until) >= _MAX_THROTTLE_KEYS:
            self._quiet_until = {k: t for k, t in self._quiet_until.items() if t > now}
        self._quiet_until[key] = now + self._window_s
        return self._skipped.pop(refusal.system, 0)

    def _skip(self, system: str) -> None:
        self._skipped[system] = self._skipped.get(system, 0) + 1


async def audit_refusal(db: Database, refusal: Refusal, *, left_out: int = 0) -> None:
    """Write the refusal to the audit trail (``left_out``: earlier ones the throttle skipped)."""
    actor = Actor(
        username=(_ACTOR_PREFIX + refusal.system)[:_ACTOR_MAX],
        client_ip=refusal.client_ip,
        trace_id=refusal.trace_id,
    )
    attempt: dict[str, Any] = {
        "business_system": refusal.system,
        "operation": refusal.operation,
        "service": refusal.service,
        "code": refusal.code,
        "instance_id": refusal.instance_id,
        "host": refusal.host,
        "port": refusal.port,
        "left_out": left_out,
    }
    async with db.transaction() as session:
        await record(session, actor, AUDIT_ACTION, _AUDIT_RESOURCE, refusal.service, after=attempt)

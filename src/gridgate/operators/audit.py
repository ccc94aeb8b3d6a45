"""The audit trail: every admin change, who made it, and the state before and after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.operators.models import AuditEvent

__all__ = ["Actor", "AuditFilter", "list_events", "record", "redact"]

REDACTED = "***"
_SECRET_WORDS = ("password", "secret", "token", "hash", "sealed", "key", "sms_code")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who makes a change: an operator over the admin API, or ``system``/a CLI user."""

    username: str
    operator_id: int | None = None
    client_ip: str | None = None
    trace_id: str | None = None


SYSTEM = Actor(username="system")


def _secret_key(key: object) -> bool:
    name = str(key).lower()
    # ``secret_rotated_at`` is when, not what: timestamps stay readable.
    return not name.endswith("_at") and any(word in name for word in _SECRET_WORDS)


def redact(data: Any) -> Any:
    """A copy of ``data`` with every value under a secret-looking key replaced by ``***``."""
    if isinstance(data, dict):
        return {
            key: REDACTED if _secret_key(key) and value is not None else redact(value)
            for key, value in data.items()
        }
    if isinstance(data, list):
        return [redact(item) for item in data]
    return data


async def record(
    session: AsyncSession,
    actor: Actor,
    action: str,
    resource_type: str,
    resource_id: str,
    *,
    before: dict[str, Any] | None = None,
    after: dict[str, Any] | None = None,
) -> None:
    """Write one audit event in the caller's transaction (so it lands exactly with the change)."""
    session.add(
        AuditEvent(
            actor=actor.username,
            action=action,
            resource_type=resource_type,
            resource_id=resource_id,
            before=redact(before),
            after=redact(after),
            client_ip=actor.client_ip,
            trace_id=actor.trace_id,
        )
    )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Which audit events to list."""

    actor: str | None = None
    action: str | None = None
    resource_type: str | None = None
    resource_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_events(
    session: AsyncSession, where: AuditFilter, *, page: int, page_size: int
) -> tuple[list[AuditEvent], int]:
    """Audit events matching ``where``, newest first, and how many match in all."""
    conditions = []
    if where.actor:
        conditions.append(AuditEvent.actor == where.actor)
    if where.action:
        conditions.append(AuditEvent.action == where.action)
    if where.resource_type:
        conditions.append(AuditEvent.resource_type == where.resource_type)
    if where.resource_id:
        conditions.append(AuditEvent.resource_id == where.resource_id)
    if where.since:
        conditions.append(AuditEvent.at >= where.since)
    if where.until:
        conditions.append(AuditEvent.at < where.until)
    total = await session.scalar(select(func.count()).select_from(AuditEvent).where(*conditions))
    rows = await session.scalars(
        select(AuditEvent)
        .where(*conditions)
        .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(rows), int(total or 0)

"""Reading the analysis results: hourly traffic and errors, top failing interfaces,
authentication failures and an account's trajectory (no web imports)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.logs.models import NONE, AccountAction, ErrorHour, TrafficHour

__all__ = [
    "AUTH_CODE_PREFIXES",
    "ErrorCount",
    "FailingInterface",
    "TrafficFilter",
    "list_auth_failures",
    "list_errors",
    "list_top_failing",
    "list_traffic",
    "list_trajectory",
]

#: Error codes of failed authentication: a channel's signature or key, a caller's token.
AUTH_CODE_PREFIXES = ("channel.", "auth.")


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    """Which hours (``start`` ≤ hour < ``end``), channel and interface to show."""

    start: datetime | None = None
    end: datetime | None = None
    channel: str | None = None
    interface: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorCount:
    """Failed requests with one code in one hour (``interface`` empty when summed over them)."""

    hour: datetime
    channel: str
    interface: str
    code: str
    count: int


@dataclass(frozen=True, slots=True)
class FailingInterface:
    """An interface's requests and failed requests over a time range."""

    interface: str
    requests: int
    errors: int

    @property
    def error_rate(self) -> float:
        """Failed requests per request (0 to 1)."""
        return self.errors / self.requests if self.requests else 0.0


def _hours(column: Any, start: datetime | None, end: datetime | None) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if start is not None:
        conditions.append(column >= start)
    if end is not None:
        conditions.append(column < end)
    return conditions


async def _page(
    session: AsyncSession, query: Any, *, page: int, page_size: int
) -> tuple[list[Any], int]:
    total = await session.scalar(select(func.count()).select_from(query.order_by(None).subquery()))
    rows = await session.execute(query.offset((page - 1) * page_size).limit(page_size))
    return list(rows.all()), int(total or 0)


async def list_errors(
    session: AsyncSession, where: TrafficFilter, *, code: str | None, page: int, page_size: int
) -> tuple[list[ErrorCount], int]:
    """Failed requests by code per channel, interface and hour, oldest hour first."""
    conditions = _hours(ErrorHour.hour, where.start, where.end)
    if where.channel is not None:
        conditions.append(ErrorHour.channel == where.channel)
    if where.interface is not None:
        conditions.append(ErrorHour.interface == where.interface)
    if code is not None:
        conditions.append(ErrorHour.code == code)
    query = (
        select(
            ErrorHour.hour, ErrorHour.channel, ErrorHour.interface, ErrorHour.code, ErrorHour.count
        )
        .where(*conditions)
        .order_by(ErrorHour.hour, ErrorHour.channel, ErrorHour.interface, ErrorHour.code)
    )
    rows, total = await _page(session, query, page=page, page_size=page_size)
    return [ErrorCount(*row) for row in rows], total


async def list_top_failing(
    session: AsyncSession,
    *,
    start: datetime | None,
    end: datetime | None,
    page: int,
    page_size: int,
) -> tuple[list[FailingInterface], int]:
    """Interfaces with failed requests in the range, most failures first; and how many there are.

    Requests that matched no interface (unknown paths) are not an interface's failures.
    """
    conditions = _hours(TrafficHour.hour, start, end)
    conditions.append(TrafficHour.interface != NONE)
    errors = func.sum(TrafficHour.errors)
    requests = func.sum(TrafficHour.requests)
    query = (
        select(TrafficHour.interface, requests, errors)
        .where(*conditions)
        .group_by(TrafficHour.interface)
        .having(errors > 0)
        .order_by(errors.desc(), (errors * 1.0 / requests).desc(), TrafficHour.interface)
    )
    rows, total = await _page(session, query, page=page, page_size=page_size)
    return [FailingInterface(i, int(r), int(e)) for i, r, e in rows], total


async def list_auth_failures(
    session: AsyncSession,
    *,
    start: datetime | None,
    end: datetime | None,
    channel: str | None,
    page: int,
    page_size: int,
) -> tuple[list[ErrorCount], int]:
    """Authentication failures (``channel.*``, ``auth.*`` codes) per channel, code and hour."""
    conditions = _hours(ErrorHour.hour, start, end)
    conditions.append(or_(*(ErrorHour.code.startswith(p) for p in AUTH_CODE_PREFIXES)))
    if channel is not None:
        conditions.append(ErrorHour.channel == channel)
    count = func.sum(ErrorHour.count)
    query = (
        select(ErrorHour.hour, ErrorHour.channel, ErrorHour.code, count)
        .where(*conditions)
        .group_by(ErrorHour.hour, ErrorHour.channel, ErrorHour.code)
        .order_by(ErrorHour.hour, ErrorHour.channel, ErrorHour.code)
    )
    rows, total = await _page(session, query, page=page, page_size=page_size)
    return [ErrorCount(h, c, NONE, code, int(n)) for h, c, code, n in rows], total


async def list_traffic(
    session: AsyncSession, where: TrafficFilter, *, page: int, page_size: int
) -> tuple[list[TrafficHour], int]:
    """Hourly traffic rows, oldest hour first, then by channel and interface."""
    conditions: list[ColumnElement[bool]] = []
    if where.start is not None:
        conditions.append(TrafficHour.hour >= where.start)
    if where.end is not None:
        conditions.append(TrafficHour.hour < where.end)
    if where.channel is not None:
        conditions.append(TrafficHour.channel == where.channel)
    if where.interface is not None:
        conditions.append(TrafficHour.interface == where.interface)
    total = await session.scalar(select(func.count()).select_from(TrafficHour).where(*conditions))
    rows = await session.scalars(
        select(TrafficHour)
        .where(*conditions)
        .order_by(TrafficHour.hour, TrafficHour.channel, TrafficHour.interface)
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(rows), int(total or 0)


async def list_trajectory(
    session: AsyncSession,
    account_id: str,
    *,
    start: datetime | None = None,
    end: datetime | None = None,
    page: int,
    page_size: int,
) -> tuple[list[AccountAction], int]:
    """An account's actions through every channel, newest first (服务轨迹)."""
    conditions: list[ColumnElement[bool]] = [AccountAction.account_id == account_id]
    if start is not None:
        conditions.append(AccountAction.time >= start)
    if end is not None:
        conditions.append(AccountAction.time < end)
    total = await session.scalar(select(func.count()).select_from(AccountAction).where(*conditions))
    rows = await session.scalars(
        select(AccountAction)
        .where(*conditions)
        .order_by(AccountAction.time.desc(), AccountAction.id.desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    )
    return list(rows), int(total or 0)

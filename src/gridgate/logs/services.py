"""Reading the analysis results: hourly traffic and an account's trajectory (no web imports)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.logs.models import AccountAction, TrafficHour

__all__ = ["TrafficFilter", "list_traffic", "list_trajectory"]


@dataclass(frozen=True, slots=True)
class TrafficFilter:
    """Which hours (``start`` ≤ hour < ``end``), channel and interface to show."""

    start: datetime | None = None
    end: datetime | None = None
    channel: str | None = None
    interface: str | None = None


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

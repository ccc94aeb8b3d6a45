"""Admin API: channel traffic analytics and an account's service trajectory."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query

from gridgate.errors import InvalidRequest
from gridgate.logs.models import NONE
from gridgate.logs.schemas import (
    AuthFailureOut,
    ErrorOut,
    FailingInterfaceOut,
    TrafficOut,
    TrajectoryItemOut,
)
from gridgate.logs.services import (
    TrafficFilter,
    list_auth_failures,
    list_errors,
    list_top_failing,
    list_traffic,
    list_trajectory,
)
from gridgate.schemas import Page, Rfc3339Time
from gridgate.web.deps import ADMIN_PREFIX, Admin, PageParams, require

__all__ = ["router"]

router = APIRouter(prefix=ADMIN_PREFIX)
Analyst = Annotated[Admin, Depends(require("admin", "auditor"))]
AnyOperator = Annotated[Admin, Depends(require("admin", "reviewer", "auditor"))]
#: A catalog code; `:` for `system:<code>`, how business systems appear as channels.
CodeFilter = Annotated[str | None, Query(max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")]
From = Annotated[Rfc3339Time | None, Query(alias="from", description="From (inclusive).")]
To = Annotated[Rfc3339Time | None, Query(alias="to", description="Up to (exclusive).")]
AccountParam = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.:\-]{1,64}$")]


def _known(value: str) -> str | None:
    return None if value == NONE else value


def _check_range(start: datetime | None, end: datetime | None) -> None:
    if start is not None and end is not None and end < start:
        raise InvalidRequest("'to' is before 'from'", field="to")


@router.get("/analytics/traffic", tags=["analytics"], summary="Hourly traffic per channel")
async def read_traffic(
    admin: Analyst,
    paging: PageParams,
    start: From = None,
    end: To = None,
    channel: CodeFilter = None,
    interface: CodeFilter = None,
) -> Page[TrafficOut]:
    """Requests, errors, latency percentiles and distinct accounts per channel, interface, hour."""
    _check_range(start, end)
    where = TrafficFilter(start, end, channel, interface)
    async with admin.transaction() as session:
        rows, total = await list_traffic(
            session, where, page=paging.page, page_size=paging.page_size
        )
    items = [
        TrafficOut(
            hour=row.hour,
            channel=_known(row.channel),
            interface=_known(row.interface),
            requests=row.requests,
            errors=row.errors,
            p50_ms=row.p50_ms,
            p95_ms=row.p95_ms,
            p99_ms=row.p99_ms,
            queue_wait_p99_ms=row.queue_wait_p99_ms,
            accounts=row.accounts,
        )
        for row in rows
    ]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/analytics/errors", tags=["analytics"], summary="Hourly failures by error code")
async def read_errors(
    admin: Analyst,
    paging: PageParams,
    start: From = None,
    end: To = None,
    channel: CodeFilter = None,
    interface: CodeFilter = None,
    code: CodeFilter = None,
) -> Page[ErrorOut]:
    """Failed requests per channel, interface, error code and hour, oldest hour first.

    A failure without a code of ours counts under ``status.<HTTP status>``.
    """
    _check_range(start, end)
    where = TrafficFilter(start, end, channel, interface)
    async with admin.transaction() as session:
        rows, total = await list_errors(
            session, where, code=code, page=paging.page, page_size=paging.page_size
        )
    items = [
        ErrorOut(
            hour=row.hour,
            channel=_known(row.channel),
            interface=_known(row.interface),
            code=row.code,
            count=row.count,
        )
        for row in rows
    ]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/analytics/top-failing", tags=["analytics"], summary="Top failing interfaces")
async def read_top_failing(
    admin: Analyst,
    paging: PageParams,
    start: From = None,
    end: To = None,
) -> Page[FailingInterfaceOut]:
    """Interfaces with the most failed requests in the range (then the highest error rate).

    ``total`` counts every interface with a failure; paged like every list.
    Requests that matched no interface are left out.
    """
    _check_range(start, end)
    async with admin.transaction() as session:
        rows, total = await list_top_failing(
            session, start=start, end=end, page=paging.page, page_size=paging.page_size
        )
    items = [
        FailingInterfaceOut(
            interface=row.interface,
            requests=row.requests,
            errors=row.errors,
            error_rate=row.error_rate,
        )
        for row in rows
    ]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get(
    "/analytics/auth-failures", tags=["analytics"], summary="Authentication failures by channel"
)
async def read_auth_failures(
    admin: Analyst,
    paging: PageParams,
    start: From = None,
    end: To = None,
    channel: CodeFilter = None,
) -> Page[AuthFailureOut]:
    """Failures with a ``channel.*`` or ``auth.*`` code per channel, code and hour.

    Summed over interfaces.
    """
    _check_range(start, end)
    async with admin.transaction() as session:
        rows, total = await list_auth_failures(
            session,
            start=start,
            end=end,
            channel=channel,
            page=paging.page,
            page_size=paging.page_size,
        )
    items = [
        AuthFailureOut(hour=row.hour, channel=_known(row.channel), code=row.code, count=row.count)
        for row in rows
    ]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.get("/accounts/{account_id}/trajectory", tags=["accounts"], summary="An account's actions")
async def read_trajectory(
    account_id: AccountParam,
    admin: AnyOperator,
    paging: PageParams,
    start: From = None,
    end: To = None,
) -> Page[TrajectoryItemOut]:
    """Every request of the account through any channel, newest first (as analysed so far)."""
    _check_range(start, end)
    async with admin.transaction() as session:
        rows, total = await list_trajectory(
            session, account_id, start=start, end=end, page=paging.page, page_size=paging.page_size
        )
    items = [
        TrajectoryItemOut(
            time=row.time,
            channel=_known(row.channel),
            interface=_known(row.interface),
            status=row.status,
            code=row.code,
        )
        for row in rows
    ]
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)

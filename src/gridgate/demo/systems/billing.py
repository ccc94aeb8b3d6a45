"""The demo billing system (电费核算系统): monthly tiered-tariff bills and daily usage."""

from __future__ import annotations

import re
from datetime import date, timedelta

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData
from gridgate.demo.systems._web import (
    JSONResponse,
    build_system,
    customer_of,
    month_param,
    page_of,
    page_params,
)
from gridgate.errors import InvalidRequest, NotFound

__all__ = ["DEFAULT_USAGE_DAYS", "MAX_USAGE_DAYS", "create_app", "usage_range"]

#: Days of usage answered when the caller names no range.
DEFAULT_USAGE_DAYS = 30
#: The longest range one usage request may ask for.
MAX_USAGE_DAYS = 366
_DATE = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")


def _date_param(value: str | None, field: str) -> date | None:
    if value is None:
        return None
    try:
        # The pattern first: fromisoformat alone also takes "20261001" and week dates.
        if not _DATE.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be a date YYYY-MM-DD", field=field) from None


def usage_range(data: DemoData, first: date | None, last: date | None) -> tuple[date, date]:
    """The days a usage request covers: defaults to 30 days, refused outside the data."""
    span = timedelta(days=DEFAULT_USAGE_DAYS - 1)
    if last is None:
        last = data.usage_end if first is None else min(first + span, data.usage_end)
    if first is None:
        first = max(last - span, data.usage_start)
    for field, day in (("from", first), ("to", last)):
        if not data.usage_start <= day <= data.usage_end:
            raise InvalidRequest(
                f"{field} must be between {data.usage_start} and {data.usage_end}", field=field
            )
    if first > last:
        raise InvalidRequest("from must not be after to", field="from")
    if (last - first).days + 1 > MAX_USAGE_DAYS:
        raise InvalidRequest(f"a range covers at most {MAX_USAGE_DAYS} days", field="to")
    return first, last


def create_app(data: DemoData) -> Starlette:
    """The billing system's ASGI app over ``data``."""

    async def bills(request: Request) -> JSONResponse:
        customer = customer_of(data, request.path_params["customer_no"])
        month = request.query_params.get("month")
        if month is not None:
            bill = customer.bills.get(month_param(month))
            if bill is None:
                raise NotFound(f"no bill of {month} for customer {customer.customer_no}")
            # A bill carries the supply address, as the printed one does.
            return JSONResponse({**bill.to_json(), "address": customer.address})
        page, page_size = page_params(request, default_size=len(data.months))
        newest_first = [
            {**bill.to_json(), "address": customer.address}
            for bill in reversed(customer.bills.values())
        ]
        return JSONResponse(page_of(newest_first, page, page_size))

    async def usage(request: Request) -> JSONResponse:
        customer = customer_of(data, request.path_params["customer_no"])
        first, last = usage_range(
            data,
            _date_param(request.query_params.get("from"), "from"),
            _date_param(request.query_params.get("to"), "to"),
        )
        items = [
            {"date": day.isoformat(), "kwh": kwh}
            for day, kwh in data.daily_usage(customer, first, last)
        ]
        return JSONResponse({"customer_no": customer.customer_no, "items": items})

    return build_system(
        "billing",
        [
            Route("/api/v1/customers/{customer_no}/bills", bills, methods=["GET"]),
            Route("/api/v1/customers/{customer_no}/usage", usage, methods=["GET"]),
        ],
    )

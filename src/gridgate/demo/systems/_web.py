"""What every demo business system shares: the app skeleton, JSON in and out, and the parsing
of the parameters api.md fixes (户号, month, paging). Bad input becomes a domain error here, so
the problem handlers answer 404/422 and never 500."""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute

from gridgate.demo.data import Customer, DemoData, parse_month
from gridgate.errors import InvalidRequest, NotFound, install_problem_handlers
from gridgate.web.health import probe_routes

__all__ = [
    "CUSTOMER_NO_PATTERN",
    "JSONResponse",
    "build_system",
    "customer_of",
    "month_param",
    "page_of",
    "page_params",
    "read_body",
    "utc_now",
]

M = TypeVar("M", bound=BaseModel)

#: A demo 户号: ten digits.
CUSTOMER_NO_PATTERN = r"^[0-9]{10}$"
_CUSTOMER_NO = re.compile(CUSTOMER_NO_PATTERN)
_INTEGER = re.compile(r"^[0-9]{1,7}$")
MAX_PAGE_SIZE = 200


class JSONResponse(Response):
    """A JSON answer rendered by orjson."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        """The body bytes of ``content``."""
        return orjson.dumps(content)


def utc_now() -> datetime:
    """The current time in UTC (the default clock of the demo systems)."""
    return datetime.now(UTC)


def build_system(name: str, routes: Sequence[BaseRoute]) -> Starlette:
    """A demo system's app: its routes, the probe routes, and problem+json errors."""
    app = Starlette(routes=[*probe_routes(f"demo-{name}", {}), *routes])
    install_problem_handlers(app)
    return app


async def read_body(request: Request, model: type[M]) -> M:
    """The JSON body validated against ``model``; malformed JSON or wrong types → 422."""
    raw = await request.body()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("the body is not valid JSON") from None
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        # The same shape the admin API gives (field, message, type), never the rejected input.
        errors = [
            {**error, "loc": ("body", *error["loc"])}
            for error in exc.errors(include_url=False, include_input=False, include_context=False)
        ]
        raise RequestValidationError(errors) from None


def customer_of(data: DemoData, customer_no: str, *, field: str = "customer_no") -> Customer:
    """The customer of a 户号: 422 when it is not ten digits, 404 when nobody has it."""
    if not _CUSTOMER_NO.fullmatch(customer_no):
        raise InvalidRequest("customer_no must be 10 digits", field=field)
    customer = data.customer(customer_no)
    if customer is None:
        raise NotFound(f"no customer {customer_no}")
    return customer


def month_param(value: str, *, field: str = "month") -> str:
    """A "YYYY-MM" month, or 422 naming ``field``."""
    try:
        parse_month(value)
    except ValueError:
        raise InvalidRequest(f"{field} must be a month YYYY-MM", field=field) from None
    return value


def _int_param(request: Request, name: str, default: int, high: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    if not _INTEGER.fullmatch(value) or not 1 <= int(value) <= high:
        raise InvalidRequest(f"{name} must be a whole number from 1 to {high}", field=name)
    return int(value)


def page_params(request: Request, *, default_size: int) -> tuple[int, int]:
    """``?page=&page_size=`` (page from 1, page_size at most 200), or 422."""
    page = _int_param(request, "page", 1, 1_000_000)
    return page, _int_param(request, "page_size", default_size, MAX_PAGE_SIZE)


def page_of(items: Sequence[dict[str, Any]], page: int, page_size: int) -> dict[str, Any]:
    """One page of ``items`` in api.md's list shape."""
    start = (page - 1) * page_size
    return {
        "items": list(items[start : start + page_size]),
        "total": len(items),
        "page": page,
        "page_size": page_size,
    }

"""The demo payment system (缴费系统): pays an open bill, exactly once per idempotency key.

The gateway never retries a payment, but a channel may: the ``Idempotency-Key`` header makes
a retry safe. The same key with the same body gets the first answer again (200 and
``Idempotent-Replayed: true``); the same key with another body is a conflict. Only payments
that succeeded are remembered, so a refused request can be corrected and sent with its key.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any

import orjson
from pydantic import StringConstraints
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData, rfc3339
from gridgate.demo.systems._web import (
    CUSTOMER_NO_PATTERN,
    JSONResponse,
    build_system,
    customer_of,
    month_param,
    read_body,
    utc_now,
)
from gridgate.demo.tariff import money_str
from gridgate.errors import Conflict, InvalidRequest, NotFound
from gridgate.schemas import StrictModel

__all__ = ["IDEMPOTENCY_KEY", "PaymentDesk", "PaymentRequest", "create_app"]

IDEMPOTENCY_KEY = "Idempotency-Key"
_KEY = re.compile(r"^[A-Za-z0-9_-]{8,128}$")
#: Keys remembered at most; the oldest are forgotten first (a demo runs for days, not years).
_REMEMBERED_KEYS = 10_000


class PaymentRequest(StrictModel):
    """Body of ``POST /api/v1/payments``; the amount is a decimal string ("192.22")."""

    customer_no: Annotated[str, StringConstraints(pattern=CUSTOMER_NO_PATTERN)]
    bill_month: Annotated[str, StringConstraints(max_length=7)]
    amount: Annotated[str, StringConstraints(pattern=r"^[0-9]{1,9}(\.[0-9]{1,2})?$")]


@dataclass(frozen=True, slots=True)
class _Paid:
    fingerprint: bytes
    answer: dict[str, Any]


class PaymentDesk:
    """The payment ledger over the demo data: pays open bills and remembers each key."""

    def __init__(self, data: DemoData, clock: Callable[[], datetime] = utc_now) -> None:
        self._data = data
        self._clock = clock
        self._by_key: dict[str, _Paid] = {}
        # Check-then-pay must be one step: two concurrent requests must not both pay a bill.
        self._lock = asyncio.Lock()

    async def pay(self, key: str, request: PaymentRequest) -> tuple[dict[str, Any], bool]:
        """Pay the bill ``request`` names; the answer, and True when it is a replay."""
        fingerprint = orjson.dumps(request.model_dump(), option=orjson.OPT_SORT_KEYS)
        async with self._lock:
            known = self._by_key.get(key)
            if known is not None:
                if known.fingerprint != fingerprint:
                    raise Conflict(f"the {IDEMPOTENCY_KEY} was already used for another payment")
                return known.answer, True
            answer = self._pay_bill(request)
            if len(self._by_key) >= _REMEMBERED_KEYS:
                del self._by_key[next(iter(self._by_key))]
            self._by_key[key] = _Paid(fingerprint, answer)
            return answer, False

    def _pay_bill(self, request: PaymentRequest) -> dict[str, Any]:
        customer = customer_of(self._data, request.customer_no)
        bill = customer.bills.get(request.bill_month)
        if bill is None:
            raise NotFound(f"no bill of {request.bill_month} for customer {customer.customer_no}")
        if bill.paid:
            raise Conflict(f"the bill of {bill.month} is already paid")
        if Decimal(request.amount) != bill.amount:
            raise InvalidRequest(
                f"amount must equal the bill's amount {money_str(bill.amount)}", field="amount"
            )
        bill.paid = True
        return {
            "payment_id": f"PAY{secrets.token_hex(10).upper()}",
            "customer_no": customer.customer_no,
            "bill_month": bill.month,
            "amount": money_str(bill.amount),
            "status": "succeeded",
            "created_at": rfc3339(self._clock()),
        }


def create_app(data: DemoData, *, clock: Callable[[], datetime] = utc_now) -> Starlette:
    """The payment system's ASGI app over ``data`` (whose bills it marks paid)."""
    desk = PaymentDesk(data, clock)

    async def create_payment(request: Request) -> JSONResponse:
        key = request.headers.get(IDEMPOTENCY_KEY)
        if key is None or not _KEY.fullmatch(key):
            raise InvalidRequest(
                f"the {IDEMPOTENCY_KEY} header is required: 8-128 characters of A-Z a-z 0-9 _ -",
                field=IDEMPOTENCY_KEY,
            )
        body = await read_body(request, PaymentRequest)
        month_param(body.bill_month, field="bill_month")
        answer, replayed = await desk.pay(key, body)
        if replayed:
            return JSONResponse(answer, headers={"Idempotent-Replayed": "true"})
        return JSONResponse(answer, status_code=201)

    return build_system("payment", [Route("/api/v1/payments", create_payment, methods=["POST"])])

"""The demo payment system: paying open bills, idempotency keys, refusals."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from gridgate.demo.data import FIRST_CUSTOMER_NO, DemoData
from gridgate.demo.tariff import money_str
from tests.unit.demo.systems.helpers import assert_problem

PAYMENTS = "/api/v1/payments"
KEY = "order-0001_abc"


def _open_bill(data: DemoData) -> dict[str, Any]:
    bill = data.customers[FIRST_CUSTOMER_NO].bills["2026-10"]
    assert not bill.paid
    return {
        "customer_no": FIRST_CUSTOMER_NO,
        "bill_month": "2026-10",
        "amount": money_str(bill.amount),
    }


async def _pay(payment: httpx.AsyncClient, body: dict[str, Any], key: str = KEY) -> httpx.Response:
    return await payment.post(PAYMENTS, json=body, headers={"Idempotency-Key": key})


async def test_paying_an_open_bill_succeeds_and_marks_it_paid(
    payment: httpx.AsyncClient, billing: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    answer = await _pay(payment, body)
    assert answer.status_code == 201, answer.text
    paid = answer.json()
    assert set(paid) == {
        "payment_id",
        "customer_no",
        "bill_month",
        "amount",
        "status",
        "created_at",
    }
    assert (paid["customer_no"], paid["bill_month"], paid["amount"]) == (
        FIRST_CUSTOMER_NO,
        "2026-10",
        body["amount"],
    )
    assert paid["status"] == "succeeded"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", paid["created_at"])
    assert "idempotent-replayed" not in answer.headers
    bill = await billing.get(
        f"/api/v1/customers/{FIRST_CUSTOMER_NO}/bills", params={"month": "2026-10"}
    )
    assert bill.json()["paid"] is True


async def test_the_same_key_and_body_replays_the_first_answer(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    first = await _pay(payment, body)
    again = await _pay(payment, body)
    assert again.status_code == 200
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()


async def test_the_same_key_with_another_body_is_a_conflict(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    await _pay(payment, body)
    other = {**body, "bill_month": "2026-09"}
    assert_problem(await _pay(payment, other), 409, "conflict")


async def test_paying_a_paid_bill_again_is_a_conflict(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    assert (await _pay(payment, body)).status_code == 201
    assert_problem(await _pay(payment, body, key="another-key-2"), 409, "conflict")
    older = data.customers[FIRST_CUSTOMER_NO].bills["2026-09"]
    assert older.paid
    paid_before = {**body, "bill_month": "2026-09", "amount": money_str(older.amount)}
    assert_problem(await _pay(payment, paid_before, key="another-key-3"), 409, "conflict")


async def test_an_amount_other_than_the_bills_is_invalid_and_pays_nothing(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = {**_open_bill(data), "amount": "0.01"}
    problem = assert_problem(await _pay(payment, body), 422, "request.invalid")
    assert problem["field"] == "amount"
    assert not data.customers[FIRST_CUSTOMER_NO].bills["2026-10"].paid
    # A refused request is not remembered: the corrected one may reuse its key.
    assert (await _pay(payment, _open_bill(data))).status_code == 201


async def test_concurrent_payments_of_one_bill_pay_it_once(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    answers = await asyncio.gather(
        *(_pay(payment, body, key=f"parallel-{i:04d}") for i in range(5))
    )
    assert sorted(answer.status_code for answer in answers) == [201, 409, 409, 409, 409]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Idempotency-Key": "short"},
        {"Idempotency-Key": "has space 123"},
        {"Idempotency-Key": "k" * 129},
    ],
)
async def test_a_missing_or_malformed_key_is_invalid(
    payment: httpx.AsyncClient, data: DemoData, headers: dict[str, str]
) -> None:
    answer = await payment.post(PAYMENTS, json=_open_bill(data), headers=headers)
    assert assert_problem(answer, 422, "request.invalid")["field"] == "Idempotency-Key"
    assert not data.customers[FIRST_CUSTOMER_NO].bills["2026-10"].paid


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount": 192.22}, "amount"),
        ({"amount": "1,00"}, "amount"),
        ({"amount": "-1.00"}, "amount"),
        ({"bill_month": "2026-13"}, "bill_month"),
        ({"bill_month": 202610}, "bill_month"),
        ({"customer_no": "123"}, "customer_no"),
        ({"tip": "1.00"}, "tip"),
    ],
)
async def test_a_malformed_body_is_invalid(
    payment: httpx.AsyncClient, data: DemoData, change: dict[str, Any], field: str
) -> None:
    answer = await _pay(payment, {**_open_bill(data), **change})
    assert assert_problem(answer, 422, "request.invalid")["field"] == field


async def test_a_body_that_is_not_json_is_invalid(payment: httpx.AsyncClient) -> None:
    answer = await payment.post(PAYMENTS, content=b"{", headers={"Idempotency-Key": KEY})
    assert_problem(answer, 422, "request.invalid")


async def test_an_unknown_customer_or_month_is_not_found(
    payment: httpx.AsyncClient, data: DemoData
) -> None:
    body = _open_bill(data)
    assert_problem(await _pay(payment, {**body, "customer_no": "3399999999"}), 404, "not_found")
    assert_problem(await _pay(payment, {**body, "bill_month": "2025-01"}), 404, "not_found")

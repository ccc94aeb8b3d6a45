"""The demo billing system: bills by month and daily usage."""

from __future__ import annotations

import dataclasses
from datetime import date
from decimal import Decimal

import httpx
import pytest

from gridgate.demo.data import FIRST_CUSTOMER_NO, DemoData
from gridgate.demo.systems.billing import usage_range
from gridgate.errors import InvalidRequest
from tests.unit.demo.systems.helpers import assert_problem

BILLS = f"/api/v1/customers/{FIRST_CUSTOMER_NO}/bills"
USAGE = f"/api/v1/customers/{FIRST_CUSTOMER_NO}/usage"


async def test_without_a_month_the_last_twelve_bills_come_newest_first(
    billing: httpx.AsyncClient,
) -> None:
    answer = await billing.get(BILLS)
    assert answer.status_code == 200
    body = answer.json()
    assert (body["total"], body["page"], body["page_size"]) == (12, 1, 12)
    months = [bill["month"] for bill in body["items"]]
    assert months[0] == "2026-10"
    assert months[-1] == "2025-11"
    assert months == sorted(months, reverse=True)


async def test_a_bill_has_tier_lines_that_add_up_to_its_amount(
    billing: httpx.AsyncClient, data: DemoData
) -> None:
    answer = await billing.get(BILLS, params={"month": "2026-08"})
    assert answer.status_code == 200
    bill = answer.json()
    assert set(bill) == {"customer_no", "month", "usage_kwh", "lines", "amount", "paid", "address"}
    assert (bill["customer_no"], bill["month"], bill["paid"]) == (
        FIRST_CUSTOMER_NO,
        "2026-08",
        True,
    )
    assert isinstance(bill["amount"], str)
    assert Decimal(bill["amount"]) == sum(Decimal(line["amount"]) for line in bill["lines"])
    assert sum(Decimal(str(line["kwh"])) for line in bill["lines"]) == Decimal(
        str(bill["usage_kwh"])
    )
    assert all(set(line) == {"tier", "kwh", "price", "amount"} for line in bill["lines"])
    customer = data.customers[FIRST_CUSTOMER_NO]
    assert bill == {**customer.bills["2026-08"].to_json(), "address": customer.address}


async def test_the_latest_bill_of_the_demo_customer_is_open(billing: httpx.AsyncClient) -> None:
    answer = await billing.get(BILLS, params={"month": "2026-10"})
    assert answer.json()["paid"] is False


async def test_a_month_without_a_bill_is_not_found(billing: httpx.AsyncClient) -> None:
    assert_problem(await billing.get(BILLS, params={"month": "2025-10"}), 404, "not_found")
    assert_problem(await billing.get(BILLS, params={"month": "2026-11"}), 404, "not_found")


@pytest.mark.parametrize("month", ["2026-13", "2026-1", "abc", "", "2026-10-01", "２０２６-10"])
async def test_a_malformed_month_is_invalid(billing: httpx.AsyncClient, month: str) -> None:
    body = assert_problem(await billing.get(BILLS, params={"month": month}), 422, "request.invalid")
    assert body["field"] == "month"


async def test_bills_can_be_paged(billing: httpx.AsyncClient) -> None:
    body = (await billing.get(BILLS, params={"page": 3, "page_size": 5})).json()
    assert [bill["month"] for bill in body["items"]] == ["2025-12", "2025-11"]
    assert (body["total"], body["page"], body["page_size"]) == (12, 3, 5)


@pytest.mark.parametrize(
    ("params", "field"),
    [({"page": "0"}, "page"), ({"page_size": "201"}, "page_size"), ({"page": "x"}, "page")],
)
async def test_bad_paging_is_invalid(
    billing: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    body = assert_problem(await billing.get(BILLS, params=params), 422, "request.invalid")
    assert body["field"] == field


async def test_an_unknown_customer_has_no_bills_or_usage(billing: httpx.AsyncClient) -> None:
    assert_problem(await billing.get("/api/v1/customers/3399999999/bills"), 404, "not_found")
    assert_problem(await billing.get("/api/v1/customers/3399999999/usage"), 404, "not_found")


async def test_usage_defaults_to_the_last_thirty_days(billing: httpx.AsyncClient) -> None:
    body = (await billing.get(USAGE)).json()
    assert body["customer_no"] == FIRST_CUSTOMER_NO
    days = [item["date"] for item in body["items"]]
    assert len(days) == 30
    assert (days[0], days[-1]) == ("2026-10-02", "2026-10-31")
    assert all(isinstance(item["kwh"], float) and item["kwh"] > 0 for item in body["items"])


async def test_usage_of_a_range_sums_to_the_bill(billing: httpx.AsyncClient) -> None:
    usage = await billing.get(USAGE, params={"from": "2026-02-01", "to": "2026-02-28"})
    items = usage.json()["items"]
    assert len(items) == 28
    bill = (await billing.get(BILLS, params={"month": "2026-02"})).json()
    total = sum(Decimal(str(item["kwh"])) for item in items)
    assert total == Decimal(str(bill["usage_kwh"]))


async def test_usage_from_a_day_covers_thirty_days_or_up_to_the_end(
    billing: httpx.AsyncClient,
) -> None:
    body = (await billing.get(USAGE, params={"from": "2026-01-01"})).json()
    assert [body["items"][0]["date"], body["items"][-1]["date"]] == ["2026-01-01", "2026-01-30"]
    body = (await billing.get(USAGE, params={"from": "2026-10-20"})).json()
    assert len(body["items"]) == 12
    body = (await billing.get(USAGE, params={"to": "2026-01-10"})).json()
    assert [body["items"][0]["date"], body["items"][-1]["date"]] == ["2025-12-12", "2026-01-10"]


async def test_the_whole_data_range_can_be_asked_for(billing: httpx.AsyncClient) -> None:
    body = (await billing.get(USAGE, params={"from": "2025-11-01", "to": "2026-10-31"})).json()
    assert len(body["items"]) == 365


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"from": "2026-02-30"}, "from"),
        ({"from": "20260201"}, "from"),
        ({"to": "2026/02/01"}, "to"),
        ({"from": ""}, "from"),
        ({"from": "2026-03-02", "to": "2026-03-01"}, "from"),
        ({"from": "2025-10-31", "to": "2025-11-05"}, "from"),
        ({"from": "2026-10-01", "to": "2026-11-01"}, "to"),
        ({"to": "2025-10-01"}, "to"),
    ],
)
async def test_a_bad_usage_range_is_invalid(
    billing: httpx.AsyncClient, params: dict[str, str], field: str
) -> None:
    body = assert_problem(await billing.get(USAGE, params=params), 422, "request.invalid")
    assert body["field"] == field


def test_a_range_longer_than_366_days_is_refused(data: DemoData) -> None:
    # The demo data covers one year, so the limit is checked on a wider data set.
    wide = dataclasses.replace(data, usage_start=date(2024, 1, 1))
    leap_year = (date(2024, 1, 1), date(2024, 12, 31))
    assert usage_range(wide, *leap_year) == leap_year
    with pytest.raises(InvalidRequest) as caught:
        usage_range(wide, date(2024, 1, 1), date(2025, 1, 1))
    assert caught.value.extra["field"] == "to"

"""The demo marketing system: customer profiles and service-password checks."""

from __future__ import annotations

import httpx
import pytest

from gridgate.demo.data import FIRST_CUSTOMER_NO, DemoData
from tests.unit.demo.systems.helpers import assert_problem

PROFILE_FIELDS = {
    "customer_no",
    "name",
    "address",
    "voltage",
    "supply_region",
    "meter_book",
    "reserved_phone",
}
VERIFY = f"/internal/v1/customers/{FIRST_CUSTOMER_NO}/verify-service-password"


@pytest.mark.parametrize("prefix", ["/api/v1", "/internal/v1"])
async def test_a_profile_has_the_public_fields_only(
    marketing: httpx.AsyncClient, data: DemoData, prefix: str
) -> None:
    answer = await marketing.get(f"{prefix}/customers/{FIRST_CUSTOMER_NO}")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    body = answer.json()
    assert set(body) == PROFILE_FIELDS
    customer = data.customers[FIRST_CUSTOMER_NO]
    assert body["reserved_phone"] == "13800000001"
    assert body["supply_region"] == "浙江省/杭州市/西湖区"
    assert body["name"] == customer.name
    assert customer.service_password not in answer.text


async def test_an_unknown_customer_is_not_found(marketing: httpx.AsyncClient) -> None:
    assert_problem(await marketing.get("/api/v1/customers/3399999999"), 404, "not_found")
    assert_problem(await marketing.get("/internal/v1/customers/3399999999"), 404, "not_found")


@pytest.mark.parametrize("customer_no", ["33000000011", "330000000x", "%EF%BC%93300000001"])
async def test_a_malformed_customer_number_is_invalid(
    marketing: httpx.AsyncClient, customer_no: str
) -> None:
    body = assert_problem(
        await marketing.get(f"/api/v1/customers/{customer_no}"), 422, "request.invalid"
    )
    assert body["field"] == "customer_no"


async def test_the_right_service_password_is_valid(
    marketing: httpx.AsyncClient, data: DemoData
) -> None:
    password = data.customers[FIRST_CUSTOMER_NO].service_password
    answer = await marketing.post(VERIFY, json={"service_password": password})
    assert answer.status_code == 200
    assert answer.json() == {"valid": True}


@pytest.mark.parametrize("attempt", ["", "12345", "1234567", "abcdef"])
async def test_a_wrong_service_password_is_not_valid(
    marketing: httpx.AsyncClient, attempt: str
) -> None:
    answer = await marketing.post(VERIFY, json={"service_password": attempt})
    assert answer.json() == {"valid": False}


async def test_another_customers_password_is_not_valid(
    marketing: httpx.AsyncClient, data: DemoData
) -> None:
    mine = data.customers[FIRST_CUSTOMER_NO].service_password
    theirs = next(c.service_password for c in data.customers.values() if c.service_password != mine)
    answer = await marketing.post(VERIFY, json={"service_password": theirs})
    assert answer.json() == {"valid": False}


@pytest.mark.parametrize(
    ("content", "field"),
    [
        (b'{"service_password": 123456}', "service_password"),
        (b"{}", "service_password"),
        (b'{"service_password": "123456", "extra": 1}', "extra"),
        (b"[]", None),
        (b"{not json", None),
        (b"", None),
    ],
)
async def test_a_malformed_check_is_invalid(
    marketing: httpx.AsyncClient, content: bytes, field: str | None
) -> None:
    answer = await marketing.post(VERIFY, content=content)
    body = assert_problem(answer, 422, "request.invalid")
    assert body.get("field") == field
    assert "123456" not in answer.text


async def test_checking_an_unknown_customer_is_not_found(marketing: httpx.AsyncClient) -> None:
    answer = await marketing.post(
        "/internal/v1/customers/3399999999/verify-service-password",
        json={"service_password": "123456"},
    )
    assert_problem(answer, 404, "not_found")


async def test_health_unknown_paths_and_methods(marketing: httpx.AsyncClient) -> None:
    assert (await marketing.get("/healthz")).json()["status"] == "ok"
    assert_problem(await marketing.get("/api/v1/nothing"), 404, "not_found")
    assert_problem(
        await marketing.delete(f"/api/v1/customers/{FIRST_CUSTOMER_NO}"),
        405,
        "request.method_not_allowed",
    )

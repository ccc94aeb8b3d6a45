"""The demo marketing system: customer profiles and service-password checks."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gridgate.demo.data import FIRST_CUSTOMER_NO, DemoData
from gridgate.demo.systems.marketing import create_app
from tests.unit.demo.systems.helpers import assert_problem
from tests.unit.registry.conftest import FakeClock

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


# --- the password check serves the platform only, and is no unlimited oracle ---------------


@pytest.fixture
def clock() -> FakeClock:
    """The marketing system's clock, moved by the test."""
    return FakeClock()


async def limited(data: DemoData, clock: FakeClock, **limits: Any) -> httpx.AsyncClient:
    """A client of a marketing system with small limits."""
    app = create_app(data, clock=clock, **limits)
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://demo.test")


@pytest.mark.parametrize(
    "header", ["X-GG-Channel", "X-GG-Account", "X-GG-Client-IP", "X-Forwarded-For"]
)
async def test_internal_routes_refuse_what_the_gateway_forwards(
    marketing: httpx.AsyncClient, data: DemoData, header: str
) -> None:
    forwarded = {header: "app" if header != "X-Forwarded-For" else "203.0.113.9"}
    password = data.customers[FIRST_CUSTOMER_NO].service_password
    check = await marketing.post(VERIFY, json={"service_password": password}, headers=forwarded)
    body = assert_problem(check, 403, "perm.denied")
    assert "valid" not in body
    profile = await marketing.get(f"/internal/v1/customers/{FIRST_CUSTOMER_NO}", headers=forwarded)
    assert_problem(profile, 403, "perm.denied")
    # The channel-facing profile is what the gateway forwards to.
    public = await marketing.get(f"/api/v1/customers/{FIRST_CUSTOMER_NO}", headers=forwarded)
    assert public.status_code == 200


async def test_wrong_passwords_for_one_customer_are_limited(
    data: DemoData, clock: FakeClock
) -> None:
    password = data.customers[FIRST_CUSTOMER_NO].service_password
    other = next(no for no in data.customers if no != FIRST_CUSTOMER_NO)
    async with await limited(data, clock, failures_per_customer=3, customer_window_s=600) as http:
        for _ in range(3):
            assert (await http.post(VERIFY, json={"service_password": "x"})).json() == {
                "valid": False
            }
        refused = await http.post(VERIFY, json={"service_password": password})
        body = assert_problem(refused, 429, "flow.rate_limited")
        assert refused.headers["retry-after"] == "600" and "valid" not in body
        theirs = data.customers[other].service_password
        elsewhere = await http.post(
            f"/internal/v1/customers/{other}/verify-service-password",
            json={"service_password": theirs},
        )
        assert elsewhere.json() == {"valid": True}
        clock.advance(600)
        assert (await http.post(VERIFY, json={"service_password": password})).json() == {
            "valid": True
        }


async def test_guesses_at_an_unknown_customer_count_too(data: DemoData, clock: FakeClock) -> None:
    unknown = "/internal/v1/customers/3399999999/verify-service-password"
    async with await limited(data, clock, failures_per_customer=2) as http:
        for _ in range(2):
            assert_problem(
                await http.post(unknown, json={"service_password": "1"}), 404, "not_found"
            )
        assert_problem(
            await http.post(unknown, json={"service_password": "1"}), 429, "flow.rate_limited"
        )


async def test_checks_per_caller_are_limited(data: DemoData, clock: FakeClock) -> None:
    password = data.customers[FIRST_CUSTOMER_NO].service_password
    async with await limited(data, clock, checks_per_caller=2, caller_window_s=60) as http:
        for _ in range(2):
            assert (await http.post(VERIFY, json={"service_password": password})).status_code == 200
        refused = await http.post(VERIFY, json={"service_password": password})
        assert_problem(refused, 429, "flow.rate_limited")
        assert refused.headers["retry-after"] == "60"
        clock.advance(60)
        assert (await http.post(VERIFY, json={"service_password": password})).status_code == 200

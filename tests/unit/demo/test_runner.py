"""The demo systems as they run (demo_listeners): only calls signed for them pass."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from gridgate.accounts.directory import MarketingDirectory
from gridgate.demo.data import DemoData, generate_demo_data
from gridgate.demo.runner import demo_listeners
from gridgate.internal_auth import InternalAuth, InternalKeys, InternalSigner, internal_headers

KEYS = InternalKeys(b"demo-runner-test-secret-0123456789abcdef")
DATA: DemoData = generate_demo_data(customer_count=5)
CUSTOMER = next(iter(DATA.customers))
BILLS = f"/api/v1/customers/{CUSTOMER}/bills"
IDENTITY = {"X-GG-Channel": "app", "X-GG-Account": "a" * 32, "X-GG-Level": "1"}


async def _client(system: str) -> AsyncIterator[httpx.AsyncClient]:
    [listener] = demo_listeners(DATA, "127.0.0.1", keys=KEYS, systems=[system], copies=1)
    transport = httpx.ASGITransport(app=listener.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        yield http


@pytest.fixture
async def billing() -> AsyncIterator[httpx.AsyncClient]:
    async for http in _client("billing"):
        yield http


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json()["code"] == "auth.internal_signature"


async def test_an_unsigned_or_forged_call_is_refused(billing: httpx.AsyncClient) -> None:
    _refused(await billing.get(BILLS))
    _refused(await billing.get(BILLS, headers=IDENTITY))
    tampered = internal_headers(KEYS.for_service("billing"), "billing", "GET", BILLS, IDENTITY)
    _refused(await billing.get(BILLS, headers={**tampered, "X-GG-Level": "2"}))
    # Another system's key does not open billing: each system holds only its own.
    other = internal_headers(KEYS.for_service("marketing"), "billing", "GET", BILLS, IDENTITY)
    _refused(await billing.get(BILLS, headers=other))
    expired = internal_headers(
        KEYS.for_service("billing"), "billing", "GET", BILLS, IDENTITY, timestamp=1
    )
    _refused(await billing.get(BILLS, headers=expired))


async def test_a_call_signed_for_the_system_passes(billing: httpx.AsyncClient) -> None:
    signed = internal_headers(KEYS.for_service("billing"), "billing", "GET", BILLS, IDENTITY)
    answer = await billing.get(BILLS, headers=signed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"]


async def test_probes_stay_open(billing: httpx.AsyncClient) -> None:
    for path in ("/healthz", "/readyz", "/metrics"):
        assert (await billing.get(path)).status_code == 200, path


async def test_the_accounts_service_signs_its_calls_to_marketing() -> None:
    [listener] = demo_listeners(DATA, "127.0.0.1", keys=KEYS, systems=["marketing"], copies=1)
    transport = httpx.ASGITransport(app=listener.app)
    async with httpx.AsyncClient(transport=transport, base_url="http://demo.test") as http:
        _refused(
            await http.post(
                f"/internal/v1/customers/{CUSTOMER}/verify-service-password",
                json={"service_password": "000000"},
            )
        )
    directory = MarketingDirectory(
        None,
        base_url="http://demo.test",
        transport=transport,
        auth=InternalAuth(InternalSigner(KEYS), "marketing"),
    )
    try:
        record = await directory.customer(CUSTOMER)
        assert record is not None and record.customer_no == CUSTOMER
        password = DATA.customers[CUSTOMER].service_password
        assert await directory.service_password_matches(CUSTOMER, password)
    finally:
        await directory.aclose()

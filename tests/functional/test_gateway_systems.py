"""System-to-system calls: a business system signs in its own name (X-GG-System) and calls
only the interfaces granted to it (docs/api.md "System-to-system calls")."""

from __future__ import annotations

from typing import Any

from gridgate.catalog.schemas import BusinessSystemCreate, BusinessSystemUpdate
from tests.functional.gateway_harness import Gateway

BILLING_PASSWORD = "billing-password-for-gateway-tests"


def _code(answer: Any) -> str:
    return str(answer.json().get("code")) if answer.status_code >= 400 else str(answer.status_code)


async def _billing(gateway: Gateway) -> None:
    await gateway.change(
        "create_business_system",
        BusinessSystemCreate.model_validate(
            {
                "code": "billing",
                "name": "Billing",
                "host": "127.0.0.1",
                "port": 80,
                "password": BILLING_PASSWORD,
            }
        ),
    )


async def test_a_granted_system_calls_without_a_customer(gateway: Gateway) -> None:
    await _billing(gateway)
    # Level 1 and a 户号 scope: a channel's caller would need a token with that 户号 bound.
    await gateway.interface(
        "sys.read",
        "/api/v1/sys/{customer_no}/ok",
        min_level=1,
        customer_scope="path:customer_no",
        systems=["billing"],
    )
    ok = await gateway.send(
        "GET",
        "/api/v1/sys/3300000001/ok",
        query="b=2&a=1",
        channel="billing",
        secret=BILLING_PASSWORD,
        system=True,
        headers={"X-GG-Account": "forged"},
    )
    assert ok.status_code == 200, ok.text
    seen = ok.json()["headers"]
    assert seen["x-gg-system"] == "billing"
    assert "x-gg-channel" not in seen
    assert "x-gg-account" not in seen
    assert seen["x-gg-internal"].startswith("v1;svc;")
    assert ok.json()["query"] == "a=1&b=2"
    # The channel itself still needs its customer.
    assert _code(await gateway.send("GET", "/api/v1/sys/3300000001/ok")) == "auth.required"


async def test_a_system_is_refused_what_it_is_not_granted(gateway: Gateway) -> None:
    await _billing(gateway)
    await gateway.interface("sys.other", "/api/v1/sys/other/ok", systems=["svc"])
    as_billing: dict[str, Any] = {"channel": "billing", "secret": BILLING_PASSWORD, "system": True}
    denied = await gateway.send("GET", "/api/v1/sys/other/ok", **as_billing)
    assert denied.status_code == 403 and denied.json()["code"] == "perm.denied"
    # The grant's owner passes; a wrong password, a replay and both headers do not.
    svc: dict[str, Any] = {"channel": "svc", "secret": "svc-password", "system": True}
    nonce = "system-nonce-00000001"
    assert (await gateway.send("GET", "/api/v1/sys/other/ok", nonce=nonce, **svc)).is_success
    replayed = await gateway.send("GET", "/api/v1/sys/other/ok", nonce=nonce, **svc)
    assert _code(replayed) == "channel.replayed"
    wrong = await gateway.send(
        "GET", "/api/v1/sys/other/ok", channel="svc", secret="not-the-password", system=True
    )
    assert wrong.status_code == 401 and wrong.json()["code"] == "channel.bad_signature"
    both = await gateway.send("GET", "/api/v1/sys/other/ok", headers={"X-GG-System": "svc"})
    assert both.status_code == 401 and both.json()["code"] == "channel.unknown"


async def test_a_new_password_takes_over_at_once(gateway: Gateway) -> None:
    await _billing(gateway)
    await gateway.interface("sys.pw", "/api/v1/sys/pw/ok", systems=["billing"])
    new = "billing-password-rotated-0001"
    await gateway.change(
        "update_business_system",
        "billing",
        BusinessSystemUpdate.model_validate({"password": new}),
    )
    old = await gateway.send(
        "GET", "/api/v1/sys/pw/ok", channel="billing", secret=BILLING_PASSWORD, system=True
    )
    assert _code(old) == "channel.bad_signature"
    fresh = await gateway.send(
        "GET", "/api/v1/sys/pw/ok", channel="billing", secret=new, system=True
    )
    assert fresh.status_code == 200

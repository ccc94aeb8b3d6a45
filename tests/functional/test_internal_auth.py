"""Services trust identity headers only from the gateway: the X-GG-Internal signature, over HTTP.

The accounts listener is called as a caller inside the network would call it, with forged
``X-GG-*`` headers; the gateway's own calls reach an upstream process, which shows what it got.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt

from gridgate.accounts.app import JWKS_PATH
from gridgate.internal_auth import InternalVerifier, internal_headers
from gridgate.runtime import Runtime
from tests.functional.accounts_harness import Client
from tests.functional.gateway_harness import Gateway

OK = "/api/v1/t/3300000001/ok"


def _refused(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == "auth.internal_signature"
    assert "account_id" not in body and "phone" not in body


async def _signed_in(accounts: Client) -> dict[str, str]:
    """The identity headers the gateway would send for a signed-in customer."""
    await accounts.register()
    claims = jwt.decode(
        (await accounts.login())["access_token"], options={"verify_signature": False}
    )
    return {
        "X-GG-Channel": "app",
        "X-GG-Account": claims["sub"],
        "X-GG-Level": str(claims["lvl"]),
        "X-GG-Session": claims["sid"],
        "X-GG-Client-IP": "10.0.0.1",
    }


async def test_forged_identity_headers_are_refused(accounts: Client, runtime: Runtime) -> None:
    identity = await _signed_in(accounts)
    # Anyone who reaches the listener directly can send the headers the gateway would.
    _refused(await accounts.http.get("/api/v1/me", headers=identity))
    _refused(await accounts.http.post("/api/v1/auth/logout", headers=identity))
    _refused(await accounts.http.get("/api/v1/me/menus", headers={"X-GG-Channel": "app"}))
    _refused(
        await accounts.http.post(
            "/api/v1/sms/codes",
            headers={"X-GG-Channel": "app"},
            json={"phone": "13912345678", "purpose": "login"},
        )
    )
    # The same call signed as the gateway signs it passes.
    key = runtime.internal_keys.for_service("accounts")
    signed = internal_headers(key, "accounts", "GET", "/api/v1/me", identity)
    answer = await accounts.http.get("/api/v1/me", headers=signed)
    assert answer.status_code == 200, answer.text
    assert answer.json()["account_id"] == identity["X-GG-Account"]


async def test_tampered_expired_or_misdirected_signatures_are_refused(
    accounts: Client, runtime: Runtime
) -> None:
    identity = await _signed_in(accounts)
    keys = runtime.internal_keys

    def signed(
        service: str = "accounts", target: str = "/api/v1/me", **change: Any
    ) -> dict[str, str]:
        timestamp = int(time.time()) + change.pop("offset", 0)
        key = keys.for_service(change.pop("key_of", service))
        return internal_headers(key, service, "GET", target, identity, timestamp=timestamp)

    good = signed()
    assert (await accounts.http.get("/api/v1/me", headers=good)).status_code == 200
    # Another account than the one signed for.
    other = {**good, "X-GG-Account": "f" * 32}
    _refused(await accounts.http.get("/api/v1/me", headers=other))
    # A higher level, or an identity header the gateway did not send.
    _refused(await accounts.http.get("/api/v1/me", headers={**good, "X-GG-Level": "2"}))
    _refused(await accounts.http.get("/api/v1/me", headers={**good, "X-GG-Extra": "1"}))
    # Another path or query than the one signed for.
    _refused(await accounts.http.get("/api/v1/me/realname", headers=good))
    _refused(await accounts.http.get("/api/v1/me?x=1", headers=good))
    # Old, or from the future, beyond the 60 s window.
    _refused(await accounts.http.get("/api/v1/me", headers=signed(offset=-120)))
    _refused(await accounts.http.get("/api/v1/me", headers=signed(offset=120)))
    # Signed for a business system, or with a business system's key.
    _refused(await accounts.http.get("/api/v1/me", headers=signed(service="billing")))
    _refused(await accounts.http.get("/api/v1/me", headers=signed(key_of="billing")))
    # Garbage never turns into a 500.
    for value in ("v1;accounts;１７６４;" + "0" * 64, "v1;accounts", "x" * 300):
        raw = {**good, "X-GG-Internal": value.encode("utf-8")}  # the bytes as a client sends them
        _refused(await accounts.http.get("/api/v1/me", headers=raw))


async def test_probes_and_jwks_stay_open(accounts: Client) -> None:
    for path in ("/healthz", "/readyz", "/metrics", JWKS_PATH):
        assert (await accounts.http.get(path)).status_code == 200, path


async def test_the_gateway_signs_what_it_forwards(gateway: Gateway) -> None:
    answer = await gateway.send("GET", OK, query="b=2", token=gateway.token(level=1))
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    headers = list(seen["headers"].items())
    target = seen["path"] + (f"?{seen['query']}" if seen["query"] else "")
    verifier = InternalVerifier.for_services(gateway.runtime.internal_keys, ["svc"])
    assert verifier.verify("GET", target, headers) == "svc"
    assert seen["headers"]["x-gg-account"] == "acc-1"
    assert seen["headers"]["x-gg-client-ip"] == "127.0.0.1"


async def test_a_callers_own_gateway_headers_never_pass(gateway: Gateway) -> None:
    forged = {
        "X-GG-Internal": "v1;svc;1;" + "0" * 64,
        "X-GG-Client-IP": "198.51.100.9",
        "X-GG-Customer-Nos": "3300000002",
    }
    answer = await gateway.send("GET", OK, headers=forged)
    assert answer.status_code == 200, answer.text
    seen = answer.json()["headers"]
    assert seen["x-gg-internal"] != forged["X-GG-Internal"]
    assert seen["x-gg-client-ip"] == "127.0.0.1"
    assert "x-gg-customer-nos" not in seen

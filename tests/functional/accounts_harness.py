"""The accounts service as the gateway calls it, and the back office, for functional tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from gridgate.accounts.app import build_accounts
from gridgate.accounts.directory import MarketingDirectory
from gridgate.accounts.parts import AccountsParts
from gridgate.app import build_admin
from gridgate.demo.data import generate_demo_data
from gridgate.demo.systems import marketing
from gridgate.internal_auth import InternalAuth, InternalKeys, InternalSigner
from gridgate.runtime import Runtime
from tests.conftest import add_operator, login

__all__ = ["CUSTOMER", "DATA", "PASSWORD", "PHONE", "Client", "accounts", "backoffice", "parts"]

PHONE = "13912345678"
PASSWORD = "a-good-password-1"
DATA = generate_demo_data()
CUSTOMER = DATA.customer("3300000001")


class Client:
    """The accounts service as the gateway calls it (identity in X-GG-* headers, signed)."""

    def __init__(self, http: httpx.AsyncClient, outbox: Path, keys: InternalKeys) -> None:
        self.http = http
        self.outbox = outbox
        self.signer = InternalSigner(keys)

    def code(self, phone: str, purpose: str) -> str:
        lines = [json.loads(line) for line in self.outbox.read_text().splitlines()]
        return str(
            next(
                m["code"]
                for m in reversed(lines)
                if m["phone"] == phone and m["purpose"] == purpose
            )
        )

    async def call(
        self,
        method: str,
        path: str,
        *,
        channel: str = "app",
        token: str | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = {
            **kwargs.pop("headers", {}),
            "x-gg-channel": channel,
            "x-gg-client-ip": kwargs.pop("ip", "10.0.0.1"),
        }
        if token:
            claims = jwt.decode(token, options={"verify_signature": False})
            headers.update(
                {
                    "x-gg-account": claims["sub"],
                    "x-gg-session": claims["sid"],
                    "x-gg-level": str(claims["lvl"]),
                }
            )
        # The menus are service `permissions` in the catalog; the rest is `accounts`.
        auth = InternalAuth(self.signer, "permissions" if path == "/me/menus" else "accounts")
        return await self.http.request(
            method, f"/api/v1{path}", headers=headers, auth=auth, **kwargs
        )

    async def register(
        self, phone: str = PHONE, channel: str = "app", **extra: Any
    ) -> dict[str, Any]:
        assert (
            await self.call(
                "POST", "/sms/codes", channel=channel, json={"phone": phone, "purpose": "register"}
            )
        ).status_code == 202
        body = {
            "phone": phone,
            "sms_code": self.code(phone, "register"),
            "password": PASSWORD,
            **extra,
        }
        answer = await self.call("POST", "/accounts", channel=channel, json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    async def login(self, phone: str = PHONE, channel: str = "app", **extra: Any) -> dict[str, Any]:
        answer = await self.call(
            "POST",
            "/auth/token",
            channel=channel,
            json={"grant_type": "password", "phone": phone, "password": PASSWORD, **extra},
        )
        assert answer.status_code == 200, answer.text
        return dict(answer.json())


@pytest.fixture
async def parts(runtime: Runtime) -> AsyncIterator[AccountsParts]:
    transport = httpx.ASGITransport(app=marketing.create_app(DATA))
    directory = MarketingDirectory(None, base_url="http://marketing.test", transport=transport)
    built = AccountsParts.build(runtime, directory=directory)
    yield built
    await directory.aclose()
    await built.store.close()


@pytest.fixture
async def accounts(parts: AccountsParts, runtime: Runtime) -> AsyncIterator[Client]:
    transport = httpx.ASGITransport(app=build_accounts(parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://accounts.test") as http:
        yield Client(http, runtime.settings.data_dir / "sms-outbox.jsonl", runtime.internal_keys)


@pytest.fixture
async def backoffice(parts: AccountsParts, runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    await add_operator(runtime, "rita", ["reviewer"])
    transport = httpx.ASGITransport(app=build_admin(runtime, parts))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
        http.headers.update(await login(http, "rita"))
        yield http

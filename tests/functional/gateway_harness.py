"""A gateway over a real catalog (SQLite) and real upstream processes, for functional tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gridgate.catalog.schemas import (
    Authorizations,
    BusinessSystemCreate,
    ChannelCreate,
    InterfaceCreate,
)
from gridgate.catalog.services import CatalogService
from gridgate.gateway.plane import EngineListener
from gridgate.gateway.service import GatewayParts
from gridgate.gateway.signing import signed_headers
from gridgate.gateway.tokens import JwksVerifier, MemoryRevocationList
from gridgate.operators.audit import Actor
from gridgate.permissions.services import PermissionService
from gridgate.registry.client import InstanceInfo
from gridgate.runtime import Runtime
from tests.conftest import make_settings
from tests.support.engine import serving

APP_SECRET = "app-secret-for-gateway-tests-0001"
ISSUER, AUDIENCE = "gridgate-accounts", "gridgate"


class Upstream:
    """One upstream process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.upstream", name],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                httpx.get(f"http://127.0.0.1:{self.port}/_count", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.05)
        raise AssertionError(f"upstream {name} did not start")

    def calls(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/_count").json()["calls"])

    def info(self, service: str = "svc") -> InstanceInfo:
        return InstanceInfo(self.name, service, "127.0.0.1", self.port, 100, None, {}, True)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class StaticInstances:
    """Discovery stand-in: a fixed instance list per service (the engine ejects outliers)."""

    by_service: dict[str, list[InstanceInfo]] = field(default_factory=dict)

    def every(self, service: str) -> list[InstanceInfo]:
        return list(self.by_service.get(service, []))


@dataclass
class Gateway:
    """The harness: catalog helpers, signed requests and tokens."""

    runtime: Runtime
    parts: GatewayParts
    client: httpx.AsyncClient
    source: StaticInstances
    key: Ed25519PrivateKey
    url: str
    listener: EngineListener

    async def sync(self) -> None:
        """Push what the harness changed (catalog, instances) to the engine now."""
        await self.parts.holder.refresh()
        await self.listener.sync()

    async def instances(self, service: str, found: list[InstanceInfo]) -> None:
        self.source.by_service[service] = found
        await self.listener.sync()

    async def interface(self, code: str, path: str, method: str = "GET", **fields: Any) -> None:
        channels = fields.pop("channels", ["app"])
        systems = fields.pop("systems", [])
        async with self.runtime.db.transaction() as session:
            catalog = CatalogService(session, self.runtime.box, Actor("test"))
            await catalog.create_interface(
                InterfaceCreate.model_validate(
                    {
                        "code": code,
                        "name": code,
                        "method": method,
                        "path": path,
                        "provider": "svc",
                        "target_service": "svc",
                        "timeout_ms": 1000,
                        **fields,
                    }
                )
            )
            await catalog.set_authorizations(
                code, Authorizations(channels=channels, business_systems=systems)
            )
        await self.sync()

    async def permit(self, action: str, data: Any) -> None:
        async with self.runtime.db.transaction() as session:
            await getattr(PermissionService(session, Actor("test")), action)(data)
        await self.sync()

    async def change(self, action: str, *args: Any) -> None:
        async with self.runtime.db.transaction() as session:
            catalog = CatalogService(session, self.runtime.box, Actor("test"))
            await getattr(catalog, action)(*args)
        await self.sync()

    def token(
        self,
        level: int = 0,
        *,
        channel: str = "app",
        sid: str = "s1",
        ttl: int = 900,
        bound: tuple[str, ...] = (),
    ) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "acc-1",
            "lvl": level,
            "ch": channel,
            "sid": sid,
            "iat": now,
            "exp": now + ttl,
            "cns": list(bound),
        }
        return jwt.encode(claims, self.key, algorithm="EdDSA", headers={"kid": "k1"})

    async def send(
        self,
        method: str,
        path: str,
        *,
        query: str = "",
        body: bytes = b"",
        channel: str = "app",
        secret: str = APP_SECRET,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        **sign: Any,
    ) -> httpx.Response:
        signed = signed_headers(channel, secret, method, path, query=query, body=body, **sign)
        if token:
            signed["Authorization"] = f"Bearer {token}"
        url = path + (f"?{query}" if query else "")
        return await self.client.request(
            method, url, content=body, headers={**signed, **(headers or {})}
        )


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Upstream]]:
    started = {name: Upstream(name) for name in ("u1", "u2")}
    try:
        yield started
    finally:
        for upstream in started.values():
            upstream.stop()


@pytest.fixture
async def gateway(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    sqlite_template: Path,
    upstreams: dict[str, Upstream],
) -> AsyncIterator[Gateway]:
    shutil.copy(sqlite_template, tmp_path / "gridgate.db")
    # A test may set more: @pytest.mark.gateway_settings(gateway_max_nonces=1000).
    marker = request.node.get_closest_marker("gateway_settings")
    runtime = Runtime.build(
        make_settings(
            tmp_path,
            database_url=f"sqlite+aiosqlite:///{tmp_path / 'gridgate.db'}",
            **(marker.kwargs if marker else {}),
        )
    )
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    revocations = MemoryRevocationList()
    verifier = JwksVerifier(ISSUER, AUDIENCE, revoked=revocations)
    verifier.set_keys({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "EdDSA"}]})
    parts = GatewayParts.build(runtime, verifier=verifier, revocations=revocations)
    source = StaticInstances({"svc": [upstreams["u1"].info(), upstreams["u2"].info()]})
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        await catalog.create_business_system(
            BusinessSystemCreate.model_validate(
                {
                    "code": "svc",
                    "name": "svc",
                    "host": "127.0.0.1",
                    "port": 80,
                    "password": "svc-password",
                }
            )
        )
        await catalog.create_channel(
            ChannelCreate.model_validate({"code": "app", "name": "App", "type": "app"}),
            secret=APP_SECRET,
        )
        await catalog.create_channel(
            ChannelCreate.model_validate({"code": "web", "name": "Web", "type": "web"}),
            secret="web-secret-for-gateway-tests",
        )
    # The engine on a real socket, as `gridgate serve gateway` runs it.
    await parts.holder.refresh()
    listener = EngineListener(parts, {}, source=source)
    try:
        async with (
            serving(listener) as base_url,
            httpx.AsyncClient(base_url=base_url, timeout=30) as client,
        ):
            harness = Gateway(runtime, parts, client, source, key, base_url, listener)
            await harness.interface("t.ok", "/api/v1/t/{customer_no}/ok")
            yield harness
    finally:
        await runtime.close()

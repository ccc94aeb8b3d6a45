"""What every listener serves: probes, metrics, trace ids; the admin docs without a CDN."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from gridgate.app import ROLES, build_app, build_gateway
from gridgate.gateway.plane import EngineListener
from gridgate.gateway.service import GatewayParts
from gridgate.runtime import Runtime
from tests.conftest import make_settings
from tests.support.engine import serving
from tests.support.redis import RedisServer


@contextlib.asynccontextmanager
async def _client(
    role: str, runtime: Runtime, *, catalog: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    """A client of the role's listener; the gateway's engine on a socket, its catalog loaded
    unless ``catalog`` is False."""
    if role != "gateway":
        transport = httpx.ASGITransport(app=build_app(role, runtime))  # type: ignore[arg-type]
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{role}.test") as c:
            yield c
        return
    parts = GatewayParts.build(runtime)
    if catalog:
        await parts.holder.refresh()
    listener = build_gateway(runtime, parts)
    assert isinstance(listener, EngineListener)
    async with serving(listener) as url, httpx.AsyncClient(base_url=url) as client:
        yield client


async def test_gateway_is_not_ready_before_its_catalog(runtime: Runtime) -> None:
    parts = GatewayParts.build(runtime)
    listener = build_gateway(runtime, parts)
    assert isinstance(listener, EngineListener)
    async with serving(listener) as url, httpx.AsyncClient(base_url=url) as client:
        ready = await client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["catalog"] == "failing"
        early = await client.get("/api/v1/anything")
        assert early.status_code == 503 and early.json()["code"] == "service.starting"
        assert early.headers["retry-after"] == "1"
        await parts.holder.refresh()
        # Readiness is reported to the engine every second.
        deadline = time.monotonic() + 5
        while (await client.get("/readyz")).status_code != 200:
            assert time.monotonic() < deadline, "still not ready 5 s after the catalog"
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("role", list(ROLES))
async def test_probes_and_metrics(
    role: str, runtime: Runtime, request: pytest.FixtureRequest
) -> None:
    if role != "logs":
        await _probes_and_metrics(role, runtime)
        return
    # The logs role reads the buffer the gateways share: Redis.
    server: RedisServer = request.getfixturevalue("redis_server")
    with_redis = Runtime.build(
        runtime.settings.model_copy(update={"redis_url": server.url.replace("/0", "/5")})
    )
    try:
        await _probes_and_metrics(role, with_redis)
    finally:
        await with_redis.close()


async def _probes_and_metrics(role: str, runtime: Runtime) -> None:
    async with _client(role, runtime) as client:
        health = await client.get("/healthz")
        assert health.status_code == 200 and health.json()["listener"] == role
        ready = await client.get("/readyz")
        assert ready.status_code == 200
        checks = ready.json()["checks"]
        assert checks["database"] == "ok" and set(checks.values()) == {"ok"}
        await client.get("/no/such/path/1234")
        metrics = await client.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        text = metrics.text
        if role == "gateway":  # the engine counts channel requests, not probes
            assert 'interface="unmatched",status="4xx"' in text
            assert "gridgate_log_records_appended_total" in text  # the Python side's series too
        else:
            assert f'listener="{role}",method="GET",route="/healthz",status="2xx"' in text
        # Raw paths never become labels: unmatched requests share one series.
        assert "/no/such/path/1234" not in text
        assert "x-trace-id" in health.headers


async def test_the_logs_role_needs_the_shared_buffer(runtime: Runtime) -> None:
    with pytest.raises(ValueError, match="GRIDGATE_REDIS_URL"):
        build_app("logs", runtime)


async def test_readyz_fails_when_the_database_is_gone(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    missing = tmp_path_factory.mktemp("ro") / "absent" / "nowhere.db"
    runtime = Runtime.build(
        make_settings(
            tmp_path_factory.mktemp("data"), database_url=f"sqlite+aiosqlite:///{missing}"
        )
    )
    try:
        async with _client("admin", runtime) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"] == {"database": "failing"}
    finally:
        await runtime.close()


async def test_trace_id_comes_from_traceparent(runtime: Runtime) -> None:
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    async with _client("gateway", runtime) as client:
        answer = await client.get("/x", headers={"traceparent": f"00-{trace}-00f067aa0ba902b7-01"})
        assert answer.headers["x-trace-id"] == trace
        assert answer.json()["trace_id"] == trace
        bogus = await client.get("/x", headers={"traceparent": "garbage"})
        assert re.fullmatch(r"[0-9a-f]{32}", bogus.headers["x-trace-id"])
        assert bogus.headers["x-trace-id"] != trace


async def test_gateway_answers_unknown_paths_with_problem(runtime: Runtime) -> None:
    async with _client("gateway", runtime) as client:
        for method in ("GET", "POST", "DELETE"):
            answer = await client.request(method, "/api/v1/unknown")
            assert answer.status_code == 404
            assert answer.headers["content-type"] == "application/problem+json"
            assert answer.json()["code"] == "not_found"


async def test_admin_docs_are_served_locally(runtime: Runtime) -> None:
    async with _client("admin", runtime) as client:
        page = await client.get("/admin/docs")
        assert page.status_code == 200
        assets = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert assets and all(a.startswith("/admin/") for a in assets), assets
        for asset in assets:
            assert (await client.get(asset)).status_code == 200, asset
        assert "cdn" not in page.text.lower()
        # No badge fetched from validator.swagger.io (the page would leave the network).
        assert '"validatorUrl": null' in page.text
        document = (await client.get("/admin/openapi.json")).json()
        assert document["openapi"].startswith("3.1")
        # The front page describes the whole admin API: every tag in use is named there.
        tags = {tag for op in document["paths"].values() for o in op.values() for tag in o["tags"]}
        front = document["info"]["description"]
        assert {"permissions", "analytics", "real-name"} <= tags
        assert [tag for tag in sorted(tags) if f"**{tag}**" not in front] == []
        assert "analytics" in document["info"]["summary"]
        # Swagger UI's Authorize button needs the operator token declared.
        assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
        for path in (
            "/admin/v1/session",
            "/admin/v1/channels/{code}/secret",
            "/admin/v1/audit",
            "/admin/v1/interfaces/{code}/authorizations",
            "/admin/v1/components/{component_id}",
        ):
            assert path in document["paths"]


async def test_admin_metrics_label_routes_by_template(admin: httpx.AsyncClient) -> None:
    await admin.get("/admin/v1/channels/ghost")
    text = (await admin.get("/metrics")).text
    assert 'route="/admin/v1/channels/{code}"' in text
    assert "/admin/v1/channels/ghost" not in text

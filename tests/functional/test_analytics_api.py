"""Admin analytics and trajectories over HTTP; no secret or raw PII reaches any written file."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from gridgate.errors import install_problem_handlers
from gridgate.gateway.accesslog import AccessRecord
from gridgate.logs.buffer import SpoolBuffer
from gridgate.logs.routes import router as logs_router
from gridgate.logs.service import LogService
from gridgate.logs.storage import ParquetStore
from gridgate.operators.routes import router as operators_router
from gridgate.runtime import Runtime
from gridgate.web.middleware import wrap_listener
from tests.conftest import add_operator, login
from tests.functional.gateway_harness import APP_SECRET, Gateway
from tests.unit.logs.helpers import T0, minutes, record, run_pipeline

TRAFFIC = "/admin/v1/analytics/traffic"
H1 = T0 + timedelta(hours=1)


@pytest.fixture
async def client(runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """The admin listener with the log routes (the lead's app factory adds them for real)."""
    app = FastAPI()
    install_problem_handlers(app)
    app.state.runtime = runtime
    app.include_router(operators_router)
    app.include_router(logs_router)
    transport = httpx.ASGITransport(app=wrap_listener(app, "admin", 1 << 20))
    async with httpx.AsyncClient(transport=transport, base_url="http://admin.test") as http:
        yield http


@pytest.fixture
async def analysed(runtime: Runtime, tmp_path: Path) -> None:
    records = [
        record(T0 + minutes(1), account="acc-1", status=200),
        record(T0 + minutes(2), account="acc-1", status=403, code="perm.denied"),
        record(T0 + minutes(3), account="acc-2", channel="wechat"),
        record(H1 + minutes(5), account="acc-1", interface="usage.read"),
        record(H1 + minutes(6), account=None, channel=None, interface=None, status=404),
    ]
    await run_pipeline(records, tmp_path / "pipeline", runtime.db)


async def _as(client: httpx.AsyncClient, runtime: Runtime, role: str) -> dict[str, str]:
    await add_operator(runtime, f"op-{role}", [role])
    return await login(client, f"op-{role}")


@pytest.mark.usefixtures("analysed")
async def test_traffic_by_hour_with_filters(client: httpx.AsyncClient, runtime: Runtime) -> None:
    headers = await _as(client, runtime, "auditor")
    answer = await client.get(TRAFFIC, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["total"] == 4 and body["page"] == 1
    first = body["items"][0]
    assert first == {
        "hour": "2026-11-20T08:00:00Z",
        "channel": "app",
        "interface": "bills.read",
        "requests": 2,
        "errors": 1,
        "p50_ms": 12.5,
        "p95_ms": 12.5,
        "p99_ms": 12.5,
        "queue_wait_p99_ms": 0.0,
        "accounts": 1,
    }
    # Unknown channel and interface sort first within their hour, and show as null.
    assert [(i["hour"][11:13], i["channel"], i["interface"]) for i in body["items"]] == [
        ("08", "app", "bills.read"),
        ("08", "wechat", "bills.read"),
        ("09", None, None),
        ("09", "app", "usage.read"),
    ]

    params = {"from": "2026-11-20T09:00:00+00:00", "to": "2026-11-20T18:00:00+08:00"}
    later = (await client.get(TRAFFIC, params=params, headers=headers)).json()
    assert [i["hour"] for i in later["items"]] == ["2026-11-20T09:00:00Z"] * 2
    wechat = (await client.get(TRAFFIC, params={"channel": "wechat"}, headers=headers)).json()
    assert [(i["channel"], i["requests"]) for i in wechat["items"]] == [("wechat", 1)]
    usage = (await client.get(TRAFFIC, params={"interface": "usage.read"}, headers=headers)).json()
    assert usage["total"] == 1
    paged = (await client.get(TRAFFIC, params={"page": 2, "page_size": 3}, headers=headers)).json()
    assert len(paged["items"]) == 1 and paged["total"] == 4


@pytest.mark.usefixtures("analysed")
async def test_trajectory_newest_first(client: httpx.AsyncClient, runtime: Runtime) -> None:
    headers = await _as(client, runtime, "reviewer")
    answer = await client.get("/admin/v1/accounts/acc-1/trajectory", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["items"] == [
        {
            "time": "2026-11-20T09:05:00Z",
            "channel": "app",
            "interface": "usage.read",
            "status": 200,
            "code": None,
        },
        {
            "time": "2026-11-20T08:02:00Z",
            "channel": "app",
            "interface": "bills.read",
            "status": 403,
            "code": "perm.denied",
        },
        {
            "time": "2026-11-20T08:01:00Z",
            "channel": "app",
            "interface": "bills.read",
            "status": 200,
            "code": None,
        },
    ]
    nobody = await client.get("/admin/v1/accounts/acc-9/trajectory", headers=headers)
    assert nobody.json() == {"items": [], "total": 0, "page": 1, "page_size": 50}


async def test_roles_and_bad_input(client: httpx.AsyncClient, runtime: Runtime) -> None:
    reviewer = await _as(client, runtime, "reviewer")
    denied = await client.get(TRAFFIC, headers=reviewer)
    assert denied.status_code == 403 and denied.json()["code"] == "perm.denied"
    assert (await client.get(TRAFFIC)).json()["code"] == "auth.required"
    assert (await client.get("/admin/v1/accounts/a/trajectory")).status_code == 401

    admin = await _as(client, runtime, "admin")
    for params in (
        {"from": "2026-11-20T08:00:00"},  # naive: which zone was meant?
        {"from": "2026-11-20T09:00:00Z", "to": "2026-11-20T08:00:00Z"},
        {"channel": "a b"},
        {"page_size": 201},
    ):
        answer = await client.get(TRAFFIC, params=params, headers=admin)
        assert answer.status_code == 422, params
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == "request.invalid"
    bad_id = await client.get("/admin/v1/accounts/%20x/trajectory", headers=admin)
    assert bad_id.status_code == 422


PLANTED_PHONE = "13912345678"
PLANTED_ID_NUMBER = "330106199001011234"
PLANTED_PASSWORD = "Planted-Passw0rd!9"


async def test_no_secret_or_pii_in_any_written_file(gateway: Gateway, tmp_path: Path) -> None:
    await gateway.interface("t.post", "/api/v1/t/post/ok", method="POST", min_level=0)
    token = gateway.token(level=0)
    body = (
        f'{{"phone":"{PLANTED_PHONE}","password":"{PLANTED_PASSWORD}",'
        f'"id_number":"{PLANTED_ID_NUMBER}"}}'
    ).encode()
    answer = await gateway.send(
        "POST", "/api/v1/t/post/ok", query=f"phone={PLANTED_PHONE}", body=body, token=token
    )
    assert answer.status_code == 200, answer.text
    await gateway.send("GET", f"/api/v1/t/{PLANTED_ID_NUMBER}/ok", token=token)
    # What the gateway handed its sink for these requests.
    queue = gateway.parts.logs.sink._queue
    records: list[AccessRecord] = list(queue)
    queue.clear()
    assert len(records) == 2
    planted = [PLANTED_PHONE, PLANTED_ID_NUMBER, PLANTED_PASSWORD, APP_SECRET, token]
    for item in records:
        assert not any(secret in str(value) for value in vars_of(item) for secret in planted)

    data_dir = tmp_path / "pipeline"
    spool = SpoolBuffer(data_dir / "spool")
    service = LogService(spool)
    for item in records:
        service.offer(item)
    await service.flush()
    store: ParquetStore = await run_pipeline([], data_dir, gateway.runtime.db, buffer=spool)
    written = [p for p in data_dir.rglob("*") if p.is_file()]
    assert any(p.suffix == ".parquet" for p in written) and any(p.suffix == ".seg" for p in written)
    assert len(store.files()) == 1
    for path in written:
        content = path.read_bytes()
        for secret in planted:
            assert secret.encode() not in content, (path.name, secret[:4])


def vars_of(item: AccessRecord) -> list[object]:
    """Every field value of a record."""
    return [getattr(item, f.name) for f in dataclasses.fields(item)]

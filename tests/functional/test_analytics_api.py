"""Admin analytics and trajectories over HTTP; no secret or raw PII reaches any written file."""

from __future__ import annotations

import dataclasses
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from gridgate.errors import install_problem_handlers
from gridgate.logs.buffer import SpoolBuffer
from gridgate.logs.record import AccessRecord
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
ERRORS = "/admin/v1/analytics/errors"
TOP_FAILING = "/admin/v1/analytics/top-failing"
AUTH_FAILURES = "/admin/v1/analytics/auth-failures"
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


#: (minute from T0, channel, interface, status, code): failures of every kind over three hours.
_FAILURES: list[tuple[int, str | None, str | None, int, str | None]] = [
    (1, "app", "bills.read", 200, None),
    (2, "app", "bills.read", 401, "channel.bad_signature"),
    (3, "app", "bills.read", 401, "channel.bad_signature"),
    (4, "app", "usage.read", 401, "auth.token_expired"),
    (5, "wechat", "bills.read", 401, "auth.token_invalid"),
    (6, "wechat", "usage.read", 403, "perm.denied"),
    (7, "wechat", "usage.read", 503, None),
    (8, None, None, 401, "channel.unknown_key"),
    (9, None, None, 404, None),
    (10, "app", "payments.create", 200, None),
    (61, "app", "bills.read", 429, "flow.rate_limited"),
    (62, "app", "bills.read", 401, "channel.bad_signature"),
    (63, "wechat", "usage.read", 503, None),
    (64, "wechat", "usage.read", 503, None),
    (65, "web95598", "payments.create", 401, "auth.token_expired"),
    (66, "web95598", "payments.create", 200, None),
    (125, "app", "usage.read", 502, None),
    (126, "app", "bills.read", 200, None),
]


def _failure_records() -> list[AccessRecord]:
    return [
        record(T0 + minutes(m), channel=c, interface=i, status=s, code=code, account=None)
        for m, c, i, s, code in _FAILURES
    ]


@pytest.fixture
async def failures(runtime: Runtime, tmp_path: Path) -> list[AccessRecord]:
    """Records with failures of every kind, put through the whole pipeline and analysed."""
    records = _failure_records()
    await run_pipeline(records, tmp_path / "pipeline", runtime.db)
    return records


def _hour(item: AccessRecord) -> str:
    hour = datetime.fromisoformat(item.time).astimezone(UTC).replace(minute=0, second=0)
    return hour.strftime("%Y-%m-%dT%H:00:00Z")


def _expected_errors(records: list[AccessRecord]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str, str, str], int] = defaultdict(int)
    for r in records:
        if r.status >= 400:
            key = (_hour(r), r.channel or "", r.interface or "", r.code or f"status.{r.status}")
            counts[key] += 1
    return [
        {"hour": h, "channel": c or None, "interface": i or None, "code": code, "count": n}
        for (h, c, i, code), n in sorted(counts.items())
    ]


def _expected_top_failing(records: list[AccessRecord]) -> list[dict[str, Any]]:
    requests: dict[str, int] = defaultdict(int)
    errors: dict[str, int] = defaultdict(int)
    for r in records:
        if r.interface is not None:
            requests[r.interface] += 1
            errors[r.interface] += r.status >= 400
    failing = [
        {"interface": i, "requests": requests[i], "errors": e, "error_rate": e / requests[i]}
        for i, e in errors.items()
        if e
    ]
    return sorted(failing, key=lambda x: (-x["errors"], -x["error_rate"], x["interface"]))


def _expected_auth(records: list[AccessRecord]) -> list[dict[str, Any]]:
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for r in records:
        if r.code is not None and r.code.startswith(("channel.", "auth.")):
            counts[_hour(r), r.channel or "", r.code] += 1
    return [
        {"hour": h, "channel": c or None, "code": code, "count": n}
        for (h, c, code), n in sorted(counts.items())
    ]


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


async def test_errors_by_code_equal_a_recount(
    client: httpx.AsyncClient, runtime: Runtime, failures: list[AccessRecord]
) -> None:
    headers = await _as(client, runtime, "auditor")
    answer = await client.get(ERRORS, params={"page_size": 200}, headers=headers)
    assert answer.status_code == 200, answer.text
    expected = _expected_errors(failures)
    assert answer.json() == {"items": expected, "total": len(expected), "page": 1, "page_size": 200}
    # A failure without a code of ours is counted under its HTTP status.
    assert {"status.503", "status.404", "status.502"} <= {i["code"] for i in expected}

    async def items(**params: str) -> list[dict[str, Any]]:
        body = await client.get(ERRORS, params={**params, "page_size": 200}, headers=headers)
        return list(body.json()["items"])

    assert await items(channel="wechat") == [i for i in expected if i["channel"] == "wechat"]
    assert await items(interface="usage.read") == [
        i for i in expected if i["interface"] == "usage.read"
    ]
    assert await items(code="channel.bad_signature") == [
        {"hour": "2026-11-20T08:00:00Z", "channel": "app", "interface": "bills.read",
         "code": "channel.bad_signature", "count": 2},
        {"hour": "2026-11-20T09:00:00Z", "channel": "app", "interface": "bills.read",
         "code": "channel.bad_signature", "count": 1},
    ]  # fmt: skip
    ranged = await items(**{"from": "2026-11-20T17:00:00+08:00", "to": "2026-11-20T10:00:00Z"})
    assert ranged == [i for i in expected if i["hour"] == "2026-11-20T09:00:00Z"]
    paged = (await client.get(ERRORS, params={"page": 2, "page_size": 5}, headers=headers)).json()
    assert paged["items"] == expected[5:10] and paged["total"] == len(expected)


async def test_top_failing_interfaces_equal_a_recount(
    client: httpx.AsyncClient, runtime: Runtime, failures: list[AccessRecord]
) -> None:
    headers = await _as(client, runtime, "admin")
    answer = await client.get(TOP_FAILING, headers=headers)
    assert answer.status_code == 200, answer.text
    expected = _expected_top_failing(failures)
    body = answer.json()
    assert body == {"items": expected, "total": len(expected), "page": 1, "page_size": 50}
    # Unmatched paths (no interface) are nobody's failures.
    assert [i["interface"] for i in body["items"]] == [
        "usage.read",
        "bills.read",
        "payments.create",
    ]
    assert body["items"][0] == {
        "interface": "usage.read",
        "requests": 6,
        "errors": 6,
        "error_rate": 1.0,
    }

    # Paged like every list: page_size is honoured, and page walks on.
    for page in (1, 2, 3):
        answer = await client.get(
            TOP_FAILING, params={"page": page, "page_size": 1}, headers=headers
        )
        assert answer.json() == {
            "items": expected[page - 1 : page],
            "total": 3,
            "page": page,
            "page_size": 1,
        }
    two = (await client.get(TOP_FAILING, params={"page_size": 2}, headers=headers)).json()
    assert two["items"] == expected[:2] and two["page_size"] == 2
    too_big = await client.get(TOP_FAILING, params={"page_size": 201}, headers=headers)
    assert too_big.status_code == 422 and too_big.json()["field"] == "page_size"
    params = {"from": "2026-11-20T09:00:00Z", "to": "2026-11-20T10:00:00Z"}
    hour = (await client.get(TOP_FAILING, params=params, headers=headers)).json()
    in_hour = [r for r in failures if _hour(r) == "2026-11-20T09:00:00Z"]
    assert hour["items"] == _expected_top_failing(in_hour)


async def test_auth_failures_by_channel_equal_a_recount(
    client: httpx.AsyncClient, runtime: Runtime, failures: list[AccessRecord]
) -> None:
    headers = await _as(client, runtime, "auditor")
    answer = await client.get(AUTH_FAILURES, headers=headers)
    assert answer.status_code == 200, answer.text
    expected = _expected_auth(failures)
    assert answer.json() == {"items": expected, "total": len(expected), "page": 1, "page_size": 50}
    # Summed over interfaces: app's two bad signatures in 08:00 are one row.
    assert expected[:3] == [
        {"hour": "2026-11-20T08:00:00Z", "channel": None, "code": "channel.unknown_key",
         "count": 1},
        {"hour": "2026-11-20T08:00:00Z", "channel": "app", "code": "auth.token_expired",
         "count": 1},
        {"hour": "2026-11-20T08:00:00Z", "channel": "app", "code": "channel.bad_signature",
         "count": 2},
    ]  # fmt: skip
    app = (await client.get(AUTH_FAILURES, params={"channel": "app"}, headers=headers)).json()
    assert app["items"] == [i for i in expected if i["channel"] == "app"]
    later = (
        await client.get(AUTH_FAILURES, params={"from": "2026-11-20T09:00:00Z"}, headers=headers)
    ).json()
    assert later["items"] == [i for i in expected if i["hour"] >= "2026-11-20T09:00:00Z"]
    assert later["total"] == 2
    paged = (await client.get(AUTH_FAILURES, params={"page_size": 2}, headers=headers)).json()
    assert paged["items"] == expected[:2] and paged["total"] == len(expected)


async def test_failure_analytics_roles_and_bad_input(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    reviewer = await _as(client, runtime, "reviewer")
    admin = await _as(client, runtime, "admin")
    for path in (ERRORS, TOP_FAILING, AUTH_FAILURES):
        assert (await client.get(path)).json()["code"] == "auth.required"
        denied = await client.get(path, headers=reviewer)
        assert denied.status_code == 403 and denied.json()["code"] == "perm.denied"
        empty = await client.get(path, headers=admin)
        assert empty.status_code == 200 and empty.json()["items"] == []
        for params in (
            {"from": "2026-11-20T08:00:00"},  # naive
            {"to": "2026-11-20T08:00:00"},
            {"from": "2026-11-20T09:00:00Z", "to": "2026-11-20T08:00:00Z"},
        ):
            answer = await client.get(path, params=params, headers=admin)
            assert answer.status_code == 422, (path, params)
            assert answer.json()["code"] == "request.invalid"
    for params in ({"page_size": 0}, {"page": 0}):
        assert (await client.get(TOP_FAILING, params=params, headers=admin)).status_code == 422
    for path, params in (
        (ERRORS, {"code": "a b"}),
        (ERRORS, {"interface": "x/y"}),
        (AUTH_FAILURES, {"channel": "a b"}),
        (AUTH_FAILURES, {"page_size": 201}),
    ):
        assert (await client.get(path, params=params, headers=admin)).status_code == 422


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
    # What the gateway's engine wrote to its spool for these requests.
    records: list[AccessRecord] = []
    deadline = time.monotonic() + 10
    while len(records) < 2 and time.monotonic() < deadline:
        entries = await gateway.parts.logs.buffer.read("test", 10, block_ms=100)
        records += [AccessRecord(**orjson.loads(entry.data)) for entry in entries]
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


async def test_the_channel_filter_takes_a_business_system(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    # Business systems calling through the gateway appear as `system:<code>` channels.
    headers = await _as(client, runtime, "auditor")
    answer = await client.get(TRAFFIC, params={"channel": "system:billing"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["total"] == 0

"""The Rust engine (gridgate._engine) from Python: the demo catalog compiled, one signed call
through to a business system that checks the engine's X-GG-Internal, one unsigned refused."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gridgate.catalog.schemas import (
    Authorizations,
    BusinessSystemCreate,
    ChannelCreate,
    ComponentCreate,
    ComponentUpdate,
    InterfaceCreate,
    InterfaceUpdate,
)
from gridgate.catalog.services import CatalogService
from gridgate.demo.data import generate_demo_data
from gridgate.demo.seed import seed_demo
from gridgate.errors import InternalSignatureInvalid
from gridgate.gateway.engine import DataPlane, EngineConfig, compile_document, engine_available
from gridgate.gateway.plane import copy_request_counts, request_counts
from gridgate.gateway.signing import signed_headers
from gridgate.gateway.snapshot import Snapshot, load_snapshot, required_level
from gridgate.internal_auth import InternalKeys, InternalVerifier
from gridgate.logs.buffer import SpoolBuffer
from gridgate.operators.audit import Actor
from gridgate.permissions.schemas import FunctionIn, InterfacePermissionIn, MenuIn
from gridgate.permissions.services import PermissionService
from gridgate.registry.client import InstanceInfo
from gridgate.runtime import Runtime
from gridgate.web.traffic import TrafficSummary
from tests.conftest import make_settings


def test_the_engine_is_built_into_the_package() -> None:
    # `make install` builds it (maturin): a missing extension is a broken build, not a skip.
    assert engine_available()


@dataclass
class Demo:
    snapshot: Snapshot
    secrets: dict[str, str]
    keys: InternalKeys


@pytest.fixture
async def demo(tmp_path: Path, sqlite_template: Path) -> AsyncIterator[Demo]:
    shutil.copy(sqlite_template, tmp_path / "gridgate.db")
    runtime = Runtime.build(
        make_settings(tmp_path, database_url=f"sqlite+aiosqlite:///{tmp_path / 'gridgate.db'}")
    )
    try:
        seeded = await seed_demo(runtime, generate_demo_data(customer_count=5))
        assert seeded is not None
        snapshot = await load_snapshot(runtime.db, runtime.box)
        secrets = {c["code"]: c["secret"] for c in seeded["channels"]}
        yield Demo(snapshot, secrets, runtime.internal_keys)
    finally:
        await runtime.close()


@pytest.fixture
def notices(demo: Demo) -> Iterator[tuple[int, list[dict[str, Any]]]]:
    """A business system `notices` that, like the demo systems, believes only signed calls."""
    verifier = InternalVerifier({"notices": demo.keys.for_service("notices")})
    seen: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            headers = [(k.lower(), v) for k, v in self.headers.items()]
            body: dict[str, str]
            try:
                service = verifier.verify("GET", self.path, headers)
            except InternalSignatureInvalid:
                status, body = 401, {"code": "auth.internal_signature"}
            else:
                status, body = 200, {"service": service, "channel": self.headers["x-gg-channel"]}
            seen.append({"status": status, "path": self.path})
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


async def test_a_signed_call_passes_and_an_unsigned_one_is_refused(
    demo: Demo, notices: tuple[int, list[dict[str, Any]]], tmp_path: Path
) -> None:
    port, seen = notices
    spool = tmp_path / "engine-spool"
    plane = DataPlane(EngineConfig(access_log_dir=spool, access_log_fsync=False), demo.keys)
    instance = InstanceInfo("notices-1", "notices", "127.0.0.1", port, 100, None, {}, True)
    version = plane.push(demo.snapshot, instances={"notices": [instance]})
    host, bound = plane.start()
    traffic = TrafficSummary(request_counts(plane.metrics()))
    path, query = "/api/v1/notices/outages", "page=1&region=%E8%A5%BF%E6%B9%96"
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{bound}", timeout=10) as client:
            headers = signed_headers("app", demo.secrets["app"], "GET", path, query=query)
            signed = await client.get(f"{path}?{query}", headers=headers)
            unsigned = await client.get(f"{path}?{query}")
        # The traffic line reads the engine's own request series.
        copy_request_counts(plane.metrics(), traffic.metrics)
        window = traffic.take()
    finally:
        plane.stop(1.0)

    assert version == 1
    assert signed.status_code == 200, signed.text
    assert signed.json()["service"] == "notices"  # X-GG-Internal verified by Python's code
    assert signed.json()["channel"] == "app"
    assert len(signed.headers["x-trace-id"]) == 32
    assert unsigned.status_code == 401
    assert unsigned.headers["content-type"] == "application/problem+json"
    assert unsigned.json()["code"] == "channel.unknown"
    assert seen == [{"status": 200, "path": f"{path}?{query}"}]  # the refused call never left

    buffer = SpoolBuffer(spool, fsync=False)
    records = [json.loads(entry.data) for entry in await buffer.read("test", 10)]
    assert [(r["status"], r["code"], r["channel"]) for r in records] == [
        (200, None, "app"),
        (401, "channel.unknown", None),
    ]
    assert records[0]["upstream"] == "notices-1"

    assert window is not None
    assert (window.requests, window.refused, window.errors) == (2, 1, 0)
    assert 0 < window.p99_s < 10


async def test_the_document_carries_levels_canaries_and_instance_metadata(
    runtime: Runtime,
) -> None:
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        await catalog.create_business_system(
            BusinessSystemCreate(
                code="svc", name="svc", host="127.0.0.1", port=80, password=SecretStr("pw-123456")
            )
        )
        for code in ("app", "web"):
            await catalog.create_channel(ChannelCreate(code=code, name=code, type="app"))
        for code in ("bills", "pay"):
            await catalog.create_interface(
                InterfaceCreate(
                    code=code,
                    name=code,
                    method="GET",
                    path=f"/api/v1/{code}",
                    provider="svc",
                    target_service="svc",
                )
            )
            await catalog.set_authorizations(code, Authorizations(channels=["app", "web"]))
        await catalog.update_interface(
            "bills", InterfaceUpdate(canary_version="2.0", canary_percent=5)
        )
        await catalog.set_authorizations(
            "bills", Authorizations(channels=["app", "web"], business_systems=["svc"])
        )
        component = await catalog.create_component(
            ComponentCreate(channel="app", code="payment", name="缴费", min_level=2)
        )
        permissions = PermissionService(session, Actor("test"))
        await permissions.create_interface_permission(
            InterfacePermissionIn(channel="app", interface="pay", component="payment", min_level=1)
        )
        await permissions.create_menu(MenuIn(channel="app", code="bills", name="账单", min_level=1))
        await permissions.create_function(
            FunctionIn(channel="app", menu="bills", code="query", name="查询", interfaces=["bills"])
        )
    snapshot = await load_snapshot(runtime.db, runtime.box)
    canary = InstanceInfo(
        "svc-2", "svc", "127.0.0.1", 9002, 100, None, {"version": "2.0", "health_path": "/hz"}, True
    )
    plain = InstanceInfo("svc-1", "svc", "127.0.0.1", 9001, 100, None, {}, True)

    document = json.loads(
        compile_document(
            snapshot,
            version=1,
            instances={"svc": [plain, canary]},
            internal_keys=runtime.internal_keys,
        )
    )

    assert document["permissions"] == [{"channel": "app", "interface": "pay", "min_level": 1}]
    # The component's level and the function's (its menu's 1) on app only.
    assert sorted(document["levels"], key=lambda entry: entry["interface"]) == [
        {"channel": "app", "interface": "bills", "min_level": 1},
        {"channel": "app", "interface": "pay", "min_level": 2},
    ]
    interfaces = {entry["code"]: entry for entry in document["interfaces"]}
    assert interfaces["bills"]["version"] == "1"
    assert interfaces["bills"]["canary"] == {"version": "2.0", "percent": 5}
    assert interfaces["pay"]["canary"] is None
    # The business systems sign with their password; only bills is granted to one.
    assert document["systems"] == [{"code": "svc", "secret": "pw-123456"}]
    assert (interfaces["bills"]["systems"], interfaces["pay"]["systems"]) == (["svc"], [])
    assert [
        (i["instance_id"], i["version"], i["health_path"]) for i in document["instances"]["svc"]
    ] == [
        ("svc-1", None, None),
        ("svc-2", "2.0", "/hz"),
    ]
    # The Python statement of the rule decides from the same tables.
    assert required_level(snapshot, "app", snapshot.interfaces["pay"]) == 2
    assert required_level(snapshot, "web", snapshot.interfaces["pay"]) is None
    assert required_level(snapshot, "app", snapshot.interfaces["bills"]) == 1
    assert required_level(snapshot, "web", snapshot.interfaces["bills"]) == 0

    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        await catalog.update_component(component.id, ComponentUpdate(enabled=False))
    disabled = json.loads(
        compile_document(
            await load_snapshot(runtime.db, runtime.box),
            version=2,
            instances={},
            internal_keys=runtime.internal_keys,
        )
    )
    assert {"channel": "app", "interface": "pay", "min_level": None} in disabled["levels"]

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

from gridgate.demo.data import generate_demo_data
from gridgate.demo.seed import seed_demo
from gridgate.errors import InternalSignatureInvalid
from gridgate.gateway.engine import DataPlane, EngineConfig, engine_available
from gridgate.gateway.signing import signed_headers
from gridgate.gateway.snapshot import Snapshot, load_snapshot
from gridgate.internal_auth import InternalKeys, InternalVerifier
from gridgate.logs.buffer import SpoolBuffer
from gridgate.registry.client import InstanceInfo
from gridgate.runtime import Runtime
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
    path, query = "/api/v1/notices/outages", "page=1&region=%E8%A5%BF%E6%B9%96"
    try:
        async with httpx.AsyncClient(base_url=f"http://{host}:{bound}", timeout=10) as client:
            headers = signed_headers("app", demo.secrets["app"], "GET", path, query=query)
            signed = await client.get(f"{path}?{query}", headers=headers)
            unsigned = await client.get(f"{path}?{query}")
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

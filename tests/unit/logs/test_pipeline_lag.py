"""A Redis log buffer nobody batches (no ``serve logs``) shows in the gateway's readiness."""

from __future__ import annotations

import asyncio
import itertools
import time
from pathlib import Path

import httpx
from starlette.applications import Starlette

from gridgate.app import _log_pipeline_check
from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import RedisStreamBuffer
from gridgate.logs.service import LogParts, LogService
from gridgate.logs.storage import ParquetStore
from gridgate.settings import Settings
from gridgate.storage.db import Database
from gridgate.web.health import Check, probe_routes
from tests.support.redis import RedisServer
from tests.unit.logs.helpers import offer_all, record

_keys = itertools.count()


async def _readyz(check: Check) -> httpx.Response:
    app = Starlette(routes=probe_routes("gateway", {"log_pipeline": check}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
        return await client.get("/readyz")


async def test_unbatched_records_warn_then_fail_past_the_limit(
    tmp_path: Path, redis_server: RedisServer, sqlite_db: Database
) -> None:
    buffer = RedisStreamBuffer.from_url(redis_server.url, key=f"test:lag:{next(_keys)}")
    store = ParquetStore(tmp_path / "logs")
    batcher = Batcher(buffer, store, consumer="c1")
    parts = LogParts(LogService(buffer), buffer, store, batcher, Analyzer(store, sqlite_db))
    try:
        assert await parts.lag_s() is None
        lenient = Settings(data_dir=tmp_path, log_lag_warning_s=3600)
        strict = Settings(data_dir=tmp_path, log_lag_warning_s=0.001, log_lag_fail_s=0.002)
        ok = await _readyz(_log_pipeline_check(parts, lenient))
        assert ok.json()["checks"] == {"log_pipeline": "ok"}

        await offer_all(parts.service, [record(), record()])
        deadline = time.monotonic() + 5
        while (await parts.lag_s() or 0) <= 0.002:  # Redis's clock moves on
            assert time.monotonic() < deadline
            await asyncio.sleep(0.005)

        still = await _readyz(_log_pipeline_check(parts, lenient))
        assert still.status_code == 200 and still.json()["checks"]["log_pipeline"] == "ok"
        warned = await _readyz(
            _log_pipeline_check(parts, Settings(data_dir=tmp_path, log_lag_warning_s=0.001))
        )
        assert warned.status_code == 200, warned.text
        assert warned.json()["status"] == "ready"
        assert warned.json()["checks"]["log_pipeline"] == "warning"
        assert "serve logs" in warned.json()["details"]["log_pipeline"]
        failed = await _readyz(_log_pipeline_check(parts, strict))
        assert failed.status_code == 503
        assert failed.json()["checks"]["log_pipeline"] == "failing"

        # A batcher takes them (as ``serve logs`` would): nothing waits, ready again.
        assert await batcher.drain() == 2
        assert await parts.lag_s() is None
        again = await _readyz(_log_pipeline_check(parts, strict))
        assert again.status_code == 200 and again.json()["checks"]["log_pipeline"] == "ok"
    finally:
        await buffer.close()


async def test_read_but_unacknowledged_records_count(redis_server: RedisServer) -> None:
    buffer = RedisStreamBuffer.from_url(redis_server.url, key=f"test:lag:{next(_keys)}")
    try:
        await offer_all(LogService(buffer), [record()])
        # A batcher read the entry and died before its ack: it still waits.
        assert len(await buffer.read("dead", 10)) == 1
        assert await buffer.oldest_age_s() is not None
    finally:
        await buffer.close()

"""A Redis log buffer nobody batches (no ``serve logs``) shows in the gateway's readiness:
records that wait too long, and records the bounded stream trimmed before a batcher read them."""

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
from gridgate.logs.buffer import RedisStreamBuffer, SpoolBuffer
from gridgate.logs.service import LogParts, LogService, PipelineState
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


async def test_records_trimmed_unread_show_however_young_the_stream(
    tmp_path: Path, redis_server: RedisServer, sqlite_db: Database
) -> None:
    # At thousands of requests a second the bounded stream holds only the last minutes: its
    # oldest record is never old, yet with no batcher every record is lost. That must show.
    buffer = RedisStreamBuffer.from_url(redis_server.url, key=f"test:lag:{next(_keys)}", max_len=50)
    store = ParquetStore(tmp_path / "logs")
    batcher = Batcher(buffer, store, consumer="c1")
    parts = LogParts(LogService(buffer), buffer, store, batcher, Analyzer(store, sqlite_db))
    lenient = Settings(data_dir=tmp_path, log_lag_warning_s=3600)
    strict = Settings(data_dir=tmp_path, log_lag_warning_s=3600, log_lag_fail_s=3600)
    try:
        await offer_all(parts.service, [record()])
        readers = await buffer.readers()
        assert (readers.consumers, readers.last_seen_s, readers.trimmed_unread) == (0, None, False)
        assert (await _readyz(_log_pipeline_check(parts, lenient))).json()["checks"] == {
            "log_pipeline": "ok"
        }

        await offer_all(parts.service, [record() for _ in range(400)])
        readers = await buffer.readers()
        assert readers.trimmed_unread and readers.oldest_age_s is not None
        assert readers.oldest_age_s < 3600
        warned = await _readyz(_log_pipeline_check(parts, lenient))
        assert warned.status_code == 200
        assert warned.json()["checks"]["log_pipeline"] == "warning"
        assert "trimmed" in warned.json()["details"]["log_pipeline"]
        failed = await _readyz(_log_pipeline_check(parts, strict))
        assert failed.status_code == 503

        # A batcher catches up with what is left: nothing more is lost, ready again.
        assert 0 < await batcher.drain() < 401
        readers = await buffer.readers()
        assert readers.consumers == 1 and readers.last_seen_s is not None
        assert not readers.trimmed_unread and readers.oldest_age_s is None
        again = await _readyz(_log_pipeline_check(parts, strict))
        assert again.status_code == 200 and again.json()["checks"]["log_pipeline"] == "ok"
        # Trimming what the batcher already took loses nothing.
        await offer_all(parts.service, [record() for _ in range(400)])
        await batcher.drain()
        assert not (await buffer.readers()).trimmed_unread
    finally:
        await buffer.close()


async def test_the_embedded_spool_is_always_ok(tmp_path: Path, sqlite_db: Database) -> None:
    buffer = SpoolBuffer(tmp_path / "spool", fsync=False)
    store = ParquetStore(tmp_path / "logs")
    parts = LogParts(
        LogService(buffer), buffer, store, Batcher(buffer, store), Analyzer(store, sqlite_db)
    )
    await offer_all(parts.service, [record()])
    assert await parts.state(warning_s=0.001, fail_s=0.001) == PipelineState("ok")
    await buffer.close()

"""``gridgate logs status|flush|analyze`` on the embedded spool and SQLite of a data dir, and
``status`` on a Redis stream nobody reads."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis
from typer.testing import CliRunner

from gridgate.cli.logs import logs_app
from gridgate.logs.buffer import RedisStreamBuffer, SpoolBuffer
from gridgate.logs.service import LogService
from tests.support.redis import RedisServer
from tests.unit.logs.helpers import T0, minutes, offer_all, record


def test_status_flush_analyze(tmp_path: Path) -> None:
    records = [record(T0 + minutes(i * 20)) for i in range(6)]  # 08:00 … 09:40
    asyncio.run(offer_all(LogService(SpoolBuffer(tmp_path / "log-spool")), records))
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]

    before = runner.invoke(logs_app, ["status", *where])
    assert before.exit_code == 0, before.output
    assert "waiting in buffer" in before.output and " 6 " in before.output

    flushed = runner.invoke(logs_app, ["flush", *where])
    assert flushed.exit_code == 0, flushed.output
    assert "moved 6 records" in flushed.output
    assert len(list((tmp_path / "logs").rglob("*.parquet"))) == 2

    analysed = runner.invoke(logs_app, ["analyze", *where])
    assert analysed.exit_code == 0, analysed.output
    assert "analysed 2 hours, 6 new records" in analysed.output
    again = runner.invoke(logs_app, ["analyze", *where])
    assert "analysed 0 hours" in again.output

    after = runner.invoke(logs_app, ["status", *where])
    assert "2026-11-20T09:00:00+00:00" in after.output
    assert "0 (0 files not yet added)" in after.output

    # Two more records, one for an hour already analysed: only they are added.
    more = [record(T0 + minutes(30)), record(T0 + minutes(200))]
    asyncio.run(offer_all(LogService(SpoolBuffer(tmp_path / "log-spool")), more))
    assert runner.invoke(logs_app, ["flush", *where]).exit_code == 0
    due = runner.invoke(logs_app, ["status", *where])
    assert "2 (2 files not yet added)" in due.output
    added = runner.invoke(logs_app, ["analyze", *where])
    assert "analysed 2 hours, 2 new records" in added.output


def test_status_shows_retention_and_its_last_run(tmp_path: Path) -> None:
    from datetime import timedelta  # noqa: PLC0415

    from gridgate.logs.retention import Retention  # noqa: PLC0415
    from gridgate.logs.storage import ParquetStore  # noqa: PLC0415
    from gridgate.settings import Settings  # noqa: PLC0415
    from gridgate.storage.db import Database  # noqa: PLC0415

    new = T0 + timedelta(days=2)
    asyncio.run(
        offer_all(LogService(SpoolBuffer(tmp_path / "log-spool")), [record(T0), record(new)])
    )
    runner = CliRunner()
    where = ["--data-dir", str(tmp_path)]
    for command in ("flush", "analyze"):
        done = runner.invoke(logs_app, [command, *where])
        assert done.exit_code == 0, done.output

    before = runner.invoke(logs_app, ["status", *where])
    assert before.exit_code == 0, before.output
    assert "files 180 days, analysis rows 400 days" in before.output
    assert "2026-11-20T08:00:00Z" in before.output  # the oldest file hour
    assert "nothing removed yet" in before.output

    async def apply() -> None:
        db = Database(Settings(data_dir=tmp_path).effective_database_url)
        store = ParquetStore(tmp_path / "logs")
        try:
            await Retention(store, db, log_days=1, analysis_days=1).run_once(new + minutes(60))
        finally:
            await db.dispose()

    asyncio.run(apply())
    after = runner.invoke(logs_app, ["status", *where])
    assert after.exit_code == 0, after.output
    text = " ".join(after.output.replace("│", " ").split())
    assert "oldest file hour 2026-11-22T08:00:00Z" in text
    assert "oldest analysed hour 2026-11-22T08:00:00Z" in text
    assert "1 files (1 hours) before 2026-11-21T09:00:00Z" in text


def test_status_shows_a_stream_nobody_reads(
    tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = redis_server.url.replace("/0", "/11")  # a database of this test's own

    async def fill() -> None:
        redis = Redis.from_url(url)
        await redis.flushdb()
        # Gateways appended to the bounded stream, and no `serve logs` ever read it.
        buffer = RedisStreamBuffer(redis, max_len=20)
        await buffer.append([orjson.dumps(record()) for _ in range(300)])
        await redis.aclose()

    asyncio.run(fill())
    monkeypatch.setenv("GRIDGATE_REDIS_URL", url)
    shown = CliRunner().invoke(logs_app, ["status", "--data-dir", str(tmp_path)])
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.replace("│", " ").split())
    assert "batchers none has read the stream" in text
    assert "records trimmed unread yes" in text

    flushed = CliRunner().invoke(logs_app, ["flush", "--data-dir", str(tmp_path)])
    assert flushed.exit_code == 0, flushed.output
    after = CliRunner().invoke(logs_app, ["status", "--data-dir", str(tmp_path)])
    text = " ".join(after.output.replace("│", " ").split())
    assert "batchers 1 (the latest seen" in text and "records trimmed unread none" in text

"""``gridgate logs status|flush|analyze`` on the embedded spool and SQLite of a data dir."""

from __future__ import annotations

import asyncio
from pathlib import Path

from typer.testing import CliRunner

from gridgate.cli.logs import logs_app
from gridgate.logs.buffer import SpoolBuffer
from gridgate.logs.service import LogService
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
    assert "analysed 2 hours, 6 records" in analysed.output
    again = runner.invoke(logs_app, ["analyze", *where])
    assert "analysed 0 hours" in again.output

    after = runner.invoke(logs_app, ["status", *where])
    assert "2026-11-20T09:00:00+00:00" in after.output

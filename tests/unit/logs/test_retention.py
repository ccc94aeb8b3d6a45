"""Retention: old Parquet files and analysis rows go, in bounded batches, audited once a run."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import ValidationError
from sqlalchemy import select

from gridgate.logs.analysis import Analyzer
from gridgate.logs.models import AccountAction, AnalyzedHour, ErrorHour, TrafficHour
from gridgate.logs.retention import Retention
from gridgate.logs.storage import ParquetStore
from gridgate.operators.models import AuditEvent
from gridgate.settings import Settings
from gridgate.storage.db import Database
from tests.unit.logs.helpers import T0, record, run_pipeline

NEW = T0 + timedelta(days=8)
NOW = NEW + timedelta(hours=1)


async def _hours(db: Database, model: type) -> list:
    column = model.time if model is AccountAction else model.hour  # type: ignore[attr-defined]
    async with db.sessions() as session:
        return sorted(await session.scalars(select(column)))


async def _audits(db: Database) -> list[AuditEvent]:
    async with db.sessions() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.actor == "system:logs").order_by(AuditEvent.id)
        )
        return list(rows)


async def test_old_files_and_rows_go_newer_stay_and_the_run_is_audited(
    tmp_path: Path, db: Database
) -> None:
    records = [
        record(T0),
        record(T0, status=502, code="upstream.unavailable"),
        record(NEW),
        record(NEW, status=502, code="upstream.unavailable"),
    ]
    store = await run_pipeline(records, tmp_path, db)
    # Files kept 5 days (cut-off NOW - 5 d), rows 7 days: both cut-offs fall between T0 and NEW.
    retention = Retention(store, db, log_days=5, analysis_days=7)

    done = await retention.run_once(NOW)

    assert [f.hour for f in store.files()] == [NEW]
    assert not (tmp_path / "logs" / f"date={T0:%Y-%m-%d}").exists()
    for model in (TrafficHour, ErrorHour, AnalyzedHour):
        assert await _hours(db, model) == [NEW], model
    assert all(time >= NEW for time in await _hours(db, AccountAction))
    assert len(await _hours(db, AccountAction)) == 2
    assert (done.hours, done.files, done.traffic_rows, done.error_rows) == (1, 1, 1, 1)
    assert (done.trajectory_rows, done.analyzed_hours) == (2, 1)
    # The analysis does not bring the removed hour back.
    assert await Analyzer(store, db).due() == {}

    (event,) = await _audits(db)
    assert (event.action, event.resource_type) == ("logs.retention", "logs")
    assert event.after is not None
    assert event.after["files"] == 1 and event.after["trajectory_rows"] == 2
    assert event.after["files_before"] == "2026-11-23T09:00:00Z"
    assert event.after["rows_before"] == "2026-11-21T09:00:00Z"

    # Nothing left to remove: no second audit row.
    again = await retention.run_once(NOW)
    assert not again.removed
    assert len(await _audits(db)) == 1


async def test_forever_keeps_everything(tmp_path: Path, sqlite_db: Database) -> None:
    store = await run_pipeline([record(T0)], tmp_path, sqlite_db)
    done = await Retention(store, sqlite_db, log_days=0, analysis_days=0).run_once(
        T0 + timedelta(days=3650)
    )
    assert not done.removed
    assert len(store.files()) == 1
    assert await _hours(sqlite_db, TrafficHour) == [T0]
    assert await _audits(sqlite_db) == []


async def test_batches_are_bounded_and_the_rest_follows_next_run(
    tmp_path: Path, db: Database
) -> None:
    old = [T0 + timedelta(hours=h) for h in range(5)]
    store = await run_pipeline([record(t) for t in [*old, NEW]], tmp_path, db)
    retention = Retention(
        store, db, log_days=5, analysis_days=7, hours_per_batch=2, rows_per_batch=2, max_batches=2
    )

    first = await retention.run_once(NOW)
    # Two batches of two hours (files and rows), two batches of two trajectory rows.
    assert (first.hours, first.traffic_rows, first.trajectory_rows) == (4, 4, 4)
    assert [f.hour for f in store.files()] == [old[4], NEW]
    assert await _hours(db, TrafficHour) == [old[4], NEW]

    second = await retention.run_once(NOW)
    assert (second.hours, second.traffic_rows, second.trajectory_rows) == (1, 1, 1)
    assert [f.hour for f in store.files()] == [NEW]
    assert [e.after["hours"] for e in await _audits(db) if e.after] == [4, 1]


async def test_missing_store_is_nothing_to_remove(tmp_path: Path, sqlite_db: Database) -> None:
    store = ParquetStore(tmp_path / "nothing")
    done = await Retention(store, sqlite_db, log_days=1, analysis_days=1).run_once(NOW)
    assert not done.removed


def test_rows_cannot_be_kept_shorter_than_their_files(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="analysis_retention_days"):
        Settings(data_dir=tmp_path, log_retention_days=30, analysis_retention_days=10)
    with pytest.raises(ValidationError, match="analysis_retention_days"):
        Settings(data_dir=tmp_path, log_retention_days=0, analysis_retention_days=400)
    kept = Settings(data_dir=tmp_path)
    assert (kept.log_retention_days, kept.analysis_retention_days) == (180, 400)
    forever = Settings(data_dir=tmp_path, log_retention_days=0, analysis_retention_days=0)
    assert (forever.log_retention_days, forever.analysis_retention_days) == (0, 0)
    longer = Settings(data_dir=tmp_path, log_retention_days=30, analysis_retention_days=30)
    assert (longer.log_retention_days, longer.analysis_retention_days) == (30, 30)

"""Retention: Parquet log files and analysis rows older than their settings allow are removed.

The job runs with the log pipeline (where the analysis runs), once at start and then every
``interval_s``. It works in bounded batches, each its own thread call or transaction with the
event loop free between them, and at most ``max_batches`` of each kind per run (the rest
follows next run), so a first run over years of data never stalls the process.

Files go by whole hours: an hour's directory is renamed aside first (one rename on a local
disk), so the analysis never reads a file that is being removed. Removing files changes no
rows: the analysis only adds files it has not counted. Rows of an hour go with its
``log_analyzed_hours`` row and the names of its analysed files, in one transaction, so a file
of that hour found later is counted afresh. Every run that removed something writes one audit
event (actor ``system:logs``, action ``logs.retention``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.fs as pafs  # type: ignore[import-untyped]
import structlog
from sqlalchemy import delete, func, select, union

from gridgate.logs.analysis import every
from gridgate.logs.models import AccountAction, AnalyzedFile, AnalyzedHour, ErrorHour, TrafficHour
from gridgate.logs.storage import ParquetStore, hour_of
from gridgate.operators.audit import Actor, record
from gridgate.operators.models import AuditEvent
from gridgate.storage.db import Database

__all__ = ["ACTION", "ACTOR", "Retention", "RetentionRun", "cutoff", "last_run", "oldest_kept"]

_log = structlog.get_logger("gridgate.logs.retention")
ACTOR = Actor(username="system:logs")
ACTION = "logs.retention"
#: Suffix of an hour directory being removed (the file pattern no longer matches inside it).
_DELETING = ".deleting"


@dataclass(frozen=True, slots=True)
class RetentionRun:
    """What one run removed, and the cut-offs it used (``None``: that kind is kept forever)."""

    files_before: datetime | None
    rows_before: datetime | None
    hours: int = 0
    files: int = 0
    traffic_rows: int = 0
    error_rows: int = 0
    trajectory_rows: int = 0
    analyzed_hours: int = 0
    analyzed_files: int = 0

    @property
    def removed(self) -> bool:
        """Whether the run removed anything."""
        counts = (self.hours, self.files, self.traffic_rows, self.error_rows)
        return any((*counts, self.trajectory_rows, self.analyzed_hours, self.analyzed_files))

    def as_audit(self) -> dict[str, Any]:
        """The run as the audit event's ``after``."""
        data = asdict(self)
        for key in ("files_before", "rows_before"):
            data[key] = data[key].isoformat().replace("+00:00", "Z") if data[key] else None
        return data


def cutoff(days: int, now: datetime) -> datetime | None:
    """The first hour kept when ``days`` are kept (whole hours), or None for ever."""
    return hour_of(now - timedelta(days=days)) if days else None


class Retention:
    """Removes what is older than ``log_days`` (files) and ``analysis_days`` (rows)."""

    def __init__(
        self,
        store: ParquetStore,
        db: Database,
        *,
        log_days: int,
        analysis_days: int,
        hours_per_batch: int = 24,
        rows_per_batch: int = 5000,
        max_batches: int = 100,
    ) -> None:
        self.store = store
        self.db = db
        self.log_days = log_days
        self.analysis_days = analysis_days
        self.hours_per_batch = hours_per_batch
        self.rows_per_batch = rows_per_batch
        self.max_batches = max_batches

    async def run_once(self, now: datetime | None = None) -> RetentionRun:
        """Remove what is due now (up to ``max_batches`` of each kind) and audit it."""
        now = now or datetime.now(UTC)
        files_before = cutoff(self.log_days, now)
        rows_before = cutoff(self.analysis_days, now)
        hours = files = 0
        if files_before is not None:
            hours, files = await self._remove_files(files_before)
        rows = await self._remove_rows(rows_before) if rows_before is not None else {}
        done = RetentionRun(files_before, rows_before, hours, files, **rows)
        if done.removed:
            async with self.db.transaction() as session:
                await record(session, ACTOR, ACTION, "logs", "retention", after=done.as_audit())
            _log.info("log_retention_applied", **done.as_audit())
        return done

    async def _remove_files(self, before: datetime) -> tuple[int, int]:
        by_hour = await asyncio.to_thread(self.store.by_hour)
        old = [(hour, items) for hour, items in by_hour.items() if hour < before]
        hours = files = 0
        for batch in range(self.max_batches):
            chunk = old[batch * self.hours_per_batch : (batch + 1) * self.hours_per_batch]
            if not chunk:
                break
            dirs = sorted({item.path.rsplit("/", 1)[0] for _, items in chunk for item in items})
            await asyncio.to_thread(self._remove_dirs, dirs)
            hours += len(chunk)
            files += sum(len(items) for _, items in chunk)
            await asyncio.sleep(0)
        return hours, files

    def _remove_dirs(self, dirs: list[str]) -> None:
        fs = self.store.filesystem
        for directory in dirs:
            aside = directory + _DELETING
            fs.move(directory, aside)
            fs.delete_dir(aside)
            parent = directory.rsplit("/", 1)[0]
            selector = pafs.FileSelector(parent, allow_not_found=True)
            # The day's directory goes with its last hour.
            if parent != self.store.root and not fs.get_file_info(selector):
                with contextlib.suppress(OSError):
                    fs.delete_dir(parent)

    async def _remove_rows(self, before: datetime) -> dict[str, int]:
        counts = dict.fromkeys(
            ("traffic_rows", "error_rows", "trajectory_rows", "analyzed_hours", "analyzed_files"), 0
        )
        for _ in range(self.max_batches):
            async with self.db.transaction() as session:
                # The oldest hours first, a bounded number of them per transaction.
                old = union(
                    select(TrafficHour.hour).where(TrafficHour.hour < before),
                    select(ErrorHour.hour).where(ErrorHour.hour < before),
                    select(AnalyzedHour.hour).where(AnalyzedHour.hour < before),
                )
                hours = list(
                    await session.scalars(old.order_by("hour").limit(self.hours_per_batch))
                )
                if not hours:
                    break
                for model, key in (
                    (TrafficHour, "traffic_rows"),
                    (ErrorHour, "error_rows"),
                    (AnalyzedHour, "analyzed_hours"),
                    (AnalyzedFile, "analyzed_files"),
                ):
                    result = await session.execute(delete(model).where(model.hour.in_(hours)))
                    counts[key] += int(result.rowcount or 0)  # type: ignore[attr-defined]
            await asyncio.sleep(0)
        for _ in range(self.max_batches):
            async with self.db.transaction() as session:
                ids = list(
                    await session.scalars(
                        select(AccountAction.id)
                        .where(AccountAction.time < before)
                        .order_by(AccountAction.time)
                        .limit(self.rows_per_batch)
                    )
                )
                if not ids:
                    break
                await session.execute(delete(AccountAction).where(AccountAction.id.in_(ids)))
                counts["trajectory_rows"] += len(ids)
            await asyncio.sleep(0)
        return counts

    async def run(self, stopping: asyncio.Event, *, interval_s: float = 3600.0) -> None:
        """Apply retention at start and every ``interval_s`` until ``stopping``."""
        await every(interval_s, stopping, self.run_once, log=_log, failed="log_retention_failed")


async def last_run(db: Database) -> tuple[datetime, dict[str, Any]] | None:
    """When the last run that removed something ran, and what it removed (from the audit)."""
    async with db.sessions() as session:
        row = (
            await session.execute(
                select(AuditEvent.at, AuditEvent.after)
                .where(AuditEvent.actor == ACTOR.username, AuditEvent.action == ACTION)
                .order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
                .limit(1)
            )
        ).first()
    return (row[0], dict(row[1] or {})) if row else None


async def oldest_kept(store: ParquetStore, db: Database) -> tuple[datetime | None, datetime | None]:
    """The oldest hour with Parquet files, and the oldest hour with traffic rows."""
    files = await asyncio.to_thread(store.files)
    async with db.sessions() as session:
        hour = await session.scalar(select(func.min(TrafficHour.hour)))
    return (files[0].hour if files else None), hour

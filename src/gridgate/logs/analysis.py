"""Analysis: DuckDB over the Parquet files, results written back to the relational tables.

Each hour is recomputed whole from every file of that hour and replaces its earlier results
(delete, then insert, in one transaction), so running it twice, or after late records arrived,
gives the same answer. An hour is due when its list of files differs from the one its stored
results were computed from.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import duckdb
import pyarrow.dataset as pads  # type: ignore[import-untyped]
import structlog
from sqlalchemy import delete, insert, select

from gridgate.logs.models import NONE, AccountAction, AnalyzedHour, ErrorHour, TrafficHour
from gridgate.logs.storage import HOUR, SCHEMA, BatchFile, ParquetStore
from gridgate.storage.db import Database
from gridgate.storage.models import utcnow

__all__ = ["Analyzer", "HourResult", "digest", "every"]

_log = structlog.get_logger("gridgate.logs.analysis")
#: Rows per insert statement when saving an hour.
_INSERT_SLICE = 1000
# Times leave DuckDB as microseconds: its timezone-aware values would need pytz.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_TRAFFIC = f"""
SELECT coalesce(channel, '{NONE}') AS channel, coalesce(interface, '{NONE}') AS interface,
       count(*) AS requests,
       count(*) FILTER (WHERE status >= 400) AS errors,
       quantile_cont(latency_ms, 0.5) AS p50_ms,
       quantile_cont(latency_ms, 0.95) AS p95_ms,
       quantile_cont(latency_ms, 0.99) AS p99_ms,
       quantile_cont(queue_wait_ms, 0.99) AS queue_wait_p99_ms,
       count(DISTINCT account) AS accounts
FROM logs GROUP BY 1, 2
"""  # noqa: S608 - NONE is a constant of ours, not input

_ERRORS = f"""
SELECT coalesce(channel, '{NONE}'), coalesce(interface, '{NONE}'),
       coalesce(code, 'status.' || status::VARCHAR), count(*)
FROM logs WHERE status >= 400 GROUP BY 1, 2, 3
"""  # noqa: S608 - NONE is a constant of ours, not input

_ACTIONS = f"""
SELECT account, epoch_us(time), coalesce(channel, '{NONE}'), coalesce(interface, '{NONE}'),
       status, code
FROM logs WHERE account IS NOT NULL
"""  # noqa: S608 - NONE is a constant of ours, not input


def digest(files: Sequence[BatchFile]) -> str:
    """What an hour's results were computed from: a hash of its file names."""
    names = sorted(item.path.rsplit("/", 1)[-1] for item in files)
    return hashlib.sha256("\n".join(names).encode()).hexdigest()


def _overlap(files: Sequence[BatchFile]) -> bool:
    # Batches never share ids unless one was re-delivered in another shape after a crash;
    # only then is the (costly) de-duplication by buffer id needed.
    ordered = sorted(files, key=lambda f: f.first)
    return any(b.first <= a.last for a, b in itertools.pairwise(ordered))


@dataclass(frozen=True, slots=True)
class HourResult:
    """The results of one hour, ready for the tables."""

    hour: datetime
    records: int
    traffic: list[dict[str, Any]]
    errors: list[dict[str, Any]]
    actions: list[dict[str, Any]]


class Analyzer:
    """Computes hourly traffic, errors and account trajectories (日志分析)."""

    def __init__(self, store: ParquetStore, db: Database, *, threads: int | None = None) -> None:
        self.store = store
        self.db = db
        self.threads = threads

    def compute(
        self, hour: datetime, files: Sequence[BatchFile], *, trajectory: bool = True
    ) -> HourResult:
        """Run the queries over the files of one hour (blocking: call it in a thread)."""
        con = duckdb.connect()
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            paths = [item.path for item in files]
            if self.store.local_root is not None:
                source = con.read_parquet(paths)
            else:
                source = con.from_arrow(
                    pads.dataset(paths, schema=SCHEMA, filesystem=self.store.filesystem)
                )
            if _overlap(files):
                unique = source.query("raw", "SELECT DISTINCT ON (log_id) * FROM raw")
                assert unique is not None  # noqa: S101 - a SELECT always gives a relation
                source = unique
            source.create_view("logs")
            (records,) = con.execute("SELECT count(*) FROM logs").fetchone() or (0,)
            traffic = [
                {
                    "hour": hour,
                    "channel": row[0],
                    "interface": row[1],
                    "requests": row[2],
                    "errors": row[3],
                    "p50_ms": row[4],
                    "p95_ms": row[5],
                    "p99_ms": row[6],
                    "queue_wait_p99_ms": row[7],
                    "accounts": row[8],
                }
                for row in con.execute(_TRAFFIC).fetchall()
            ]
            errors = [
                {"hour": hour, "channel": c, "interface": i, "code": code, "count": n}
                for c, i, code, n in con.execute(_ERRORS).fetchall()
            ]
            actions = [
                {
                    "account_id": a,
                    "time": _EPOCH + timedelta(microseconds=t),
                    "channel": c,
                    "interface": i,
                    "status": s,
                    "code": code,
                }
                for a, t, c, i, s, code in (con.execute(_ACTIONS).fetchall() if trajectory else [])
            ]
        finally:
            con.close()
        return HourResult(hour, int(records), traffic, errors, actions)

    async def save(self, result: HourResult, files_digest: str) -> None:
        """Replace the hour's results in one transaction."""
        hour = result.hour
        async with self.db.transaction() as session:
            await session.execute(delete(TrafficHour).where(TrafficHour.hour == hour))
            await session.execute(delete(ErrorHour).where(ErrorHour.hour == hour))
            await session.execute(
                delete(AccountAction).where(
                    AccountAction.time >= hour, AccountAction.time < hour + HOUR
                )
            )
            await session.execute(delete(AnalyzedHour).where(AnalyzedHour.hour == hour))
            for model, rows in (
                (TrafficHour, result.traffic),
                (ErrorHour, result.errors),
                (AccountAction, result.actions),
            ):
                # In slices, with the event loop free between them: in a gateway process an
                # hour of account actions is one row per signed-in request, and one insert of
                # them all would hold up every request for as long as it takes.
                for start in range(0, len(rows), _INSERT_SLICE):
                    await session.execute(insert(model), rows[start : start + _INSERT_SLICE])
                    await asyncio.sleep(0)
            session.add(
                AnalyzedHour(
                    hour=hour,
                    files_digest=files_digest,
                    records=result.records,
                    analyzed_at=utcnow(),
                )
            )

    async def due(self, since: datetime | None = None) -> dict[datetime, list[BatchFile]]:
        """Hours whose files changed since their results were computed."""
        by_hour = await asyncio.to_thread(self.store.by_hour, since)
        async with self.db.sessions() as session:
            stored = dict(
                (await session.execute(select(AnalyzedHour.hour, AnalyzedHour.files_digest))).all()
            )
        return {h: files for h, files in by_hour.items() if stored.get(h) != digest(files)}

    async def analyze(
        self,
        hours: dict[datetime, list[BatchFile]] | None = None,
        *,
        progress: Callable[[datetime, int], None] | None = None,
    ) -> list[HourResult]:
        """Recompute ``hours`` (default: every due hour); ``progress`` hears of each one."""
        todo = await self.due() if hours is None else hours
        done = []
        for hour, files in sorted(todo.items()):
            result = await asyncio.to_thread(self.compute, hour, files)
            await self.save(result, digest(files))
            done.append(result)
            if progress is not None:
                progress(hour, result.records)
        return done

    async def run(self, stopping: asyncio.Event, *, interval_s: float = 60.0) -> None:
        """Analyse due hours every ``interval_s`` until ``stopping``."""

        async def step() -> None:
            done = await self.analyze()
            if done:  # every minute while traffic flows: the traffic line says enough
                _log.debug("log_hours_analyzed", hours=len(done))

        await every(interval_s, stopping, step, log=_log, failed="log_analysis_failed")


async def every(
    interval_s: float,
    stopping: asyncio.Event,
    step: Callable[[], Awaitable[object]],
    *,
    log: Any,
    failed: str,
) -> None:
    """Run ``step`` at once and then every ``interval_s`` until ``stopping`` (the analysis's
    and the retention's loop); a failure is logged as ``failed`` and tried again next time."""
    while not stopping.is_set():
        try:
            await step()
        except Exception as exc:  # a file or the database is away: try again later
            log.warning(failed, error=str(exc), error_type=type(exc).__name__)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), timeout=interval_s)

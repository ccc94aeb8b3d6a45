"""Analysis: DuckDB over the Parquet files, results added to the relational tables.

Each Parquet file is analysed once. What its records add to their hour — requests and errors
per channel and interface, failures per error code, the summaries the percentiles and distinct
accounts are read from (:mod:`gridgate.logs.sketches`) — is merged into the hour's rows, and
its account actions are inserted, never deleted and inserted again. The file's name is
recorded (``log_analyzed_files``) in the same transaction, so a crash never counts a file twice
or loses it, and a file that arrives late for an old hour is added when it appears. A pass
costs in proportion to the records it adds, however full the hour already is.

Every minute a pass looks at the files of the last hours; every hour, and when asked (``gridgate
logs analyze``), at all of them. An hour analysed by a version before this one (which kept no
file names) is recomputed whole from its files once, when a file arrives for it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, cast

import duckdb
import pyarrow.dataset as pads  # type: ignore[import-untyped]
import structlog
from sqlalchemy import delete, insert, select, tuple_, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.logs.models import (
    NONE,
    AccountAction,
    AnalyzedFile,
    AnalyzedHour,
    ErrorHour,
    TrafficHour,
)
from gridgate.logs.sketches import Distinct, Histogram, bucket_sql, register_sql
from gridgate.logs.storage import HOUR, SCHEMA, BatchFile, ParquetStore, hour_of
from gridgate.storage.db import Database
from gridgate.storage.models import utcnow

if TYPE_CHECKING:
    from sqlalchemy import Table

__all__ = ["Analyzer", "Group", "HourResult", "Pending", "digest", "every"]

_log = structlog.get_logger("gridgate.logs.analysis")
#: Rows per insert statement when saving account actions.
_INSERT_SLICE = 1000
# Times leave DuckDB as microseconds: its timezone-aware values would need pytz.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_KEY = f"coalesce(channel, '{NONE}') AS channel, coalesce(interface, '{NONE}') AS interface"

_GROUPS = f"""
SELECT {_KEY}, count(*), count(*) FILTER (WHERE status >= 400),
       min(latency_ms), max(latency_ms), min(queue_wait_ms), max(queue_wait_ms)
FROM logs GROUP BY ALL
"""  # noqa: S608 - NONE is a constant of ours, not input

_HISTOGRAMS = f"""
SELECT {_KEY}, 0, {bucket_sql("latency_ms")}, count(*)
FROM logs WHERE latency_ms IS NOT NULL GROUP BY ALL
UNION ALL
SELECT {_KEY}, 1, {bucket_sql("queue_wait_ms")}, count(*)
FROM logs WHERE queue_wait_ms IS NOT NULL GROUP BY ALL
"""  # noqa: S608 - NONE is a constant of ours, not input

_REGISTER, _RANK = register_sql("account")
_REGISTERS = f"""
SELECT {_KEY}, {_REGISTER}, max({_RANK})
FROM logs WHERE account IS NOT NULL GROUP BY ALL
"""  # noqa: S608 - NONE is a constant of ours, not input

_ERRORS = f"""
SELECT {_KEY}, coalesce(code, 'status.' || status::VARCHAR), count(*)
FROM logs WHERE status >= 400 GROUP BY ALL
"""  # noqa: S608 - NONE is a constant of ours, not input

#: A Core insert: the ORM's bulk insert leaves out the null values, so rows with and without
#: an error code went out in separate statements of a few rows each (most of the cost per row).
_ACTION_INSERT = insert(cast("Table", AccountAction.__table__))
_ACTION_COLUMNS = ("account_id", "time", "channel", "interface", "status", "code")
#: On SQLite (the embedded mode, where the gateway's core does the analysis) the rows go to
#: the driver as DuckDB gives them, the time already in SQLAlchemy's SQLite storage format:
#: half the CPU of the Core insert (docs/benchmarks.md).
_SQLITE_ACTION_INSERT = (
    f"INSERT INTO {AccountAction.__tablename__} ({', '.join(_ACTION_COLUMNS)}) "  # noqa: S608 - ours
    "VALUES (?, ?, ?, ?, ?, ?)"
)
_SQLITE_TIME = "strftime(make_timestamp(epoch_us(time)), '%Y-%m-%d %H:%M:%S.%f')"

_ACTIONS = f"""
SELECT account, {{time}}, {_KEY}, status, code
FROM logs WHERE account IS NOT NULL
"""  # noqa: S608 - NONE is a constant of ours, not input


def digest(names: Iterable[str]) -> str:
    """What an hour's rows hold: a hash of the names of its analysed files."""
    return hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()


def _overlap(files: Sequence[BatchFile]) -> bool:
    # Batches never share ids unless one was re-delivered in another shape after a crash;
    # only then is the (costly) de-duplication by buffer id needed.
    ordered = sorted(files, key=lambda f: f.first)
    return any(a.overlaps(b) for a, b in itertools.pairwise(ordered))


@dataclass(frozen=True, slots=True)
class Pending:
    """An hour with files to analyse, and the state of its rows they were found against."""

    hour: datetime
    #: The files to add (every file of the hour when ``rebuild``).
    files: list[BatchFile]
    #: Files already counted that are still in the store: a new file that shares ids with
    #: one of them (a re-delivered batch) adds only the records they lack.
    analysed: list[BatchFile] = field(default_factory=list)
    #: The hour's stored digest when looked at (None: the hour has no rows yet).
    seen: str | None = None
    #: Replace the hour's rows with ones computed whole from its files (an hour analysed
    #: before file names were kept).
    rebuild: bool = False


@dataclass(slots=True)
class Group:
    """What some records add to one channel on one interface in one hour."""

    requests: int = 0
    errors: int = 0
    latency: Histogram = field(default_factory=Histogram)
    queue_wait: Histogram = field(default_factory=Histogram)
    accounts: Distinct = field(default_factory=Distinct)

    def merge(self, other: Group) -> None:
        """Add ``other``'s records to these."""
        self.requests += other.requests
        self.errors += other.errors
        self.latency.merge(other.latency)
        self.queue_wait.merge(other.queue_wait)
        self.accounts.merge(other.accounts)

    @classmethod
    def of(cls, row: TrafficHour) -> Group:
        """The group a stored row holds."""
        if row.latency_sketch is None or row.queue_wait_sketch is None:
            raise ValueError("a traffic row without its summaries cannot be added to")
        return cls(
            row.requests,
            row.errors,
            Histogram.from_bytes(row.latency_sketch),
            Histogram.from_bytes(row.queue_wait_sketch),
            Distinct.from_bytes(row.accounts_sketch) if row.accounts_sketch else Distinct(),
        )

    def columns(self) -> dict[str, Any]:
        """The traffic row's columns (figures and summaries) for this group."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "p50_ms": self.latency.quantile(0.5),
            "p95_ms": self.latency.quantile(0.95),
            "p99_ms": self.latency.quantile(0.99),
            "queue_wait_p99_ms": self.queue_wait.quantile(0.99),
            "accounts": self.accounts.estimate(),
            "latency_sketch": self.latency.to_bytes(),
            "queue_wait_sketch": self.queue_wait.to_bytes(),
            "accounts_sketch": self.accounts.to_bytes(),
        }


@dataclass(frozen=True, slots=True)
class HourResult:
    """What some files add to one hour, ready to be merged into its rows."""

    hour: datetime
    files: list[BatchFile]
    records: int
    groups: dict[tuple[str, str], Group]
    errors: dict[tuple[str, str, str], int]
    #: Rows of ``log_account_actions`` in ``_ACTION_COLUMNS`` order.
    actions: list[tuple[Any, ...]]


class _Changed(Exception):
    """Another analyser changed the hour since it was looked at: try again next pass."""


class Analyzer:
    """Computes hourly traffic, errors and account trajectories (日志分析)."""

    def __init__(
        self,
        store: ParquetStore,
        db: Database,
        *,
        threads: int | None = None,
        files_per_save: int = 20,
    ) -> None:
        self.store = store
        self.db = db
        self.threads = threads
        #: Files added in one transaction at most: after a day without analysis, an hour's
        #: hundreds of files are not held in memory (nor in one transaction) at once.
        self.files_per_save = files_per_save

    def _read(self, con: duckdb.DuckDBPyConnection, files: Sequence[BatchFile]) -> Any:
        paths = [item.path for item in files]
        if self.store.local_root is not None:
            return con.read_parquet(paths)
        return con.from_arrow(pads.dataset(paths, schema=SCHEMA, filesystem=self.store.filesystem))

    def compute(
        self,
        hour: datetime,
        files: Sequence[BatchFile],
        *,
        analysed: Sequence[BatchFile] = (),
    ) -> HourResult:
        """What ``files`` add to ``hour`` beyond ``analysed`` (blocking: call it in a thread)."""
        con = duckdb.connect()
        try:
            if self.threads:
                con.execute(f"SET threads = {int(self.threads)}")
            source = self._read(con, files)
            if _overlap(files):
                unique = source.query("raw", "SELECT DISTINCT ON (log_id) * FROM raw")
                assert unique is not None  # noqa: S101 - a SELECT always gives a relation
                source = unique
            counted = [old for old in analysed if any(old.overlaps(new) for new in files)]
            if counted:
                self._read(con, counted).create_view("counted")
                fresh = source.query(
                    "fresh", "SELECT * FROM fresh WHERE log_id NOT IN (SELECT log_id FROM counted)"
                )
                assert fresh is not None  # noqa: S101 - a SELECT always gives a relation
                source = fresh
            source.create_view("logs")
            return self._collect(con, hour, files, sqlite=self.db.is_sqlite)
        finally:
            con.close()

    @staticmethod
    def _collect(
        con: duckdb.DuckDBPyConnection,
        hour: datetime,
        files: Sequence[BatchFile],
        *,
        sqlite: bool,
    ) -> HourResult:
        groups: dict[tuple[str, str], Group] = {}
        for channel, interface, requests, errors, *ranges in con.execute(_GROUPS).fetchall():
            group = groups[channel, interface] = Group(requests, errors)
            group.latency.extend(ranges[0], ranges[1])
            group.queue_wait.extend(ranges[2], ranges[3])
        for channel, interface, kind, bucket, count in con.execute(_HISTOGRAMS).fetchall():
            group = groups[channel, interface]
            (group.queue_wait if kind else group.latency).add(bucket, count)
        for channel, interface, register, rank in con.execute(_REGISTERS).fetchall():
            groups[channel, interface].accounts.add(register, rank)
        errors = {(c, i, code): n for c, i, code, n in con.execute(_ERRORS).fetchall()}
        if sqlite:
            actions = con.execute(_ACTIONS.format(time=_SQLITE_TIME)).fetchall()
        else:
            actions = [
                (a, _EPOCH + timedelta(microseconds=t), c, i, s, code)
                for a, t, c, i, s, code in con.execute(
                    _ACTIONS.format(time="epoch_us(time)")
                ).fetchall()
            ]
        records = sum(group.requests for group in groups.values())
        return HourResult(hour, list(files), records, groups, errors, actions)

    async def save(self, result: HourResult, pending: Pending) -> str | None:
        """Add ``result`` to its hour's rows in one transaction (with ``pending.rebuild``:
        replace them); the hour's digest after it, or None, and nothing written, when the
        hour changed since ``pending`` was found (another analyser): the next pass looks again.
        """
        try:
            async with self.db.transaction() as session:
                await self._lock_hour(session, pending)
                if pending.rebuild:
                    await self._clear_hour(session, pending.hour)
                names = await self._record_files(session, result)
                await self._merge_traffic(session, result)
                await self._merge_errors(session, result)
                await self._insert_actions(session, result.actions)
                await session.execute(
                    update(AnalyzedHour)
                    .where(AnalyzedHour.hour == result.hour)
                    .values(
                        files_digest=digest(names),
                        records=AnalyzedHour.records + result.records,
                        analyzed_at=utcnow(),
                    )
                    .execution_options(synchronize_session=False)
                )
        except (_Changed, IntegrityError) as exc:
            # IntegrityError: another analyser added the hour's first row or the same file.
            _log.info("log_hour_changed_meanwhile", hour=result.hour.isoformat(), why=str(exc))
            return None
        return digest(names)

    @staticmethod
    async def _lock_hour(session: AsyncSession, pending: Pending) -> None:
        # The first statement writes: on PostgreSQL it holds the hour's row until commit, on
        # SQLite the database's write lock, so the reads after it see what they will change.
        stored = (
            await session.execute(
                update(AnalyzedHour)
                .where(AnalyzedHour.hour == pending.hour)
                .values(analyzed_at=utcnow())
                .returning(AnalyzedHour.files_digest)
                .execution_options(synchronize_session=False)
            )
        ).scalar_one_or_none()
        if stored != pending.seen:
            raise _Changed("its analysed files changed")
        if stored is None:
            session.add(
                AnalyzedHour(
                    hour=pending.hour, files_digest=digest([]), records=0, analyzed_at=utcnow()
                )
            )
            await session.flush()

    @staticmethod
    async def _clear_hour(session: AsyncSession, hour: datetime) -> None:
        for model in (TrafficHour, ErrorHour, AnalyzedFile):
            await session.execute(delete(model).where(model.hour == hour))
        await session.execute(
            delete(AccountAction).where(
                AccountAction.time >= hour, AccountAction.time < hour + HOUR
            )
        )
        await session.execute(
            update(AnalyzedHour)
            .where(AnalyzedHour.hour == hour)
            .values(records=0)
            .execution_options(synchronize_session=False)
        )

    async def _record_files(self, session: AsyncSession, result: HourResult) -> set[str]:
        """Record the result's files as analysed; every analysed name of the hour."""
        names = set(
            await session.scalars(select(AnalyzedFile.name).where(AnalyzedFile.hour == result.hour))
        )
        new = {item.name for item in result.files}
        if names & new:
            raise _Changed("a file was analysed meanwhile")
        now = utcnow()
        session.add_all(
            AnalyzedFile(hour=result.hour, name=name, analyzed_at=now) for name in sorted(new)
        )
        return names | new

    async def _merge_traffic(self, session: AsyncSession, result: HourResult) -> None:
        if not result.groups:
            return
        keys = list(result.groups)
        stored = {
            (row.channel, row.interface): row
            for row in await session.scalars(
                select(TrafficHour).where(
                    TrafficHour.hour == result.hour,
                    tuple_(TrafficHour.channel, TrafficHour.interface).in_(keys),
                )
            )
        }
        for key, added in result.groups.items():
            row = stored.get(key)
            if row is None:
                session.add(
                    TrafficHour(
                        hour=result.hour, channel=key[0], interface=key[1], **added.columns()
                    )
                )
                continue
            group = Group.of(row)
            group.merge(added)
            for name, value in group.columns().items():
                setattr(row, name, value)

    async def _merge_errors(self, session: AsyncSession, result: HourResult) -> None:
        if not result.errors:
            return
        keys = list(result.errors)
        stored = {
            (row.channel, row.interface, row.code): row
            for row in await session.scalars(
                select(ErrorHour).where(
                    ErrorHour.hour == result.hour,
                    tuple_(ErrorHour.channel, ErrorHour.interface, ErrorHour.code).in_(keys),
                )
            )
        }
        for (channel, interface, code), count in result.errors.items():
            row = stored.get((channel, interface, code))
            if row is None:
                session.add(
                    ErrorHour(
                        hour=result.hour,
                        channel=channel,
                        interface=interface,
                        code=code,
                        count=count,
                    )
                )
            else:
                row.count += count

    async def _insert_actions(self, session: AsyncSession, actions: list[tuple[Any, ...]]) -> None:
        # In slices, with the event loop free between them: in a gateway process a file's
        # account actions are one row per signed-in request, and one insert of them all
        # would hold up every request for as long as it takes.
        for start in range(0, len(actions), _INSERT_SLICE):
            rows = actions[start : start + _INSERT_SLICE]
            if self.db.is_sqlite:
                connection = await session.connection()
                await connection.exec_driver_sql(_SQLITE_ACTION_INSERT, rows)
            else:
                values = [dict(zip(_ACTION_COLUMNS, row, strict=True)) for row in rows]
                await session.execute(_ACTION_INSERT, values)
            await asyncio.sleep(0)

    async def due(self, since: datetime | None = None) -> dict[datetime, Pending]:
        """Hours (from ``since`` on, default all) with files whose records are not counted."""
        by_hour = await asyncio.to_thread(self.store.by_hour, since)
        found: dict[datetime, Pending] = {}
        async with self.db.sessions() as session:
            query = select(AnalyzedHour.hour, AnalyzedHour.files_digest)
            if since is not None:
                query = query.where(AnalyzedHour.hour >= since)
            stored: dict[datetime, str] = dict(list(await session.execute(query)))
            for hour, files in by_hour.items():
                seen = stored.get(hour)
                if seen == digest(item.name for item in files):
                    continue
                names: set[str] = set()
                if seen is not None:
                    names = set(
                        await session.scalars(
                            select(AnalyzedFile.name).where(AnalyzedFile.hour == hour)
                        )
                    )
                    if digest(names) != seen:  # analysed whole, before names were kept
                        found[hour] = Pending(hour, files, seen=seen, rebuild=True)
                        continue
                new = [item for item in files if item.name not in names]
                if new:
                    old = [item for item in files if item.name in names]
                    found[hour] = Pending(hour, new, old, seen)
        return found

    async def analyze(
        self,
        hours: dict[datetime, Pending] | None = None,
        *,
        progress: Callable[[datetime, int], None] | None = None,
    ) -> list[HourResult]:
        """Add the files of ``hours`` (default: every due hour), at most ``files_per_save`` in
        a transaction; what each transaction added. ``progress`` hears of each hour and the
        records it added. An hour another analyser changed meanwhile is left for the next pass.
        """
        todo = await self.due() if hours is None else hours
        done = []
        for hour, pending in sorted(todo.items()):
            added = 0
            part = replace(pending, files=pending.files[: self.files_per_save])
            rest = pending.files[self.files_per_save :]
            while True:
                result = await asyncio.to_thread(
                    self.compute, hour, part.files, analysed=part.analysed
                )
                seen = await self.save(result, part)
                if seen is None:
                    break
                done.append(result)
                added += result.records
                if not rest:
                    break
                analysed = [*part.analysed, *part.files]
                part = Pending(hour, rest[: self.files_per_save], analysed, seen)
                rest = rest[self.files_per_save :]
            if progress is not None:
                progress(hour, added)
        return done

    async def rebuild(self, hour: datetime) -> HourResult | None:
        """Recompute ``hour``'s rows whole from its files, replacing them (and its account
        actions); None when it has no files or changed meanwhile."""
        files = (await asyncio.to_thread(self.store.by_hour, hour)).get(hour, [])
        if not files:
            return None
        async with self.db.sessions() as session:
            seen = await session.scalar(
                select(AnalyzedHour.files_digest).where(AnalyzedHour.hour == hour)
            )
        pending = Pending(hour, files, seen=seen, rebuild=True)
        result = await asyncio.to_thread(self.compute, hour, files)
        return result if await self.save(result, pending) is not None else None

    async def run(
        self,
        stopping: asyncio.Event,
        *,
        interval_s: float = 60.0,
        recent: timedelta = timedelta(hours=2),
        full_every: int = 60,
    ) -> None:
        """Analyse due hours every ``interval_s`` until ``stopping``: those of the ``recent``
        hours before the current one, and every ``full_every`` passes (the first included)
        all of them, for files that arrive late for older hours."""
        passes = itertools.count()

        async def step() -> None:
            since = None if next(passes) % full_every == 0 else hour_of(utcnow()) - recent
            done = await self.analyze(await self.due(since))
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

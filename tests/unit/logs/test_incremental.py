"""Each Parquet file is analysed once: a pass adds only new files, keeps every trajectory row,
survives a crash without counting twice, and ends where a whole recomputation ends."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import delete, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.logs.analysis import Analyzer, HourResult, Pending
from gridgate.logs.batcher import decode
from gridgate.logs.buffer import Entry
from gridgate.logs.models import AccountAction, AnalyzedFile, AnalyzedHour, ErrorHour, TrafficHour
from gridgate.logs.record import AccessRecord
from gridgate.logs.services import list_top_failing
from gridgate.logs.storage import ParquetStore, hour_of
from gridgate.storage.db import Database
from tests.unit.logs.helpers import T0, minutes, mixed_records, record

H1 = T0 + timedelta(hours=1)


def _write(store: ParquetStore, records: Sequence[AccessRecord], first_id: int) -> None:
    """Write records as the batcher would: one batch of buffer ids from ``first_id``."""
    entries = [Entry(f"{first_id + n:020d}", orjson.dumps(r)) for n, r in enumerate(records)]
    for hour, table in decode(entries).items():
        store.write(hour, entries[0].id, entries[-1].id, table)


async def _tables(db: Database) -> dict[str, Any]:
    """Everything the analysis wrote, comparable across passes (ids included)."""
    async with db.sessions() as session:
        traffic = (await session.execute(select(*TrafficHour.__table__.columns))).all()
        errors = (
            await session.execute(
                select(
                    ErrorHour.hour, ErrorHour.channel, ErrorHour.interface, ErrorHour.code
                ).add_columns(ErrorHour.count)
            )
        ).all()
        actions = (await session.execute(select(*AccountAction.__table__.columns))).all()
        files = (await session.execute(select(AnalyzedFile.hour, AnalyzedFile.name))).all()
    return {
        "traffic": sorted(tuple(row) for row in traffic),
        "errors": sorted(tuple(row) for row in errors),
        "actions": {row.id: tuple(row)[1:] for row in actions},
        "files": sorted(tuple(row) for row in files),
    }


def _counts(records: Sequence[AccessRecord]) -> dict[str, Counter[Any]]:
    """Requests, failures per code and actions as the records say (brute force)."""
    requests: Counter[Any] = Counter()
    errors: Counter[Any] = Counter()
    actions: Counter[Any] = Counter()
    for r in records:
        time = datetime.fromisoformat(r.time)
        key = (hour_of(time), r.channel or "", r.interface or "")
        requests[key] += 1
        if r.status >= 400:
            errors[(*key, r.code or f"status.{r.status}")] += 1
        if r.account:
            actions[r.account, time, r.channel or "", r.interface or "", r.status, r.code] += 1
    return {"requests": requests, "errors": errors, "actions": actions}


async def _found(db: Database) -> dict[str, Counter[Any]]:
    tables = await _tables(db)
    return {
        "requests": Counter({row[:3]: row[3] for row in tables["traffic"]}),
        "errors": Counter({row[:4]: row[4] for row in tables["errors"]}),
        "actions": Counter(tables["actions"].values()),
    }


async def test_a_second_pass_adds_nothing(tmp_path: Path, db: Database) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = mixed_records()
    _write(store, records[:150], 0)
    _write(store, records[150:], 150)
    analyzer = Analyzer(store, db)
    assert {r.hour for r in await analyzer.analyze()} == {T0, H1, T0 + timedelta(hours=2)}
    before = await _tables(db)

    assert await analyzer.due() == {}
    assert await analyzer.analyze() == []
    assert await _tables(db) == before
    assert await _found(db) == _counts(records)


async def test_a_new_file_adds_exactly_its_records(tmp_path: Path, db: Database) -> None:
    store = ParquetStore(tmp_path / "logs")
    first = [record(T0 + minutes(m), account=f"acc-{m % 4}") for m in range(30)]
    later = [
        record(T0 + minutes(40), status=503, code="upstream.unavailable"),
        record(T0 + minutes(41), account="acc-9", interface="usage.read"),
        record(T0 + minutes(42), account=None, latency_ms=900.0),
        record(H1 + minutes(1), account="acc-1"),
    ]
    analyzer = Analyzer(store, db)
    _write(store, first, 0)
    await analyzer.analyze()
    before = await _tables(db)

    _write(store, later, 30)
    due = await analyzer.due()
    assert {hour: len(p.files) for hour, p in due.items()} == {T0: 1, H1: 1}
    assert [f.name for f in due[T0].analysed] == [f.name for f in store.files()][:1]
    added = {r.hour: r.records for r in await analyzer.analyze()}
    assert added == {T0: 3, H1: 1}

    after = await _tables(db)
    assert await _found(db) == _counts(first + later)
    # The trajectory rows of the first file are the same rows, never deleted and re-inserted.
    assert {k: v for k, v in after["actions"].items() if k in before["actions"]} == before[
        "actions"
    ]
    assert len(after["actions"]) == len(before["actions"]) + 3
    async with db.sessions() as session:
        rows = {r.hour: r.records for r in await session.scalars(select(AnalyzedHour))}
    assert rows == {T0: 33, H1: 1}


class Crash(Exception):
    """Stands for the process dying in the middle of saving."""


class CrashingAnalyzer(Analyzer):
    """Dies right after a step of saving, inside its transaction."""

    def __init__(self, store: ParquetStore, db: Database, *, after: str, at: int = 1) -> None:
        super().__init__(store, db)
        self.after = after
        self.at = at  # the how-manieth time through that step

    async def _step(self, name: str, *args: Any) -> Any:
        done = await getattr(super(), name)(*args)
        if name == self.after:
            self.at -= 1
            if self.at == 0:
                raise Crash
        return done

    async def _record_files(self, session: AsyncSession, result: HourResult) -> set[str]:
        names: set[str] = await self._step("_record_files", session, result)
        return names

    async def _merge_traffic(self, session: AsyncSession, result: HourResult) -> None:
        await self._step("_merge_traffic", session, result)

    async def _merge_errors(self, session: AsyncSession, result: HourResult) -> None:
        await self._step("_merge_errors", session, result)

    async def _insert_actions(self, session: AsyncSession, actions: list[tuple[Any, ...]]) -> None:
        await self._step("_insert_actions", session, actions)


@pytest.mark.parametrize("after", ["_record_files", "_merge_traffic", "_insert_actions"])
async def test_a_crash_while_saving_counts_nothing_twice(
    tmp_path: Path, db: Database, after: str
) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = mixed_records()
    _write(store, records[:200], 0)
    await Analyzer(store, db).analyze()
    before = await _tables(db)
    _write(store, records[200:], 200)  # adds to the hours already analysed

    with pytest.raises(Crash):
        await CrashingAnalyzer(store, db, after=after).analyze()
    assert await _tables(db) == before

    restarted = Analyzer(store, db)
    assert len(await restarted.analyze()) == 3
    assert await _found(db) == _counts(records)
    assert await restarted.analyze() == []


async def test_incremental_passes_end_where_a_whole_recomputation_ends(
    tmp_path: Path, db: Database, sqlite_db: Database
) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = sorted(mixed_records(), key=lambda r: r.time)
    analyzer = Analyzer(store, db)
    for start in range(0, len(records), 50):  # a pass after every file, as the hours fill
        _write(store, records[start : start + 50], start)
        await analyzer.analyze()

    whole = Analyzer(store, sqlite_db)
    for hour in store.by_hour():
        assert await whole.rebuild(hour) is not None
    incremental, recomputed = await _tables(db), await _tables(sqlite_db)
    # Counts, error codes, percentiles and distinct accounts alike: the merged summaries are
    # exactly those of the whole hour.
    assert incremental["traffic"] == recomputed["traffic"]
    assert incremental["errors"] == recomputed["errors"]
    assert Counter(incremental["actions"].values()) == Counter(recomputed["actions"].values())
    assert incremental["files"] == recomputed["files"]
    tops = []
    for database in (db, sqlite_db):
        async with database.sessions() as session:
            tops.append(await list_top_failing(session, start=None, end=None, page=1, page_size=9))
    assert tops[0] == tops[1] and tops[0][1] > 0


async def test_a_redelivered_batch_adds_only_what_was_not_counted(
    tmp_path: Path, sqlite_db: Database
) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = [record(T0 + minutes(m), account=f"acc-{m}") for m in range(15)]
    analyzer = Analyzer(store, sqlite_db)
    _write(store, records[:10], 0)  # ids 0-9, counted
    await analyzer.analyze()
    # After a crash before the ack, ids 5-14 come again in another batch shape.
    _write(store, records[5:], 5)
    assert [r.records for r in await analyzer.analyze()] == [5]
    assert await _found(sqlite_db) == _counts(records)


async def test_an_hour_analysed_before_file_names_were_kept_is_recomputed_once(
    tmp_path: Path, db: Database
) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = [record(T0 + minutes(m), account=f"acc-{m % 3}") for m in range(20)]
    analyzer = Analyzer(store, db)
    _write(store, records[:10], 0)
    await analyzer.analyze()
    async with db.transaction() as session:  # as the previous version left it
        await session.execute(delete(AnalyzedFile))
        await session.execute(
            update(TrafficHour).values(
                latency_sketch=None, queue_wait_sketch=None, accounts_sketch=None
            )
        )
    assert await analyzer.due() == {}  # its files did not change

    _write(store, records[10:], 10)
    (pending,) = (await analyzer.due()).values()
    assert pending.rebuild and len(pending.files) == 2
    await analyzer.analyze()
    assert await _found(db) == _counts(records)
    tables = await _tables(db)
    assert all(row[-1] is not None for row in tables["traffic"])  # summaries again
    assert len(tables["files"]) == 2
    assert await analyzer.due() == {}


async def test_two_analysers_never_add_one_file_twice(tmp_path: Path, db: Database) -> None:
    store = ParquetStore(tmp_path / "logs")
    one, other = Analyzer(store, db), Analyzer(store, db)
    _write(store, [record(T0), record(T0 + minutes(1))], 0)
    for _ in range(2):  # a new hour, then one with rows
        seen_by_one, seen_by_other = await one.due(), await other.due()
        assert seen_by_one == seen_by_other != {}
        assert len(await one.analyze(seen_by_one)) == 1
        assert await other.analyze(seen_by_other) == []  # it looks again next pass
        assert await other.due() == {}
        _write(store, [record(T0 + minutes(2))], 2)
    await other.analyze()
    requests = (await _found(db))["requests"]
    assert requests == Counter({(T0, "app", "bills.read"): 3})


def test_files_since_walks_only_the_days_from_then(tmp_path: Path) -> None:
    store = ParquetStore(tmp_path / "logs")
    days = [T0 - timedelta(days=2), T0 - timedelta(hours=1), T0, H1, T0 + timedelta(days=1)]
    for n, time in enumerate(days):
        _write(store, [record(time)], n)
    assert [f.hour for f in store.files(T0)] == [T0, H1, T0 + timedelta(days=1)]
    assert [f.hour for f in store.files(H1)] == [H1, T0 + timedelta(days=1)]
    assert len(store.files()) == 5


async def test_trajectory_times_are_stored_as_the_orm_stores_them(
    tmp_path: Path, db: Database
) -> None:
    store = ParquetStore(tmp_path / "logs")
    time = T0 + timedelta(seconds=1, microseconds=500)
    _write(store, [record(time, account="acc-x")], 0)
    await Analyzer(store, db).analyze()
    async with db.transaction() as session:
        session.add(
            AccountAction(
                account_id="acc-y", time=time, channel="app", interface="bills.read", status=200
            )
        )
    async with db.sessions() as session:
        stored = await session.execute(text("SELECT DISTINCT time FROM log_account_actions"))
        assert len(stored.all()) == 1  # the same stored value, whoever wrote it
        found = await session.scalars(
            select(AccountAction.account_id).where(AccountAction.time == time)
        )
        assert sorted(found) == ["acc-x", "acc-y"]


class WatchedAnalyzer(Analyzer):
    """Notes from when on each pass looks for files."""

    looked: list[datetime | None]

    async def due(self, since: datetime | None = None) -> dict[datetime, Pending]:
        self.looked.append(since)
        return await super().due(since)


async def test_the_loop_looks_at_every_hour_first_then_at_the_last_ones(
    tmp_path: Path, sqlite_db: Database
) -> None:
    store = ParquetStore(tmp_path / "logs")
    now = hour_of(datetime.now(UTC))
    old = now - timedelta(hours=5)
    _write(store, [record(old), record(now)], 0)
    analyzer = WatchedAnalyzer(store, sqlite_db)
    analyzer.looked = []
    stopping = asyncio.Event()
    loop = asyncio.create_task(analyzer.run(stopping, interval_s=0.01, full_every=1_000_000))

    async def analysed() -> dict[datetime, int]:
        async with sqlite_db.sessions() as session:
            rows = await session.scalars(select(AnalyzedHour))
            return {row.hour: row.records for row in rows}

    async def until(done: Callable[[], Awaitable[bool]]) -> None:
        deadline = asyncio.get_running_loop().time() + 10
        while not await done():
            assert asyncio.get_running_loop().time() < deadline, await analysed()
            await asyncio.sleep(0.01)

    async def passes(n: int) -> bool:
        return len(analyzer.looked) >= n

    try:
        await until(lambda: _equals(analysed(), {old: 1, now: 1}))  # the first pass: all
        _write(store, [record(old + minutes(1))], 2)  # late, for an hour five hours back
        _write(store, [record(now + minutes(1))], 3)
        await until(lambda: _equals(analysed(), {old: 1, now: 2}))
        seen = len(analyzer.looked)
        await until(lambda: passes(seen + 3))
        # Later passes look at the last hours only: the old hour waits for a full look.
        assert await analysed() == {old: 1, now: 2}
        assert analyzer.looked[0] is None
        assert all(since is not None and old < since <= now for since in analyzer.looked[1:])
        assert list(await analyzer.due()) == [old]
    finally:
        stopping.set()
        await loop


async def _equals(found: Awaitable[object], expected: object) -> bool:
    return await found == expected


async def test_a_backlog_goes_a_few_files_a_transaction(tmp_path: Path, db: Database) -> None:
    store = ParquetStore(tmp_path / "logs")
    records = [record(T0 + minutes(m), account=f"acc-{m % 7}") for m in range(50)]
    for start in range(0, 50, 10):  # five files waiting for the same hour
        _write(store, records[start : start + 10], start)

    # The pass dies in its second transaction: the first stays, nothing of the second counts.
    crashing = CrashingAnalyzer(store, db, after="_insert_actions", at=2)
    crashing.files_per_save = 2
    with pytest.raises(Crash):
        await crashing.analyze()
    (pending,) = (await crashing.due()).values()
    assert len(pending.files) == 3 and len(pending.analysed) == 2

    heard: list[tuple[datetime, int]] = []
    steady = Analyzer(store, db, files_per_save=2)
    done = await steady.analyze(progress=lambda hour, n: heard.append((hour, n)))
    assert [len(r.files) for r in done] == [2, 1]
    assert heard == [(T0, 30)]
    assert await _found(db) == _counts(records)
    assert await steady.due() == {}

"""The batcher: Parquet by the hour records happened in; a crash before the ack costs nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pyarrow.parquet as pq  # type: ignore[import-untyped]
import pytest
from sqlalchemy import func, select

from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import Entry
from gridgate.logs.models import TrafficHour
from gridgate.logs.service import LogService
from gridgate.logs.storage import ParquetStore
from gridgate.storage.db import Database
from tests.unit.logs.conftest import BufferKit
from tests.unit.logs.helpers import T0, minutes, offer_all, record


class Crash(Exception):
    """Stands for the process dying."""


class CrashAfterWrite(Batcher):
    """Writes its batch, then dies before acknowledging it."""

    def write(self, entries: Sequence[Entry]) -> list[str]:
        super().write(entries)
        raise Crash


def _rows(store: ParquetStore) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for item in store.files():
        rows.extend(pq.read_table(item.path).to_pylist())
    return rows


async def _requests(db: Database) -> dict[object, int]:
    async with db.sessions() as session:
        result = await session.execute(
            select(TrafficHour.hour, func.sum(TrafficHour.requests)).group_by(TrafficHour.hour)
        )
        return {hour: int(n) for hour, n in result.all()}


@pytest.mark.parametrize("restart_batch", [100, 60])
async def test_crash_between_write_and_ack_loses_and_duplicates_nothing(
    kit: BufferKit, tmp_path: object, sqlite_db: Database, restart_batch: int
) -> None:
    store = ParquetStore(f"{tmp_path}/logs")
    records = [record(T0 + minutes(i % 120)) for i in range(250)]
    buffer = kit.open()
    await offer_all(LogService(buffer), records)

    with pytest.raises(Crash):
        await CrashAfterWrite(buffer, store, batch_size=100).run_once()
    assert len(_rows(store)) == 100  # written, never acknowledged

    restarted = Batcher(kit.open(), store, batch_size=restart_batch)
    assert await restarted.drain() == 250
    trace_ids = [row["trace_id"] for row in _rows(store)]
    assert set(trace_ids) == {r.trace_id for r in records}
    if restart_batch == 100:
        # The same batch again: the same file names, replaced, so not one extra row.
        assert len(trace_ids) == 250
    else:
        # Re-read in another shape: some rows are in two files; analysis must count them once.
        assert len(trace_ids) > 250
    await Analyzer(store, sqlite_db).analyze()
    # Minutes 0-59 of each 120 fall in 08:00 (60 + 60 + 10 of 250), the rest in 09:00.
    assert await _requests(sqlite_db) == {T0: 130, T0 + timedelta(hours=1): 120}
    assert await kit.open().read("batcher", 10) == []


async def test_late_records_land_in_their_own_hour(
    kit: BufferKit, tmp_path: object, sqlite_db: Database
) -> None:
    store = ParquetStore(f"{tmp_path}/logs")
    buffer = kit.open()
    service = LogService(buffer)
    batcher = Batcher(buffer, store)
    analyzer = Analyzer(store, sqlite_db)
    await offer_all(service, [record(T0 + minutes(m)) for m in (1, 2, 3)])
    await batcher.drain()
    assert [r.hour for r in await analyzer.analyze()] == [T0]

    # Two hours later a gateway that was cut off delivers what it held since 07:59.
    late = [record(T0 - minutes(1)), record(T0 + minutes(59)), record(T0 + minutes(125))]
    await offer_all(service, late)
    await batcher.drain()
    paths = sorted(item.path.split("/logs/", 1)[1].rsplit("/", 1)[0] for item in store.files())
    assert paths == [
        "date=2026-11-20/hour=07",
        "date=2026-11-20/hour=08",
        "date=2026-11-20/hour=08",
        "date=2026-11-20/hour=10",
    ]
    redone = [r.hour for r in await analyzer.analyze()]
    assert redone == [T0 - timedelta(hours=1), T0, T0 + timedelta(hours=2)]
    assert await _requests(sqlite_db) == {
        T0 - timedelta(hours=1): 1,
        T0: 4,
        T0 + timedelta(hours=2): 1,
    }
    assert await analyzer.analyze() == []  # nothing changed since


async def test_an_unreadable_record_is_skipped(kit: BufferKit, tmp_path: object) -> None:
    store = ParquetStore(f"{tmp_path}/logs")
    buffer = kit.open()
    await buffer.append([b"not json", b'{"time": "yesterday"}'])
    await offer_all(LogService(buffer), [record()])
    assert await Batcher(buffer, store).drain() == 3
    assert [row["trace_id"] for row in _rows(store)] != []
    assert len(_rows(store)) == 1


async def test_bad_records_anywhere_in_a_batch_cost_only_themselves(
    kit: BufferKit, tmp_path: object
) -> None:
    store = ParquetStore(f"{tmp_path}/logs")
    buffer = kit.open()
    good = [record(T0 + minutes(i)) for i in range(40)]
    await offer_all(LogService(buffer), good[:15])
    await buffer.append(
        [
            b'{"trace_id": 5, "time": "2026-11-20T08:00:00Z"}',  # wrong type
            b'{"trace_id": "no-time"}',  # no time
            b'{"trace_id": "x", "time": null}',
            b'{"trace_id": "y", "time": "2026-11-20T16:30:00+08:00", "status": 99999}',
        ]
    )
    await offer_all(LogService(buffer), good[15:])
    # Another zone's offset lands in its UTC hour; unknown fields are ignored.
    await buffer.append([b'{"trace_id": "z", "time": "2026-11-20T17:30:00+08:00", "extra": 1}'])
    assert await Batcher(buffer, store).drain() == 45
    rows = _rows(store)
    assert sorted(str(row["trace_id"]) for row in rows) == sorted(
        [r.trace_id for r in good] + ["z"]
    )
    hours = {item.hour: item for item in store.files()}
    assert sorted(hours) == [T0, T0 + timedelta(hours=1)]
    late = pq.read_table(hours[T0 + timedelta(hours=1)].path).to_pylist()
    assert [(r["trace_id"], r["time"].isoformat()) for r in late] == [
        ("z", "2026-11-20T09:30:00+00:00")
    ]

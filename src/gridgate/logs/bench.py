"""Benchmarks of the log pipeline (``gridgate bench logs``); no listener imports this module."""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import orjson
from sqlalchemy import select

from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import SpoolBuffer
from gridgate.logs.models import AnalyzedHour
from gridgate.logs.record import AccessRecord
from gridgate.logs.service import LogService
from gridgate.logs.storage import ParquetStore
from gridgate.storage.db import Database

__all__ = [
    "AnalysisPass",
    "AnalysisReport",
    "IngestReport",
    "run_analysis_bench",
    "run_ingest_bench",
]

_START = datetime(2026, 11, 20, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class IngestReport:
    """Records per second through service, spool and batcher into Parquet, and the disk limit."""

    records: int
    pipeline_per_s: float
    raw_write_mb_per_s: float
    raw_records_per_s: float
    cpu_s: float


def _records(n: int) -> list[AccessRecord]:
    return [
        AccessRecord(
            trace_id=f"{i:032x}",
            time=(_START + timedelta(milliseconds=i * 7)).isoformat(),
            channel=("app", "wechat", "web95598")[i % 3],
            interface=("bills.read", "usage.read", "payments.create", "me.read")[i % 4],
            account=f"acc-{i % 5000}",
            client_ip="10.1.2.3",
            method="GET",
            status=200 if i % 17 else 503,
            code=None if i % 17 else "upstream.unavailable",
            latency_ms=float(i % 900) + 0.5,
            queue_wait_ms=float(i % 13),
            upstream="u1",
            bytes_in=0,
            bytes_out=512,
        )
        for i in range(n)
    ]


async def run_ingest_bench(records: int = 200_000, *, fsync: bool = True) -> IngestReport:
    """Offer ``records`` to the service, append to the spool and batch into Parquet."""
    batch = _records(records)
    with tempfile.TemporaryDirectory(prefix="gridgate-bench-logs-") as tmp:
        root = Path(tmp)
        buffer = SpoolBuffer(root / "spool", fsync=fsync)
        service = LogService(buffer, max_queue=records, batch=5000)
        store = ParquetStore(root / "logs")
        cpu0, wall0 = time.process_time(), time.perf_counter()
        for index, item in enumerate(batch, 1):
            service.offer(item)
            if not index % service.batch:  # as the running service does when a batch is full
                await service.flush()
        await service.flush()
        await buffer.sync()  # on disk, as the running service has it within a second
        await Batcher(buffer, store, batch_size=50_000).drain()
        wall = time.perf_counter() - wall0
        cpu = time.process_time() - cpu0
        # The limit: the same bytes written sequentially, no encoding, no Parquet.
        payload = b"".join(orjson.dumps(r) + b"\n" for r in batch)
        raw0 = time.perf_counter()
        with (root / "raw.bin").open("wb") as handle:
            handle.write(payload)
            handle.flush()
            if fsync:
                os.fsync(handle.fileno())
        raw = time.perf_counter() - raw0
    return IngestReport(
        records=records,
        pipeline_per_s=records / wall,
        raw_write_mb_per_s=len(payload) / raw / 1_048_576,
        raw_records_per_s=records / raw,
        cpu_s=cpu,
    )


def _synthesise_minute(store: ParquetStore, hour: datetime, minute: int, records: int) -> None:
    """One batch file of ``records`` records in ``minute`` of ``hour``, written by DuckDB
    (building them as Python records would measure Python): 6 in 7 signed in, 200,000
    accounts, 3 channels, 40 interfaces, 1 in 17 failing."""
    root = store.local_root
    assert root is not None  # noqa: S101 - the benchmark writes to a temporary directory
    target = root / f"date={hour:%Y-%m-%d}/hour={hour:%H}"
    target.mkdir(parents=True, exist_ok=True)
    first, last = minute * records, (minute + 1) * records - 1
    start = hour + timedelta(minutes=minute)
    con = duckdb.connect()
    try:
        con.execute(
            f"""
            COPY (
              SELECT i::VARCHAR AS log_id, printf('%032x', i) AS trace_id,
                     TIMESTAMPTZ '{start.isoformat()}'
                       + to_microseconds(((i - {first}) * 60000000 // {records})::BIGINT) AS time,
                     ['app', 'wechat', 'web95598'][i % 3 + 1] AS channel,
                     'if.' || (i % 40)::VARCHAR AS interface,
                     CASE WHEN i % 7 = 0 THEN NULL ELSE 'acc-' || (i % 200000) END AS account,
                     '10.0.0.1' AS client_ip, 'GET' AS method,
                     (CASE WHEN i % 17 = 0 THEN 503 ELSE 200 END)::SMALLINT AS status,
                     CASE WHEN i % 17 = 0 THEN 'upstream.unavailable' END AS code,
                     (i % 900)::DOUBLE + 0.5 AS latency_ms, (i % 13)::DOUBLE AS queue_wait_ms,
                     'u1' AS upstream, 0::BIGINT AS bytes_in, 512::BIGINT AS bytes_out
              FROM range({first}, {last + 1}) t(i)
            ) TO '{target}/part_{first}_{last}.parquet' (FORMAT parquet, COMPRESSION zstd)
            """  # noqa: S608 - numbers and paths of our own
        )
    finally:
        con.close()


@dataclass(frozen=True, slots=True)
class AnalysisPass:
    """The analysis pass after minute ``minute`` of an hour filling at a steady rate."""

    minute: int
    #: Records the pass added (one minute's), and the hour's records after it.
    added: int
    hour_records: int
    #: Trajectory rows the pass inserted (the added records with an account).
    actions: int
    #: CPU seconds of the pass (every thread of the process: DuckDB, SQLite, Python).
    cpu_s: float
    #: CPU seconds of a whole recomputation of the hour at the same minute (the analysis
    #: before issue 19: every file read, every row of the hour deleted and inserted again).
    full_cpu_s: float | None


@dataclass(frozen=True, slots=True)
class AnalysisReport:
    """The analysis passes of one synthetic hour on SQLite (the embedded mode)."""

    per_minute: int
    minutes: int
    passes: list[AnalysisPass]
    #: CPU seconds of every pass (one a minute), added up.
    hour_cpu_s: float

    @property
    def cpu_us_per_record(self) -> float:
        """CPU µs per added record over all the passes."""
        return self.hour_cpu_s / (self.per_minute * self.minutes) * 1e6


async def _passes(
    root: Path, per_minute: int, minutes: int, shown: set[int], *, compare: bool
) -> tuple[list[AnalysisPass], float]:
    store = ParquetStore(root / "logs")
    db = Database(f"sqlite+aiosqlite:///{root}/incremental.db")
    whole_db = Database(f"sqlite+aiosqlite:///{root}/whole.db")
    try:
        await db.migrate()
        await whole_db.migrate()
        analyzer, whole = Analyzer(store, db), Analyzer(store, whole_db)
        passes, total = [], 0.0
        for minute in range(1, minutes + 1):
            await asyncio.to_thread(_synthesise_minute, store, _START, minute - 1, per_minute)
            cpu0 = time.process_time()
            (result,) = await analyzer.analyze(await analyzer.due(_START))
            cpu = time.process_time() - cpu0
            total += cpu
            if minute not in shown:
                continue
            full = None
            if compare:
                cpu0 = time.process_time()
                await whole.rebuild(_START)
                full = time.process_time() - cpu0
            async with db.sessions() as session:
                hour_records = await session.scalar(
                    select(AnalyzedHour.records).where(AnalyzedHour.hour == _START)
                )
            passes.append(
                AnalysisPass(
                    minute,
                    result.records,
                    int(hour_records or 0),
                    len(result.actions),
                    cpu,
                    full,
                )
            )
        return passes, total
    finally:
        await db.dispose()
        await whole_db.dispose()


async def run_analysis_bench(
    per_minute: int = 10_000,
    *,
    minutes: int = 60,
    shown: tuple[int, ...] = (1, 5, 10, 30, 60),
    compare: bool = True,
) -> AnalysisReport:
    """Fill one hour a minute at a time, ``per_minute`` records (one file) each, with an
    analysis pass after each minute, trajectory rows included; at the ``shown`` minutes,
    also time a whole recomputation of the hour (``compare``) on a database of its own."""
    with tempfile.TemporaryDirectory(prefix="gridgate-bench-analysis-") as tmp:
        passes, total = await _passes(
            Path(tmp), per_minute, minutes, {m for m in shown if m <= minutes}, compare=compare
        )
    return AnalysisReport(per_minute, minutes, passes, total)

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

from gridgate.gateway.accesslog import AccessRecord
from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import SpoolBuffer
from gridgate.logs.service import LogService
from gridgate.logs.storage import ParquetStore
from gridgate.storage.db import Database

__all__ = ["IngestReport", "run_analysis_bench", "run_ingest_bench"]

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


def _synthesise(store: ParquetStore, records: int, hours: int) -> None:
    # DuckDB writes the synthetic history: building 10M Python records would measure Python.
    root = store.local_root
    assert root is not None  # noqa: S101 - the benchmark writes to a temporary directory
    per_hour = records // hours
    con = duckdb.connect()
    try:
        for h in range(hours):
            hour = _START + timedelta(hours=h)
            target = root / f"date={hour:%Y-%m-%d}/hour={hour:%H}"
            target.mkdir(parents=True, exist_ok=True)
            first, last = h * per_hour, (h + 1) * per_hour - 1
            con.execute(
                f"""
                COPY (
                  SELECT i::VARCHAR AS log_id, printf('%032x', i) AS trace_id,
                         TIMESTAMPTZ '{hour.isoformat()}' + to_milliseconds(i % 3600000) AS time,
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
class AnalysisReport:
    """Seconds to compute the hourly rollup over the Parquet files (DuckDB only)."""

    records: int
    hours: int
    compute_s: float


async def run_analysis_bench(records: int = 10_000_000, hours: int = 24) -> AnalysisReport:
    """Time the per-hour rollup (traffic and errors; the trajectory rows are not saved)."""
    with tempfile.TemporaryDirectory(prefix="gridgate-bench-analysis-") as tmp:
        store = ParquetStore(Path(tmp) / "logs")
        await asyncio.to_thread(_synthesise, store, records, hours)
        db = Database(f"sqlite+aiosqlite:///{tmp}/unused.db")
        analyzer = Analyzer(store, db)
        start = time.perf_counter()
        for hour, files in store.by_hour().items():
            await asyncio.to_thread(analyzer.compute, hour, files, trajectory=False)
        elapsed = time.perf_counter() - start
        await db.dispose()
    return AnalysisReport(records, hours, elapsed)

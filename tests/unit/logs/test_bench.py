"""The log benchmarks run end to end on small numbers (their figures go to docs, not asserts)."""

from __future__ import annotations

from gridgate.logs.bench import run_analysis_bench, run_ingest_bench


async def test_ingest_bench_moves_every_record() -> None:
    report = await run_ingest_bench(2000, fsync=False)
    assert report.records == 2000 and report.pipeline_per_s > 0 and report.raw_records_per_s > 0


async def test_analysis_bench_covers_every_hour() -> None:
    report = await run_analysis_bench(4800, hours=2)
    assert (report.records, report.hours) == (4800, 2) and report.compute_s > 0

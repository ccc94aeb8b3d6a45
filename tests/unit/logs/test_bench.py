"""The log benchmarks run end to end on small numbers (their figures go to docs, not asserts)."""

from __future__ import annotations

from gridgate.logs.bench import run_analysis_bench, run_ingest_bench


async def test_ingest_bench_moves_every_record() -> None:
    report = await run_ingest_bench(2000, fsync=False)
    assert report.records == 2000 and report.pipeline_per_s > 0 and report.raw_records_per_s > 0


async def test_analysis_bench_passes_add_a_minute_each_with_its_trajectory_rows() -> None:
    report = await run_analysis_bench(700, minutes=5, shown=(1, 5))
    assert [(p.minute, p.added, p.hour_records) for p in report.passes] == [
        (1, 700, 700),
        (5, 700, 3500),
    ]
    # 6 in 7 records are signed in: a trajectory row each, inserted by the pass that adds it.
    assert [p.actions for p in report.passes] == [600, 600]
    assert all(p.cpu_s > 0 and p.full_cpu_s for p in report.passes)
    assert report.minutes == 5 and report.hour_cpu_s > 0

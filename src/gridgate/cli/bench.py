"""``gridgate bench …``: benchmarks for development machines (never part of a listener)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Annotated, Any, Protocol

import typer

from gridgate.cli.common import err, fail, out, run_coroutine

__all__ = ["bench_app"]

bench_app = typer.Typer(help="Measure gridgate (development machines).", no_args_is_help=True)


class _Report(Protocol):
    @property
    def rows(self) -> Sequence[Any]: ...

    @property
    def machine(self) -> Mapping[str, str]: ...

    def markdown(self) -> str: ...


def _show_report(report: _Report, title: str, *, markdown: bool) -> None:
    """A benchmark report as a Rich table (and Markdown for docs/benchmarks.md)."""
    from rich.table import Table  # noqa: PLC0415 - `gridgate version` need not import rich

    table = Table(title=title)
    for column in ("Metric", "Result", "Detail", "Target", "Met"):
        table.add_column(column)
    for row in report.rows:
        met = "" if row.met is None else ("[green]yes[/]" if row.met else "[red]no[/]")
        table.add_row(row.metric, row.result, row.detail, row.target, met)
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)
    if markdown:
        print(report.markdown())


@bench_app.command("registry")
def bench_registry(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per wrk run.")] = 10,
    instances: Annotated[int, typer.Option(min=1, help="Instances registered first.")] = 10_000,
    watchers: Annotated[int, typer.Option(min=1, help="Concurrent long-poll watchers.")] = 200,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """Heartbeats, queries and registrations per core, and watch latency, on Redis."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.registry import run_registry_bench  # noqa: PLC0415

    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_registry_bench(
            duration=duration,
            instances=instances,
            watchers=watchers,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise fail(str(exc), code=1) from None
    _show_report(report, "gridgate registry benchmark (Redis store, one node)", markdown=markdown)


@bench_app.command("engine")
def bench_engine(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per wrk run.")] = 10,
    part: Annotated[
        list[str] | None,
        typer.Option(
            metavar="PART",
            help="A part to run, repeatable (default: all): throughput (nginx and the engine "
            "at full load), envoy, half-load, redis, idle (10,000 connections), callgrind. "
            "envoy, half-load and redis include throughput.",
        ),
    ] = None,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """The Rust engine (full pipeline) vs nginx proxy_pass and Envoy per core, and its costs."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.engine import Part, run_engine_bench  # noqa: PLC0415

    try:
        parts = [Part(name) for name in part] if part else list(Part)
    except ValueError:
        choices = ", ".join(Part)
        raise fail(f"unknown part in {part}: choose from {choices}", code=2) from None
    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_engine_bench(
            duration=duration,
            parts=parts,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise fail(str(exc), code=1) from None
    _show_report(
        report, "gridgate engine benchmark (one core each, 1 KB JSON backend)", markdown=markdown
    )


@bench_app.command("logs")
def bench_logs(
    records: Annotated[
        int, typer.Option(min=1000, help="Records through the ingest path.")
    ] = 200_000,
    per_minute: Annotated[
        int, typer.Option(min=100, help="Records per minute of the analysed hour (one file each).")
    ] = 10_000,
    minutes: Annotated[
        int, typer.Option(min=1, max=60, help="Minutes of the hour filled and analysed.")
    ] = 60,
    compare: Annotated[
        bool,
        typer.Option(
            "--compare/--no-compare",
            help="Also time a whole recomputation of the hour at minutes 1, 5, 10, 30 and 60.",
        ),
    ] = True,
) -> None:
    """Ingest records/s into Parquet (beside a plain write), and the CPU of each analysis
    pass as an hour fills (trajectory rows included), beside a whole recomputation."""
    from rich.table import Table  # noqa: PLC0415

    from gridgate.bench.registry import machine_info  # noqa: PLC0415
    from gridgate.logs.bench import run_analysis_bench, run_ingest_bench  # noqa: PLC0415

    ingest = run_coroutine(run_ingest_bench(records))
    analysis = run_coroutine(run_analysis_bench(per_minute, minutes=minutes, compare=compare))
    machine = machine_info()
    for name in ("nproc", "CPU", "Python", "date"):
        out.print(f"{name}: {machine[name]}", highlight=False)
    table = Table(title="gridgate log pipeline benchmark")
    for column in ("Metric", "Result"):
        table.add_column(column)
    table.add_row(
        "ingest records/s (service → spool → Parquet, fsync)", f"{ingest.pipeline_per_s:,.0f}"
    )
    table.add_row(
        "plain sequential write of the same bytes",
        f"{ingest.raw_write_mb_per_s:,.0f} MB/s ({ingest.raw_records_per_s:,.0f} records/s)",
    )
    table.add_row("ingest CPU seconds", f"{ingest.cpu_s:.2f}")
    out.print(table)

    passes = Table(
        title=f"analysis passes of one hour, {analysis.per_minute:,} records a minute "
        "(SQLite; CPU seconds of the whole process)"
    )
    for column in ("minute", "hour holds", "pass adds (trajectory rows)", "pass CPU s"):
        passes.add_column(column, justify="right")
    passes.add_column("whole recomputation CPU s", justify="right")
    for step in analysis.passes:
        passes.add_row(
            str(step.minute),
            f"{step.hour_records:,}",
            f"{step.added:,} ({step.actions:,})",
            f"{step.cpu_s:.2f}",
            "-" if step.full_cpu_s is None else f"{step.full_cpu_s:.2f}",
        )
    out.print(passes)
    out.print(
        f"all {analysis.minutes} passes: {analysis.hour_cpu_s:.1f} CPU s, "
        f"{analysis.cpu_us_per_record:.1f} µs per record",
        highlight=False,
    )


@bench_app.command("accounts")
def bench_accounts(
    duration: Annotated[int, typer.Option(min=1, help="Seconds per throughput run.")] = 10,
    accounts: Annotated[
        int, typer.Option(min=1000, help="Accounts (and bindings) seeded on PostgreSQL.")
    ] = 1_000_000,
    lookups: Annotated[int, typer.Option(min=100, help="Look-ups timed per kind.")] = 10_000,
    concurrency: Annotated[int, typer.Option(min=1, help="Concurrent refresh tasks.")] = 16,
    sqlite: Annotated[
        bool, typer.Option("--sqlite/--no-sqlite", help="Also logins and refreshes on SQLite.")
    ] = True,
    markdown: Annotated[bool, typer.Option("--markdown", help="Also print Markdown.")] = False,
) -> None:
    """Password logins and refreshes per core vs Keycloak; look-up p99 at 1M accounts."""
    # Imported here: the benchmark is never part of a listener's process.
    from gridgate.bench.accounts import run_accounts_bench  # noqa: PLC0415

    command = " ".join(["gridgate", *sys.argv[1:]])
    try:
        report = run_accounts_bench(
            duration=duration,
            accounts=accounts,
            lookups=lookups,
            concurrency=concurrency,
            sqlite=sqlite,
            command=command,
            progress=lambda message: err.print(f"[dim]… {message}[/]", highlight=False),
        )
    except RuntimeError as exc:
        raise fail(str(exc), code=1) from None
    _show_report(
        report, "gridgate accounts benchmark (service layer, one core, no HTTP)", markdown=markdown
    )


@bench_app.command("permissions")
def bench_permissions(
    interfaces: Annotated[int, typer.Option(min=10, help="Interfaces in the catalog.")] = 10_000,
    decisions: Annotated[int, typer.Option(min=1000, help="Decisions timed.")] = 1_000_000,
) -> None:
    """Permission decisions per second on one core, and catalog compile time."""
    from rich.table import Table  # noqa: PLC0415

    from gridgate.bench.permissions import run_permissions_bench  # noqa: PLC0415

    report = run_permissions_bench(interfaces, decisions)
    table = Table(title="gridgate permission decisions (one core, in-process)")
    for column in ("Metric", "Result", "Target"):
        table.add_column(column)
    table.add_row(
        f"compile a snapshot of {report.interfaces:,} interfaces",
        f"{report.compile_s * 1000:.0f} ms",
        "< 1 s",
    )
    table.add_row("permission decisions per second", f"{report.decisions_per_s:,.0f}", "≥ 100,000")
    table.add_row(
        "field filtering per second (2 rules, small document)", f"{report.filters_per_s:,.0f}", "—"
    )
    for name, value in report.machine.items():
        out.print(f"{name}: {value}", highlight=False)
    out.print(table)

"""``gridgate logs status|flush|analyze``: look at and drive the access-log pipeline by hand.

With the embedded spool the running ``gridgate up`` owns the buffer and flushes it every
second; run ``flush`` by hand when it is stopped. With Redis any node may flush at any time.

The pipeline (pyarrow, SQLAlchemy) is imported when a command runs, not when the command line
is read (see :mod:`gridgate.cli.common`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from gridgate.cli.common import (
    ConfigOpt,
    DataDirOpt,
    open_runtime,
    out,
    run_coroutine,
    settings_from,
)

if TYPE_CHECKING:
    from gridgate.logs.buffer import LogBuffer, StreamReaders
    from gridgate.logs.storage import ParquetStore
    from gridgate.runtime import Runtime
    from gridgate.settings import Settings

__all__ = ["logs_app"]

logs_app = typer.Typer(help="The access-log pipeline: buffer, Parquet, analysis.")
T = TypeVar("T")
StorageOpt = Annotated[
    str | None,
    typer.Option(
        "--storage",
        help="Parquet location (default DATA_DIR/logs; s3://… works).",
        show_default=False,
    ),
]


async def _with_pipeline(
    settings: Settings,
    storage: str | None,
    work: Callable[[Runtime, LogBuffer, ParquetStore], Awaitable[T]],
) -> T:
    from gridgate.logs.service import build_buffer, default_storage_url  # noqa: PLC0415
    from gridgate.logs.storage import ParquetStore  # noqa: PLC0415

    async with open_runtime(settings, redis=True) as runtime:
        # A reader only: a running gateway's engine may be appending to the spool right now.
        buffer: LogBuffer = build_buffer(runtime, follow=True)
        store = ParquetStore(storage or default_storage_url(runtime))
        try:
            await runtime.db.migrate()
            return await work(runtime, buffer, store)
        finally:
            await buffer.close()


@logs_app.command()
def status(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, storage: StorageOpt = None
) -> None:
    """Show what waits in the buffer, what the Parquet store holds and how far analysis is."""
    from rich.table import Table  # noqa: PLC0415 - see the module docstring
    from sqlalchemy import func, select  # noqa: PLC0415

    from gridgate.logs.analysis import Analyzer  # noqa: PLC0415
    from gridgate.logs.buffer import RedisStreamBuffer  # noqa: PLC0415
    from gridgate.logs.models import AnalyzedHour  # noqa: PLC0415
    from gridgate.logs.retention import last_run, oldest_kept  # noqa: PLC0415

    settings = settings_from(config, data_dir=data_dir)

    async def work(
        runtime: Runtime, buffer: LogBuffer, store: ParquetStore
    ) -> list[tuple[str, str]]:
        stats = await buffer.stats()
        files, size = await asyncio.to_thread(store.size)
        due = await Analyzer(store, runtime.db).due()
        async with runtime.db.sessions() as session:
            hours, newest = (
                await session.execute(
                    select(func.count(), func.max(AnalyzedHour.hour)).select_from(AnalyzedHour)
                )
            ).one()
        kind = "Redis Stream" if settings.redis_url else "spool (data dir)"
        readers = await buffer.readers() if isinstance(buffer, RedisStreamBuffer) else None
        lag = _readers(readers, settings) if readers is not None else []
        first_file, first_row = await oldest_kept(store, runtime.db)
        last = await last_run(runtime.db)
        return [
            ("buffer", kind),
            ("waiting in buffer", f"{stats.waiting:,}"),
            ("read, not yet acknowledged", f"{stats.pending:,}"),
            *lag,
            ("Parquet store", store.url),
            ("Parquet files", f"{files:,} ({size / 1_048_576:,.1f} MiB)"),
            ("hours analysed", f"{hours:,} (newest {newest.isoformat() if newest else '-'})"),
            (
                "hours due for analysis",
                f"{len(due):,} ({sum(len(p.files) for p in due.values()):,} files not yet added)",
            ),
            ("retention", _retention(settings)),
            ("oldest file hour", _time(first_file)),
            ("oldest analysed hour", _time(first_row)),
            ("last retention run", _last(last)),
        ]

    table = Table(title="gridgate access-log pipeline", show_header=False)
    for name, value in run_coroutine(_with_pipeline(settings, storage, work)):
        table.add_row(name, value)
    out.print(table)


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ") if value else "-"


def _days(days: int) -> str:
    return f"{days} days" if days else "forever"


def _retention(settings: Settings) -> str:
    files, rows = settings.log_retention_days, settings.analysis_retention_days
    return f"files {_days(files)}, analysis rows {_days(rows)}"


def _age(age: float | None, settings: Settings) -> str:
    if age is None:
        return "- (nothing waits)"
    if age > settings.log_lag_warning_s:
        return f"{age:,.0f} s: behind, is `gridgate serve logs` running?"
    return f"{age:,.0f} s"


def _readers(readers: StreamReaders, settings: Settings) -> list[tuple[str, str]]:
    if readers.last_seen_s is None:
        batchers = "none has read the stream: is `gridgate serve logs` running?"
    else:
        batchers = f"{readers.consumers:,} (the latest seen {readers.last_seen_s:,.0f} s ago)"
    trimmed = (
        "yes: the stream dropped records before any batcher read them; "
        "is `gridgate serve logs` running, and keeping up?"
        if readers.trimmed_unread
        else "none"
    )
    return [
        ("oldest waiting record", _age(readers.oldest_age_s, settings)),
        ("batchers", batchers),
        ("records trimmed unread", trimmed),
    ]


def _last(last: tuple[datetime, dict[str, Any]] | None) -> str:
    if last is None:
        return "- (nothing removed yet)"
    at, done = last
    return (
        f"{_time(at)}: {done.get('files', 0):,} files ({done.get('hours', 0):,} hours) before "
        f"{done.get('files_before') or '-'}; {done.get('traffic_rows', 0):,} traffic, "
        f"{done.get('error_rows', 0):,} error, {done.get('trajectory_rows', 0):,} trajectory "
        f"rows before {done.get('rows_before') or '-'}"
    )


@logs_app.command()
def flush(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    consumer: Annotated[str, typer.Option(help="Consumer name in the group.")] = "cli",
) -> None:
    """Move everything waiting in the buffer into Parquet files now."""
    from gridgate.logs.batcher import Batcher  # noqa: PLC0415 - see the module docstring

    settings = settings_from(config, data_dir=data_dir)

    async def work(_runtime: Runtime, buffer: LogBuffer, store: ParquetStore) -> int:
        return await Batcher(buffer, store, consumer=consumer).drain()

    moved = run_coroutine(_with_pipeline(settings, storage, work))
    out.print(f"moved [bold]{moved:,}[/] records into Parquet")


@logs_app.command()
def analyze(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    since: Annotated[
        datetime | None, typer.Option(help="Only hours from this UTC time on.", show_default=False)
    ] = None,
) -> None:
    """Add the Parquet files not yet analysed to their hours' results (with a progress bar)."""
    from rich.progress import (  # noqa: PLC0415 - see the module docstring
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from gridgate.logs.analysis import Analyzer  # noqa: PLC0415

    settings = settings_from(config, data_dir=data_dir)

    async def work(runtime: Runtime, _buffer: LogBuffer, store: ParquetStore) -> tuple[int, int]:
        analyzer = Analyzer(store, runtime.db)
        start = since.replace(tzinfo=since.tzinfo or UTC) if since else None
        due = await analyzer.due(start)
        records = 0
        with Progress(
            TextColumn("[bold]analysing[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=out,
        ) as progress:
            task = progress.add_task("hours", total=len(due))

            def advance(hour: datetime, count: int) -> None:
                nonlocal records
                records += count
                progress.update(task, advance=1, description=f"{hour:%Y-%m-%d %H}:00")

            # An hour another analyser (a running `serve logs`) added to meanwhile is left
            # to it: it is not counted here.
            done = await analyzer.analyze(due, progress=advance)
        return len(done), records

    hours, records = run_coroutine(_with_pipeline(settings, storage, work))
    out.print(f"analysed [bold]{hours:,}[/] hours, {records:,} new records")

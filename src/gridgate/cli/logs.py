"""``gridgate logs status|flush|analyze``: look at and drive the access-log pipeline by hand.

With the embedded spool the running ``gridgate up`` owns the buffer and flushes it every
second; run ``flush`` by hand when it is stopped. With Redis any node may flush at any time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Annotated, TypeVar

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from sqlalchemy import func, select

from gridgate.cli.common import ConfigOpt, DataDirOpt, out, run_coroutine, settings_from
from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import LogBuffer
from gridgate.logs.models import AnalyzedHour
from gridgate.logs.service import build_buffer, default_storage_url
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
    runtime = Runtime.build(settings)
    buffer: LogBuffer = build_buffer(runtime)
    store = ParquetStore(storage or default_storage_url(runtime))
    try:
        await runtime.db.migrate()
        return await work(runtime, buffer, store)
    finally:
        await buffer.close()
        await runtime.close()


@logs_app.command()
def status(
    config: ConfigOpt = None, data_dir: DataDirOpt = None, storage: StorageOpt = None
) -> None:
    """Show what waits in the buffer, what the Parquet store holds and how far analysis is."""
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
        return [
            ("buffer", kind),
            ("waiting in buffer", f"{stats.waiting:,}"),
            ("read, not yet acknowledged", f"{stats.pending:,}"),
            ("Parquet store", store.url),
            ("Parquet files", f"{files:,} ({size / 1_048_576:,.1f} MiB)"),
            ("hours analysed", f"{hours:,} (newest {newest.isoformat() if newest else '-'})"),
            ("hours due for analysis", f"{len(due):,}"),
        ]

    table = Table(title="gridgate access-log pipeline", show_header=False)
    for name, value in run_coroutine(_with_pipeline(settings, storage, work)):
        table.add_row(name, value)
    out.print(table)


@logs_app.command()
def flush(
    config: ConfigOpt = None,
    data_dir: DataDirOpt = None,
    storage: StorageOpt = None,
    consumer: Annotated[str, typer.Option(help="Consumer name in the group.")] = "cli",
) -> None:
    """Move everything waiting in the buffer into Parquet files now."""
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
    """Recompute the hours whose Parquet files changed (with a progress bar)."""
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

            await analyzer.analyze(due, progress=advance)
        return len(due), records

    hours, records = run_coroutine(_with_pipeline(settings, storage, work))
    out.print(f"analysed [bold]{hours:,}[/] hours, {records:,} records")

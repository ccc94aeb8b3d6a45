"""The batcher: reads the buffer in batches and writes them as Parquet, acknowledging after.

A crash between the write and the ack re-delivers the same batch, which is written under the
same name again (replacing the file); should a re-delivered batch differ (another batch size,
another consumer), analysis drops records whose buffer id it has already seen.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import orjson
import pyarrow as pa  # type: ignore[import-untyped]
import structlog

from gridgate.logs.buffer import Entry, LogBuffer
from gridgate.logs.storage import SCHEMA, ParquetStore, hour_of

__all__ = ["Batcher", "decode"]

_log = structlog.get_logger("gridgate.logs.batcher")
_RETRY_S = 1.0
_COLUMNS = [field.name for field in SCHEMA]


def decode(entries: Sequence[Entry]) -> dict[datetime, list[dict[str, Any]]]:
    """Buffered JSON records grouped by the hour they happened in (not when they arrived)."""
    grouped: dict[datetime, list[dict[str, Any]]] = {}
    for entry in entries:
        try:
            row = orjson.loads(entry.data)
            row["time"] = datetime.fromisoformat(row["time"])
            hour = hour_of(row["time"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            # One malformed record must not block the pipeline behind it.
            _log.warning("log_record_unreadable", log_id=entry.id)
            continue
        row["log_id"] = entry.id
        grouped.setdefault(hour, []).append(row)
    return grouped


def _table(rows: list[dict[str, Any]]) -> Any:
    columns = {name: [row.get(name) for row in rows] for name in _COLUMNS}
    return pa.Table.from_pydict(columns, schema=SCHEMA)


class Batcher:
    """Moves records from the buffer to the Parquet store (日志批处理)."""

    def __init__(
        self,
        buffer: LogBuffer,
        store: ParquetStore,
        *,
        consumer: str = "batcher",
        batch_size: int = 50_000,
        block_ms: int = 1000,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        self.written = 0

    def write(self, entries: Sequence[Entry]) -> list[str]:
        """Write one batch, one file per hour it touches; the paths written."""
        first, last = entries[0].id, entries[-1].id
        return [
            self.store.write(hour, first, last, _table(rows))
            for hour, rows in decode(entries).items()
        ]

    async def run_once(self, *, block_ms: int = 0) -> int:
        """Move one batch; the number of records taken from the buffer."""
        entries = await self.buffer.read(self.consumer, self.batch_size, block_ms=block_ms)
        if not entries:
            return 0
        await asyncio.to_thread(self.write, entries)
        await self.buffer.ack([entry.id for entry in entries])
        self.written += len(entries)
        return len(entries)

    async def drain(self) -> int:
        """Move batches until the buffer has nothing more for this consumer."""
        total = 0
        while moved := await self.run_once():
            total += moved
        return total

    async def run(self, stopping: asyncio.Event) -> None:
        """Move batches until ``stopping``."""
        while not stopping.is_set():
            try:
                await self.run_once(block_ms=self.block_ms)
            except Exception as exc:  # the store or the buffer is away: keep trying
                _log.warning("log_batch_failed", error=str(exc), error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=_RETRY_S)

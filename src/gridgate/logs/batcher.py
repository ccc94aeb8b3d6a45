"""The batcher: reads the buffer in batches and writes them as Parquet, acknowledging after.

A crash between the write and the ack re-delivers the same batch, which is written under the
same name again (replacing the file); should a re-delivered batch differ (another batch size,
another consumer), analysis drops records whose buffer id it has already seen.

A batch is parsed whole by Arrow's JSON reader (one C++ pass, straight into columns) and split
into hours with Arrow compute; only a batch holding an unreadable record takes the slow path,
which halves it until the bad records are found and skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

import pyarrow as pa  # type: ignore[import-untyped]
import pyarrow.compute as pc  # type: ignore[import-untyped]
import pyarrow.json as pj  # type: ignore[import-untyped]
import structlog

from gridgate.logs.buffer import Entry, LogBuffer
from gridgate.logs.storage import SCHEMA, ParquetStore

__all__ = ["Batcher", "decode"]

_log = structlog.get_logger("gridgate.logs.batcher")
_RETRY_S = 1.0
#: The columns a record carries itself (``log_id`` is the buffer's).
_RECORD_SCHEMA = pa.schema([field for field in SCHEMA if field.name != "log_id"])
_ID, _DATA = itemgetter(0), itemgetter(1)  # of an Entry, by C-level maps
_PARSE = pj.ParseOptions(explicit_schema=_RECORD_SCHEMA, unexpected_field_behavior="ignore")


def _parse(lines: Sequence[bytes]) -> Any:
    """The records of ``lines`` as one table; raises when any of them is unreadable."""
    blob = b"\n".join(lines)
    # A newline inside a record (not from orjson) would shift every row after it.
    if blob.count(b"\n") != len(lines) - 1:
        raise pa.ArrowInvalid("a record spans lines")
    options = pj.ReadOptions(use_threads=False, block_size=max(len(blob) + 1, 1 << 20))
    table = pj.read_json(pa.BufferReader(blob), read_options=options, parse_options=_PARSE)
    if table.num_rows != len(lines):
        raise pa.ArrowInvalid("an empty record")
    return table


def _parse_entries(entries: Sequence[Entry]) -> Any:
    """A table of every readable entry with its ``log_id``; unreadable ones logged and skipped."""
    try:
        table = _parse(list(map(_DATA, entries)))
    except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
        if len(entries) == 1:
            # One malformed record must not block the pipeline behind it.
            _log.warning("log_record_unreadable", log_id=entries[0].id)
            return None
        middle = len(entries) // 2
        parts = [_parse_entries(entries[:middle]), _parse_entries(entries[middle:])]
        found = [part for part in parts if part is not None]
        return pa.concat_tables(found) if found else None
    ids = pa.array(list(map(_ID, entries)), type=pa.string())
    return table.add_column(0, SCHEMA.field("log_id"), ids)


def decode(entries: Sequence[Entry]) -> dict[datetime, Any]:
    """Buffered JSON records as Arrow tables, by the hour they happened in (not when they arrived).

    Records without a time are logged and skipped.
    """
    if not entries:
        return {}
    table = _parse_entries(entries)
    if table is None:
        return {}
    times = table.column("time")
    if times.null_count:
        for log_id in table.filter(pc.is_null(times)).column("log_id").to_pylist():
            _log.warning("log_record_unreadable", log_id=log_id)
        table = table.filter(pc.is_valid(times))
        times = table.column("time")
    hours = pc.floor_temporal(times, unit="hour")
    distinct = pc.unique(hours)
    if len(distinct) == 1:
        return {_hour(distinct[0]): table}
    return {_hour(hour): table.filter(pc.equal(hours, hour)) for hour in distinct}


def _hour(value: Any) -> datetime:
    hour: datetime = value.as_py()
    return hour.astimezone(UTC)


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
        linger_s: float = 5.0,
    ) -> None:
        self.buffer = buffer
        self.store = store
        self.consumer = consumer
        self.batch_size = batch_size
        self.block_ms = block_ms
        #: While running, a batch short of ``batch_size`` waits up to this long for more
        #: records: a few files of many records, not a file every time the service appends.
        self.linger_s = linger_s
        self.written = 0

    def write(self, entries: Sequence[Entry]) -> list[str]:
        """Write one batch, one file per hour it touches; the paths written."""
        first, last = entries[0].id, entries[-1].id
        return [
            self.store.write(hour, first, last, table) for hour, table in decode(entries).items()
        ]

    async def run_once(
        self, *, block_ms: int = 0, linger_s: float = 0.0, stopping: asyncio.Event | None = None
    ) -> int:
        """Move one batch; the number of records taken from the buffer.

        With ``linger_s``, a short batch waits that long for more (less once ``stopping``).
        """
        entries = await self.buffer.read(self.consumer, self.batch_size, block_ms=block_ms)
        if not entries:
            return 0
        if linger_s > 0 and len(entries) < self.batch_size:
            entries = list(entries)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + linger_s
            while len(entries) < self.batch_size and not (stopping and stopping.is_set()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                entries += await self.buffer.read(
                    self.consumer,
                    self.batch_size - len(entries),
                    block_ms=max(1, int(min(remaining, 0.5) * 1000)),
                )
        await asyncio.to_thread(self.write, entries)
        await self.buffer.ack(list(map(_ID, entries)))
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
                await self.run_once(
                    block_ms=self.block_ms, linger_s=self.linger_s, stopping=stopping
                )
            except Exception as exc:  # the store or the buffer is away: keep trying
                _log.warning("log_batch_failed", error=str(exc), error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=_RETRY_S)

"""One access-log record per gateway request, handed to a sink without ever blocking.

The sink is the seam the log pipeline plugs into (R13); until then records go to a JSON-lines
file in the data dir. A full buffer drops the record and counts it: the request path never
waits for logging.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import orjson
import structlog
from prometheus_client import Counter

__all__ = ["AccessLogSink", "AccessRecord", "JsonLinesSink"]

_log = structlog.get_logger("gridgate.gateway.accesslog")
DROPPED = Counter("gridgate_access_log_dropped", "Access-log records dropped on a full buffer.")


@dataclass(slots=True)
class AccessRecord:
    """What happened to one request (no secrets, no bodies, no raw tokens)."""

    trace_id: str
    time: str
    channel: str | None
    interface: str | None
    account: str | None
    client_ip: str | None
    method: str
    status: int
    code: str | None
    latency_ms: float
    queue_wait_ms: float
    upstream: str | None
    bytes_in: int
    bytes_out: int


class AccessLogSink(Protocol):
    """Takes records without blocking; True when taken, False when dropped."""

    def offer(self, record: AccessRecord) -> bool:
        """Take ``record`` or drop it at once."""
        ...


class JsonLinesSink:
    """Buffers records in memory and appends them to a file from a background task."""

    def __init__(self, path: Path, *, max_buffer: int = 10_000, batch: int = 1000) -> None:
        self.path = path
        self.batch = batch
        self._queue: asyncio.Queue[AccessRecord] = asyncio.Queue(maxsize=max_buffer)
        self.dropped = 0

    def offer(self, record: AccessRecord) -> bool:
        """Queue the record, or drop and count it when the buffer is full."""
        try:
            self._queue.put_nowait(record)
        except asyncio.QueueFull:
            self.dropped += 1
            DROPPED.inc()
            return False
        return True

    def _write(self, records: list[AccessRecord]) -> None:
        lines = b"".join(orjson.dumps(asdict(r)) + b"\n" for r in records)
        with self.path.open("ab") as handle:
            handle.write(lines)

    async def flush(self, first: AccessRecord | None = None) -> int:
        """Write what is buffered now (after ``first``); the number of records written."""
        records = [first] if first is not None else []
        while not self._queue.empty() and len(records) < self.batch:
            records.append(self._queue.get_nowait())
        if records:
            await asyncio.to_thread(self._write, records)
        return len(records)

    async def run(self, stopping: asyncio.Event) -> None:
        """Write batches until ``stopping``, then write the rest."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while not stopping.is_set():
            try:
                first = await asyncio.wait_for(self._queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            try:
                await self.flush(first)
            except OSError as exc:
                _log.warning("access_log_write_failed", error=str(exc))
        while await self.flush():
            pass

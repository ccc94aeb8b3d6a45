"""The log service: takes access-log records from the gateway and appends them to the buffer.

``offer`` only appends to an in-memory queue (the gateway never waits for logging); a
background job hands the queue to the buffer in batches, as APISIX's batch processor does
(a batch when it is full or after a short linger). A full queue drops the record and counts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import orjson
import structlog
from prometheus_client import Counter, Gauge

from gridgate.logs.analysis import Analyzer
from gridgate.logs.batcher import Batcher
from gridgate.logs.buffer import Lines, LogBuffer, RedisStreamBuffer, SpoolBuffer, StreamReaders
from gridgate.logs.record import AccessRecord
from gridgate.logs.retention import Retention
from gridgate.logs.storage import ParquetStore
from gridgate.runtime import Runtime

__all__ = [
    "Job",
    "LogParts",
    "LogService",
    "PipelineState",
    "ServiceStatus",
    "spool_directory",
]

_log = structlog.get_logger("gridgate.logs.service")
Job = Callable[[asyncio.Event], Coroutine[Any, Any, None]]

DROPPED = Counter(
    "gridgate_log_records_dropped",
    "Access-log records the log service dropped, by reason (queue_full: the buffer is behind).",
    ["reason"],
)
APPENDED = Counter("gridgate_log_records_appended", "Access-log records appended to the buffer.")
QUEUED = Gauge("gridgate_log_records_queued", "Access-log records waiting in memory.")
_RETRY_S = 1.0


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """What the log service holds and has lost."""

    queued: int
    appended: int
    dropped: int


@dataclass(frozen=True, slots=True)
class PipelineState:
    """Whether the batchers keep up with the shared buffer (the gateway's ``log_pipeline``)."""

    status: Literal["ok", "warning", "failing"]
    detail: str | None = None

    @classmethod
    def of(cls, readers: StreamReaders, *, warning_s: float, fail_s: float | None) -> PipelineState:
        """``warning`` once the oldest waiting record is older than ``warning_s`` or records
        were trimmed unread; ``failing`` past ``fail_s`` when set (trimmed: past any)."""
        if readers.trimmed_unread:
            detail = (
                "access-log records were trimmed from the stream before any batcher read them "
                "(is serve logs running?)"
            )
            return cls("failing" if fail_s is not None else "warning", detail)
        age = readers.oldest_age_s
        if age is None:
            return cls("ok")
        detail = f"oldest unbatched access-log record waits {age:.0f} s (is serve logs running?)"
        if fail_s is not None and age > fail_s:
            return cls("failing", detail)
        if age > warning_s:
            return cls("warning", detail)
        return cls("ok")


class LogService:
    """Takes :class:`~gridgate.logs.record.AccessRecord` without blocking and appends them to a
    :class:`LogBuffer` in batches (the gateway's engine appends its own; tests and the log bench
    write through this)."""

    def __init__(
        self,
        buffer: LogBuffer,
        *,
        max_queue: int = 100_000,
        batch: int = 1000,
        linger_s: float = 1.0,
    ) -> None:
        self.buffer = buffer
        self.max_queue = max_queue
        self.batch = batch
        self.linger_s = linger_s
        #: Records already encoded (one JSON document each, no newline): a request pays its
        #: own microsecond of encoding, instead of a batch of a thousand stalling the loop.
        self._queue: deque[bytes] = deque()
        self._full = asyncio.Event()
        self.appended = 0
        self.dropped = 0

    def offer(self, record: AccessRecord) -> bool:
        """Queue the record, or drop and count it when the queue is full."""
        if len(self._queue) >= self.max_queue:
            self.dropped += 1
            DROPPED.labels("queue_full").inc()
            return False
        self._queue.append(orjson.dumps(record))
        if len(self._queue) >= self.batch:
            self._full.set()
        return True

    def status(self) -> ServiceStatus:
        """Queued, appended and dropped record counts of this process."""
        return ServiceStatus(len(self._queue), self.appended, self.dropped)

    async def flush(self) -> int:
        """Append everything queued now to the buffer; the number appended.

        On a buffer error the batch goes back to the front of the queue (kept in order) and
        the error propagates; records beyond the queue's bound are then dropped and counted.
        """
        total = 0
        while self._queue:
            records = [self._queue.popleft() for _ in range(min(self.batch, len(self._queue)))]
            try:
                await self.buffer.append(Lines(b"\n".join(records) + b"\n", len(records)))
            except BaseException:
                self._queue.extendleft(reversed(records))
                overflow = len(self._queue) - self.max_queue
                for _ in range(max(overflow, 0)):
                    self._queue.pop()
                if overflow > 0:
                    self.dropped += overflow
                    DROPPED.labels("buffer_unavailable").inc(overflow)
                raise
            finally:
                QUEUED.set(len(self._queue))
            total += len(records)
            self.appended += len(records)
            APPENDED.inc(len(records))
        return total

    async def run(self, stopping: asyncio.Event) -> None:
        """Flush when a batch is full or the linger ran out, until ``stopping``; then the rest."""
        while not stopping.is_set():
            waits = {asyncio.create_task(self._full.wait()), asyncio.create_task(stopping.wait())}
            _, pending = await asyncio.wait(
                waits, timeout=self.linger_s, return_when=asyncio.FIRST_COMPLETED
            )
            for task in pending:
                task.cancel()
            self._full.clear()
            try:
                await self.flush()
            except Exception as exc:  # the buffer is away: records wait in memory
                _log.warning("log_append_failed", error=str(exc), error_type=type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stopping.wait(), timeout=_RETRY_S)
        try:
            await self.flush()
        except Exception as exc:
            _log.warning("log_final_flush_failed", error=str(exc), queued=len(self._queue))


def default_storage_url(runtime: Runtime) -> str:
    """Where Parquet files go: ``log_storage_url`` (shared by all nodes), else DATA_DIR/logs."""
    if runtime.settings.log_storage_url:
        return runtime.settings.log_storage_url
    return str((runtime.settings.data_dir / "logs").resolve())


def spool_directory(runtime: Runtime) -> Path:
    """Where a process's own log spool lives (embedded mode: no Redis)."""
    return Path(runtime.settings.data_dir) / "log-spool"


def build_buffer(runtime: Runtime, *, follow: bool = False) -> LogBuffer:
    """The Redis Stream when the settings name Redis, else the spool in the data dir
    (``follow``: the gateway's engine writes the spool, this process only reads it)."""
    if runtime.settings.redis_url:
        return RedisStreamBuffer.from_url(runtime.settings.redis_url)
    return SpoolBuffer(spool_directory(runtime), follow=follow)


@dataclass
class LogParts:
    """The log pipeline of one process: service, batcher, analysis and retention."""

    service: LogService
    buffer: LogBuffer
    store: ParquetStore
    batcher: Batcher
    analyzer: Analyzer
    analysis_interval_s: float = 60.0
    retention: Retention | None = None
    retention_interval_s: float = 3600.0
    _running: int = field(default=0, repr=False)

    @classmethod
    def build(
        cls,
        runtime: Runtime,
        *,
        storage_url: str | None = None,
        consumer: str | None = None,
        analysis_interval_s: float = 60.0,
        engine_writes: bool = False,
    ) -> LogParts:
        """Wire the buffer the settings name, the store at ``storage_url`` and the jobs
        (``engine_writes``: the gateway's engine appends the records, not :class:`LogService`)."""
        buffer = build_buffer(runtime, follow=engine_writes)
        store = ParquetStore(storage_url or default_storage_url(runtime))
        # One consumer name per host: a restarted batcher takes back its own pending batch.
        batcher = Batcher(buffer, store, consumer=consumer or socket.gethostname())
        return cls(
            service=LogService(buffer),
            buffer=buffer,
            store=store,
            batcher=batcher,
            analyzer=Analyzer(store, runtime.db),
            analysis_interval_s=analysis_interval_s,
            retention=Retention(
                store,
                runtime.db,
                log_days=runtime.settings.log_retention_days,
                analysis_days=runtime.settings.analysis_retention_days,
            ),
        )

    @property
    def shared(self) -> bool:
        """Whether the buffer is shared by every node (Redis), not this process's own spool."""
        return isinstance(self.buffer, RedisStreamBuffer)

    async def lag_s(self) -> float | None:
        """Age in seconds of the oldest record the shared buffer's batchers have not taken
        (None: nothing waits, or the buffer is this process's own spool)."""
        if not isinstance(self.buffer, RedisStreamBuffer):
            return None
        return await self.buffer.oldest_age_s()

    async def state(self, *, warning_s: float, fail_s: float | None = None) -> PipelineState:
        """Whether ``gridgate serve logs`` keeps up with the shared buffer (always ``ok`` for
        this process's own spool, which its own jobs batch)."""
        if not isinstance(self.buffer, RedisStreamBuffer):
            return PipelineState("ok")
        readers = await self.buffer.readers()
        return PipelineState.of(readers, warning_s=warning_s, fail_s=fail_s)

    def jobs(self, *, append: bool = True, pipeline: bool = True) -> list[Job]:
        """Background jobs: ``append`` hands what was offered to the buffer; ``pipeline``
        batches the buffer into Parquet, analyses every interval and applies retention."""

        async def analysis(stopping: asyncio.Event) -> None:
            await self.analyzer.run(stopping, interval_s=self.analysis_interval_s)

        async def retention(stopping: asyncio.Event) -> None:
            if self.retention is not None:
                await self.retention.run(stopping, interval_s=self.retention_interval_s)

        jobs: list[Job] = [
            *([self.service.run] if append else []),
            *([self.batcher.run, analysis, retention] if pipeline else []),
        ]
        self._running = len(jobs)
        return [self._owning(job) for job in jobs]

    def _owning(self, job: Job) -> Job:
        # The jobs share the buffer: the last one to end closes it.
        async def run(stopping: asyncio.Event) -> None:
            try:
                await job(stopping)
            finally:
                self._running -= 1
                if self._running == 0:
                    await self.buffer.close()

        return run

"""One access-log record per gateway request, handed to a sink without ever blocking.

The sink is the seam the log pipeline plugs into (R13): :class:`gridgate.logs.service.LogService`.
A full buffer drops the record and counts it: the request path never waits for logging.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import structlog

__all__ = ["AccessLogSink", "AccessRecord", "utc_now_iso"]

_log = structlog.get_logger("gridgate.gateway.accesslog")


@dataclass  # not slots: orjson encodes a dataclass's __dict__ in half the time (1 vs 2 µs)
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


_second: list[tuple[int, str]] = [(-1, "")]


def utc_now_iso() -> str:
    """Now as ``datetime.now(UTC).isoformat()`` writes it, with the date part made once a
    second (this runs for every request)."""
    now = time.time()
    second = int(now)
    cached, prefix = _second[0]
    if second != cached:
        prefix = datetime.fromtimestamp(second, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        _second[0] = (second, prefix)
    return f"{prefix}.{int((now - second) * 1_000_000):06d}+00:00"

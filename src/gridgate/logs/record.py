"""The access-log record: what the gateway's engine writes for each request, one JSON document
a line, and what the log pipeline batches into Parquet and analyses (R13).

The engine (``engine/src/access_log.rs``) writes these fields under these names; tests and the
log bench make records with this class and hand them to :class:`gridgate.logs.service.LogService`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["AccessRecord"]


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

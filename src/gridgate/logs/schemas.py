"""Response shapes of the analytics and trajectory endpoints (api.md fixes their fields)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["TrafficOut", "TrajectoryItemOut"]


class TrafficOut(BaseModel):
    """One channel on one interface in one hour; ``channel``/``interface`` null when unknown."""

    hour: datetime
    channel: str | None
    interface: str | None
    requests: int
    errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    queue_wait_p99_ms: float
    accounts: int


class TrajectoryItemOut(BaseModel):
    """One action of an account: when, through which channel, on what, with what result."""

    time: datetime
    channel: str | None
    interface: str | None
    status: int
    code: str | None

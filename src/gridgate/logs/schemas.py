"""Response shapes of the analytics and trajectory endpoints (api.md fixes their fields)."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel

__all__ = ["AuthFailureOut", "ErrorOut", "FailingInterfaceOut", "TrafficOut", "TrajectoryItemOut"]


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


class ErrorOut(BaseModel):
    """Failed requests with one error code on one channel and interface in one hour."""

    hour: datetime
    channel: str | None
    interface: str | None
    code: str
    count: int


class FailingInterfaceOut(BaseModel):
    """An interface's requests and failures over the range; ``error_rate`` is errors/requests."""

    interface: str
    requests: int
    errors: int
    error_rate: float


class AuthFailureOut(BaseModel):
    """Authentication failures (``channel.*``/``auth.*``) of one channel in one hour, by code."""

    hour: datetime
    channel: str | None
    code: str
    count: int

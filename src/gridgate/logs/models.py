"""Tables the log analysis writes: hourly traffic, errors by code, account actions, progress."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from gridgate.storage.models import Base, BigIntId, UTCDateTime, utcnow

__all__ = ["AccountAction", "AnalyzedHour", "ErrorHour", "TrafficHour"]

#: Stored for a record without a channel or interface (unknown channel, unmatched path).
NONE = ""


class TrafficHour(Base):
    """Requests of one channel on one interface in one hour (渠道接口小时流量)."""

    __tablename__ = "log_traffic_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    interface: Mapped[str] = mapped_column(String(128), primary_key=True)
    requests: Mapped[int] = mapped_column(Integer)
    errors: Mapped[int] = mapped_column(Integer)
    p50_ms: Mapped[float] = mapped_column(Float)
    p95_ms: Mapped[float] = mapped_column(Float)
    p99_ms: Mapped[float] = mapped_column(Float)
    queue_wait_p99_ms: Mapped[float] = mapped_column(Float)
    accounts: Mapped[int] = mapped_column(Integer)


class ErrorHour(Base):
    """Failed requests by error code of one channel on one interface in one hour."""

    __tablename__ = "log_errors_hourly"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    channel: Mapped[str] = mapped_column(String(64), primary_key=True)
    interface: Mapped[str] = mapped_column(String(128), primary_key=True)
    code: Mapped[str] = mapped_column(String(64), primary_key=True)
    count: Mapped[int] = mapped_column(Integer)


class AccountAction(Base):
    """One request of an account through any channel: its service trajectory (服务轨迹, R8)."""

    __tablename__ = "log_account_actions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime] = mapped_column(UTCDateTime)
    channel: Mapped[str] = mapped_column(String(64))
    interface: Mapped[str] = mapped_column(String(128))
    status: Mapped[int] = mapped_column(Integer)
    code: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        Index("ix_log_account_actions_account_time", "account_id", "time"),
        # Re-analysing an hour deletes its rows by time.
        Index("ix_log_account_actions_time", "time"),
    )


class AnalyzedHour(Base):
    """Which Parquet files an hour's results were computed from (recompute when they change)."""

    __tablename__ = "log_analyzed_hours"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    files_digest: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    analyzed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

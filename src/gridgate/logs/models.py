"""Tables the log analysis writes: hourly traffic, errors by code, account actions, progress."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from gridgate.storage.models import Base, BigIntId, UTCDateTime, utcnow

__all__ = ["AccountAction", "AnalyzedFile", "AnalyzedHour", "ErrorHour", "TrafficHour"]

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
    #: The summaries the percentiles and ``accounts`` are read from, merged as files are
    #: added (:mod:`gridgate.logs.sketches`); null on rows of hours analysed whole before them.
    latency_sketch: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    queue_wait_sketch: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)
    accounts_sketch: Mapped[bytes | None] = mapped_column(LargeBinary, nullable=True)


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
        # Retention deletes the oldest rows by time.
        Index("ix_log_account_actions_time", "time"),
    )


class AnalyzedHour(Base):
    """How far an hour's analysis is: a digest of the names of the files its rows hold.

    Every change to an hour's rows first updates this row, so two analysers never add to one
    hour at once (the row's lock on PostgreSQL, the write lock on SQLite).
    """

    __tablename__ = "log_analyzed_hours"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    files_digest: Mapped[str] = mapped_column(String(64))
    records: Mapped[int] = mapped_column(Integer)
    analyzed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AnalyzedFile(Base):
    """A Parquet file whose records an hour's rows hold: written in the transaction that
    added them, so a file is counted once, crash or not."""

    __tablename__ = "log_analyzed_files"

    hour: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    #: The file's name in its hour's directory (``part_<first>_<last>.parquet``).
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    analyzed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

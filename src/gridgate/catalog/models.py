"""Catalog tables. Secrets are stored sealed (see :mod:`gridgate.storage.crypto`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridgate.storage.models import Base, BigIntId, UTCDateTime, utcnow

__all__ = [
    "BusinessSystem",
    "CatalogRevision",
    "Channel",
    "Component",
    "Interface",
    "InterfaceChannelGrant",
    "InterfaceSystemGrant",
]


class _Timestamps:
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class BusinessSystem(_Timestamps, Base):
    """A back-end business system (R3): marketing, billing, payment …"""

    __tablename__ = "business_systems"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    host: Mapped[str] = mapped_column(String(253))
    port: Mapped[int] = mapped_column(Integer)
    username: Mapped[str] = mapped_column(String(64))
    password_sealed: Mapped[str] = mapped_column(Text)
    description: Mapped[str] = mapped_column(Text, default="")

    __table_args__ = (CheckConstraint("port BETWEEN 1 AND 65535", name="port_range"),)


class Channel(_Timestamps, Base):
    """A client application family (R4): app, WeChat, the 95598 website, a partner."""

    __tablename__ = "channels"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    type: Mapped[str] = mapped_column(String(16))
    allowed_ips: Mapped[list[str]] = mapped_column(JSON, default=list)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    secret_sealed: Mapped[str] = mapped_column(Text)
    secret_rotated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    description: Mapped[str] = mapped_column(Text, default="")
    #: Requests per second the whole channel may send (None: no channel-wide limit).
    rate_limit_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)


class Interface(_Timestamps, Base):
    """A business interface registered on the platform (R5)."""

    __tablename__ = "interfaces"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    code: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(128))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    #: The path with parameter names erased; (method, path_shape) is unique so routes never clash.
    path_shape: Mapped[str] = mapped_column(String(512))
    service_mode: Mapped[str] = mapped_column(String(8), default="sync")
    version: Mapped[str] = mapped_column(String(32), default="1")
    #: Canary release (灰度发布): instances registered with this ``version`` in their metadata
    #: take ``canary_percent`` per cent of the calls (the engine routes them; issue 13).
    canary_version: Mapped[str | None] = mapped_column(String(32), nullable=True)
    canary_percent: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    timeout_ms: Mapped[int] = mapped_column(Integer, default=3000)
    provider_id: Mapped[int] = mapped_column(ForeignKey("business_systems.id", ondelete="RESTRICT"))
    target_service: Mapped[str] = mapped_column(String(128))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    requires_client_auth: Mapped[bool] = mapped_column(Boolean, default=True)
    min_level: Mapped[int] = mapped_column(Integer, default=0)
    idempotent: Mapped[bool] = mapped_column(Boolean, default=False)
    description: Mapped[str] = mapped_column(Text, default="")
    #: Flow control (R12, R24): requests per second, concurrent calls, and the wait queue.
    rate_limit_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_concurrency: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_queue: Mapped[int] = mapped_column(Integer, default=100, server_default="100")
    max_wait_ms: Mapped[int] = mapped_column(Integer, default=1000, server_default="1000")
    #: Requests per second of one client address, and of one account (token ``sub``), on
    #: this interface: one app user cannot spend the channel's whole budget.
    client_rate_limit_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    account_rate_limit_per_s: Mapped[int | None] = mapped_column(Integer, nullable=True)
    balancer: Mapped[str] = mapped_column(
        String(32), default="round_robin", server_default="round_robin"
    )
    #: Where the request names a 户号 (``path:customer_no`` or ``body:customer_no``): the caller
    #: must have it bound (data scope, R11).
    customer_scope: Mapped[str | None] = mapped_column(String(80), nullable=True)

    provider: Mapped[BusinessSystem] = relationship(lazy="joined")
    channel_grants: Mapped[list[InterfaceChannelGrant]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", back_populates="interface"
    )
    system_grants: Mapped[list[InterfaceSystemGrant]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", back_populates="interface"
    )

    __table_args__ = (
        UniqueConstraint("method", "path_shape", name="uq_interfaces_route"),
        CheckConstraint("timeout_ms BETWEEN 1 AND 120000", name="timeout_range"),
        CheckConstraint("min_level BETWEEN 0 AND 2", name="level_range"),
    )


class InterfaceChannelGrant(Base):
    """Channel ``channel`` may call interface ``interface`` (R5)."""

    __tablename__ = "interface_channel_grants"

    interface_id: Mapped[int] = mapped_column(
        ForeignKey("interfaces.id", ondelete="CASCADE"), primary_key=True
    )
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    interface: Mapped[Interface] = relationship(back_populates="channel_grants")
    channel: Mapped[Channel] = relationship(lazy="joined")


class InterfaceSystemGrant(Base):
    """Business system ``business_system`` may call interface ``interface`` (R5)."""

    __tablename__ = "interface_system_grants"

    interface_id: Mapped[int] = mapped_column(
        ForeignKey("interfaces.id", ondelete="CASCADE"), primary_key=True
    )
    business_system_id: Mapped[int] = mapped_column(
        ForeignKey("business_systems.id", ondelete="RESTRICT"), primary_key=True, index=True
    )
    interface: Mapped[Interface] = relationship(back_populates="system_grants")
    business_system: Mapped[BusinessSystem] = relationship(lazy="joined")


class Component(_Timestamps, Base):
    """A function one channel exposes, with the level a customer needs to use it (R6)."""

    __tablename__ = "components"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    min_level: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    description: Mapped[str] = mapped_column(Text, default="")

    channel: Mapped[Channel] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("channel_id", "code", name="uq_components_channel_code"),
        CheckConstraint("min_level BETWEEN 0 AND 2", name="level_range"),
    )


class CatalogRevision(Base):
    """One row whose ``revision`` grows with every catalog change.

    Gateways compare it with the revision of their snapshot to notice changes they missed.
    """

    __tablename__ = "catalog_revision"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    revision: Mapped[int] = mapped_column(BigInteger, default=0)
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

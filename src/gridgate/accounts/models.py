"""Account tables. Phones, e-mail addresses and identity data are stored sealed with a keyed
hash for look-ups."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from gridgate.storage.models import Base, BigIntId, UTCDateTime, utcnow

__all__ = [
    "Account",
    "Binding",
    "ChannelAccount",
    "RealnameApplication",
    "ServicePasswordLock",
    "Session",
    "SigningKey",
    "Subscription",
]


class Account(Base):
    """One unified account (统一账户) across every channel."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    phone_hash: Mapped[str] = mapped_column(String(64), unique=True)
    phone_sealed: Mapped[str] = mapped_column(Text)
    #: The customer's chosen user name (用户名), kept in lower case: unique whatever the case.
    username: Mapped[str | None] = mapped_column(String(64), unique=True, nullable=True)
    #: E-mail address (personal data): sealed, with a keyed hash of its lower-cased form to
    #: find an account by it.
    email_sealed: Mapped[str | None] = mapped_column(Text, nullable=True)
    email_hash: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="active")
    #: 认证等级: 0 registered, 1 primary (户号 bound), 2 advanced (real-name approved).
    level: Mapped[int] = mapped_column(Integer, default=0)
    #: Extensible account attributes (账户属性支持扩展): a flat JSON object of scalars.
    attributes: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ChannelAccount(Base):
    """The identity one channel knows (app user id, WeChat openid …), linked to an account."""

    __tablename__ = "channel_accounts"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    channel: Mapped[str] = mapped_column(String(64))
    channel_user_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (
        UniqueConstraint("channel", "channel_user_id", name="uq_channel_accounts_identity"),
    )


class Session(Base):
    """A sign-in: one refresh token at a time, rotated on use, in a family of rotations."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    family_id: Mapped[str] = mapped_column(String(32), index=True)
    channel: Mapped[str] = mapped_column(String(64))
    refresh_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class SigningKey(Base):
    """An Ed25519 key that signs access tokens; retired keys stay published until tokens expire."""

    __tablename__ = "signing_keys"

    kid: Mapped[str] = mapped_column(String(32), primary_key=True)
    private_sealed: Mapped[str] = mapped_column(Text)
    public_jwk: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Binding(Base):
    """A 户号 bound to an account, with where it is served (for back-office search)."""

    __tablename__ = "bindings"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    customer_no: Mapped[str] = mapped_column(String(16), index=True)
    supply_region: Mapped[str] = mapped_column(String(128), index=True)
    meter_book: Mapped[str] = mapped_column(String(64), index=True)
    bound_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    __table_args__ = (
        UniqueConstraint("account_id", "customer_no", name="uq_bindings_account_customer"),
    )


class ServicePasswordLock(Base):
    """Failures of a 户号's service password (服务密码): five lock that path for 30 minutes."""

    __tablename__ = "service_password_locks"

    customer_no: Mapped[str] = mapped_column(String(16), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class RealnameApplication(Base):
    """A real-name application (实名认证): name, ID number (sealed) and ID image, under review."""

    __tablename__ = "realname_applications"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[str] = mapped_column(
        ForeignKey("accounts.id", ondelete="CASCADE"), index=True
    )
    name_sealed: Mapped[str] = mapped_column(Text)
    id_number_sealed: Mapped[str] = mapped_column(Text)
    id_number_hash: Mapped[str] = mapped_column(String(64), index=True)
    image_ref: Mapped[str] = mapped_column(String(256))
    image_type: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending", index=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reviewer: Mapped[str | None] = mapped_column(String(64), nullable=True)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Subscription(Base):
    """A notice subscription of an account: bill or outage notices of a 户号 on a channel."""

    __tablename__ = "subscriptions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    customer_no: Mapped[str] = mapped_column(String(16))
    topic: Mapped[str] = mapped_column(String(16))
    channel: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(default=True)

    __table_args__ = (
        UniqueConstraint(
            "account_id", "customer_no", "topic", "channel", name="uq_subscriptions_item"
        ),
        Index("ix_subscriptions_account", "account_id"),
    )

"""Permission tables (R10): menus and functions per channel, interface permissions, field rules."""

from __future__ import annotations

from sqlalchemy import Boolean, CheckConstraint, ForeignKey, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from gridgate.catalog.models import Channel, Component, Interface
from gridgate.storage.models import Base, BigIntId

__all__ = ["FieldRuleRow", "FunctionInterface", "FunctionRow", "InterfacePermission", "MenuRow"]


class MenuRow(Base):
    """A menu of a channel's app, in a tree, with the level needed to open it."""

    __tablename__ = "perm_menus"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("perm_menus.id", ondelete="RESTRICT"), nullable=True
    )
    position: Mapped[int] = mapped_column(Integer, default=0)
    min_level: Mapped[int] = mapped_column(Integer, default=0)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)

    channel: Mapped[Channel] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("channel_id", "code", name="uq_perm_menus_channel_code"),
        CheckConstraint("min_level BETWEEN 0 AND 2", name="level_range"),
    )


class FunctionRow(Base):
    """A function (button, action) under a menu, with its own level."""

    __tablename__ = "perm_functions"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    menu_id: Mapped[int] = mapped_column(
        ForeignKey("perm_menus.id", ondelete="RESTRICT"), index=True
    )
    code: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(128))
    min_level: Mapped[int] = mapped_column(Integer, default=0)

    menu: Mapped[MenuRow] = relationship(lazy="joined")
    #: The interfaces the function calls: on its channel they need at least its level. Loaded
    #: only when asked for (``selectinload``): the menus answer reads functions without them.
    covers: Mapped[list[FunctionInterface]] = relationship(
        lazy="raise",
        cascade="all, delete-orphan",
        passive_deletes=True,
        back_populates="function",
    )

    __table_args__ = (
        UniqueConstraint("menu_id", "code", name="uq_perm_functions_menu_code"),
        CheckConstraint("min_level BETWEEN 0 AND 2", name="level_range"),
    )


class FunctionInterface(Base):
    """Function ``function`` covers interface ``interface`` (function permission, R10)."""

    __tablename__ = "perm_function_interfaces"

    function_id: Mapped[int] = mapped_column(
        ForeignKey("perm_functions.id", ondelete="CASCADE"), primary_key=True
    )
    interface_id: Mapped[int] = mapped_column(
        ForeignKey("interfaces.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    function: Mapped[FunctionRow] = relationship(back_populates="covers")
    interface: Mapped[Interface] = relationship(lazy="joined")


class InterfacePermission(Base):
    """Which channel (through which component) may call an interface, from which level."""

    __tablename__ = "perm_interfaces"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    channel_id: Mapped[int] = mapped_column(
        ForeignKey("channels.id", ondelete="RESTRICT"), index=True
    )
    interface_id: Mapped[int] = mapped_column(
        ForeignKey("interfaces.id", ondelete="CASCADE"), index=True
    )
    component_id: Mapped[int | None] = mapped_column(
        ForeignKey("components.id", ondelete="RESTRICT"), nullable=True
    )
    min_level: Mapped[int] = mapped_column(Integer, default=0)

    channel: Mapped[Channel] = relationship(lazy="joined")
    interface: Mapped[Interface] = relationship(lazy="joined")
    component: Mapped[Component | None] = relationship(lazy="joined")

    __table_args__ = (
        UniqueConstraint("channel_id", "interface_id", name="uq_perm_interfaces_pair"),
        CheckConstraint("min_level BETWEEN 0 AND 2", name="level_range"),
    )


class FieldRuleRow(Base):
    """Data control (数据控制): drop or mask a response field for callers below a level."""

    __tablename__ = "perm_fields"

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True)
    interface_id: Mapped[int] = mapped_column(
        ForeignKey("interfaces.id", ondelete="CASCADE"), index=True
    )
    #: None: the rule holds on every channel.
    channel_id: Mapped[int | None] = mapped_column(
        ForeignKey("channels.id", ondelete="RESTRICT"), nullable=True
    )
    path: Mapped[str] = mapped_column(String(256))
    action: Mapped[str] = mapped_column(String(32))
    below_level: Mapped[int] = mapped_column(Integer)

    interface: Mapped[Interface] = relationship(lazy="joined")
    channel: Mapped[Channel | None] = relationship(lazy="joined")

    __table_args__ = (CheckConstraint("below_level BETWEEN 1 AND 3", name="level_range"),)

"""Request/response models of the permission admin API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from gridgate.schemas import Code, Level, Name, StrictModel

__all__ = [
    "FieldRuleIn",
    "FieldRuleOut",
    "FunctionIn",
    "FunctionOut",
    "InterfacePermissionIn",
    "InterfacePermissionOut",
    "MenuIn",
    "MenuOut",
]

Path = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Action = Annotated[str, StringConstraints(min_length=1, max_length=32)]


class MenuIn(StrictModel):
    """A menu of a channel, optionally under a parent menu (by code)."""

    channel: Code
    code: Code
    name: Name
    parent: Code | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] = 0
    min_level: Level = 0
    enabled: bool = True


class MenuOut(BaseModel):
    """A menu."""

    id: int
    channel: str
    code: str
    name: str
    parent: str | None
    position: int
    min_level: int
    enabled: bool


class FunctionIn(StrictModel):
    """A function under a menu."""

    channel: Code
    menu: Code
    code: Code
    name: Name
    min_level: Level = 0


class FunctionOut(BaseModel):
    """A function."""

    id: int
    channel: str
    menu: str
    code: str
    name: str
    min_level: int


class InterfacePermissionIn(StrictModel):
    """A channel (optionally through a component) may call an interface from a level."""

    channel: Code
    interface: Code
    component: Code | None = None
    min_level: Level = 0


class InterfacePermissionOut(BaseModel):
    """An interface permission."""

    id: int
    channel: str
    interface: str
    component: str | None
    min_level: int


class FieldRuleIn(StrictModel):
    """Drop or mask a response field (JSON path) for callers below ``below_level``."""

    interface: Code
    channel: Code | None = None
    path: Path
    action: Action
    below_level: Annotated[int, Field(ge=1, le=3)]


class FieldRuleOut(BaseModel):
    """A field rule."""

    id: int
    interface: str
    channel: str | None
    path: str
    action: str
    below_level: int

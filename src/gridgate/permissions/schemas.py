"""Request/response models of the permission admin API."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, Field, StringConstraints

from gridgate.schemas import Code, Level, Name, StrictModel

__all__ = [
    "FieldRuleIn",
    "FieldRuleOut",
    "FieldRuleUpdate",
    "FunctionIn",
    "FunctionOut",
    "FunctionUpdate",
    "InterfacePermissionIn",
    "InterfacePermissionOut",
    "InterfacePermissionUpdate",
    "MenuIn",
    "MenuOut",
    "MenuUpdate",
]

Path = Annotated[str, StringConstraints(min_length=1, max_length=256)]
#: Codes of the interfaces a function covers (at most as many as an authorization list).
InterfaceCodes = Annotated[list[Code], Field(max_length=1000)]
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


class MenuUpdate(StrictModel):
    """Changes to a menu; absent fields stay, its channel and code too. ``parent: null``
    makes it a top-level menu."""

    name: Name | None = None
    parent: Code | None = None
    position: Annotated[int, Field(ge=0, le=10_000)] | None = None
    min_level: Level | None = None
    enabled: bool | None = None


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
    """A function under a menu, and the interfaces it covers: on its channel, a caller needs
    the function's level (with its menus') to call them."""

    channel: Code
    menu: Code
    code: Code
    name: Name
    min_level: Level = 0
    interfaces: InterfaceCodes = Field(default_factory=list)


class FunctionUpdate(StrictModel):
    """Changes to a function; absent fields stay, its channel and code too. ``menu`` moves it
    to another menu of its channel; ``interfaces`` replaces the list it covers."""

    menu: Code | None = None
    name: Name | None = None
    min_level: Level | None = None
    interfaces: InterfaceCodes | None = None


class FunctionOut(BaseModel):
    """A function with the interfaces it covers (sorted codes)."""

    id: int
    channel: str
    menu: str
    code: str
    name: str
    min_level: int
    interfaces: list[str]


class InterfacePermissionIn(StrictModel):
    """A channel (optionally through a component) may call an interface from a level."""

    channel: Code
    interface: Code
    component: Code | None = None
    min_level: Level = 0


class InterfacePermissionUpdate(StrictModel):
    """Changes to an interface permission; its channel and interface stay. ``component: null``
    removes the component."""

    component: Code | None = None
    min_level: Level | None = None


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


class FieldRuleUpdate(StrictModel):
    """Changes to a field rule; its interface stays. ``channel: null`` makes it hold on every
    channel."""

    channel: Code | None = None
    path: Path | None = None
    action: Action | None = None
    below_level: Annotated[int, Field(ge=1, le=3)] | None = None


class FieldRuleOut(BaseModel):
    """A field rule."""

    id: int
    interface: str
    channel: str | None
    path: str
    action: str
    below_level: int

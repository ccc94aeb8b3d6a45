"""Permission maintenance (R10): menus, functions, interface permissions and field rules.

Every change is validated, audited and counted in the catalog revision, so gateways pick it up
with the rest of the catalog (≤ 1 s).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from gridgate.catalog.models import Channel, Component, Interface
from gridgate.catalog.services import record_catalog_change
from gridgate.errors import Conflict, InvalidRequest, NotFound
from gridgate.operators.audit import Actor
from gridgate.permissions.fields import parse_action, parse_path
from gridgate.permissions.models import (
    FieldRuleRow,
    FunctionInterface,
    FunctionRow,
    InterfacePermission,
    MenuRow,
)
from gridgate.permissions.schemas import (
    FieldRuleIn,
    FieldRuleOut,
    FieldRuleUpdate,
    FunctionIn,
    FunctionOut,
    FunctionUpdate,
    InterfacePermissionIn,
    InterfacePermissionOut,
    InterfacePermissionUpdate,
    MenuIn,
    MenuOut,
    MenuUpdate,
)

__all__ = ["PermissionService", "channel_menus"]


def _changes(data: BaseModel, nullable: Iterable[str] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets; ``null`` is accepted only where a value may be absent."""
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise InvalidRequest(f"{field} cannot be null", field=field)
    return changes


async def channel_menus(
    session: AsyncSession, channel: str
) -> tuple[list[MenuRow], list[FunctionRow]]:
    """The enabled menus of a channel (by ``position``, then code) and their functions (by code),
    as apps show them to customers (``GET /api/v1/me/menus``)."""
    menus = list(
        await session.scalars(
            select(MenuRow)
            .join(Channel, MenuRow.channel)
            .where(Channel.code == channel, MenuRow.enabled.is_(True))
            .order_by(MenuRow.position, MenuRow.code)
        )
    )
    functions = list(
        await session.scalars(
            select(FunctionRow)
            .where(FunctionRow.menu_id.in_([m.id for m in menus]))
            .order_by(FunctionRow.code)
        )
    )
    return menus, functions


def _check_field_rule(path: str, action: str) -> None:
    try:
        parse_path(path)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="path") from None
    try:
        parse_action(action)
    except ValueError as exc:
        raise InvalidRequest(str(exc), field="action") from None


def menu_out(row: MenuRow, parent: str | None) -> MenuOut:
    """The public view of a menu."""
    return MenuOut(
        id=row.id,
        channel=row.channel.code,
        code=row.code,
        name=row.name,
        parent=parent,
        position=row.position,
        min_level=row.min_level,
        enabled=row.enabled,
    )


class PermissionService:
    """Changes to the permission model inside one transaction."""

    def __init__(self, session: AsyncSession, actor: Actor) -> None:
        self.session = session
        self.actor = actor
        #: True once this transaction changed the permission model (gateways must reload).
        self.changed = False

    async def _changed(
        self, action: str, kind: str, key: str, before: BaseModel | None, after: BaseModel | None
    ) -> None:
        await record_catalog_change(self.session, self.actor, action, kind, key, before, after)
        self.changed = True

    async def _updated(self, kind: str, key: int, before: BaseModel, after: BaseModel) -> None:
        # A PATCH that changes nothing is not a change: no audit event, no catalog reload.
        if before != after:
            await self._changed(f"{kind}.update", kind, str(key), before, after)

    async def _by_code(self, model: type[Any], code: str, field: str) -> Any:
        row = (await self.session.scalars(select(model).filter_by(code=code))).first()
        if row is None:
            raise InvalidRequest(f"{code!r} does not exist", field=field)
        return row

    async def _get(self, model: type[Any], row_id: int, kind: str) -> Any:
        row = await self.session.get(model, row_id)
        if row is None:
            raise NotFound(f"{kind} {row_id} does not exist")
        return row

    async def _on_channel(
        self, model: type[Any], channel_id: int, code: str, kind: str, field: str
    ) -> Any:
        """The ``kind`` with ``code`` on the channel; InvalidRequest on ``field`` if none."""
        row = (
            await self.session.scalars(select(model).filter_by(channel_id=channel_id, code=code))
        ).first()
        if row is None:
            raise InvalidRequest(f"{kind} {code!r} does not exist on this channel", field=field)
        return row

    # -- menus ------------------------------------------------------------------------------

    async def _menu_out(self, row: MenuRow) -> MenuOut:
        parent = await self.session.get(MenuRow, row.parent_id) if row.parent_id else None
        return menu_out(row, parent.code if parent else None)

    async def menus(self, channel: str | None) -> list[MenuOut]:
        """Menus, by channel, position and code."""
        query = (
            select(MenuRow)
            .join(Channel, MenuRow.channel)
            .order_by(Channel.code, MenuRow.position, MenuRow.code)
        )
        if channel:
            query = query.where(Channel.code == channel)
        rows = list(await self.session.scalars(query))
        codes = {row.id: row.code for row in rows}
        return [menu_out(row, codes.get(row.parent_id) if row.parent_id else None) for row in rows]

    async def create_menu(self, data: MenuIn) -> MenuOut:
        """Add a menu (codes unique within a channel; the parent on the same channel)."""
        channel = await self._by_code(Channel, data.channel, "channel")
        if (
            await self.session.scalars(
                select(MenuRow).filter_by(channel_id=channel.id, code=data.code)
            )
        ).first():
            raise Conflict(f"menu {data.code!r} already exists", field="code")
        parent_id = None
        if data.parent:
            parent = await self._on_channel(MenuRow, channel.id, data.parent, "menu", "parent")
            parent_id = parent.id
        row = MenuRow(
            channel=channel,
            code=data.code,
            name=data.name,
            parent_id=parent_id,
            position=data.position,
            min_level=data.min_level,
            enabled=data.enabled,
        )
        self.session.add(row)
        await self.session.flush()
        out = await self._menu_out(row)
        await self._changed("menu.create", "menu", str(row.id), None, out)
        return out

    async def update_menu(self, menu_id: int, data: MenuUpdate) -> MenuOut:
        """Change a menu; a new parent must be on its channel and not below it."""
        row = await self._get(MenuRow, menu_id, "menu")
        before = await self._menu_out(row)
        changes = _changes(data, nullable={"parent"})
        if "parent" in changes:
            row.parent_id = await self._new_parent(row, changes.pop("parent"))
        for field, value in changes.items():
            setattr(row, field, value)
        await self.session.flush()
        after = await self._menu_out(row)
        await self._updated("menu", menu_id, before, after)
        return after

    async def _new_parent(self, row: MenuRow, code: str | None) -> int | None:
        if code is None:
            return None
        parent = await self._on_channel(MenuRow, row.channel_id, code, "menu", "parent")
        # Walk up from the new parent: meeting the menu itself would close a loop in the tree.
        ancestor: MenuRow | None = parent
        while ancestor is not None:
            if ancestor.id == row.id:
                raise InvalidRequest("a menu cannot be placed under itself", field="parent")
            ancestor = (
                await self.session.get(MenuRow, ancestor.parent_id) if ancestor.parent_id else None
            )
        return int(parent.id)

    async def delete_menu(self, menu_id: int) -> None:
        """Remove a menu without sub-menus or functions."""
        row = await self._get(MenuRow, menu_id, "menu")
        children = await self.session.scalar(
            select(func.count()).select_from(MenuRow).where(MenuRow.parent_id == menu_id)
        )
        functions = await self.session.scalar(
            select(func.count()).select_from(FunctionRow).where(FunctionRow.menu_id == menu_id)
        )
        if children or functions:
            raise Conflict("the menu still has sub-menus or functions")
        before = await self._menu_out(row)
        await self.session.delete(row)
        await self._changed("menu.delete", "menu", str(menu_id), before, None)

    # -- functions --------------------------------------------------------------------------

    @staticmethod
    def _function_out(row: FunctionRow) -> FunctionOut:
        return FunctionOut(
            id=row.id,
            channel=row.menu.channel.code,
            menu=row.menu.code,
            code=row.code,
            name=row.name,
            min_level=row.min_level,
            interfaces=sorted(cover.interface.code for cover in row.covers),
        )

    async def _coverable(self, channel_id: int, codes: list[str]) -> list[Interface]:
        """The interfaces ``codes`` names, each authorized for the channel (a function cannot
        open an interface its channel may not call; it only raises the level needed)."""
        wanted = sorted(set(codes))
        if not wanted:
            return []
        rows = list(await self.session.scalars(select(Interface).where(Interface.code.in_(wanted))))
        missing = sorted(set(wanted) - {row.code for row in rows})
        if missing:
            raise InvalidRequest(f"unknown interfaces: {', '.join(missing)}", field="interfaces")
        outside = sorted(
            row.code
            for row in rows
            if all(grant.channel_id != channel_id for grant in row.channel_grants)
        )
        if outside:
            raise InvalidRequest(
                f"the channel is not authorized for: {', '.join(outside)}", field="interfaces"
            )
        return rows

    @staticmethod
    def _cover(row: FunctionRow, interfaces: list[Interface]) -> None:
        """Make ``interfaces`` the ones the function covers (entries that stay are kept)."""
        kept = {cover.interface_id: cover for cover in row.covers}
        row.covers = [
            kept.get(interface.id) or FunctionInterface(interface=interface)
            for interface in interfaces
        ]

    async def _function(self, function_id: int) -> FunctionRow:
        """One function with the interfaces it covers; NotFound if there is none."""
        row = (
            await self.session.scalars(
                select(FunctionRow)
                .where(FunctionRow.id == function_id)
                .options(selectinload(FunctionRow.covers))
            )
        ).first()
        if row is None:
            raise NotFound(f"function {function_id} does not exist")
        return row

    async def functions(self, channel: str | None) -> list[FunctionOut]:
        """Functions, by channel, menu and code."""
        query = (
            select(FunctionRow)
            .options(selectinload(FunctionRow.covers))
            .join(MenuRow, FunctionRow.menu)
            .join(Channel, MenuRow.channel)
            .order_by(Channel.code, MenuRow.code, FunctionRow.code)
        )
        if channel:
            query = query.where(Channel.code == channel)
        return [self._function_out(row) for row in await self.session.scalars(query)]

    async def create_function(self, data: FunctionIn) -> FunctionOut:
        """Add a function under a menu of a channel, with the interfaces it covers."""
        channel = await self._by_code(Channel, data.channel, "channel")
        menu = await self._on_channel(MenuRow, channel.id, data.menu, "menu", "menu")
        if (
            await self.session.scalars(
                select(FunctionRow).filter_by(menu_id=menu.id, code=data.code)
            )
        ).first():
            raise Conflict(f"function {data.code!r} already exists", field="code")
        interfaces = await self._coverable(channel.id, data.interfaces)
        row = FunctionRow(
            menu=menu,
            code=data.code,
            name=data.name,
            min_level=data.min_level,
            covers=[FunctionInterface(interface=interface) for interface in interfaces],
        )
        self.session.add(row)
        await self.session.flush()
        out = self._function_out(row)
        await self._changed("function.create", "function", str(row.id), None, out)
        return out

    async def update_function(self, function_id: int, data: FunctionUpdate) -> FunctionOut:
        """Change a function; ``menu`` moves it to another menu of its channel, ``interfaces``
        replaces what it covers."""
        row = await self._function(function_id)
        before = self._function_out(row)
        changes = _changes(data)
        if "interfaces" in changes:
            self._cover(row, await self._coverable(row.menu.channel_id, changes.pop("interfaces")))
        menu_code = changes.pop("menu", None)
        if menu_code is not None and menu_code != row.menu.code:
            menu = await self._on_channel(MenuRow, row.menu.channel_id, menu_code, "menu", "menu")
            if (
                await self.session.scalars(
                    select(FunctionRow).filter_by(menu_id=menu.id, code=row.code)
                )
            ).first():
                raise Conflict(f"function {row.code!r} already exists in that menu", field="menu")
            row.menu = menu
        for field, value in changes.items():
            setattr(row, field, value)
        await self.session.flush()
        after = self._function_out(row)
        await self._updated("function", function_id, before, after)
        return after

    async def delete_function(self, function_id: int) -> None:
        """Remove a function."""
        row = await self._function(function_id)
        before = self._function_out(row)
        await self.session.delete(row)
        await self._changed("function.delete", "function", str(function_id), before, None)

    # -- interface permissions --------------------------------------------------------------

    @staticmethod
    def _permission_out(row: InterfacePermission) -> InterfacePermissionOut:
        return InterfacePermissionOut(
            id=row.id,
            channel=row.channel.code,
            interface=row.interface.code,
            component=row.component.code if row.component else None,
            min_level=row.min_level,
        )

    async def interface_permissions(self, channel: str | None) -> list[InterfacePermissionOut]:
        """Interface permissions, by channel and interface."""
        query = (
            select(InterfacePermission)
            .join(Channel, InterfacePermission.channel)
            .join(Interface, InterfacePermission.interface)
            .order_by(Channel.code, Interface.code)
        )
        if channel:
            query = query.where(Channel.code == channel)
        return [self._permission_out(row) for row in await self.session.scalars(query)]

    async def create_interface_permission(
        self, data: InterfacePermissionIn
    ) -> InterfacePermissionOut:
        """Let a channel (through a component) call an interface from a level."""
        channel = await self._by_code(Channel, data.channel, "channel")
        interface = await self._by_code(Interface, data.interface, "interface")
        component = None
        if data.component:
            component = await self._on_channel(
                Component, channel.id, data.component, "component", "component"
            )
        if (
            await self.session.scalars(
                select(InterfacePermission).filter_by(
                    channel_id=channel.id, interface_id=interface.id
                )
            )
        ).first():
            raise Conflict(
                "this channel already has a permission for this interface", field="interface"
            )
        row = InterfacePermission(
            channel=channel, interface=interface, component=component, min_level=data.min_level
        )
        self.session.add(row)
        await self.session.flush()
        out = self._permission_out(row)
        await self._changed(
            "interface_permission.create", "interface_permission", str(row.id), None, out
        )
        return out

    async def update_interface_permission(
        self, permission_id: int, data: InterfacePermissionUpdate
    ) -> InterfacePermissionOut:
        """Change the component or level of an interface permission."""
        row = await self._get(InterfacePermission, permission_id, "interface permission")
        before = self._permission_out(row)
        changes = _changes(data, nullable={"component"})
        if "component" in changes:
            code = changes.pop("component")
            component = None
            if code is not None:
                component = await self._on_channel(
                    Component, row.channel_id, code, "component", "component"
                )
            row.component = component
        for field, value in changes.items():
            setattr(row, field, value)
        await self.session.flush()
        after = self._permission_out(row)
        await self._updated("interface_permission", permission_id, before, after)
        return after

    async def delete_interface_permission(self, permission_id: int) -> None:
        """Remove an interface permission."""
        row = await self._get(InterfacePermission, permission_id, "interface permission")
        before = self._permission_out(row)
        await self.session.delete(row)
        await self._changed(
            "interface_permission.delete", "interface_permission", str(permission_id), before, None
        )

    # -- field rules ------------------------------------------------------------------------

    @staticmethod
    def _rule_out(row: FieldRuleRow) -> FieldRuleOut:
        return FieldRuleOut(
            id=row.id,
            interface=row.interface.code,
            channel=row.channel.code if row.channel else None,
            path=row.path,
            action=row.action,
            below_level=row.below_level,
        )

    async def field_rules(self, interface: str | None) -> list[FieldRuleOut]:
        """Field rules, by interface and path."""
        query = (
            select(FieldRuleRow)
            .join(Interface, FieldRuleRow.interface)
            .order_by(Interface.code, FieldRuleRow.path, FieldRuleRow.id)
        )
        if interface:
            query = query.where(Interface.code == interface)
        return [self._rule_out(row) for row in await self.session.scalars(query)]

    async def create_field_rule(self, data: FieldRuleIn) -> FieldRuleOut:
        """Drop or mask a response field for callers below a level."""
        _check_field_rule(data.path, data.action)
        interface = await self._by_code(Interface, data.interface, "interface")
        channel = await self._by_code(Channel, data.channel, "channel") if data.channel else None
        row = FieldRuleRow(
            interface=interface,
            channel=channel,
            path=data.path,
            action=data.action,
            below_level=data.below_level,
        )
        self.session.add(row)
        await self.session.flush()
        out = self._rule_out(row)
        await self._changed("field_rule.create", "field_rule", str(row.id), None, out)
        return out

    async def update_field_rule(self, rule_id: int, data: FieldRuleUpdate) -> FieldRuleOut:
        """Change a field rule, checked as on create."""
        row = await self._get(FieldRuleRow, rule_id, "field rule")
        before = self._rule_out(row)
        changes = _changes(data, nullable={"channel"})
        _check_field_rule(changes.get("path", row.path), changes.get("action", row.action))
        if "channel" in changes:
            code = changes.pop("channel")
            row.channel = await self._by_code(Channel, code, "channel") if code else None
        for field, value in changes.items():
            setattr(row, field, value)
        await self.session.flush()
        after = self._rule_out(row)
        await self._updated("field_rule", rule_id, before, after)
        return after

    async def delete_field_rule(self, rule_id: int) -> None:
        """Remove a field rule."""
        row = await self._get(FieldRuleRow, rule_id, "field rule")
        before = self._rule_out(row)
        await self.session.delete(row)
        await self._changed("field_rule.delete", "field_rule", str(rule_id), before, None)

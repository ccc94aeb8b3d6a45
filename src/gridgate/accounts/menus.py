"""The menus a channel shows a customer (R10 menu permissions), locked above their level."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from gridgate.accounts.schemas import MenuItemOut, MenusOut
from gridgate.permissions.models import FunctionRow, MenuRow
from gridgate.permissions.services import channel_menus

__all__ = ["menus_for"]


def _item(code: str, name: str, need: int, level: int) -> MenuItemOut:
    locked = level < need
    # The app can ask the customer to bind or verify to unlock it.
    return MenuItemOut(code=code, name=name, locked=locked, required_level=need if locked else None)


def menu_tree(menus: list[MenuRow], functions: list[FunctionRow], level: int) -> list[MenuItemOut]:
    """The menus as a tree: an item needs the highest ``min_level`` of it and its ancestors."""
    by_parent: dict[int | None, list[MenuRow]] = {}
    for menu in menus:
        by_parent.setdefault(menu.parent_id, []).append(menu)

    def tree(parent: int | None, inherited: int) -> list[MenuItemOut]:
        items = []
        for menu in by_parent.get(parent, []):
            need = max(inherited, menu.min_level)
            item = _item(menu.code, menu.name, need, level)
            item.functions = [
                _item(f.code, f.name, max(need, f.min_level), level)
                for f in functions
                if f.menu_id == menu.id
            ]
            item.children = tree(menu.id, need)
            items.append(item)
        return items

    return tree(None, 0)


async def menus_for(session: AsyncSession, channel: str, level: int) -> MenusOut:
    """The channel's enabled menus for a caller at ``level``."""
    menus, functions = await channel_menus(session, channel)
    return MenusOut(channel=channel, level=level, items=menu_tree(menus, functions, level))

"""Levels that components and functions add to interfaces, per channel (R6, R9, R10).

The gateway decides with one rule (``required_level`` in gateway/snapshot.py and the engine's
``Snapshot::required_level``): the interface's ``min_level``, its interface permission on the
channel, and a *floor* per (channel, interface) compiled here. A floor only raises the level
needed on that channel, or refuses the interface there; it never opens an interface to a
channel, and never restricts other channels.

- A **component** named by an interface permission: its ``min_level``; a disabled component
  refuses the interface on its channel.
- **Functions** covering an interface on their channel: the lowest effective level among them
  (any function the customer can use suffices). A function's effective level is the highest
  ``min_level`` of it and its menus up to the root, as ``GET /api/v1/me/menus`` shows it; a
  function under a disabled menu cannot be used, and when no covering function can, the
  interface is refused on that channel.

The floor of a (channel, interface) is the highest of its component's and its functions'
floors; a refusal by either refuses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Floor", "MenuNode", "combine_floors", "function_floors", "menu_levels"]


@dataclass(frozen=True, slots=True)
class MenuNode:
    """What the level of a menu depends on."""

    id: int
    parent_id: int | None
    min_level: int
    enabled: bool


@dataclass(frozen=True, slots=True)
class Floor:
    """On ``channel``, ``interface`` needs at least ``level``; None: it is refused there."""

    channel: str
    interface: str
    level: int | None


def menu_levels(menus: Iterable[MenuNode]) -> dict[int, int | None]:
    """The level each menu needs: the highest of it and its ancestors; None when it or an
    ancestor is disabled (the menus answer leaves it out, with everything under it)."""
    by_id = {menu.id: menu for menu in menus}
    found: dict[int, int | None] = {}

    def level(menu_id: int) -> int | None:
        if menu_id in found:
            return found[menu_id]
        # Walk up to the first known ancestor; the admin API keeps the tree a tree, and a
        # loop that got into the database anyway ends the walk (and refuses).
        chain: list[MenuNode] = []
        seen: set[int] = set()
        current: int | None = menu_id
        inherited: int | None = 0
        while current is not None:
            if current in found:
                inherited = found[current]
                break
            node = by_id.get(current)
            if node is None or current in seen:
                inherited = None
                break
            seen.add(current)
            chain.append(node)
            current = node.parent_id
        for node in reversed(chain):
            if inherited is not None and node.enabled:
                inherited = max(inherited, node.min_level)
            else:
                inherited = None
            found[node.id] = inherited
        return found[menu_id]

    for menu_id in by_id:
        level(menu_id)
    return found


def function_floors(
    covers: Iterable[tuple[str, str, int, int]], menus: Mapping[int, int | None]
) -> list[Floor]:
    """Floors from functions: ``covers`` holds (channel, interface, menu id, function level)
    for every interface a function covers, ``menus`` the levels of :func:`menu_levels`."""
    usable: dict[tuple[str, str], int | None] = {}
    for channel, interface, menu_id, own in covers:
        menu = menus.get(menu_id)
        level = None if menu is None else max(menu, own)
        key = (channel, interface)
        best = usable.get(key)
        if level is not None and (best is None or level < best):
            usable[key] = level  # the lowest usable function wins
        else:
            usable.setdefault(key, None)
    return [Floor(channel, interface, level) for (channel, interface), level in usable.items()]


def combine_floors(*sources: Iterable[Floor]) -> dict[tuple[str, str], int | None]:
    """One floor per (channel, interface): the highest, or None when any source refuses."""
    combined: dict[tuple[str, str], int | None] = {}
    for source in sources:
        for floor in source:
            key = (floor.channel, floor.interface)
            if key not in combined:
                combined[key] = floor.level
                continue
            known = combined[key]
            if known is None or floor.level is None:
                combined[key] = None
            else:
                combined[key] = max(known, floor.level)
    return combined

"""The levels components and functions add to interfaces, per channel."""

from __future__ import annotations

from gridgate.permissions.levels import (
    Floor,
    MenuNode,
    combine_floors,
    function_floors,
    menu_levels,
)

#: account (0) → bills (1) → detail (0, so 1); account → closed (disabled) → inner (0).
MENUS = [
    MenuNode(1, None, 0, True),
    MenuNode(2, 1, 1, True),
    MenuNode(3, 2, 0, True),
    MenuNode(4, 1, 0, False),
    MenuNode(5, 4, 0, True),
    MenuNode(6, None, 2, True),
]


def test_a_menu_needs_the_highest_level_on_its_way_to_the_root() -> None:
    assert menu_levels(MENUS) == {1: 0, 2: 1, 3: 1, 4: None, 5: None, 6: 2}


def test_a_loop_or_a_missing_parent_refuses_rather_than_hangs() -> None:
    looped = [MenuNode(1, 2, 0, True), MenuNode(2, 1, 0, True), MenuNode(3, 99, 0, True)]
    assert menu_levels(looped) == {1: None, 2: None, 3: None}


def test_the_lowest_usable_function_wins() -> None:
    levels = menu_levels(MENUS)
    floors = function_floors(
        [
            ("app", "bills", 3, 2),  # 2
            ("app", "bills", 2, 0),  # 1: the one that counts
            ("app", "bills", 5, 0),  # under a disabled menu: not usable
            ("app", "usage", 5, 0),  # only under a disabled menu: refused
            ("app", "pay", 6, 0),  # the menu's level, 2
            ("web", "bills", 1, 0),  # another channel keeps its own
        ],
        levels,
    )
    assert sorted(floors, key=lambda f: (f.channel, f.interface)) == [
        Floor("app", "bills", 1),
        Floor("app", "pay", 2),
        Floor("app", "usage", None),
        Floor("web", "bills", 0),
    ]


def test_a_usable_function_after_an_unusable_one_still_counts() -> None:
    floors = function_floors([("app", "bills", 5, 0), ("app", "bills", 1, 1)], menu_levels(MENUS))
    assert floors == [Floor("app", "bills", 1)]


def test_sources_combine_to_the_highest_and_any_refusal_refuses() -> None:
    components = [Floor("app", "bills", 2), Floor("app", "pay", None), Floor("app", "usage", 0)]
    functions = [Floor("app", "bills", 1), Floor("app", "pay", 0), Floor("app", "usage", None)]
    assert combine_floors(components, functions) == {
        ("app", "bills"): 2,
        ("app", "pay"): None,
        ("app", "usage"): None,
    }
    assert combine_floors(functions, [Floor("web", "bills", 1)]) == {
        ("app", "bills"): 1,
        ("app", "pay"): 0,
        ("app", "usage"): None,
        ("web", "bills"): 1,
    }

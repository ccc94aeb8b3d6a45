"""The demo catalog's function permissions: they name real interfaces, and ask no more than the
interfaces themselves (the demo must behave the same with or without them)."""

from __future__ import annotations

from gridgate.demo.catalog import FUNCTION_INTERFACES, INTERFACES, MENUS


def test_functions_cover_existing_interfaces_at_their_own_levels() -> None:
    interfaces = {item.code: item.min_level for item in INTERFACES}
    menus = {code: (parent, level) for code, _, parent, level, _ in MENUS}

    def menu_level(code: str | None) -> int:
        if code is None:
            return 0
        parent, level = menus[code]
        return max(level, menu_level(parent))

    functions = {
        function: max(menu_level(code), level)
        for code, _, _, _, listed in MENUS
        for function, _, level in listed
    }
    assert set(FUNCTION_INTERFACES) <= set(functions)
    for function, covered in FUNCTION_INTERFACES.items():
        for interface in covered:
            assert interface in interfaces, interface
            assert functions[function] <= interfaces[interface], (function, interface)

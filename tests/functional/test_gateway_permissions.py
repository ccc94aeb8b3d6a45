"""Permissions and data control in the gateway: interface permissions, 户号 scope, fields."""

from __future__ import annotations

from typing import Any

from gridgate.catalog.schemas import ComponentCreate, ComponentUpdate
from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.permissions.schemas import (
    FieldRuleIn,
    FunctionIn,
    InterfacePermissionIn,
    InterfacePermissionUpdate,
    MenuIn,
    MenuUpdate,
)
from gridgate.permissions.services import PermissionService
from tests.functional.gateway_harness import APP_SECRET, Gateway

SCOPED = "/api/v1/t/{customer_no}/ok"


def _code(answer: Any) -> str:
    return str(answer.json().get("code")) if answer.status_code >= 400 else str(answer.status_code)


async def test_interface_permission_levels_and_channels(gateway: Gateway) -> None:
    await gateway.interface("p.read", "/api/v1/p/read/ok", channels=["app", "web"])
    await gateway.permit(
        "create_interface_permission",
        InterfacePermissionIn(channel="app", interface="p.read", min_level=1),
    )
    low = await gateway.send("GET", "/api/v1/p/read/ok", token=gateway.token(level=0))
    assert low.status_code == 403 and low.json()["required_level"] == 1
    assert (
        await gateway.send("GET", "/api/v1/p/read/ok", token=gateway.token(level=1))
    ).status_code == 200
    web = await gateway.send(
        "GET",
        "/api/v1/p/read/ok",
        channel="web",
        secret="web-secret-for-gateway-tests",
        token=gateway.token(level=2, channel="web"),
    )
    assert web.status_code == 403 and web.json()["code"] == "perm.denied"


async def test_data_scope_on_path_and_body(gateway: Gateway) -> None:
    await gateway.interface(
        "s.path", SCOPED.replace("/t/", "/s/"), min_level=1, customer_scope="path:customer_no"
    )
    await gateway.interface(
        "s.body", "/api/v1/s/pay/ok", method="POST", min_level=1, customer_scope="body:customer_no"
    )
    mine = gateway.token(level=1, bound=("3300000001",))
    assert (await gateway.send("GET", "/api/v1/s/3300000001/ok", token=mine)).status_code == 200
    other = await gateway.send("GET", "/api/v1/s/3300000002/ok", token=mine)
    assert other.status_code == 403 and other.json()["code"] == "perm.not_bound"
    paid = await gateway.send(
        "POST", "/api/v1/s/pay/ok", token=mine, body=b'{"customer_no":"3300000001","amount":"1.00"}'
    )
    assert paid.status_code == 200
    refused = await gateway.send(
        "POST", "/api/v1/s/pay/ok", token=mine, body=b'{"customer_no":"3300000009","amount":"1.00"}'
    )
    assert _code(refused) == "perm.not_bound"
    garbage = await gateway.send("POST", "/api/v1/s/pay/ok", token=mine, body=b"{not json")
    assert _code(garbage) == "request.invalid"


async def test_fields_dropped_and_masked_by_level(gateway: Gateway) -> None:
    await gateway.interface("f.read", "/api/v1/f/read/ok")
    for path, action, below in (("headers", "drop", 2), ("instance", "mask:name", 1)):
        await gateway.permit(
            "create_field_rule",
            FieldRuleIn(interface="f.read", path=path, action=action, below_level=below),
        )
    seen = {}
    for level in (0, 1, 2):
        answer = await gateway.send("GET", "/api/v1/f/read/ok", token=gateway.token(level=level))
        assert answer.status_code == 200, answer.text
        seen[level] = answer.json()
    assert "headers" not in seen[0] and "headers" not in seen[1] and "headers" in seen[2]
    assert seen[0]["instance"] == "u*" and seen[1]["instance"] in {"u1", "u2"}
    # Unruled fields are untouched.
    assert seen[0]["path"] == "/api/v1/f/read/ok"


async def test_rules_reload_and_disappear(gateway: Gateway) -> None:
    await gateway.interface("f.live", "/api/v1/f/live/ok")
    token = gateway.token(level=0)
    assert "headers" in (await gateway.send("GET", "/api/v1/f/live/ok", token=token)).json()
    await gateway.permit(
        "create_field_rule",
        FieldRuleIn(interface="f.live", path="headers", action="drop", below_level=3),
    )
    assert "headers" not in (await gateway.send("GET", "/api/v1/f/live/ok", token=token)).json()
    rules = [r for r in gateway.parts.holder.current.filters if r[0] == "f.live"]
    assert rules == [("f.live", None)]
    async with gateway.runtime.db.transaction() as session:
        service = PermissionService(session, Actor("test"))
        [rule] = await service.field_rules("f.live")
        await service.delete_field_rule(rule.id)
    await gateway.sync()
    assert "headers" in (await gateway.send("GET", "/api/v1/f/live/ok", token=token)).json()


async def test_an_edited_interface_permission_takes_effect(gateway: Gateway) -> None:
    await gateway.interface("p.edit", "/api/v1/p/edit/ok")
    await gateway.permit(
        "create_interface_permission",
        InterfacePermissionIn(channel="app", interface="p.edit", min_level=1),
    )
    token = gateway.token(level=1)
    assert (await gateway.send("GET", "/api/v1/p/edit/ok", token=token)).status_code == 200
    async with gateway.runtime.db.transaction() as session:
        service = PermissionService(session, Actor("test"))
        [permission] = await service.interface_permissions("app")
        await service.update_interface_permission(
            permission.id, InterfacePermissionUpdate(min_level=2)
        )
    await gateway.sync()
    refused = await gateway.send("GET", "/api/v1/p/edit/ok", token=token)
    assert refused.status_code == 403 and refused.json()["required_level"] == 2


WEB_SECRET = "web-secret-for-gateway-tests"


def _level(answer: Any) -> str:
    """``200``, ``perm.denied``, or ``level 2`` (a ``perm.level_required`` with its level)."""
    if answer.status_code == 403 and answer.json()["code"] == "perm.level_required":
        return f"level {answer.json()['required_level']}"
    return _code(answer)


async def _call(gateway: Gateway, path: str, level: int, channel: str = "app") -> str:
    """A signed GET on ``channel`` with a token of ``level``, as :func:`_level` tells it."""
    secret = WEB_SECRET if channel == "web" else APP_SECRET
    token = gateway.token(level=level, channel=channel)
    return _level(await gateway.send("GET", path, channel=channel, secret=secret, token=token))


async def _permit(gateway: Gateway, action: str, *args: Any) -> None:
    async with gateway.runtime.db.transaction() as session:
        await getattr(PermissionService(session, Actor("test")), action)(*args)
    await gateway.sync()


async def test_a_component_raises_the_level_on_its_channel_and_refuses_when_disabled(
    gateway: Gateway,
) -> None:
    path = "/api/v1/c/pay/ok"
    await gateway.interface("c.pay", path, channels=["app", "web"])
    await gateway.change(
        "create_component",
        ComponentCreate(channel="app", code="payment", name="电费缴纳", min_level=2),
    )
    for channel, named in (("app", "payment"), ("web", None)):
        await gateway.permit(
            "create_interface_permission",
            InterfacePermissionIn(channel=channel, interface="c.pay", component=named),
        )

    assert await _call(gateway, path, 0) == "level 2"  # the permission says 0, its component 2
    assert await _call(gateway, path, 2) == "200"
    assert await _call(gateway, path, 0, "web") == "200"  # the component is app's only
    async with gateway.runtime.db.transaction() as session:
        catalog = CatalogService(session, gateway.runtime.box, Actor("test"))
        [component], _ = await catalog.list_components(page=1, page_size=10, channel="app")
        await catalog.update_component(component.id, ComponentUpdate(enabled=False))
    await gateway.sync()
    assert await _call(gateway, path, 2) == "perm.denied"
    assert await _call(gateway, path, 0, "web") == "200"


async def test_functions_raise_the_level_of_the_interfaces_they_cover(gateway: Gateway) -> None:
    path = "/api/v1/f/bills/ok"
    await gateway.interface("f.bills", path, channels=["app", "web"])
    for code in ("bills", "vip"):
        await _permit(gateway, "create_menu", MenuIn(channel="app", code=code, name=code))
    async with gateway.runtime.db.transaction() as session:
        menus = {m.code: m.id for m in await PermissionService(session, Actor("t")).menus("app")}

    def function(code: str, menu: str, level: int) -> FunctionIn:
        return FunctionIn(
            channel="app", menu=menu, code=code, name=code, min_level=level, interfaces=["f.bills"]
        )

    await _permit(gateway, "create_function", function("full", "vip", 2))
    assert await _call(gateway, path, 0) == "level 2"
    assert await _call(gateway, path, 2) == "200"
    # A function is not a permission: another channel keeps the interface's own level.
    assert await _call(gateway, path, 0, "web") == "200"
    # A second function at level 1 suffices: any function the customer can use.
    await _permit(gateway, "create_function", function("query", "bills", 1))
    assert await _call(gateway, path, 0) == "level 1"
    assert await _call(gateway, path, 1) == "200"
    # Its menu disabled, that function cannot be used: the level-2 one is what is left. With
    # both menus disabled no function can be used, and the interface is refused on app.
    await _permit(gateway, "update_menu", menus["bills"], MenuUpdate(enabled=False))
    assert await _call(gateway, path, 1) == "level 2"
    await _permit(gateway, "update_menu", menus["vip"], MenuUpdate(enabled=False))
    assert await _call(gateway, path, 2) == "perm.denied"
    assert await _call(gateway, path, 0, "web") == "200"

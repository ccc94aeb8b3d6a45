"""Permissions and data control in the gateway: interface permissions, 户号 scope, fields."""

from __future__ import annotations

from typing import Any

from gridgate.operators.audit import Actor
from gridgate.permissions.schemas import (
    FieldRuleIn,
    InterfacePermissionIn,
    InterfacePermissionUpdate,
)
from gridgate.permissions.services import PermissionService
from tests.functional.gateway_harness import Gateway

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
    await gateway.parts.holder.refresh()
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
    await gateway.parts.holder.refresh()
    refused = await gateway.send("GET", "/api/v1/p/edit/ok", token=token)
    assert refused.status_code == 403 and refused.json()["required_level"] == 2

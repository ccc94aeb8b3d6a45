"""The permission admin API: validation, references, audit."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import text

from gridgate.runtime import Runtime

APP = {"code": "app", "name": "App", "type": "app"}
SYSTEM = {
    "code": "svc",
    "name": "svc",
    "host": "10.0.0.1",
    "port": 80,
    "password": "svc-password-1",
}
IFACE = {
    "code": "c.read",
    "name": "读",
    "method": "GET",
    "path": "/api/v1/c/{customer_no}",
    "provider": "svc",
    "target_service": "svc",
    "min_level": 1,
    "customer_scope": "path:customer_no",
}


async def _setup(admin: httpx.AsyncClient) -> None:
    for resource, body in (("channels", APP), ("business-systems", SYSTEM), ("interfaces", IFACE)):
        answer = await admin.post(f"/admin/v1/{resource}", json=body)
        assert answer.status_code == 201, answer.text


def _field(answer: httpx.Response) -> Any:
    assert answer.status_code == 422, answer.text
    return answer.json().get("field")


async def test_menus_functions_and_tree_rules(admin: httpx.AsyncClient) -> None:
    await _setup(admin)
    top = await admin.post(
        "/admin/v1/permissions/menus", json={"channel": "app", "code": "account", "name": "我的"}
    )
    assert top.status_code == 201
    child = await admin.post(
        "/admin/v1/permissions/menus",
        json={
            "channel": "app",
            "code": "bills",
            "name": "账单",
            "parent": "account",
            "min_level": 1,
        },
    )
    assert child.status_code == 201 and child.json()["parent"] == "account"
    assert (
        _field(
            await admin.post(
                "/admin/v1/permissions/menus",
                json={"channel": "app", "code": "x", "name": "x", "parent": "ghost"},
            )
        )
        == "parent"
    )
    assert (
        await admin.post(
            "/admin/v1/permissions/menus", json={"channel": "app", "code": "bills", "name": "dup"}
        )
    ).status_code == 409
    function = await admin.post(
        "/admin/v1/permissions/functions",
        json={"channel": "app", "menu": "bills", "code": "query", "name": "查询", "min_level": 1},
    )
    assert function.status_code == 201
    assert (
        await admin.delete(f"/admin/v1/permissions/menus/{top.json()['id']}")
    ).status_code == 409
    listed = (await admin.get("/admin/v1/permissions/menus", params={"channel": "app"})).json()
    assert [m["code"] for m in listed["items"]] == ["account", "bills"]
    audit = (await admin.get("/admin/v1/audit", params={"resource_type": "menu"})).json()
    assert audit["total"] == 2


async def test_field_rules_are_validated(admin: httpx.AsyncClient) -> None:
    await _setup(admin)
    ok = await admin.post(
        "/admin/v1/permissions/fields",
        json={
            "interface": "c.read",
            "path": "items[].address",
            "action": "mask:address",
            "below_level": 2,
        },
    )
    assert ok.status_code == 201
    for body, field in (
        ({"path": "a..b"}, "path"),
        ({"path": "a[]"}, "path"),
        ({"action": "mask:secret"}, "action"),
        ({"action": "hide"}, "action"),
        ({"below_level": 4}, "below_level"),
        ({"interface": "ghost"}, "interface"),
    ):
        base = {"interface": "c.read", "path": "name", "action": "drop", "below_level": 2}
        assert (
            _field(await admin.post("/admin/v1/permissions/fields", json={**base, **body})) == field
        )
    rules = (await admin.get("/admin/v1/permissions/fields", params={"interface": "c.read"})).json()
    assert [r["path"] for r in rules["items"]] == ["items[].address"]
    assert (
        await admin.delete(f"/admin/v1/permissions/fields/{ok.json()['id']}")
    ).status_code == 204
    assert (
        await admin.delete(f"/admin/v1/permissions/fields/{ok.json()['id']}")
    ).status_code == 404


async def test_interface_permissions_and_scope_validation(admin: httpx.AsyncClient) -> None:
    await _setup(admin)
    made = await admin.post(
        "/admin/v1/permissions/interfaces",
        json={"channel": "app", "interface": "c.read", "min_level": 2},
    )
    assert made.status_code == 201
    assert (
        await admin.post(
            "/admin/v1/permissions/interfaces", json={"channel": "app", "interface": "c.read"}
        )
    ).status_code == 409
    assert (
        _field(
            await admin.post(
                "/admin/v1/permissions/interfaces",
                json={"channel": "app", "interface": "c.read", "component": "ghost"},
            )
        )
        == "component"
    )
    bad_scope = await admin.patch(
        "/admin/v1/interfaces/c.read", json={"customer_scope": "path:nope"}
    )
    assert _field(bad_scope) == "customer_scope"
    assert (
        _field(await admin.patch("/admin/v1/interfaces/c.read", json={"customer_scope": "query:x"}))
        == "customer_scope"
    )


async def test_permission_lists_are_paged_as_every_admin_list(admin: httpx.AsyncClient) -> None:
    await _setup(admin)
    codes = [f"m{index:02d}" for index in range(7)]
    for position, code in enumerate(codes):
        made = await admin.post(
            "/admin/v1/permissions/menus",
            json={"channel": "app", "code": code, "name": code, "position": position},
        )
        assert made.status_code == 201, made.text
    seen = []
    for page in (1, 2, 3):
        answer = await admin.get(
            "/admin/v1/permissions/menus", params={"page": page, "page_size": 3}
        )
        body = answer.json()
        assert (body["total"], body["page"], body["page_size"]) == (7, page, 3)
        seen += [menu["code"] for menu in body["items"]]
    assert seen == codes
    past = (await admin.get("/admin/v1/permissions/menus", params={"page": 9})).json()
    assert past["items"] == [] and past["total"] == 7
    for resource in ("menus", "functions", "interfaces", "fields"):
        too_big = await admin.get(f"/admin/v1/permissions/{resource}", params={"page_size": 201})
        assert _field(too_big) == "page_size"


async def test_deleting_an_interface_audits_the_permissions_removed_with_it(
    admin: httpx.AsyncClient,
) -> None:
    await _setup(admin)
    permission = await admin.post(
        "/admin/v1/permissions/interfaces",
        json={"channel": "app", "interface": "c.read", "min_level": 2},
    )
    rule = await admin.post(
        "/admin/v1/permissions/fields",
        json={"interface": "c.read", "path": "address", "action": "drop", "below_level": 2},
    )
    assert permission.status_code == rule.status_code == 201, (permission.text, rule.text)
    assert (await admin.delete("/admin/v1/interfaces/c.read")).status_code == 204
    # The database removed both with the interface: the one audit event says so.
    for resource in ("interfaces", "fields"):
        listed = (await admin.get(f"/admin/v1/permissions/{resource}")).json()
        assert listed["total"] == 0
    audit = (
        await admin.get(
            "/admin/v1/audit", params={"resource_type": "interface", "action": "interface.delete"}
        )
    ).json()
    (event,) = [e for e in audit["items"] if e["action"] == "interface.delete"]
    removed = event["before"]["removed_with_it"]
    assert [row["id"] for row in removed["perm_interfaces"]] == [permission.json()["id"]]
    assert removed["perm_interfaces"][0]["min_level"] == 2
    assert [row["id"] for row in removed["perm_fields"]] == [rule.json()["id"]]
    assert event["before"]["code"] == "c.read"


async def _revision(runtime: Runtime) -> int:
    async with runtime.db.transaction() as session:
        return int((await session.execute(text("SELECT revision FROM catalog_revision"))).scalar())


async def _updates(admin: httpx.AsyncClient, kind: str) -> list[dict[str, Any]]:
    audit = (await admin.get("/admin/v1/audit", params={"action": f"{kind}.update"})).json()
    return list(audit["items"])


async def test_menus_and_functions_are_edited_in_place(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _setup(admin)
    menus = "/admin/v1/permissions/menus"
    made = {}
    for code, parent in (("home", None), ("account", None), ("bills", "account")):
        answer = await admin.post(
            menus, json={"channel": "app", "code": code, "name": code, "parent": parent}
        )
        assert answer.status_code == 201, answer.text
        made[code] = answer.json()
    bills, account = made["bills"], made["account"]
    start = await _revision(runtime)
    moved = await admin.patch(
        f"{menus}/{bills['id']}", json={"parent": "home", "min_level": 2, "name": "账单"}
    )
    assert moved.status_code == 200, moved.text
    assert moved.json() == {**bills, "parent": "home", "min_level": 2, "name": "账单"}
    assert await _revision(runtime) == start + 1
    [event] = await _updates(admin, "menu")
    assert (event["resource_id"], event["before"], event["after"]) == (
        str(bills["id"]),
        bills,
        moved.json(),
    )
    top = await admin.patch(f"{menus}/{bills['id']}", json={"parent": None})
    assert top.json()["parent"] is None
    # Validated as on create, and the tree stays a tree.
    assert _field(await admin.patch(f"{menus}/{account['id']}", json={"parent": "account"})) == (
        "parent"
    )
    await admin.patch(f"{menus}/{bills['id']}", json={"parent": "account"})
    assert _field(await admin.patch(f"{menus}/{account['id']}", json={"parent": "bills"})) == (
        "parent"
    )
    for body, field in (
        ({"parent": "ghost"}, "parent"),
        ({"min_level": 3}, "min_level"),
        ({"name": None}, "name"),
        ({"code": "renamed"}, "code"),
        ({"position": -1}, "position"),
    ):
        assert _field(await admin.patch(f"{menus}/{bills['id']}", json=body)) == field, body
    assert (await admin.patch(f"{menus}/999999", json={"name": "x"})).status_code == 404
    # Nothing changed by the refused ones, and an empty PATCH is no change at all.
    before = await _revision(runtime)
    assert (await admin.patch(f"{menus}/{bills['id']}", json={})).status_code == 200
    assert await _revision(runtime) == before
    assert len(await _updates(admin, "menu")) == 3

    functions = "/admin/v1/permissions/functions"
    function = await admin.post(
        functions, json={"channel": "app", "menu": "bills", "code": "query", "name": "查询"}
    )
    other = await admin.post(
        functions, json={"channel": "app", "menu": "home", "code": "query", "name": "查询"}
    )
    assert function.status_code == other.status_code == 201
    url = f"{functions}/{function.json()['id']}"
    assert (await admin.patch(url, json={"menu": "home"})).status_code == 409
    assert _field(await admin.patch(url, json={"menu": "ghost"})) == "menu"
    assert _field(await admin.patch(url, json={"channel": "app"})) == "channel"
    changed = await admin.patch(url, json={"menu": "account", "min_level": 1})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**function.json(), "menu": "account", "min_level": 1}
    [event] = await _updates(admin, "function")
    assert (event["before"], event["after"]) == (function.json(), changed.json())


async def test_interface_permissions_and_field_rules_are_edited_in_place(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _setup(admin)
    component = await admin.post(
        "/admin/v1/components",
        json={"channel": "app", "code": "pay", "name": "缴费"},
    )
    assert component.status_code == 201, component.text
    permission = await admin.post(
        "/admin/v1/permissions/interfaces",
        json={"channel": "app", "interface": "c.read", "min_level": 1},
    )
    assert permission.status_code == 201
    url = f"/admin/v1/permissions/interfaces/{permission.json()['id']}"
    start = await _revision(runtime)
    changed = await admin.patch(url, json={"component": "pay", "min_level": 2})
    assert changed.status_code == 200, changed.text
    assert changed.json() == {**permission.json(), "component": "pay", "min_level": 2}
    assert await _revision(runtime) == start + 1
    assert (await admin.patch(url, json={"component": None})).json()["component"] is None
    for body, field in (
        ({"component": "ghost"}, "component"),
        ({"min_level": None}, "min_level"),
        ({"interface": "c.read"}, "interface"),
    ):
        assert _field(await admin.patch(url, json=body)) == field, body
    events = await _updates(admin, "interface_permission")
    assert [e["after"]["component"] for e in events] == [None, "pay"]
    assert events[1]["before"] == permission.json()

    rule = await admin.post(
        "/admin/v1/permissions/fields",
        json={"interface": "c.read", "path": "name", "action": "drop", "below_level": 2},
    )
    assert rule.status_code == 201
    url = f"/admin/v1/permissions/fields/{rule.json()['id']}"
    for body, field in (
        ({"path": "a..b"}, "path"),
        ({"action": "mask:secret"}, "action"),
        ({"below_level": 4}, "below_level"),
        ({"channel": "ghost"}, "channel"),
        ({"path": None}, "path"),
    ):
        assert _field(await admin.patch(url, json=body)) == field, body
    changed = await admin.patch(
        url, json={"channel": "app", "path": "items[].address", "action": "mask:address"}
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        **rule.json(),
        "channel": "app",
        "path": "items[].address",
        "action": "mask:address",
    }
    assert (await admin.patch(url, json={"channel": None})).json()["channel"] is None
    events = await _updates(admin, "field_rule")
    assert [e["after"]["channel"] for e in events] == [None, "app"]
    assert events[1]["before"] == rule.json()
    assert (
        await admin.patch("/admin/v1/permissions/fields/999999", json={"below_level": 1})
    ).status_code == 404


async def test_functions_cover_interfaces_of_their_channel(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _setup(admin)
    other = {**IFACE, "code": "c.usage", "path": "/api/v1/c/{customer_no}/usage"}
    assert (await admin.post("/admin/v1/interfaces", json=other)).status_code == 201
    menu = await admin.post(
        "/admin/v1/permissions/menus", json={"channel": "app", "code": "bills", "name": "账单"}
    )
    assert menu.status_code == 201
    functions = "/admin/v1/permissions/functions"
    body = {"channel": "app", "menu": "bills", "code": "query", "name": "查询", "min_level": 2}
    # Only interfaces that exist, and that the catalog authorizes the channel to call.
    for interfaces, field in (
        (["ghost"], "interfaces"),
        (["c.read"], "interfaces"),  # exists, not authorized for app
        (["c.read", "nope!"], "interfaces.1"),
    ):
        answer = await admin.post(functions, json={**body, "interfaces": interfaces})
        assert _field(answer) == field, interfaces
    for code in ("c.read", "c.usage"):
        authorized = await admin.put(
            f"/admin/v1/interfaces/{code}/authorizations", json={"channels": ["app"]}
        )
        assert authorized.status_code == 200
    start = await _revision(runtime)
    made = await admin.post(functions, json={**body, "interfaces": ["c.usage", "c.read", "c.read"]})
    assert made.status_code == 201, made.text
    assert made.json()["interfaces"] == ["c.read", "c.usage"]
    assert await _revision(runtime) == start + 1
    url = f"{functions}/{made.json()['id']}"
    narrowed = await admin.patch(url, json={"interfaces": ["c.usage"]})
    assert narrowed.status_code == 200, narrowed.text
    assert narrowed.json() == {**made.json(), "interfaces": ["c.usage"]}
    assert _field(await admin.patch(url, json={"interfaces": ["ghost"]})) == "interfaces"
    assert _field(await admin.patch(url, json={"interfaces": None})) == "interfaces"
    [event] = await _updates(admin, "function")
    assert event["before"]["interfaces"] == ["c.read", "c.usage"]
    assert event["after"]["interfaces"] == ["c.usage"]
    listed = (await admin.get(functions, params={"channel": "app"})).json()
    assert [f["interfaces"] for f in listed["items"]] == [["c.usage"]]
    # The same list again is no change; deleting the interface removes it from the function,
    # and that interface's audit event says so.
    before = await _revision(runtime)
    assert (await admin.patch(url, json={"interfaces": ["c.usage"]})).status_code == 200
    assert await _revision(runtime) == before
    assert (await admin.delete("/admin/v1/interfaces/c.usage")).status_code == 204
    listed = (await admin.get(functions, params={"channel": "app"})).json()
    assert listed["items"][0]["interfaces"] == []
    audit = (await admin.get("/admin/v1/audit", params={"action": "interface.delete"})).json()
    removed = audit["items"][0]["before"]["removed_with_it"]["perm_function_interfaces"]
    assert removed == [
        {"function_id": made.json()["id"], "interface_id": removed[0]["interface_id"]}
    ]
    assert (await admin.delete(url)).status_code == 204

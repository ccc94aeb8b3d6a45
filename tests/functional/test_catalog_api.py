"""Catalog maintenance over the admin API, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text

from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.runtime import Runtime

BILLING = {
    "code": "billing",
    "name": "电费核算系统",
    "host": "10.1.2.3",
    "port": 8443,
    "username": "bill-svc",
    "password": "s3cret-billing-pw",
}
APP = {
    "code": "app",
    "name": "网上国网 App",
    "type": "app",
    "allowed_ips": ["10.0.0.0/8", "192.168.1.7"],
}
BILLS = {
    "code": "customer.bills",
    "name": "电费账单",
    "method": "GET",
    "path": "/api/v1/customers/{customer_no}/bills",
    "provider": "billing",
    "target_service": "billing",
    "min_level": 1,
    "timeout_ms": 2000,
}


async def _create(admin: httpx.AsyncClient, resource: str, body: dict[str, Any]) -> dict[str, Any]:
    answer = await admin.post(f"/admin/v1/{resource}", json=body)
    assert answer.status_code == 201, answer.text
    return answer.json()


def _problem(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["type"] == f"urn:gridgate:error:{code}"
    assert body["trace_id"] == answer.headers["x-trace-id"]
    return body


async def test_business_system_password_is_sealed_and_never_returned(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await _create(admin, "business-systems", BILLING)
    assert "password" not in created or created["password"] is None
    listed = (await admin.get("/admin/v1/business-systems")).json()
    assert listed["total"] == 1 and listed["page"] == 1
    assert "s3cret-billing-pw" not in str(listed)
    shown = (await admin.get("/admin/v1/business-systems/billing")).json()
    assert shown["host"] == "10.1.2.3" and "password" not in shown
    async with runtime.db.transaction() as session:
        stored = (
            await session.execute(text("SELECT password_sealed FROM business_systems"))
        ).scalar()
    assert "s3cret-billing-pw" not in stored
    assert stored.startswith("v1.")


async def test_generated_business_system_password_is_shown_once(admin: httpx.AsyncClient) -> None:
    body = {k: v for k, v in BILLING.items() if k != "password"}
    created = await _create(admin, "business-systems", body)
    assert len(created["password"]) >= 24
    assert "password" not in (await admin.get("/admin/v1/business-systems/billing")).json()


async def test_channel_secret_shown_at_creation_and_rotation_only(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    created = await _create(admin, "channels", APP)
    first = created["secret"]
    assert len(first) >= 32
    assert created["allowed_ips"] == ["10.0.0.0/8", "192.168.1.7/32"]
    shown = (await admin.get("/admin/v1/channels/app")).json()
    assert "secret" not in shown
    rotated = await admin.post("/admin/v1/channels/app/secret")
    assert rotated.status_code == 200
    second = rotated.json()["secret"]
    assert second != first
    async with runtime.db.transaction() as session:
        stored = (await session.execute(text("SELECT secret_sealed FROM channels"))).scalar()
    assert first not in stored and second not in stored
    audit = (await admin.get("/admin/v1/audit", params={"resource_type": "channel"})).json()
    assert [e["action"] for e in audit["items"]] == ["channel.rotate_secret", "channel.create"]
    assert first not in str(audit) and second not in str(audit)


async def test_interface_with_authorizations(admin: httpx.AsyncClient) -> None:
    await _create(admin, "business-systems", BILLING)
    await _create(admin, "channels", APP)
    created = await _create(admin, "interfaces", BILLS)
    assert created["idempotent"] is True  # GET defaults to idempotent
    assert created["authorizations"] == {"channels": [], "business_systems": []}
    answer = await admin.put(
        "/admin/v1/interfaces/customer.bills/authorizations",
        json={"channels": ["app"], "business_systems": ["billing"]},
    )
    assert answer.status_code == 200
    assert answer.json() == {"channels": ["app"], "business_systems": ["billing"]}
    listed = (await admin.get("/admin/v1/interfaces", params={"channel": "app"})).json()
    assert [i["code"] for i in listed["items"]] == ["customer.bills"]
    assert (await admin.get("/admin/v1/interfaces", params={"channel": "wechat"})).json()[
        "total"
    ] == 0
    updated = await admin.patch("/admin/v1/interfaces/customer.bills", json={"timeout_ms": 5000})
    assert updated.json()["timeout_ms"] == 5000
    assert updated.json()["authorizations"]["channels"] == ["app"]


async def test_unknown_authorization_codes_are_named(admin: httpx.AsyncClient) -> None:
    await _create(admin, "business-systems", BILLING)
    await _create(admin, "interfaces", BILLS)
    answer = await admin.put(
        "/admin/v1/interfaces/customer.bills/authorizations", json={"channels": ["nope"]}
    )
    assert _problem(answer, 422, "request.invalid")["field"] == "channels"


async def test_interface_route_clash_and_unknown_provider(admin: httpx.AsyncClient) -> None:
    await _create(admin, "business-systems", BILLING)
    await _create(admin, "interfaces", BILLS)
    clash = {**BILLS, "code": "other", "path": "/api/v1/customers/{no}/bills"}
    assert (
        _problem(await admin.post("/admin/v1/interfaces", json=clash), 409, "conflict")["field"]
        == "path"
    )
    same_path_other_method = {**clash, "method": "POST"}
    assert (
        await admin.post("/admin/v1/interfaces", json=same_path_other_method)
    ).status_code == 201
    orphan = {**BILLS, "code": "orphan", "path": "/x", "provider": "ghost"}
    assert (
        _problem(await admin.post("/admin/v1/interfaces", json=orphan), 422, "request.invalid")[
            "field"
        ]
        == "provider"
    )


async def test_duplicate_codes_conflict(admin: httpx.AsyncClient) -> None:
    await _create(admin, "business-systems", BILLING)
    await _create(admin, "channels", APP)
    assert (
        _problem(await admin.post("/admin/v1/business-systems", json=BILLING), 409, "conflict")[
            "field"
        ]
        == "code"
    )
    assert (
        _problem(await admin.post("/admin/v1/channels", json=APP), 409, "conflict")["field"]
        == "code"
    )


@pytest.mark.parametrize(
    ("resource", "body", "field"),
    [
        ("business-systems", {**BILLING, "port": 0}, "port"),
        ("business-systems", {**BILLING, "port": 65536}, "port"),
        ("business-systems", {**BILLING, "host": "bad host!"}, "host"),
        ("business-systems", {**BILLING, "code": "Bad Code"}, "code"),
        ("business-systems", {**BILLING, "password": "short"}, "password"),
        ("channels", {**APP, "allowed_ips": ["10.0.0.0/33"]}, "allowed_ips.0"),
        ("channels", {**APP, "allowed_ips": ["10.0.0.1", "not-an-ip"]}, "allowed_ips.1"),
        ("channels", {**APP, "type": "fax"}, "type"),
        ("channels", {**APP, "port": -1}, "port"),
        ("channels", {**APP, "port": 8443}, "port"),  # removed: any value is refused
        ("interfaces", {**BILLS, "canary_version": "v 2"}, "canary_version"),
        ("interfaces", {**BILLS, "canary_version": "1"}, "canary_version"),  # the version
        ("interfaces", {**BILLS, "canary_percent": 101}, "canary_percent"),
        ("interfaces", {**BILLS, "canary_percent": 10}, "canary_percent"),  # no canary_version
        ("interfaces", {**BILLS, "timeout_ms": 0}, "timeout_ms"),
        ("interfaces", {**BILLS, "timeout_ms": 600_000}, "timeout_ms"),
        ("interfaces", {**BILLS, "path": "api/v1/x"}, "path"),
        ("interfaces", {**BILLS, "path": "/api/{a}/{a}"}, "path"),
        ("interfaces", {**BILLS, "path": "/api/x{a}"}, "path"),
        ("interfaces", {**BILLS, "path": "/api//x"}, "path"),
        ("interfaces", {**BILLS, "method": "TRACE"}, "method"),
        ("interfaces", {**BILLS, "service_mode": "batch"}, "service_mode"),
        ("interfaces", {**BILLS, "min_level": 3}, "min_level"),
        ("interfaces", {**BILLS, "surprise": 1}, "surprise"),
        ("interfaces", {**BILLS, "client_rate_limit_per_s": 0}, "client_rate_limit_per_s"),
        ("interfaces", {**BILLS, "account_rate_limit_per_s": -1}, "account_rate_limit_per_s"),
        (
            "interfaces",
            {**BILLS, "client_rate_limit_per_s": 1_000_001},
            "client_rate_limit_per_s",
        ),
        ("interfaces", {**BILLS, "account_rate_limit_per_s": 1.5}, "account_rate_limit_per_s"),
    ],
)
async def test_bad_values_name_the_field(
    admin: httpx.AsyncClient, resource: str, body: dict[str, Any], field: str
) -> None:
    answer = await admin.post(f"/admin/v1/{resource}", json=body)
    problem = _problem(answer, 422, "request.invalid")
    assert problem["field"] == field
    assert "s3cret-billing-pw" not in answer.text


async def test_patch_refuses_null_for_required_fields(admin: httpx.AsyncClient) -> None:
    await _create(admin, "channels", APP)
    answer = await admin.patch("/admin/v1/channels/app", json={"name": None})
    assert _problem(answer, 422, "request.invalid")["field"] == "name"
    cleared = await admin.patch(
        "/admin/v1/channels/app", json={"rate_limit_per_s": None, "enabled": False}
    )
    assert cleared.status_code == 200
    assert cleared.json()["rate_limit_per_s"] is None and cleared.json()["enabled"] is False


async def test_a_channel_has_no_port(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    created = await _create(admin, "channels", APP)
    assert "port" not in created
    for body in ({"port": 8443}, {"port": None}, {"port": 8443, "name": "改名"}):
        answer = await admin.patch("/admin/v1/channels/app", json=body)
        problem = _problem(answer, 422, "request.invalid")
        assert problem["field"] == "port"
        assert "no longer part of the catalog" in problem["detail"]
    assert (await admin.get("/admin/v1/channels/app")).json()["name"] == APP["name"]
    async with runtime.db.transaction() as session:
        columns = await session.run_sync(
            lambda sync: [c["name"] for c in inspect(sync.connection()).get_columns("channels")]
        )
    assert "port" not in columns


async def test_delete_referenced_conflicts_then_succeeds(admin: httpx.AsyncClient) -> None:
    await _create(admin, "business-systems", BILLING)
    await _create(admin, "channels", APP)
    await _create(admin, "interfaces", BILLS)
    await admin.put(
        "/admin/v1/interfaces/customer.bills/authorizations", json={"channels": ["app"]}
    )
    component = await _create(
        admin,
        "components",
        {"channel": "app", "code": "bill_query", "name": "电费查询", "min_level": 1},
    )
    body = _problem(await admin.delete("/admin/v1/business-systems/billing"), 409, "conflict")
    assert body["provider_of"] == ["customer.bills"]
    body = _problem(await admin.delete("/admin/v1/channels/app"), 409, "conflict")
    assert body["components"] == ["bill_query"] and body["authorized_for"] == ["customer.bills"]
    assert (await admin.delete(f"/admin/v1/components/{component['id']}")).status_code == 204
    assert (await admin.delete("/admin/v1/interfaces/customer.bills")).status_code == 204
    assert (await admin.delete("/admin/v1/channels/app")).status_code == 204
    assert (await admin.delete("/admin/v1/business-systems/billing")).status_code == 204
    assert (await admin.get("/admin/v1/channels")).json()["total"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/admin/v1/business-systems/ghost",
        "/admin/v1/channels/ghost",
        "/admin/v1/interfaces/ghost",
        "/admin/v1/interfaces/ghost/authorizations",
        "/admin/v1/components/999",
    ],
)
async def test_unknown_ids_are_404(admin: httpx.AsyncClient, path: str) -> None:
    _problem(await admin.get(path), 404, "not_found")
    if not path.endswith("authorizations"):
        _problem(await admin.delete(path), 404, "not_found")


async def test_components_unique_per_channel(admin: httpx.AsyncClient) -> None:
    await _create(admin, "channels", APP)
    await _create(admin, "channels", {"code": "wechat", "name": "微信", "type": "wechat"})
    body = {"channel": "app", "code": "payment", "name": "电费缴纳", "min_level": 1}
    await _create(admin, "components", body)
    await _create(admin, "components", {**body, "channel": "wechat"})
    _problem(await admin.post("/admin/v1/components", json=body), 409, "conflict")
    missing = await admin.post("/admin/v1/components", json={**body, "channel": "ghost"})
    assert _problem(missing, 422, "request.invalid")["field"] == "channel"
    listed = (await admin.get("/admin/v1/components", params={"channel": "wechat"})).json()
    assert [(c["channel"], c["code"], c["min_level"]) for c in listed["items"]] == [
        ("wechat", "payment", 1)
    ]


async def test_pagination(admin: httpx.AsyncClient) -> None:
    for n in range(5):
        await _create(
            admin, "channels", {"code": f"partner{n}", "name": f"P{n}", "type": "partner"}
        )
    page = (await admin.get("/admin/v1/channels", params={"page": 2, "page_size": 2})).json()
    assert [c["code"] for c in page["items"]] == ["partner2", "partner3"]
    assert (page["total"], page["page"], page["page_size"]) == (5, 2, 2)
    _problem(
        await admin.get("/admin/v1/channels", params={"page_size": 201}), 422, "request.invalid"
    )


async def test_every_change_bumps_the_catalog_revision(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    async def revision() -> int:
        async with runtime.db.transaction() as session:
            return int(
                (await session.execute(text("SELECT revision FROM catalog_revision"))).scalar()
            )

    start = await revision()
    await _create(admin, "channels", APP)
    await admin.patch("/admin/v1/channels/app", json={"enabled": False})
    assert await revision() == start + 2
    await admin.post("/admin/v1/channels", json=APP)  # refused: no change, no bump
    assert await revision() == start + 2


async def test_business_system_password_can_be_replaced(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    await _create(admin, "business-systems", BILLING)
    answer = await admin.patch(
        "/admin/v1/business-systems/billing", json={"password": "a-new-password-2"}
    )
    assert answer.status_code == 200 and "password" not in answer.json()
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        assert await catalog.check_business_system_password("billing", "a-new-password-2")
        assert not await catalog.check_business_system_password("billing", BILLING["password"])
    trail = (await admin.get("/admin/v1/audit", params={"action": "business_system.update"})).json()
    assert "a-new-password-2" not in str(trail)


async def test_duplicate_component_names_its_code(admin: httpx.AsyncClient) -> None:
    await _create(admin, "channels", APP)
    body = {"channel": "app", "code": "payment", "name": "电费缴纳"}
    await _create(admin, "components", body)
    answer = await admin.post("/admin/v1/components", json=body)
    assert answer.status_code == 409
    assert answer.json()["detail"] == "component 'payment' already exists"


async def test_only_changes_wake_the_gateway(admin: httpx.AsyncClient, runtime: Runtime) -> None:
    woken: list[int] = []
    runtime.catalog_listeners.append(lambda: woken.append(1))
    await admin.get("/admin/v1/channels")
    await admin.get("/admin/v1/permissions/menus")
    assert woken == []
    await _create(admin, "channels", APP)
    await admin.post(
        "/admin/v1/permissions/menus", json={"channel": "app", "code": "m", "name": "M"}
    )
    assert len(woken) == 2
    await admin.post("/admin/v1/channels", json=APP)  # refused: nothing changed
    assert len(woken) == 2


async def test_client_and_account_rate_limits_are_set_cleared_and_audited(
    admin: httpx.AsyncClient,
) -> None:
    await _create(admin, "business-systems", BILLING)
    created = await _create(admin, "interfaces", BILLS)
    assert created["client_rate_limit_per_s"] is None
    assert created["account_rate_limit_per_s"] is None
    limited = await _create(
        admin,
        "interfaces",
        {
            **BILLS,
            "code": "customer.usage",
            "path": "/api/v1/customers/{customer_no}/usage",
            "client_rate_limit_per_s": 20,
            "account_rate_limit_per_s": 5,
        },
    )
    assert (limited["client_rate_limit_per_s"], limited["account_rate_limit_per_s"]) == (20, 5)

    answer = await admin.patch(
        "/admin/v1/interfaces/customer.bills",
        json={"client_rate_limit_per_s": 10, "account_rate_limit_per_s": 2},
    )
    assert answer.status_code == 200, answer.text
    shown = (await admin.get("/admin/v1/interfaces/customer.bills")).json()
    assert (shown["client_rate_limit_per_s"], shown["account_rate_limit_per_s"]) == (10, 2)
    trail = (await admin.get("/admin/v1/audit", params={"action": "interface.update"})).json()
    event = trail["items"][0]
    assert event["before"]["client_rate_limit_per_s"] is None
    assert event["after"]["client_rate_limit_per_s"] == 10
    assert event["after"]["account_rate_limit_per_s"] == 2

    cleared = await admin.patch(
        "/admin/v1/interfaces/customer.bills",
        json={"client_rate_limit_per_s": None, "account_rate_limit_per_s": None},
    )
    assert cleared.status_code == 200, cleared.text
    assert cleared.json()["client_rate_limit_per_s"] is None
    assert cleared.json()["account_rate_limit_per_s"] is None
    refused = await admin.patch(
        "/admin/v1/interfaces/customer.bills", json={"client_rate_limit_per_s": 0}
    )
    assert _problem(refused, 422, "request.invalid")["field"] == "client_rate_limit_per_s"


async def test_canary_settings_are_set_checked_cleared_and_audited(
    admin: httpx.AsyncClient,
) -> None:
    await _create(admin, "business-systems", BILLING)
    created = await _create(admin, "interfaces", BILLS)
    assert (created["version"], created["canary_version"], created["canary_percent"]) == (
        "1",
        None,
        0,
    )
    url = "/admin/v1/interfaces/customer.bills"
    canary = await admin.patch(url, json={"canary_version": "2.0-rc1", "canary_percent": 10})
    assert canary.status_code == 200, canary.text
    assert (canary.json()["canary_version"], canary.json()["canary_percent"]) == ("2.0-rc1", 10)
    event = (await admin.get("/admin/v1/audit", params={"action": "interface.update"})).json()[
        "items"
    ][0]
    assert (event["before"]["canary_version"], event["after"]["canary_version"]) == (
        None,
        "2.0-rc1",
    )
    assert event["after"]["canary_percent"] == 10
    # Checked against what is stored: the version may not become the canary's, a share needs
    # a canary, and the percentage stays within 0-100.
    for body, field in (
        ({"version": "2.0-rc1"}, "version"),
        ({"canary_version": "1"}, "canary_version"),
        ({"canary_version": None}, "canary_percent"),
        ({"canary_percent": -1}, "canary_percent"),
        ({"canary_percent": None}, "canary_percent"),
    ):
        assert _problem(await admin.patch(url, json=body), 422, "request.invalid")["field"] == (
            field
        ), body
    promoted = await admin.patch(
        url, json={"version": "2.0-rc1", "canary_version": None, "canary_percent": 0}
    )
    assert promoted.status_code == 200, promoted.text
    assert (promoted.json()["version"], promoted.json()["canary_version"]) == ("2.0-rc1", None)
    # A canary with no share is allowed: it takes no calls by percentage.
    header_only = await admin.patch(url, json={"canary_version": "3"})
    assert header_only.status_code == 200 and header_only.json()["canary_percent"] == 0

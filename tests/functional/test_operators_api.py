"""Operators, roles, sessions and the audit trail over the admin API."""

from __future__ import annotations

import httpx
import pytest

from gridgate.runtime import Runtime
from tests.conftest import ADMIN_PASSWORD, add_operator, login

NEW_OPERATOR = {"username": "alice", "password": "a-long-enough-password", "roles": ["reviewer"]}


async def test_login_returns_short_lived_token_with_roles(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await add_operator(runtime, "root", ["admin", "auditor"])
    answer = await client.post(
        "/admin/v1/session", json={"username": "root", "password": ADMIN_PASSWORD}
    )
    assert answer.status_code == 200
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == runtime.settings.operator_token_ttl_s <= 3600
    assert sorted(body["roles"]) == ["admin", "auditor"]
    me = await client.get(
        "/admin/v1/session", headers={"Authorization": f"Bearer {body['access_token']}"}
    )
    assert me.json() == {"username": "root", "roles": ["admin", "auditor"]}


async def test_wrong_password_and_unknown_user_answer_alike(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await add_operator(runtime, "root", ["admin"])
    wrong = await client.post("/admin/v1/session", json={"username": "root", "password": "nope"})
    ghost = await client.post("/admin/v1/session", json={"username": "ghost", "password": "nope"})
    assert wrong.status_code == ghost.status_code == 401
    assert wrong.json()["code"] == ghost.json()["code"] == "auth.bad_credentials"
    assert wrong.json()["detail"] == ghost.json()["detail"]


async def test_repeated_failures_make_the_name_wait(
    client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await add_operator(runtime, "root", ["admin"])
    threshold = runtime.settings.operator_lockout_threshold
    for _ in range(threshold):
        answer = await client.post("/admin/v1/session", json={"username": "root", "password": "x"})
        assert answer.status_code == 401
    locked = await client.post(
        "/admin/v1/session", json={"username": "root", "password": ADMIN_PASSWORD}
    )
    assert locked.status_code == 429
    assert locked.json()["code"] == "auth.too_many_failures"
    # The exact wait left: the first wait, less the moments since the last failure.
    lockout_s = runtime.settings.operator_lockout_s
    assert lockout_s - 5 <= int(locked.headers["retry-after"]) <= lockout_s
    # Another operator, from the same address, is not held up by root's name.
    await add_operator(runtime, "bob", ["auditor"])
    assert (await login(client, "bob"))["Authorization"].startswith("Bearer ")


@pytest.mark.parametrize(
    ("header", "code"),
    [
        (None, "auth.required"),
        ("Basic abc", "auth.required"),
        ("Bearer not-a-jwt", "auth.invalid_token"),
        ("Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "auth.invalid_token"),
    ],
)
async def test_routes_need_a_valid_token(
    client: httpx.AsyncClient, header: str | None, code: str
) -> None:
    headers = {"Authorization": header} if header else {}
    answer = await client.get("/admin/v1/channels", headers=headers)
    assert answer.status_code == 401
    assert answer.json()["code"] == code
    assert answer.headers["www-authenticate"] == "Bearer"


async def test_logout_revokes_tokens(admin: httpx.AsyncClient) -> None:
    assert (await admin.get("/admin/v1/channels")).status_code == 200
    assert (await admin.delete("/admin/v1/session")).status_code == 204
    answer = await admin.get("/admin/v1/channels")
    assert answer.status_code == 401
    assert answer.json()["code"] == "auth.invalid_token"


# (role, method, path, allowed)
ROLE_MATRIX = [
    ("reviewer", "GET", "/admin/v1/channels", False),
    ("reviewer", "POST", "/admin/v1/channels", False),
    ("reviewer", "GET", "/admin/v1/audit", False),
    ("reviewer", "GET", "/admin/v1/operators", False),
    ("auditor", "GET", "/admin/v1/channels", True),
    ("auditor", "GET", "/admin/v1/audit", True),
    ("auditor", "POST", "/admin/v1/channels", False),
    ("auditor", "DELETE", "/admin/v1/business-systems/x", False),
    ("auditor", "GET", "/admin/v1/operators", False),
    ("admin", "GET", "/admin/v1/audit", True),
    ("admin", "GET", "/admin/v1/operators", True),
]


@pytest.mark.parametrize(("role", "method", "path", "allowed"), ROLE_MATRIX)
async def test_every_route_checks_the_role(
    client: httpx.AsyncClient, runtime: Runtime, role: str, method: str, path: str, allowed: bool
) -> None:
    await add_operator(runtime, "someone", [role])
    headers = await login(client, "someone")
    body = {"code": "web", "name": "Web", "type": "web"} if method == "POST" else None
    answer = await client.request(method, path, json=body, headers=headers)
    if allowed:
        assert answer.status_code in {200, 201}, answer.text
    else:
        assert answer.status_code == 403
        assert answer.json()["code"] == "perm.denied"


async def test_operator_management_is_audited_without_secrets(admin: httpx.AsyncClient) -> None:
    created = await admin.post("/admin/v1/operators", json=NEW_OPERATOR)
    assert created.status_code == 201
    assert "password" not in created.json()
    changed = await admin.patch(
        "/admin/v1/operators/alice",
        json={"roles": ["reviewer", "auditor"], "password": "another-long-password"},
    )
    assert changed.status_code == 200
    assert changed.json()["roles"] == ["auditor", "reviewer"]
    assert (await admin.delete("/admin/v1/operators/alice")).status_code == 204
    trail = (
        await admin.get(
            "/admin/v1/audit", params={"resource_type": "operator", "resource_id": "alice"}
        )
    ).json()
    assert [(e["action"], e["actor"]) for e in trail["items"]] == [
        ("operator.delete", "root"),
        ("operator.update", "root"),
        ("operator.create", "root"),
    ]
    update = trail["items"][1]
    assert update["before"]["roles"] == ["reviewer"]
    assert update["after"]["roles"] == ["auditor", "reviewer"]
    assert update["after"]["password"] == "***"
    assert update["trace_id"] and update["at"].endswith("Z")
    text_of_trail = str(trail)
    assert "a-long-enough-password" not in text_of_trail
    assert "another-long-password" not in text_of_trail


async def test_password_change_revokes_that_operators_tokens(
    admin: httpx.AsyncClient, client: httpx.AsyncClient, runtime: Runtime
) -> None:
    await add_operator(runtime, "bob", ["auditor"])
    bob = await login(client, "bob")
    assert (await client.get("/admin/v1/channels", headers=bob)).status_code == 200
    await admin.patch("/admin/v1/operators/bob", json={"enabled": False})
    assert (await client.get("/admin/v1/channels", headers=bob)).status_code == 401


async def test_last_admin_cannot_be_removed_or_demoted(admin: httpx.AsyncClient) -> None:
    demote = await admin.patch("/admin/v1/operators/root", json={"roles": ["auditor"]})
    assert demote.status_code == 409
    assert (await admin.delete("/admin/v1/operators/root")).status_code == 409
    await admin.post("/admin/v1/operators", json={**NEW_OPERATOR, "roles": ["admin"]})
    assert (
        await admin.patch("/admin/v1/operators/root", json={"roles": ["auditor"]})
    ).status_code == 200


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({**NEW_OPERATOR, "password": "Tiny5x"}, "auth.weak_password", "password"),
        ({**NEW_OPERATOR, "password": "alice-is-my-password"}, "auth.weak_password", "password"),
        ({**NEW_OPERATOR, "password": ""}, "request.invalid", "password"),
        ({**NEW_OPERATOR, "roles": ["superuser"]}, "request.invalid", "roles.0"),
        ({**NEW_OPERATOR, "roles": []}, "request.invalid", "roles"),
        ({**NEW_OPERATOR, "username": "A"}, "request.invalid", "username"),
    ],
)
async def test_operator_validation(
    admin: httpx.AsyncClient, body: dict[str, object], code: str, field: str
) -> None:
    answer = await admin.post("/admin/v1/operators", json=body)
    assert answer.status_code == 422
    assert (answer.json()["code"], answer.json().get("field")) == (code, field)
    if body["password"]:
        assert str(body["password"]) not in answer.text


async def test_duplicate_operator_conflicts(admin: httpx.AsyncClient) -> None:
    assert (await admin.post("/admin/v1/operators", json=NEW_OPERATOR)).status_code == 201
    assert (await admin.post("/admin/v1/operators", json=NEW_OPERATOR)).status_code == 409


async def test_audit_filters_and_naive_times(admin: httpx.AsyncClient) -> None:
    await admin.post("/admin/v1/channels", json={"code": "web", "name": "Web", "type": "web"})
    trail = await admin.get(
        "/admin/v1/audit", params={"action": "channel.create", "since": "2000-01-01T00:00:00Z"}
    )
    assert trail.json()["total"] == 1
    naive = await admin.get("/admin/v1/audit", params={"since": "2000-01-01T00:00:00"})
    assert naive.status_code == 422
    assert naive.json()["field"] == "since"

"""Account attributes (issue 19): user name, e-mail address and extensible attributes, as the
customer sets them through a channel and as operators read and set them in the back office."""

from __future__ import annotations

import json
from typing import Any

import httpx
import structlog
from sqlalchemy import text

from gridgate.runtime import Runtime
from tests.conftest import add_operator, login
from tests.functional.accounts_harness import Client

EMAIL = "Zhang.San+bills@Example.COM"
STORED_EMAIL = "Zhang.San+bills@example.com"


async def _signed_in(accounts: Client, phone: str = "13912345678") -> tuple[str, str]:
    created = await accounts.register(phone)
    token = (await accounts.login(phone))["access_token"]
    return created["account_id"], token


async def _patch(accounts: Client, token: str, body: Any) -> httpx.Response:
    return await accounts.call(
        "PATCH",
        "/me/profile",
        token=token,
        content=json.dumps(body),
        headers={"content-type": "application/merge-patch+json"},
    )


async def test_a_new_account_has_an_empty_profile(accounts: Client) -> None:
    account_id, token = await _signed_in(accounts)
    answer = await accounts.call("GET", "/me/profile", token=token)
    assert answer.status_code == 200, answer.text
    assert answer.json() == {
        "account_id": account_id,
        "username": None,
        "email": None,
        "level": 0,
        "attributes": {},
    }


async def test_the_customer_sets_and_reads_back_the_profile(accounts: Client) -> None:
    account_id, token = await _signed_in(accounts)
    answer = await _patch(
        accounts,
        token,
        {
            "username": "ZhangSan_88",
            "email": EMAIL,
            "attributes": {"nickname": "小张", "floor": 12, "paperless": True, "rate": 0.5},
        },
    )
    assert answer.status_code == 200, answer.text
    expected = {
        "account_id": account_id,
        # User names are kept in lower case; the e-mail domain too, the local part as typed.
        "username": "zhangsan_88",
        "email": STORED_EMAIL,
        "level": 0,
        "attributes": {"nickname": "小张", "floor": 12, "paperless": True, "rate": 0.5},
    }
    assert answer.json() == expected
    assert (await accounts.call("GET", "/me/profile", token=token)).json() == expected
    # Plain application/json works as well as application/merge-patch+json.
    plain = await accounts.call("PATCH", "/me/profile", token=token, json={})
    assert plain.status_code == 200 and plain.json() == expected


async def test_a_merge_patch_sets_what_it_sends_and_null_removes(accounts: Client) -> None:
    _, token = await _signed_in(accounts)
    await _patch(
        accounts,
        token,
        {"username": "lisi", "email": EMAIL, "attributes": {"a": "1", "b": 2, "c": False}},
    )
    # Absent members stay; an attribute set to null goes; others are merged one by one.
    merged = await _patch(accounts, token, {"attributes": {"a": None, "b": 3, "d": "new"}})
    assert merged.status_code == 200, merged.text
    body = merged.json()
    assert body["attributes"] == {"b": 3, "c": False, "d": "new"}
    assert body["username"] == "lisi" and body["email"] == STORED_EMAIL
    # Removing an attribute that is not there is no error (RFC 7396).
    assert (await _patch(accounts, token, {"attributes": {"zzz": None}})).status_code == 200
    cleared = await _patch(accounts, token, {"username": None, "email": None, "attributes": None})
    assert cleared.status_code == 200, cleared.text
    assert {k: cleared.json()[k] for k in ("username", "email", "attributes")} == {
        "username": None,
        "email": None,
        "attributes": {},
    }


async def test_user_names_are_unique_whatever_the_case(accounts: Client) -> None:
    _, first = await _signed_in(accounts, "13912345678")
    _, second = await _signed_in(accounts, "13912345679")
    assert (await _patch(accounts, first, {"username": "wangwu"})).status_code == 200
    taken = await _patch(accounts, second, {"username": "WangWu"})
    assert taken.status_code == 409, taken.text
    assert taken.json()["code"] == "conflict" and taken.json()["field"] == "username"
    # Setting one's own user name again changes nothing and is no conflict.
    again = await _patch(accounts, first, {"username": "WANGWU"})
    assert again.status_code == 200 and again.json()["username"] == "wangwu"
    # Once released, the name can be taken.
    assert (await _patch(accounts, first, {"username": None})).status_code == 200
    assert (await _patch(accounts, second, {"username": "WangWu"})).status_code == 200


#: Bodies refused with 422 ``request.invalid``, and the ``field`` each names.
BAD_BODIES: list[tuple[Any, str | None]] = [
    ({"username": "ab"}, "username"),
    ({"username": "1abc"}, "username"),
    ({"username": "has space"}, "username"),
    ({"username": "张三丰"}, "username"),
    ({"username": "a" * 33}, "username"),
    ({"username": "Admin"}, "username"),
    ({"username": 42}, "username"),
    ({"email": "no-at-sign"}, "email"),
    ({"email": "a@localhost"}, "email"),
    ({"email": "a@-bad-.com"}, "email"),
    ({"email": "a@b@example.com"}, "email"),
    ({"email": "a..b@example.com"}, "email"),
    ({"email": "张@example.com"}, "email"),
    ({"email": "a@example.c0m"}, "email"),
    ({"email": "a" * 65 + "@example.com"}, "email"),
    ({"email": "a@" + "b" * 250 + ".com"}, "email"),
    ({"email": " a@example.com"}, "email"),
    ({"attributes": {"Nickname": "x"}}, "attributes.Nickname"),
    ({"attributes": {"1st": "x"}}, "attributes.1st"),
    ({"attributes": {"a" * 33: "x"}}, "attributes." + "a" * 33),
    ({"attributes": {"nested": {"a": 1}}}, "attributes.nested"),
    ({"attributes": {"list": [1, 2]}}, "attributes.list"),
    ({"attributes": {"long": "x" * 257}}, "attributes.long"),
    ({"attributes": {"big": 2**53}}, "attributes.big"),
    ({"attributes": {f"k{i}": i for i in range(33)}}, "attributes"),
    ({"attributes": {f"k{i}": i for i in range(65)}}, "attributes"),
    ({"attributes": ["not", "an", "object"]}, "attributes"),
    ({"attributes": {"note": "bell\x07"}}, None),
    ({"phone": "13800000000"}, "phone"),
    # One bad member refuses the whole patch: the good ones are not applied either.
    (
        {"username": "fine_name", "email": "ok@example.com", "attributes": {"Bad": 1}},
        "attributes.Bad",
    ),
]
#: Bodies that are not JSON a profile patch can be made of.
BAD_JSON: list[tuple[bytes, str | None]] = [
    (b'{"attributes": {"x": NaN}}', "attributes.x"),
    (b'{"attributes": {"x": Infinity}}', "attributes.x"),
    (b'{"email": ', None),
    (b"[]", None),
]


async def test_bad_input_is_422_with_the_field_and_changes_nothing(accounts: Client) -> None:
    _, token = await _signed_in(accounts)
    for body, field in BAD_BODIES:
        answer = await _patch(accounts, token, body)
        assert answer.status_code == 422, (body, answer.text)
        assert answer.headers["content-type"] == "application/problem+json"
        problem = answer.json()
        assert (problem["code"], problem.get("field")) == ("request.invalid", field), body
    for raw, field in BAD_JSON:
        answer = await accounts.call(
            "PATCH",
            "/me/profile",
            token=token,
            content=raw,
            headers={"content-type": "application/json"},
        )
        assert answer.status_code == 422, (raw, answer.text)
        problem = answer.json()
        assert (problem["code"], problem.get("field")) == ("request.invalid", field), raw
    profile = (await accounts.call("GET", "/me/profile", token=token)).json()
    assert (profile["username"], profile["email"], profile["attributes"]) == (None, None, {})


async def test_the_full_set_of_attributes_is_accepted_and_one_more_is_not(
    accounts: Client,
) -> None:
    _, token = await _signed_in(accounts)
    full = {f"k{i}": "v" * 256 for i in range(32)}
    assert (await _patch(accounts, token, {"attributes": full})).status_code == 200
    over = await _patch(accounts, token, {"attributes": {"one_more": 1}})
    assert over.status_code == 422 and over.json()["field"] == "attributes"
    # Replacing one while removing another stays within the limit.
    swap = await _patch(accounts, token, {"attributes": {"k0": None, "one_more": 1}})
    assert swap.status_code == 200 and len(swap.json()["attributes"]) == 32


async def test_the_profile_needs_a_signed_in_customer(accounts: Client) -> None:
    answer = await accounts.call("GET", "/me/profile")
    assert answer.status_code == 401 and answer.json()["code"] == "auth.required"
    patched = await accounts.call("PATCH", "/me/profile", json={"username": "nobody"})
    assert patched.status_code == 401 and patched.json()["code"] == "auth.required"


async def test_the_email_address_is_sealed_and_never_logged(
    accounts: Client, runtime: Runtime
) -> None:
    account_id, token = await _signed_in(accounts)
    with structlog.testing.capture_logs() as logs:
        answer = await _patch(accounts, token, {"email": EMAIL})
        assert answer.status_code == 200, answer.text
        await accounts.call("GET", "/me/profile", token=token)
    assert "example.com" not in str(logs).lower()
    async with runtime.db.transaction() as session:
        row = (
            await session.execute(
                text("SELECT email_sealed, email_hash FROM accounts WHERE id = :id"),
                {"id": account_id},
            )
        ).one()
    assert row.email_sealed.startswith("v1.") and "example" not in row.email_sealed.lower()
    assert len(row.email_hash) == 64
    if runtime.db.is_sqlite:
        raw = b"".join(p.read_bytes() for p in runtime.settings.data_dir.glob("gridgate.db*"))
        assert b"example.com" not in raw.lower()


async def _account_with_profile(accounts: Client) -> str:
    account_id, token = await _signed_in(accounts)
    answer = await _patch(
        accounts,
        token,
        {"username": "zhaoliu", "email": EMAIL, "attributes": {"nickname": "老赵"}},
    )
    assert answer.status_code == 200, answer.text
    return account_id


async def test_operators_see_the_email_address_masked(
    accounts: Client, backoffice: httpx.AsyncClient
) -> None:
    account_id = await _account_with_profile(accounts)
    profile = await backoffice.get(f"/admin/v1/accounts/{account_id}/profile")
    assert profile.status_code == 200, profile.text
    assert profile.json() == {
        "account_id": account_id,
        "username": "zhaoliu",
        "email": "Z***@example.com",
        "level": 0,
        "attributes": {"nickname": "老赵"},
    }
    view = (await backoffice.get(f"/admin/v1/accounts/{account_id}")).json()
    assert view["username"] == "zhaoliu" and view["email"] == "Z***@example.com"
    assert view["attributes"] == {"nickname": "老赵"}
    # The search shows them masked too, and finds the account by its address in any case.
    for params in ({"email": EMAIL.lower()}, {"email": EMAIL.upper()}, {}):
        found = (await backoffice.get("/admin/v1/accounts", params=params)).json()
        assert found["total"] == 1, params
        [item] = found["items"]
        assert item["email"] == "Z***@example.com" and item["username"] == "zhaoliu"
    other = (await backoffice.get("/admin/v1/accounts", params={"email": "x@example.com"})).json()
    assert other["total"] == 0
    bad = await backoffice.get("/admin/v1/accounts", params={"email": "not-an-address"})
    assert bad.status_code == 422 and bad.json()["field"] == "email"
    assert EMAIL.lower() not in json.dumps([profile.json(), view, found]).lower()


async def test_an_admin_changes_the_profile_under_audit(
    accounts: Client, backoffice: httpx.AsyncClient, runtime: Runtime
) -> None:
    account_id = await _account_with_profile(accounts)
    await add_operator(runtime, "ada", ["admin"])
    backoffice.headers.update(await login(backoffice, "ada"))
    changed = await backoffice.patch(
        f"/admin/v1/accounts/{account_id}/profile",
        json={
            "email": "new.address@corp.example.cn",
            "attributes": {"nickname": None, "vip": True},
        },
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["email"] == "n***@corp.example.cn"
    assert changed.json()["attributes"] == {"vip": True}
    assert changed.json()["username"] == "zhaoliu"
    audit = (await backoffice.get("/admin/v1/audit", params={"action": "account.update"})).json()
    [event] = audit["items"]
    assert (event["actor"], event["resource_type"], event["resource_id"]) == (
        "ada",
        "account",
        account_id,
    )
    assert event["before"] == {"username": "zhaoliu", "email": "set", "attributes": ["nickname"]}
    assert event["after"] == {
        "username": "zhaoliu",
        "email": "set",
        "attributes": ["vip"],
        "changed": ["email", "attributes.nickname", "attributes.vip"],
    }
    # No personal data in the audit trail: neither address nor attribute values.
    written = json.dumps(event, ensure_ascii=False).lower()
    assert "example" not in written and "老赵" not in written
    # A patch that changes nothing writes no audit event.
    same = await backoffice.patch(
        f"/admin/v1/accounts/{account_id}/profile", json={"username": "zhaoliu"}
    )
    assert same.status_code == 200
    again = await backoffice.get("/admin/v1/audit", params={"action": "account.update"})
    assert again.json()["total"] == 1
    # The customer sees the new address in full.
    token = (await accounts.login())["access_token"]
    mine = (await accounts.call("GET", "/me/profile", token=token)).json()
    assert mine["email"] == "new.address@corp.example.cn"


async def test_operator_profile_errors(
    accounts: Client, backoffice: httpx.AsyncClient, runtime: Runtime
) -> None:
    account_id = await _account_with_profile(accounts)
    # The back office's reviewer may read, not change.
    denied = await backoffice.patch(
        f"/admin/v1/accounts/{account_id}/profile", json={"username": "other"}
    )
    assert denied.status_code == 403 and denied.json()["code"] == "perm.denied"
    await add_operator(runtime, "ada", ["admin"])
    backoffice.headers.update(await login(backoffice, "ada"))
    unknown = "0" * 32
    for method in ("GET", "PATCH"):
        missing = await backoffice.request(method, f"/admin/v1/accounts/{unknown}/profile", json={})
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", method
        malformed = await backoffice.request(method, "/admin/v1/accounts/XYZ/profile", json={})
        assert malformed.status_code == 422 and malformed.json()["field"] == "account_id"
    bad = await backoffice.patch(
        f"/admin/v1/accounts/{account_id}/profile", json={"attributes": {"Bad Key": 1}}
    )
    assert bad.status_code == 422 and bad.json()["field"] == "attributes.Bad Key"
    # Another account's user name is as taken for an operator as for a customer.
    _, token = await _signed_in(accounts, "13912345679")
    assert (await _patch(accounts, token, {"username": "qianqi"})).status_code == 200
    taken = await backoffice.patch(
        f"/admin/v1/accounts/{account_id}/profile", json={"username": "QianQi"}
    )
    assert taken.status_code == 409 and taken.json()["field"] == "username"
    listed = await backoffice.get("/admin/v1/audit", params={"action": "account.update"})
    assert listed.json()["total"] == 0

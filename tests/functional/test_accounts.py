"""Unified accounts as a channel sees them through the gateway, and as the back office does."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import httpx
import jwt
from sqlalchemy import text

from gridgate.accounts.app import JWKS_PATH
from gridgate.accounts.parts import ADDRESS_RULE, AccountsParts, LoginGuard
from gridgate.attempts import MemoryAttemptStore
from gridgate.errors import GridgateError
from gridgate.pii import id_check_char
from gridgate.runtime import Runtime
from tests.conftest import add_operator, login
from tests.functional.accounts_harness import CUSTOMER, DATA, PASSWORD, PHONE, Client
from tests.unit.registry.conftest import FakeClock

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
ID_NUMBER = "33010219900101123" + id_check_char("33010219900101123")


def _claims(token: str) -> dict[str, Any]:
    return dict(jwt.decode(token, options={"verify_signature": False}))


async def test_register_on_one_channel_sign_in_on_another(accounts: Client) -> None:
    created = await accounts.register(channel_user_id="app-user-1")
    assert created["level"] == 0
    tokens = await accounts.login(channel="wechat", channel_user_id="openid-xyz")
    claims = _claims(tokens["access_token"])
    assert (
        claims["sub"] == created["account_id"] and claims["ch"] == "wechat" and claims["lvl"] == 0
    )
    assert tokens["token_type"] == "Bearer" and tokens["expires_in"] == 900
    me = (await accounts.call("GET", "/me", channel="wechat", token=tokens["access_token"])).json()
    assert me == {
        "account_id": created["account_id"],
        "phone": "139****5678",
        "level": 0,
        "bindings": [],
        "realname": {"status": "none"},
    }
    # A second code within a minute is refused, with the wait.
    again = await accounts.call("POST", "/sms/codes", json={"phone": PHONE, "purpose": "register"})
    assert again.status_code == 429 and again.json()["code"] == "sms.too_frequent"
    assert int(again.headers["retry-after"]) > 0


async def test_codes_are_single_use_and_bound_to_purpose(accounts: Client) -> None:
    await accounts.call("POST", "/sms/codes", json={"phone": PHONE, "purpose": "register"})
    code = accounts.code(PHONE, "register")
    wrong_purpose = await accounts.call(
        "POST", "/auth/token", json={"grant_type": "sms_code", "phone": PHONE, "sms_code": code}
    )
    assert wrong_purpose.status_code == 400 and wrong_purpose.json()["code"] == "sms.code_invalid"
    body = {"phone": PHONE, "sms_code": code, "password": PASSWORD}
    assert (await accounts.call("POST", "/accounts", json=body)).status_code == 201
    again = await accounts.call("POST", "/accounts", json=body)
    assert again.status_code == 400 and again.json()["code"] == "sms.code_invalid"


async def test_sms_login_and_no_registration_oracle(
    accounts: Client, parts: AccountsParts, runtime: Runtime
) -> None:
    # Created directly: a code for registering would hold the phone's next code for 60 s.
    async with runtime.db.transaction() as session:
        await parts.accounts(session).register(PHONE, PASSWORD, channel="app", channel_user_id=None)
    known = await accounts.call("POST", "/sms/codes", json={"phone": PHONE, "purpose": "login"})
    unknown = await accounts.call(
        "POST", "/sms/codes", json={"phone": "13700000000", "purpose": "login"}
    )
    assert known.status_code == unknown.status_code == 202 and known.json() == unknown.json()
    ok = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "sms_code", "phone": PHONE, "sms_code": accounts.code(PHONE, "login")},
    )
    assert ok.status_code == 200
    bad_pw = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "password", "phone": PHONE, "password": "wrong-password"},
    )
    no_user = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "password", "phone": "13700000000", "password": "wrong-password"},
    )
    assert bad_pw.status_code == no_user.status_code == 401
    assert bad_pw.json()["detail"] == no_user.json()["detail"]


async def test_refresh_rotates_and_reuse_revokes_the_family(
    accounts: Client, runtime: Runtime
) -> None:
    await accounts.register()
    first = await accounts.login()
    second = (
        await accounts.call(
            "POST",
            "/auth/token",
            json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
        )
    ).json()
    assert second["refresh_token"] != first["refresh_token"]
    reused = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": first["refresh_token"]},
    )
    assert reused.status_code == 401 and reused.json()["code"] == "auth.invalid_token"
    latest = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": second["refresh_token"]},
    )
    assert latest.status_code == 401  # the whole family went with the reuse
    for token in (first["access_token"], second["access_token"]):
        assert runtime.revocations.is_revoked(_claims(token)["sid"])


async def test_logout_revokes_the_session(accounts: Client, runtime: Runtime) -> None:
    await accounts.register()
    tokens = await accounts.login()
    assert (
        await accounts.call("POST", "/auth/logout", token=tokens["access_token"])
    ).status_code == 204
    assert runtime.revocations.is_revoked(_claims(tokens["access_token"])["sid"])
    refreshed = await accounts.call(
        "POST",
        "/auth/token",
        json={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
    )
    assert refreshed.status_code == 401


async def test_failed_passwords_lock_temporarily(accounts: Client) -> None:
    await accounts.register()
    for _ in range(5):
        answer = await accounts.call(
            "POST",
            "/auth/token",
            json={"grant_type": "password", "phone": PHONE, "password": "not-the-password"},
        )
        assert answer.status_code == 401
    locked = await accounts.call(
        "POST", "/auth/token", json={"grant_type": "password", "phone": PHONE, "password": PASSWORD}
    )
    assert locked.status_code == 423 and locked.json()["code"] == "auth.locked"
    assert 0 < int(locked.headers["retry-after"]) <= 900


def test_an_address_may_fail_30_sign_ins_then_waits_a_minute_doubling_to_ten() -> None:
    rule = ADDRESS_RULE
    assert (rule.free, rule.delay(30), rule.delay(33), rule.delay(34), rule.window_s) == (
        30,
        60,
        480,
        600,
        600,
    )


async def test_failed_sign_ins_make_an_address_wait_longer_and_longer(
    accounts: Client, parts: AccountsParts
) -> None:
    clock = FakeClock(1_000_000.0)
    parts.login_guard = LoginGuard(MemoryAttemptStore(clock=clock), ADDRESS_RULE._replace(free=3))
    await accounts.register()

    async def sign_in(ip: str, phone: str = PHONE, password: str = PASSWORD) -> httpx.Response:
        body = {"grant_type": "password", "phone": phone, "password": password}
        return await accounts.call("POST", "/auth/token", ip=ip, json=body)

    # Successful sign-ins are counted and given back: they never make an address wait.
    for _ in range(5):
        assert (await sign_in("2001:db8:5:5::1")).status_code == 200
    # Wrong SMS codes are bounded by the code's own attempts, not by the address.
    for _ in range(5):
        body = {"grant_type": "sms_code", "phone": PHONE, "sms_code": "000000"}
        wrong = await accounts.call("POST", "/auth/token", ip="2001:db8:5:5::1", json=body)
        assert wrong.status_code == 400
    # Three failures from one IPv6 /64, whatever the phones (registered or not) …
    for host, phone in enumerate(("13700000001", "13700000002", PHONE), start=1):
        assert (await sign_in(f"2001:db8:5:5::{host}", phone, "wrong")).status_code == 401
    # … and the whole /64 waits, even with the right password: 60 s, to the second.
    waits = []
    for _ in range(3):
        refused = await sign_in("2001:db8:5:5:ffff::9")
        assert refused.status_code == 423 and refused.json()["code"] == "auth.locked"
        assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
        waits.append(int(refused.headers["retry-after"]))
        clock.advance(waits[-1])
        assert (await sign_in("2001:db8:5:5::1", "13700000003", "wrong")).status_code == 401
    assert waits == [60, 120, 240]  # each failure after a wait doubles the next one
    assert (await sign_in("2001:db8:5:6::1")).status_code == 200  # the next /64 is not held up


async def test_bind_by_sms_to_the_reserved_phone(accounts: Client) -> None:
    await accounts.register()
    tokens = await accounts.login()
    token = tokens["access_token"]
    sent = await accounts.call(
        "POST", "/me/bindings/challenge", token=token, json={"customer_no": CUSTOMER.customer_no}
    )
    assert sent.status_code == 202
    assert (
        sent.json()["masked_phone"]
        == CUSTOMER.reserved_phone[:3] + "****" + CUSTOMER.reserved_phone[-4:]
    )
    code = accounts.code(CUSTOMER.reserved_phone, "bind")
    bound = await accounts.call(
        "POST",
        "/me/bindings",
        token=token,
        json={"customer_no": CUSTOMER.customer_no, "sms_code": code},
    )
    assert bound.status_code == 201 and bound.json() == {
        "customer_no": CUSTOMER.customer_no,
        "level": 1,
    }
    # Tokens issued from now on carry the new level.
    assert _claims((await accounts.login())["access_token"])["lvl"] == 1


async def test_service_password_binding_and_lock(accounts: Client) -> None:
    await accounts.register()
    await accounts.register(phone="13712345678")
    token = (await accounts.login())["access_token"]
    second = (await accounts.login(phone="13712345678"))["access_token"]
    other = next(c for c in DATA.customers.values() if c.customer_no != CUSTOMER.customer_no)
    for _ in range(5):
        wrong = await accounts.call(
            "POST",
            "/me/bindings",
            token=token,
            json={
                "customer_no": other.customer_no,
                "service_password": "000000" if other.service_password != "000000" else "111111",
            },
        )
        assert wrong.status_code == 401
    # The 户号 is locked for everyone (even with the right password) …
    locked = await accounts.call(
        "POST",
        "/me/bindings",
        token=second,
        json={"customer_no": other.customer_no, "service_password": other.service_password},
    )
    assert locked.status_code == 423 and locked.json()["code"] == "auth.locked"
    # … and the account that failed five times waits, whatever 户号 it tries next.
    throttled = await accounts.call(
        "POST",
        "/me/bindings",
        token=token,
        json={"customer_no": CUSTOMER.customer_no, "service_password": CUSTOMER.service_password},
    )
    assert throttled.status_code == 429 and throttled.json()["code"] == "auth.too_many_failures"
    ok = await accounts.call(
        "POST",
        "/me/bindings",
        token=second,
        json={"customer_no": CUSTOMER.customer_no, "service_password": CUSTOMER.service_password},
    )
    assert ok.status_code == 201 and ok.json()["level"] == 1


async def test_an_account_cannot_unbind_anothers(accounts: Client) -> None:
    await accounts.register()
    await accounts.register(phone="13712345678")
    alice = (await accounts.login())["access_token"]
    bob = (await accounts.login(phone="13712345678"))["access_token"]
    await accounts.call(
        "POST",
        "/me/bindings",
        token=alice,
        json={"customer_no": CUSTOMER.customer_no, "service_password": CUSTOMER.service_password},
    )
    refused = await accounts.call("DELETE", f"/me/bindings/{CUSTOMER.customer_no}", token=bob)
    assert refused.status_code == 404
    me = (await accounts.call("GET", "/me", token=alice)).json()
    assert [b["customer_no"] for b in me["bindings"]] == [CUSTOMER.customer_no]
    assert (
        await accounts.call("DELETE", f"/me/bindings/{CUSTOMER.customer_no}", token=alice)
    ).status_code == 204
    assert (await accounts.call("GET", "/me", token=alice)).json()["level"] == 0


async def test_realname_review_raises_level_and_keeps_id_numbers_sealed(
    accounts: Client, backoffice: httpx.AsyncClient, runtime: Runtime
) -> None:
    await accounts.register()
    token = (await accounts.login())["access_token"]
    bad = await accounts.call(
        "POST",
        "/me/realname",
        token=token,
        data={"name": "张三", "id_number": "330102199001011230"},
        files={"id_image": ("id.png", PNG, "image/png")},
    )
    assert bad.status_code == 422 and bad.json()["field"] == "id_number"
    not_image = await accounts.call(
        "POST",
        "/me/realname",
        token=token,
        data={"name": "张三", "id_number": ID_NUMBER},
        files={"id_image": ("id.png", b"GIF89a....", "image/png")},
    )
    assert not_image.status_code == 422 and not_image.json()["field"] == "id_image"
    sent = await accounts.call(
        "POST",
        "/me/realname",
        token=token,
        data={"name": "张三", "id_number": ID_NUMBER},
        files={"id_image": ("id.png", PNG, "image/png")},
    )
    assert sent.status_code == 202 and sent.json() == {"status": "pending"}
    queue = (
        await backoffice.get("/admin/v1/realname/applications", params={"status": "pending"})
    ).json()
    [item] = queue["items"]
    assert item["name"] == "张*" and item["id_number"] == ID_NUMBER[:3] + "*" * 11 + ID_NUMBER[-4:]
    approved = await backoffice.post(f"/admin/v1/realname/applications/{item['id']}/approve")
    assert approved.status_code == 200 and approved.json()["status"] == "approved"
    assert (await accounts.call("GET", "/me/realname", token=token)).json() == {
        "status": "approved"
    }
    assert _claims((await accounts.login())["access_token"])["lvl"] == 2
    async with runtime.db.transaction() as session:
        rows = (await session.execute(text("SELECT * FROM realname_applications"))).all()
        audit = (
            await session.execute(
                text("SELECT action, actor FROM audit_events WHERE action LIKE 'realname.%'")
            )
        ).all()
    assert ID_NUMBER not in str(rows) and "张三" not in str(rows)
    assert [(a.action, a.actor) for a in audit] == [("realname.approve", "rita")]
    if runtime.db.is_sqlite:
        raw = b"".join(p.read_bytes() for p in runtime.settings.data_dir.glob("gridgate.db*"))
        assert ID_NUMBER.encode() not in raw
    uploads = list((runtime.settings.data_dir / "uploads").rglob("*.*"))
    assert uploads and all(PNG not in p.read_bytes() for p in uploads)  # sealed at rest


async def test_reject_needs_a_reason_and_reviewers_only(
    accounts: Client, backoffice: httpx.AsyncClient, runtime: Runtime
) -> None:
    await accounts.register()
    token = (await accounts.login())["access_token"]
    await accounts.call(
        "POST",
        "/me/realname",
        token=token,
        data={"name": "李四", "id_number": ID_NUMBER},
        files={"id_image": ("id.png", PNG, "image/png")},
    )
    [item] = (await backoffice.get("/admin/v1/realname/applications")).json()["items"]
    assert (
        await backoffice.post(
            f"/admin/v1/realname/applications/{item['id']}/reject", json={"reason": " "}
        )
    ).status_code == 422
    rejected = await backoffice.post(
        f"/admin/v1/realname/applications/{item['id']}/reject", json={"reason": "照片不清晰"}
    )
    assert rejected.status_code == 200
    assert (await accounts.call("GET", "/me/realname", token=token)).json() == {
        "status": "rejected",
        "reason": "照片不清晰",
    }


async def test_backoffice_search_and_360_view(
    accounts: Client, backoffice: httpx.AsyncClient
) -> None:
    await accounts.register(channel_user_id="app-user-7")
    token = (await accounts.login())["access_token"]
    await accounts.call(
        "POST",
        "/me/bindings",
        token=token,
        json={"customer_no": CUSTOMER.customer_no, "service_password": CUSTOMER.service_password},
    )
    await accounts.call(
        "PUT",
        "/me/subscriptions",
        token=token,
        json={
            "items": [
                {
                    "customer_no": CUSTOMER.customer_no,
                    "topic": "bill",
                    "channel": "app",
                    "enabled": True,
                }
            ]
        },
    )
    district = CUSTOMER.supply_region.split("/")[-1]
    for params in (
        {"region": district},
        {"meter_book": CUSTOMER.meter_book},
        {"phone": PHONE},
        {"customer_no": CUSTOMER.customer_no},
        {"level": 1},
        {"bound_from": "2000-01-01T00:00:00Z"},
    ):
        found = (await backoffice.get("/admin/v1/accounts", params=params)).json()
        assert found["total"] == 1, params
        [item] = found["items"]
        assert item["phone"] == "139****5678" and item["level"] == 1
    assert (await backoffice.get("/admin/v1/accounts", params={"level": 2})).json()["total"] == 0
    account_id = item["account_id"]
    view = (await backoffice.get(f"/admin/v1/accounts/{account_id}")).json()
    assert view["channel_accounts"][0]["channel_user_id"] == "app-user-7"
    [binding] = view["bindings"]
    assert binding["voltage"] == CUSTOMER.voltage and binding["name"].startswith(CUSTOMER.name[0])
    assert CUSTOMER.address not in json.dumps(view, ensure_ascii=False)
    assert view["subscriptions"] == [
        {"customer_no": CUSTOMER.customer_no, "topic": "bill", "channel": "app", "enabled": True}
    ]


async def test_jwks_publishes_the_signing_key(accounts: Client) -> None:
    await accounts.register()
    token = (await accounts.login())["access_token"]
    jwks = (await accounts.http.get(JWKS_PATH)).json()
    kid = jwt.get_unverified_header(token)["kid"]
    [key] = [k for k in jwks["keys"] if k["kid"] == kid]
    public = jwt.PyJWK(key).key
    assert jwt.decode(token, public, algorithms=["EdDSA"], audience="gridgate")["lvl"] == 0
    assert "d" not in key  # never the private part


async def test_key_rotation_keeps_old_tokens_verifiable(
    accounts: Client, parts: AccountsParts, runtime: Runtime
) -> None:
    await accounts.register()
    old = (await accounts.login())["access_token"]
    async with runtime.db.transaction() as session:
        await parts.keys.rotate(session)
    new = (await accounts.login())["access_token"]
    old_kid, new_kid = (jwt.get_unverified_header(t)["kid"] for t in (old, new))
    assert old_kid != new_kid
    published = {k["kid"] for k in (await accounts.http.get(JWKS_PATH)).json()["keys"]}
    assert {old_kid, new_kid} <= published  # nobody is logged out by the rotation


async def test_concurrent_refreshes_of_one_token_have_one_winner(
    accounts: Client, parts: AccountsParts, runtime: Runtime
) -> None:
    await accounts.register()
    tokens = await accounts.login()

    async def refresh() -> str:
        try:
            async with runtime.db.transaction() as session:
                await parts.accounts(session).refresh(tokens["refresh_token"], channel="app")
        except GridgateError as exc:
            return exc.code
        return "ok"

    results = await asyncio.gather(*(refresh() for _ in range(4)))
    assert results.count("ok") == 1, results
    assert set(results) == {"ok", "auth.invalid_token"}


async def test_a_refresh_token_works_only_on_its_own_channel(
    accounts: Client, runtime: Runtime
) -> None:
    await accounts.register()
    tokens = await accounts.login(channel="app")
    refresh = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    elsewhere = await accounts.call("POST", "/auth/token", channel="wechat", json=refresh)
    assert elsewhere.status_code == 401, elsewhere.text
    assert elsewhere.json()["code"] == "auth.channel_mismatch"
    assert "access_token" not in elsewhere.json()
    # Presented by a stranger's channel, the token was lifted from its app: that sign-in ends.
    assert runtime.revocations.is_revoked(_claims(tokens["access_token"])["sid"])
    at_home = await accounts.call("POST", "/auth/token", channel="app", json=refresh)
    assert at_home.status_code == 401 and at_home.json()["code"] == "auth.invalid_token"
    # A new sign-in on the right channel refreshes there as before.
    fresh = await accounts.login(channel="app")
    again = await accounts.call(
        "POST",
        "/auth/token",
        channel="app",
        json={"grant_type": "refresh_token", "refresh_token": fresh["refresh_token"]},
    )
    assert again.status_code == 200 and _claims(again.json()["access_token"])["ch"] == "app"


#: api.md "Conventions": every time in an answer is RFC 3339 in UTC with a ``Z``.
UTC_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
LOOKS_LIKE_TIME = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:")
TIME_KEYS = re.compile(r"(^|_)(at|time|hour|until)$")


def _times(data: Any, where: str = "") -> list[tuple[str, Any]]:
    """Every time-like value in an answer: by key name, or by looking like a date and time."""
    found: list[tuple[str, Any]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if TIME_KEYS.search(str(key)) and value is not None and not isinstance(value, dict):
                found.append((f"{where}.{key}", value))
            elif not isinstance(value, dict | list):
                if isinstance(value, str) and LOOKS_LIKE_TIME.match(value):
                    found.append((f"{where}.{key}", value))
            else:
                found += _times(value, f"{where}.{key}")
    elif isinstance(data, list):
        for index, item in enumerate(data):
            found += _times(item, f"{where}[{index}]")
    return found


async def test_every_time_in_an_answer_is_utc_with_a_z(
    accounts: Client, backoffice: httpx.AsyncClient, runtime: Runtime
) -> None:
    await accounts.register(channel_user_id="app-user-9")
    token = (await accounts.login())["access_token"]
    bound = await accounts.call(
        "POST",
        "/me/bindings",
        token=token,
        json={"customer_no": CUSTOMER.customer_no, "service_password": CUSTOMER.service_password},
    )
    assert bound.status_code == 201, bound.text
    await accounts.call(
        "POST",
        "/me/realname",
        token=token,
        data={"name": "张三", "id_number": ID_NUMBER},
        files={"id_image": ("id.png", PNG, "image/png")},
    )
    [application] = (await backoffice.get("/admin/v1/realname/applications")).json()["items"]
    approved = await backoffice.post(f"/admin/v1/realname/applications/{application['id']}/approve")
    assert approved.status_code == 200, approved.text
    await add_operator(runtime, "ada", ["admin"])
    backoffice.headers.update(await login(backoffice, "ada"))
    made = await backoffice.post(
        "/admin/v1/channels", json={"code": "kiosk", "name": "Kiosk", "type": "app"}
    )
    assert made.status_code == 201, made.text
    rotated = await backoffice.post("/admin/v1/channels/kiosk/rotate-secret")
    account_id = (await backoffice.get("/admin/v1/accounts")).json()["items"][0]["account_id"]
    answers = [bound, approved, made, rotated, await accounts.call("GET", "/me", token=token)]
    for path in (
        "/admin/v1/session",
        "/admin/v1/channels",
        "/admin/v1/operators",
        "/admin/v1/audit",
        "/admin/v1/accounts",
        f"/admin/v1/accounts/{account_id}",
        f"/admin/v1/accounts/{account_id}/uploads",
        "/admin/v1/realname/applications",
    ):
        answer = await backoffice.get(path)
        assert answer.status_code == 200, (path, answer.text)
        answers.append(answer)
    seen = [(str(a.url.path) + where, v) for a in answers for where, v in _times(a.json())]
    wrong = [(where, value) for where, value in seen if not UTC_TIME.fullmatch(str(value))]
    assert wrong == [], "\n".join(map(str, wrong))
    # Not vacuous: bindings, creation, sign-in, rotation, review and audit times were all read.
    keys = {where.rsplit(".", 1)[-1] for where, _ in seen}
    assert {"bound_at", "created_at", "secret_rotated_at", "submitted_at", "decided_at", "at"} <= (
        keys
    )

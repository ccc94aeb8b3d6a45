"""The admin listener under attack (issue 12): sign-in limits, enumeration, weak passwords,
browser headers, literal search terms and strict times, all over HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gridgate.accounts.models import Account, Binding
from gridgate.accounts.parts import AccountsParts
from gridgate.accounts.services import PHONE
from gridgate.app import build_admin
from gridgate.attempts import MemoryAttemptStore
from gridgate.runtime import Runtime
from gridgate.settings import Settings
from tests.conftest import ADMIN_PASSWORD, add_operator, login, make_settings
from tests.unit.registry.conftest import FakeClock

SESSION = "/admin/v1/session"
#: Small limits, so that a test reaches every step with a handful of attempts.
NAME_FAILURES, NAME_WAIT_S = 3, 60
ADDRESS_FAILURES, ADDRESS_WAIT_S = 4, 10
WRONG_PASSWORD = "not-the-password"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(
        tmp_path,
        database_url=database_url,
        operator_lockout_threshold=NAME_FAILURES,
        operator_lockout_s=NAME_WAIT_S,
        operator_address_lockout_threshold=ADDRESS_FAILURES,
        operator_address_lockout_s=ADDRESS_WAIT_S,
    )


@pytest.fixture
def clock() -> FakeClock:
    """The clock of the sign-in limits: it moves only when a test says so."""
    return FakeClock(1_000_000.0)


@pytest.fixture
async def admin_app(runtime: Runtime, clock: FakeClock) -> AsyncIterator[Any]:
    """One admin listener, which clients from several addresses share."""
    parts = AccountsParts.build(runtime)
    parts.attempts = MemoryAttemptStore(clock=clock)
    yield build_admin(runtime, parts)
    await parts.store.close()


@pytest.fixture
async def from_address(admin_app: Any) -> AsyncIterator[Any]:
    """Opens clients of ``admin_app`` that appear to come from a given address."""
    opened: list[httpx.AsyncClient] = []

    def open_client(address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=admin_app, client=(address, 40000))
        opened.append(httpx.AsyncClient(transport=transport, base_url="http://admin.test"))
        return opened[-1]

    yield open_client
    for client in opened:
        await client.aclose()


def _sign_in(username: str, password: str = WRONG_PASSWORD) -> dict[str, str]:
    return {"username": username, "password": password}


def _without_trace(answer: httpx.Response) -> dict[str, Any]:
    body = dict(answer.json())
    body.pop("trace_id")
    return body


def _wait_told(answer: httpx.Response) -> int:
    assert answer.status_code == 429, answer.text
    assert answer.json()["code"] == "auth.too_many_failures"
    assert answer.json()["retry_after"] == int(answer.headers["retry-after"])
    return int(answer.headers["retry-after"])


async def test_spraying_names_from_one_address_meets_growing_waits(
    runtime: Runtime, from_address: Any, clock: FakeClock
) -> None:
    await add_operator(runtime, "root", ["admin"])
    sprayer = from_address("203.0.113.7")
    for attempt in range(ADDRESS_FAILURES):
        assert (await sprayer.post(SESSION, json=_sign_in(f"user-{attempt}"))).status_code == 401
    waits = []
    for attempt in range(6):
        # Hammering while it waits is refused, not counted: the wait told stays exact.
        told = {_wait_told(await sprayer.post(SESSION, json=_sign_in(f"h{n}"))) for n in range(5)}
        assert len(told) == 1
        waits.append(told.pop())
        clock.advance(waits[-1])
        answer = await sprayer.post(SESSION, json=_sign_in(f"next-{attempt}"))
        assert answer.status_code == 401  # the wait is over: one more guess, counted
    # Each guess after a wait doubles the next one, up to sixteen times the first.
    w = ADDRESS_WAIT_S
    assert waits == [w, 2 * w, 4 * w, 8 * w, 16 * w, 16 * w]
    # The right password from that address waits too; from another address it just works.
    assert _wait_told(await sprayer.post(SESSION, json=_sign_in("root", ADMIN_PASSWORD)))
    elsewhere = await from_address("198.51.100.9").post(
        SESSION, json=_sign_in("root", ADMIN_PASSWORD)
    )
    assert elsewhere.status_code == 200


async def test_strangers_cannot_keep_an_operator_out_of_their_usual_address(
    runtime: Runtime, from_address: Any, clock: FakeClock
) -> None:
    await add_operator(runtime, "root", ["admin"])
    office = from_address("198.51.100.9")
    assert (await office.post(SESSION, json=_sign_in("root", ADMIN_PASSWORD))).status_code == 200
    # Strangers guess root's password from many addresses, and again each time a wait ends.
    for i in range(NAME_FAILURES):
        assert (
            await from_address(f"10.0.{i}.1").post(SESSION, json=_sign_in("root"))
        ).status_code == 401
    for i in range(4):
        wait = _wait_told(await from_address(f"10.1.{i}.1").post(SESSION, json=_sign_in("root")))
        clock.advance(wait)
        answer = await from_address(f"10.2.{i}.1").post(SESSION, json=_sign_in("root"))
        assert answer.status_code == 401
    stranger = await from_address("10.9.9.9").post(SESSION, json=_sign_in("root", ADMIN_PASSWORD))
    assert _wait_told(stranger) == NAME_WAIT_S * 16
    # Root, at the office, is not held back by any of that.
    assert (await office.post(SESSION, json=_sign_in("root", ADMIN_PASSWORD))).status_code == 200
    # Guesses at the office count for the office: they cannot lock root out elsewhere either.
    for _ in range(NAME_FAILURES):
        assert (await office.post(SESSION, json=_sign_in("root"))).status_code == 401
    assert _wait_told(await office.post(SESSION, json=_sign_in("root"))) == NAME_WAIT_S


async def test_a_new_password_lifts_a_names_wait_and_so_does_signing_in(
    runtime: Runtime, from_address: Any
) -> None:
    await add_operator(runtime, "root", ["admin"])
    await add_operator(runtime, "bob", ["auditor"])
    boss = from_address("192.0.2.50")
    boss.headers.update(await login(boss, "root"))
    for i in range(NAME_FAILURES):
        guess = await from_address(f"10.0.{i}.1").post(SESSION, json=_sign_in("bob"))
        assert guess.status_code == 401
    assert _wait_told(await from_address("10.0.9.1").post(SESSION, json=_sign_in("bob")))
    new_password = "fresh-copper-kettle-2026"
    changed = await boss.patch("/admin/v1/operators/bob", json={"password": new_password})
    assert changed.status_code == 200, changed.text
    signed_in = await from_address("10.0.9.2").post(SESSION, json=_sign_in("bob", new_password))
    assert signed_in.status_code == 200
    # A successful sign-in clears the name's count as well: guesses start from zero again.
    for i in range(NAME_FAILURES):
        guess = await from_address(f"10.3.{i}.1").post(SESSION, json=_sign_in("bob"))
        assert guess.status_code == 401
    assert _wait_told(await from_address("10.3.9.1").post(SESSION, json=_sign_in("bob")))


async def test_a_waiting_name_answers_alike_whether_it_exists_or_not(
    runtime: Runtime, from_address: Any
) -> None:
    await add_operator(runtime, "root", ["admin"])
    refused: dict[str, list[httpx.Response]] = {}
    for name, net in (("root", "10.1.1"), ("ghost", "10.2.2")):
        # Each guess from another address: only the limit per user name can stop them.
        for i in range(NAME_FAILURES):
            answer = await from_address(f"{net}.{i}").post(SESSION, json=_sign_in(name))
            assert answer.status_code == 401
        refused[name] = [
            await from_address(f"{net}.100").post(SESSION, json=_sign_in(name)),
            await from_address(f"{net}.101").post(SESSION, json=_sign_in(name, ADMIN_PASSWORD)),
        ]
    answers = refused["root"] + refused["ghost"]
    assert {a.status_code for a in answers} == {429}
    assert {a.headers["retry-after"] for a in answers} == {"60"}
    assert all(_without_trace(a) == _without_trace(answers[0]) for a in answers)
    assert answers[0].json()["code"] == "auth.too_many_failures"
    assert {a.headers["content-type"] for a in answers} == {"application/problem+json"}


WEAK = [
    pytest.param("short-pw-1", "12 to 128 characters", id="short"),
    pytest.param("Password12345678", "common or breached", id="breached"),
    pytest.param("1q2w3e4r5t6y7u8i", "common or breached", id="keyboard-walk"),
    pytest.param("zzzzzzzzzzzzzzzz", "too few different characters", id="repetitive"),
    pytest.param("{name}-is-great-2026", "user name", id="contains-name"),
]


@pytest.mark.parametrize(("template", "reason"), WEAK)
async def test_weak_passwords_are_refused_at_create_and_change(
    admin: httpx.AsyncClient, runtime: Runtime, template: str, reason: str
) -> None:
    created = await admin.post(
        "/admin/v1/operators",
        json={"username": "alice", "password": template.format(name="alice"), "roles": ["auditor"]},
    )
    await add_operator(runtime, "bob", ["auditor"])
    changed = await admin.patch(
        "/admin/v1/operators/bob", json={"password": template.format(name="bob")}
    )
    for answer, name in ((created, "alice"), (changed, "bob")):
        assert answer.status_code == 422
        body = answer.json()
        assert (body["code"], body["field"]) == ("auth.weak_password", "password")
        assert reason in body["detail"]
        assert template.format(name=name) not in answer.text
    assert (await admin.get("/admin/v1/operators/alice")).status_code == 404
    # Bob's password did not change.
    assert (await login(admin, "bob"))["Authorization"].startswith("Bearer ")


def test_operator_create_on_the_command_line_refuses_a_breached_password(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    command = ["operator", "create", "--username", "carol", "--role", "admin", "--password-stdin"]
    done = subprocess.run(
        [sys.executable, "-m", "gridgate", *command, "--data-dir", str(tmp_path)],
        input="Password12345678\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 2
    assert "common or breached" in done.stderr
    assert "Password12345678" not in done.stdout + done.stderr


def _script_hashes(page: str) -> set[str]:
    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode() + "'"
        for script in re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    }


async def test_admin_pages_carry_browser_security_headers(admin: httpx.AsyncClient) -> None:
    docs = await admin.get("/admin/docs")
    policy = docs.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["frame-ancestors"] == "'none'"
    script_src = directives["script-src"].split()
    assert "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    # Swagger UI's own files from this listener, its inline start-up script by hash.
    assert set(script_src) == {"'self'", *_script_hashes(docs.text)}
    assert "http" not in policy

    answers = {
        "docs": docs,
        "openapi": await admin.get("/admin/openapi.json"),
        "asset": await admin.get("/admin/static/docs/swagger-ui.css"),
        "json": await admin.get("/admin/v1/channels"),
        "refusal": await admin.get("/admin/v1/channels", headers={"Authorization": "Bearer x"}),
        "unknown": await admin.get("/admin/nothing-here"),
        "too large": await admin.post(SESSION, content=b"x" * 2_000_000),
    }
    for what, answer in answers.items():
        assert answer.headers["x-frame-options"] == "DENY", what
        assert answer.headers["x-content-type-options"] == "nosniff", what
        assert answer.headers["referrer-policy"] == "no-referrer", what
        assert "frame-ancestors 'none'" in answer.headers["content-security-policy"], what
    for what in ("openapi", "json", "refusal", "unknown", "too large"):
        assert answers[what].headers["content-security-policy"].startswith("default-src 'none'")
    # Nothing an operator signs in for is kept by a browser or proxy.
    token = await admin.post(SESSION, json=_sign_in("root", ADMIN_PASSWORD))
    for answer in (token, answers["json"], answers["refusal"]):
        assert answer.headers["cache-control"] == "no-store"


REGIONS = {
    "plain": "浙江省/杭州市/西湖区",
    "percent": "浙江省/宁波市/50%区",
    "underscore": "浙江省/温州市/甲_乙区",
    "backslash": "浙江省/湖州市/丙\\丁区",
}


async def test_region_search_takes_wildcards_literally(
    admin: httpx.AsyncClient, runtime: Runtime
) -> None:
    phones = {}
    async with runtime.db.transaction() as session:
        for n, (label, region) in enumerate(REGIONS.items()):
            phone = f"1390000{n:04d}"
            account = Account(
                id=secrets.token_hex(16),
                phone_hash=runtime.box.lookup_hash(phone, PHONE),
                phone_sealed=runtime.box.seal(phone, PHONE),
                level=1,
            )
            session.add(account)
            await session.flush()
            session.add(
                Binding(
                    account_id=account.id,
                    customer_no=f"330000000{n}",
                    supply_region=region,
                    meter_book="MB-1",
                )
            )
            phones[f"{phone[:3]}****{phone[-4:]}"] = label

    async def found(term: str) -> set[str]:
        answer = await admin.get("/admin/v1/accounts", params={"region": term})
        assert answer.status_code == 200, answer.text
        return {phones[item["phone"]] for item in answer.json()["items"]}

    assert await found("%") == {"percent"}
    assert await found("50%") == {"percent"}
    assert await found("_") == {"underscore"}
    assert await found("甲_乙") == {"underscore"}
    assert await found("\\") == {"backslash"}
    assert await found("西湖") == {"plain"}
    assert await found("市/") == set(REGIONS)


TIME_PARAMETERS = [
    ("/admin/v1/audit", "since"),
    ("/admin/v1/audit", "until"),
    ("/admin/v1/accounts", "bound_from"),
    ("/admin/v1/accounts", "bound_to"),
    ("/admin/v1/analytics/traffic", "from"),
    ("/admin/v1/analytics/errors", "to"),
    ("/admin/v1/analytics/top-failing", "from"),
    ("/admin/v1/analytics/auth-failures", "to"),
    ("/admin/v1/accounts/acct-1/trajectory", "from"),
]
NOT_RFC3339 = [
    "1700000000",  # a Unix timestamp
    "2026-11-22",  # a date
    "2026-11-22T00:00:00",  # no time zone
    "2026-11-22 00:00:00Z",  # a space for T
    "2026-11-22T00:00Z",  # no seconds
    "2026-11-22T00:00:00+0800",  # an offset without a colon
    "２０２６-11-22T00:00:00Z",  # full-width digits
]


@pytest.mark.parametrize(("path", "parameter"), TIME_PARAMETERS)
async def test_times_the_api_promises_as_rfc3339_must_be_rfc3339(
    admin: httpx.AsyncClient, path: str, parameter: str
) -> None:
    for value in NOT_RFC3339:
        answer = await admin.get(path, params={parameter: value})
        assert answer.status_code == 422, (value, answer.text)
        body = answer.json()
        assert (body["code"], body["field"]) == ("request.invalid", parameter), value
        assert "RFC 3339" in body["detail"]
    for value in ("2026-11-22T00:00:00Z", "2026-11-22T08:00:00.5+08:00", "2026-11-22t00:00:00z"):
        answer = await admin.get(path, params={parameter: value})
        assert answer.status_code == 200, (value, answer.text)

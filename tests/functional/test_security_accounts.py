"""Issue 12, items 3 and 6, black-box: service passwords cannot be sprayed across 户号, and no
customer-facing answer tells whether a phone or a 户号 exists.

Everything goes over HTTP through the gateway's own listener on a real socket, signed as a
channel signs, to the accounts service and the demo business systems (each on a socket of
its own) behind it, wired as ``gridgate up`` wires them: the demo catalog, its channels and
interfaces. So these tests keep holding when the gateway's data plane is rewritten.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import shutil
import socket
import time
from collections.abc import AsyncIterator, Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from starlette.types import ASGIApp

import gridgate.accounts.services as account_services
from gridgate.accounts.app import build_accounts
from gridgate.accounts.directory import MarketingDirectory
from gridgate.accounts.parts import AccountsParts
from gridgate.catalog.schemas import Authorizations, InterfaceCreate
from gridgate.catalog.services import CatalogService
from gridgate.demo.data import Customer, generate_demo_data
from gridgate.demo.seed import seed_demo
from gridgate.demo.systems import SYSTEMS
from gridgate.gateway.plane import EngineListener
from gridgate.gateway.service import GatewayParts
from gridgate.gateway.signing import signed_headers
from gridgate.gateway.tokens import JwksVerifier
from gridgate.operators.audit import Actor
from gridgate.registry.client import InstanceInfo
from gridgate.runtime import Runtime
from gridgate.settings import Settings, new_key
from tests.conftest import _run_sync, make_settings
from tests.functional.gateway_harness import StaticInstances
from tests.support.engine import serving

DATA = generate_demo_data()
CUSTOMERS = list(DATA.customers.values())
UNKNOWN_NO = "3399999999"  # ten digits, and nobody's 户号
UNKNOWN_PHONE = "13700009999"
PASSWORD = "a-good-password-1"
#: Long enough never to cut a passing test short; a failing one still ends.
DEADLINE_S = 15
MASKED_PHONE = re.compile(r"1[3-9][0-9]\*{4}[0-9]{4}")


def _wrong(customer: Customer) -> str:
    return "000000" if customer.service_password != "000000" else "111111"


def _shape(answer: httpx.Response) -> dict[str, Any]:
    """What a caller can compare between two answers: status, code, detail and field names."""
    body = answer.json()
    return {
        "status": answer.status_code,
        "code": body.get("code"),
        "detail": body.get("detail"),
        "fields": sorted(body),
    }


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


async def _serve(app: ASGIApp, stack: contextlib.AsyncExitStack) -> int:
    """Serve ``app`` with uvicorn on a free port of this loop; its port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, lifespan="off", log_config=None, access_log=False)
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))

    async def stop() -> None:
        server.should_exit = True
        await task
        sock.close()

    stack.push_async_callback(stop)
    deadline = time.monotonic() + DEADLINE_S
    while not server.started:
        assert time.monotonic() < deadline and not task.done(), "a listener did not start"
        await asyncio.sleep(0.01)
    return int(sock.getsockname()[1])


@dataclass
class Journey:
    """A channel (``app``) in front of the gateway, and what the test may look at behind it."""

    http: httpx.AsyncClient
    secret: str
    parts: AccountsParts
    gateway: GatewayParts
    outbox: Path

    async def call(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        token: str | None = None,
        ip: str = "203.0.113.1",
    ) -> httpx.Response:
        """A signed call from client address ``ip`` (the gateway trusts its loopback peer)."""
        body = json.dumps(json_body).encode() if json_body is not None else b""
        headers = signed_headers("app", self.secret, method, path, body=body)
        headers["X-Forwarded-For"] = ip
        if body:
            headers["Content-Type"] = "application/json"
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return await self.http.request(method, path, content=body, headers=headers)

    async def customer(self, phone: str, *, ip: str = "203.0.113.1") -> str:
        """A registered customer's access token (registered directly: codes are rationed)."""
        async with self.parts.runtime.db.transaction() as session:
            await self.parts.accounts(session).register(
                phone, PASSWORD, channel="app", channel_user_id=None
            )
        answer = await self.call(
            "POST",
            "/api/v1/auth/token",
            json_body={"grant_type": "password", "phone": phone, "password": PASSWORD},
            ip=ip,
        )
        assert answer.status_code == 200, answer.text
        return str(answer.json()["access_token"])

    async def bind(
        self, token: str, customer_no: str, *, ip: str = "203.0.113.1", **proof: str
    ) -> httpx.Response:
        """``POST /api/v1/me/bindings`` with ``service_password`` or ``sms_code``."""
        return await self.call(
            "POST",
            "/api/v1/me/bindings",
            json_body={"customer_no": customer_no, **proof},
            token=token,
            ip=ip,
        )

    async def challenge(self, token: str, customer_no: str) -> httpx.Response:
        """``POST /api/v1/me/bindings/challenge``."""
        return await self.call(
            "POST",
            "/api/v1/me/bindings/challenge",
            json_body={"customer_no": customer_no},
            token=token,
        )

    def messages(
        self, phone: str | None = None, purpose: str | None = None
    ) -> list[dict[str, Any]]:
        """The SMS the development provider wrote, oldest first."""
        if not self.outbox.exists():
            return []
        lines = [json.loads(line) for line in self.outbox.read_text().splitlines()]
        return [
            m
            for m in lines
            if (phone is None or m["phone"] == phone)
            and (purpose is None or m["purpose"] == purpose)
        ]

    async def wait_messages(self, phone: str, purpose: str, count: int) -> list[dict[str, Any]]:
        """The messages once there are ``count`` of them (notices go out in the background)."""
        deadline = time.monotonic() + DEADLINE_S
        while len(found := self.messages(phone, purpose)) < count:
            assert time.monotonic() < deadline, f"{count} {purpose} SMS expected, got {found}"
            await asyncio.sleep(0.02)
        return found


@dataclass(frozen=True)
class Seeded:
    """A database with the demo catalog, and the keys and channel secret that go with it."""

    path: Path
    keys: dict[str, str]
    secret: str


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory, sqlite_template: Path) -> Seeded:
    """The demo catalog, seeded once (its passwords take argon2 time) and copied per test."""
    root = tmp_path_factory.mktemp("seeded")
    shutil.copy(sqlite_template, root / "gridgate.db")
    keys = {"secret_key": new_key(), "data_key": new_key(), "registry_token": new_key()}
    found: dict[str, Any] = {}

    async def seed() -> None:
        runtime = Runtime.build(_settings(root, keys))
        try:
            found.update(await seed_demo(runtime, DATA) or {})
        finally:
            await runtime.close()

    _run_sync(seed())
    secret = next(c["secret"] for c in found["channels"] if c["code"] == "app")
    return Seeded(root / "gridgate.db", keys, secret)


def _settings(data_dir: Path, keys: dict[str, str]) -> Settings:
    return make_settings(
        data_dir, database_url=f"sqlite+aiosqlite:///{data_dir / 'gridgate.db'}", **keys
    )


@pytest.fixture
async def journey(tmp_path: Path, seeded: Seeded) -> AsyncIterator[Journey]:
    shutil.copy(seeded.path, tmp_path / "gridgate.db")
    settings = _settings(tmp_path, seeded.keys)
    runtime = Runtime.build(settings)
    secret = seeded.secret
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(runtime.close)
        ports = {
            code: await _serve(SYSTEMS[code](DATA), stack) for code in ("marketing", "consultation")
        }
        directory = MarketingDirectory(None, base_url=f"http://127.0.0.1:{ports['marketing']}")
        stack.push_async_callback(directory.aclose)
        parts = AccountsParts.build(runtime, directory=directory)
        stack.push_async_callback(parts.store.close)
        ports["accounts"] = await _serve(build_accounts(parts), stack)
        async with runtime.db.transaction() as session:
            await parts.keys.rotate(session)
            jwks = await parts.keys.jwks(session)
        verifier = JwksVerifier(
            settings.token_issuer, settings.token_audience, revoked=runtime.revocations
        )
        verifier.set_keys(jwks)
        gateway = GatewayParts.build(runtime, verifier=verifier, revocations=runtime.revocations)
        source = StaticInstances(
            {
                service: [InstanceInfo(service, service, "127.0.0.1", port, 100, None, {}, True)]
                for service, port in ports.items()
            }
        )
        await gateway.holder.refresh()
        base_url = await stack.enter_async_context(
            serving(EngineListener(gateway, {}, source=source))
        )
        async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:
            yield Journey(http, secret, parts, gateway, tmp_path / "sms-outbox.jsonl")
        await parts.notices.drain()


# --- item 3: service passwords sprayed across 户号 -----------------------------------------


async def test_one_account_spraying_service_passwords_across_huhao_must_wait(
    journey: Journey,
) -> None:
    token = await journey.customer("13911110001")
    targets = CUSTOMERS[1:7]
    for target in targets[:5]:
        wrong = await journey.bind(token, target.customer_no, service_password=_wrong(target))
        assert wrong.status_code == 401 and wrong.json()["code"] == "auth.bad_credentials"
    # A sixth 户号, even with its right password: the account has to wait first.
    refused = await journey.bind(
        token, targets[5].customer_no, service_password=targets[5].service_password
    )
    assert refused.status_code == 429, refused.text
    assert refused.json()["code"] == "auth.too_many_failures"
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
    # The 户号 it tried are not locked for anyone else: one failure each is far from that.
    other = await journey.customer("13911110002")
    ok = await journey.bind(
        other, targets[0].customer_no, service_password=targets[0].service_password
    )
    assert ok.status_code == 201, ok.text


async def test_accounts_behind_one_address_share_its_limit(journey: Journey) -> None:
    here, elsewhere = "198.51.100.7", "198.51.100.8"
    tokens = [await journey.customer(f"1391112{n:04d}", ip=here) for n in range(5)]
    targets = iter(CUSTOMERS[10:40])
    for token in tokens[:4]:
        for _ in range(5):
            target = next(targets)
            wrong = await journey.bind(
                token, target.customer_no, ip=here, service_password="000001"
            )
            assert wrong.status_code == 401, wrong.text
    # Twenty failures from this address: a fresh account waits here, …
    target = next(targets)
    refused = await journey.bind(tokens[4], target.customer_no, ip=here, service_password="000001")
    assert refused.status_code == 429 and refused.json()["code"] == "auth.too_many_failures"
    # … not from another address.
    there = await journey.bind(
        tokens[4], target.customer_no, ip=elsewhere, service_password=target.service_password
    )
    assert there.status_code == 201, there.text


async def test_a_locked_huhao_still_binds_by_sms_for_its_owner(journey: Journey) -> None:
    target = CUSTOMERS[3]
    attacker = await journey.customer("13911130001")
    for _ in range(5):
        await journey.bind(attacker, target.customer_no, service_password=_wrong(target))
    owner = await journey.customer("13911130002")
    # However often the owner tries meanwhile, the lock answers; their account is not punished.
    for _ in range(7):
        locked = await journey.bind(
            owner, target.customer_no, service_password=target.service_password
        )
        assert locked.status_code == 423 and locked.json()["code"] == "auth.locked"
        assert 0 < int(locked.headers["retry-after"]) <= 1800
    sent = await journey.challenge(owner, target.customer_no)
    assert sent.status_code == 202, sent.text
    [message] = journey.messages(target.reserved_phone, "bind")
    # Another account's guesses at the code neither pass nor use up the owner's code.
    guesser = await journey.customer("13911130003")
    for guess in ("000000", "111111", "222222", "333333", "444444", message["code"]):
        refused = await journey.bind(guesser, target.customer_no, sms_code=guess)
        assert refused.status_code == 400 and refused.json()["code"] == "sms.code_invalid"
    bound = await journey.bind(owner, target.customer_no, sms_code=message["code"])
    assert bound.status_code == 201 and bound.json()["level"] == 1


async def test_the_reserved_phone_hears_of_password_bindings_but_is_not_flooded(
    journey: Journey,
) -> None:
    target = CUSTOMERS[4]
    stranger = await journey.customer("13911140001")
    for _ in range(3):
        wrong = await journey.bind(stranger, target.customer_no, service_password=_wrong(target))
        assert wrong.status_code == 401
    [failed] = await journey.wait_messages(target.reserved_phone, "bind_notice", 1)
    assert target.customer_no[-4:] in failed["text"] and failed["code"] == ""
    owner = await journey.customer("13911140002")
    bound = await journey.bind(owner, target.customer_no, service_password=target.service_password)
    assert bound.status_code == 201
    notices = await journey.wait_messages(target.reserved_phone, "bind_notice", 2)
    # One notice for the three failures, one for the binding.
    assert len(notices) == 2 and notices[1]["text"] != failed["text"]
    assert target.customer_no[-4:] in notices[1]["text"]


async def test_marketing_checks_passwords_for_the_platform_only(journey: Journey) -> None:
    # Even routed to it by the catalog (an operator's slip), a channel is refused by marketing.
    runtime = journey.parts.runtime
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        await catalog.create_interface(
            InterfaceCreate.model_validate(
                {
                    "code": "marketing.verify",
                    "name": "marketing.verify",
                    "method": "POST",
                    "path": "/internal/v1/customers/{customer_no}/verify-service-password",
                    "provider": "marketing",
                    "target_service": "marketing",
                }
            )
        )
        await catalog.set_authorizations("marketing.verify", Authorizations(channels=["app"]))
    await journey.gateway.holder.refresh()
    target = CUSTOMERS[5]
    answer = await journey.call(
        "POST",
        f"/internal/v1/customers/{target.customer_no}/verify-service-password",
        json_body={"service_password": target.service_password},
    )
    assert answer.status_code == 403 and answer.json()["code"] == "perm.denied"
    assert "valid" not in answer.json()


# --- item 6: enumeration ------------------------------------------------------------------


async def test_the_binding_challenge_does_not_tell_whether_a_huhao_exists(
    journey: Journey,
) -> None:
    token = await journey.customer("13911160001")
    known = await journey.challenge(token, CUSTOMERS[6].customer_no)
    unknown = await journey.challenge(token, UNKNOWN_NO)
    assert known.status_code == unknown.status_code == 202, unknown.text
    assert set(known.json()) == set(unknown.json()) == {"masked_phone", "expires_in"}
    assert known.json()["expires_in"] == unknown.json()["expires_in"]
    assert MASKED_PHONE.fullmatch(unknown.json()["masked_phone"])
    # Asked again, both wait alike: the unknown one behaves as one stable phone would.
    again = [await journey.challenge(token, no) for no in (CUSTOMERS[6].customer_no, UNKNOWN_NO)]
    assert [a.status_code for a in again] == [429, 429]
    assert _shape(again[0]) == _shape(again[1])
    # Nothing was sent for the unknown one.
    assert {m["phone"] for m in journey.messages(purpose="bind")} == {CUSTOMERS[6].reserved_phone}


async def test_binding_proofs_fail_alike_for_unknown_and_known_huhao(journey: Journey) -> None:
    token = await journey.customer("13911170001")
    known, unknown = CUSTOMERS[7].customer_no, UNKNOWN_NO
    by_code = [await journey.bind(token, no, sms_code="123456") for no in (known, unknown)]
    assert _shape(by_code[0]) == _shape(by_code[1])
    assert by_code[0].status_code == 400 and by_code[0].json()["code"] == "sms.code_invalid"
    by_password = [
        await journey.bind(token, no, service_password=_wrong(CUSTOMERS[7]))
        for no in (known, unknown)
    ]
    assert _shape(by_password[0]) == _shape(by_password[1])
    assert by_password[0].status_code == 401


async def test_lockouts_do_not_tell_whether_a_phone_or_huhao_exists(journey: Journey) -> None:
    registered = "13911180001"
    await journey.customer(registered)
    locked = []
    for n, phone in enumerate((registered, UNKNOWN_PHONE)):
        for _ in range(5):
            wrong = await journey.call(
                "POST",
                "/api/v1/auth/token",
                json_body={"grant_type": "password", "phone": phone, "password": "not-it-at-all"},
                ip=f"192.0.2.{n + 1}",
            )
            assert wrong.status_code == 401
        locked.append(
            await journey.call(
                "POST",
                "/api/v1/auth/token",
                json_body={"grant_type": "password", "phone": phone, "password": PASSWORD},
                ip=f"192.0.2.{n + 1}",
            )
        )
    assert [a.status_code for a in locked] == [423, 423]
    assert _shape(locked[0]) == _shape(locked[1])
    assert locked[0].headers["retry-after"] == locked[1].headers["retry-after"]
    # The same for a 户号's service password: five failures lock a known and an unknown one.
    known = CUSTOMERS[8]
    for n, customer_no in enumerate((known.customer_no, UNKNOWN_NO)):
        attacker = await journey.customer(f"1391118100{n}")
        for _ in range(5):
            assert (
                await journey.bind(attacker, customer_no, service_password=_wrong(known))
            ).status_code == 401
    third = await journey.customer("13911181009")
    refused = [
        await journey.bind(third, known.customer_no, service_password=known.service_password),
        await journey.bind(third, UNKNOWN_NO, service_password=known.service_password),
    ]
    assert [a.status_code for a in refused] == [423, 423]
    assert _shape(refused[0]) == _shape(refused[1])


async def test_registering_a_registered_phone_answers_as_a_wrong_code(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered, fresh = "13911190001", "13911190002"
    await journey.customer(registered)
    hashed: list[str] = []
    real_hash = account_services.hash_password

    def counting_hash(password: str) -> str:
        hashed.append(password)
        return real_hash(password)

    # The time a registration takes is the password hash's: it must run for both phones.
    monkeypatch.setattr(account_services, "hash_password", counting_hash)
    answers = []
    for phone in (registered, fresh):
        sent = await journey.call(
            "POST", "/api/v1/sms/codes", json_body={"phone": phone, "purpose": "register"}
        )
        assert sent.status_code == 202
        [message] = journey.messages(phone, "register")
        body = {"phone": phone, "sms_code": message["code"], "password": "another-password-2"}
        answers.append(await journey.call("POST", "/api/v1/accounts", json_body=body))
    assert answers[0].status_code == 400, answers[0].text
    assert answers[1].status_code == 201, answers[1].text
    assert len(hashed) == 2
    # The registered phone's answer is a wrong code's, word for word.
    wrong_code = await journey.call(
        "POST",
        "/api/v1/accounts",
        json_body={"phone": "13911190003", "sms_code": "123456", "password": "another-password-2"},
    )
    assert _shape(answers[0]) == _shape(wrong_code)
    # Its owner learns why, by SMS.
    [notice] = await journey.wait_messages(registered, "register_notice", 1)
    assert notice["code"] == "" and "已注册" in notice["text"]
    assert journey.messages(fresh, "register_notice") == []


async def test_signing_in_with_an_unknown_phone_checks_a_password_too(
    journey: Journey, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered = "13911200001"
    await journey.customer(registered)
    checked: list[str | None] = []
    real_verify = account_services.verify_password

    def counting_verify(stored: str | None, password: str) -> bool:
        checked.append(stored)
        return real_verify(stored, password)

    monkeypatch.setattr(account_services, "verify_password", counting_verify)
    answers = [
        await journey.call(
            "POST",
            "/api/v1/auth/token",
            json_body={"grant_type": "password", "phone": phone, "password": "not-it-at-all"},
        )
        for phone in (registered, UNKNOWN_PHONE)
    ]
    assert len(checked) == 2 and checked[1] is None  # the dummy hash, same argon2 work
    assert _shape(answers[0]) == _shape(answers[1])
    assert answers[0].status_code == 401


async def test_a_consultation_does_not_tell_whether_a_huhao_exists(journey: Journey) -> None:
    answers = [
        await journey.call(
            "POST",
            "/api/v1/consultations",
            json_body={"topic": "电费", "content": "请问本月电费为何偏高？", "customer_no": no},
        )
        for no in (CUSTOMERS[9].customer_no, UNKNOWN_NO)
    ]
    assert [a.status_code for a in answers] == [201, 201], answers[1].text
    assert set(answers[0].json()) == set(answers[1].json())

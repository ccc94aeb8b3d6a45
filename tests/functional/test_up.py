"""`gridgate up` as a newcomer runs it: three listeners, demo data, clean stop, data kept."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gridgate.gateway.signing import signed_headers
from gridgate.pii import id_check_char

START_DEADLINE_S = 60


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env["GRIDGATE_LOG_LEVEL"] = "warning"
    return env


class Up:
    """A `gridgate up` process on free ports in its own data dir."""

    def __init__(self, data_dir: Path, *extra: str) -> None:
        self.data_dir = data_dir
        self.demo = data_dir / "demo.json"
        before = self.demo.stat().st_mtime_ns if self.demo.exists() else None
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gridgate",
                "up",
                "--data-dir",
                str(data_dir),
                "--gateway-port",
                "0",
                "--admin-port",
                "0",
                "--registry-port",
                "0",
                *extra,
            ],
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gridgate up exited: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            fresh = self.demo.exists() and self.demo.stat().st_mtime_ns != before
            if fresh and self._answers():
                return
            time.sleep(0.1)
        raise AssertionError("gridgate up did not come up in time")

    def _answers(self) -> bool:
        try:
            urls = json.loads(self.demo.read_text())
            return all(
                httpx.get(f"{urls[role]}/readyz", timeout=1).status_code == 200
                for role in ("admin", "registry", "gateway")
            )
        except (ValueError, KeyError, httpx.HTTPError):
            return False

    @property
    def urls(self) -> dict[str, object]:
        return json.loads(self.demo.read_text())

    def stop(self) -> float:
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(timeout=15)
        return time.monotonic() - started


@pytest.fixture
def up_dir(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path / "data"


def test_up_serves_seeds_stops_and_keeps_data(up_dir: Path) -> None:
    first = Up(up_dir)
    try:
        demo = first.urls
        assert stat.S_IMODE(first.demo.stat().st_mode) == 0o600
        assert {c["code"] for c in demo["channels"]} == {"app", "wechat", "web95598"}  # type: ignore[index]
        for role in ("gateway", "admin", "registry"):
            url = demo[role]
            assert httpx.get(f"{url}/healthz").json()["listener"] == role
            assert httpx.get(f"{url}/readyz").status_code == 200
            assert httpx.get(f"{url}/metrics").status_code == 200
        # Every demo business system runs twice, registered through the SDK.
        token = json.loads((up_dir / "keys.json").read_text())["registry_token"]
        wanted = [{"service": "accounts", "instances": 1, "healthy": 1}] + [
            {"service": code, "instances": 2, "healthy": 2}
            for code in ("billing", "consultation", "marketing", "notices", "payment")
        ]
        wanted.append({"service": "permissions", "instances": 1, "healthy": 1})
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            services = httpx.get(
                f"{demo['registry']}/registry/v1/services",
                headers={"Authorization": f"Bearer {token}"},
            ).json()["items"]
            if services == wanted or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert services == wanted
        assert demo["customers"][0]["customer_no"] == "3300000001"  # type: ignore[index]
        # A signed request from a demo channel passes the gateway to a demo business system.
        secret = next(c["secret"] for c in demo["channels"] if c["code"] == "wechat")  # type: ignore[index]
        query = "region=%E8%A5%BF%E6%B9%96&page=1"
        path = "/api/v1/notices/outages"
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            headers = signed_headers("wechat", secret, "GET", path, query=query)
            outages = httpx.get(f"{demo['gateway']}{path}?{query}", headers=headers)
            if outages.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the gateway's discovery may still be catching up
        assert outages.status_code == 200, outages.text
        assert outages.json()["items"] and all(
            "西湖" in o["region"] for o in outages.json()["items"]
        )
        admin = str(demo["admin"])
        operator = demo["operator"]
        token = httpx.post(f"{admin}/admin/v1/session", json=operator).json()["access_token"]
        auth = {"Authorization": f"Bearer {token}"}
        systems = httpx.get(f"{admin}/admin/v1/business-systems", headers=auth).json()
        assert {"marketing", "billing", "payment", "notices"} <= {
            s["code"] for s in systems["items"]
        }
        interfaces = httpx.get(
            f"{admin}/admin/v1/interfaces", params={"page_size": 200}, headers=auth
        ).json()
        paths = {(i["method"], i["path"]) for i in interfaces["items"]}
        assert ("GET", "/api/v1/customers/{customer_no}/bills") in paths
        assert ("POST", "/api/v1/payments") in paths
        payments = next(i for i in interfaces["items"] if i["code"] == "payment.create")
        assert payments["idempotent"] is False
        assert httpx.get(f"{admin}/admin/docs").status_code == 200
        # Something changed between the two starts must still be there after the second.
        made = httpx.post(
            f"{admin}/admin/v1/channels",
            headers=auth,
            json={"code": "partner1", "name": "合作方", "type": "partner"},
        )
        assert made.status_code == 201
        first_out = first.proc.stdout
        assert first.stop() < 5
        assert first.proc.returncode == 0
        assert str(first.demo.resolve()) in first_out.read()  # type: ignore[union-attr]
    finally:
        if first.proc.poll() is None:
            first.proc.kill()

    second = Up(up_dir)
    try:
        again = second.urls
        assert again["channels"] == demo["channels"]  # secrets kept, not re-seeded
        admin = str(again["admin"])
        token = httpx.post(f"{admin}/admin/v1/session", json=again["operator"]).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {token}"}
        channels = httpx.get(f"{admin}/admin/v1/channels", headers=auth).json()
        assert {c["code"] for c in channels["items"]} == {"app", "wechat", "web95598", "partner1"}
        assert second.stop() < 5
    finally:
        if second.proc.poll() is None:
            second.proc.kill()


def test_up_refuses_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "gridgate",
                "up",
                "--data-dir",
                str(tmp_path),
                "--gateway-port",
                str(port),
                "--admin-port",
                "0",
                "--registry-port",
                "0",
            ],
            env=_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_production_refuses_without_secrets_and_never_seeds(tmp_path: Path) -> None:
    env = {**_env(), "GRIDGATE_ENV": "production"}
    refused = subprocess.run(
        [sys.executable, "-m", "gridgate", "up", "--data-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert "GRIDGATE_SECRET_KEY" in refused.stderr and "GRIDGATE_DATA_KEY" in refused.stderr
    assert not (tmp_path / "demo.json").exists()


def test_customer_journey_through_the_gateway(up_dir: Path) -> None:
    """Register by SMS, sign in, bind a demo 户号, pass real-name review: level advanced."""
    instance = Up(up_dir)
    try:
        demo = instance.urls
        gateway = str(demo["gateway"])
        secret = next(c["secret"] for c in demo["channels"] if c["code"] == "app")  # type: ignore[index]
        outbox = up_dir / "sms-outbox.jsonl"

        def call(
            method: str, path: str, *, token: str | None = None, **kwargs: object
        ) -> httpx.Response:
            request = httpx.Request(method, gateway + path, **kwargs)  # type: ignore[arg-type]
            body = request.read()
            headers = signed_headers("app", secret, method, path, body=body)
            if token:
                headers["Authorization"] = f"Bearer {token}"
            request.headers.update(headers)
            deadline = time.monotonic() + START_DEADLINE_S
            while True:
                answer = httpx.Client().send(request)
                if answer.status_code != 503 or time.monotonic() > deadline:
                    return answer
                time.sleep(0.2)  # the gateway is still discovering the accounts service
                request.headers.update(signed_headers("app", secret, method, path, body=body))

        def last_code(phone: str) -> str:
            lines = [json.loads(line) for line in outbox.read_text().splitlines()]
            return str(next(m["code"] for m in reversed(lines) if m["phone"] == phone))

        phone = "13655554444"
        assert (
            call(
                "POST", "/api/v1/sms/codes", json={"phone": phone, "purpose": "register"}
            ).status_code
            == 202
        )
        created = call(
            "POST",
            "/api/v1/accounts",
            json={"phone": phone, "sms_code": last_code(phone), "password": "journey-pass-1"},
        )
        assert created.status_code == 201, created.text
        signed_in = call(
            "POST",
            "/api/v1/auth/token",
            json={"grant_type": "password", "phone": phone, "password": "journey-pass-1"},
        )
        assert signed_in.status_code == 200, signed_in.text
        token = signed_in.json()["access_token"]
        customer = demo["customers"][0]  # type: ignore[index]
        # Level 1 interfaces refuse a registered account, with the level it needs.
        refused = call("GET", f"/api/v1/customers/{customer['customer_no']}", token=token)
        assert refused.status_code == 403 and refused.json()["required_level"] == 1
        challenge = call(
            "POST",
            "/api/v1/me/bindings/challenge",
            token=token,
            json={"customer_no": customer["customer_no"]},
        )
        assert challenge.status_code == 202, challenge.text
        bound = call(
            "POST",
            "/api/v1/me/bindings",
            token=token,
            json={
                "customer_no": customer["customer_no"],
                "sms_code": last_code(customer["reserved_phone"]),
            },
        )
        assert bound.status_code == 201 and bound.json()["level"] == 1
        token = call(
            "POST",
            "/api/v1/auth/token",
            json={"grant_type": "password", "phone": phone, "password": "journey-pass-1"},
        ).json()["access_token"]
        bills = call("GET", f"/api/v1/customers/{customer['customer_no']}/bills", token=token)
        assert bills.status_code == 200 and bills.json()["items"]
        assert all(b["address"].endswith("****") for b in bills.json()["items"])  # masked below 2
        profile = call("GET", f"/api/v1/customers/{customer['customer_no']}", token=token).json()
        assert (
            profile["reserved_phone"]
            == customer["reserved_phone"][:3] + "****" + customer["reserved_phone"][-4:]
        )
        assert profile["name"].endswith("*")
        other = demo["customers"][1]  # type: ignore[index]
        not_mine = call("GET", f"/api/v1/customers/{other['customer_no']}", token=token)
        assert not_mine.status_code == 403 and not_mine.json()["code"] == "perm.not_bound"
        menus = call("GET", "/api/v1/me/menus", token=token).json()
        account_menu = next(m for m in menus["items"] if m["code"] == "account")
        locked = {c["code"]: c["locked"] for c in account_menu["children"]}
        assert locked == {"bills": False, "pay": False, "profile": True}
        assert (
            next(c for c in account_menu["children"] if c["code"] == "profile")["required_level"]
            == 2
        )
        id_number = "33010219900101123" + id_check_char("33010219900101123")
        png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
        submitted = call(
            "POST",
            "/api/v1/me/realname",
            token=token,
            data={"name": "王五", "id_number": id_number},
            files={"id_image": ("id.png", png, "image/png")},
        )
        assert submitted.status_code == 202, submitted.text
        admin = str(demo["admin"])
        operator = httpx.post(f"{admin}/admin/v1/session", json=demo["operator"]).json()[
            "access_token"
        ]
        auth = {"Authorization": f"Bearer {operator}"}
        [application] = httpx.get(
            f"{admin}/admin/v1/realname/applications", params={"status": "pending"}, headers=auth
        ).json()["items"]
        assert (
            httpx.post(
                f"{admin}/admin/v1/realname/applications/{application['id']}/approve", headers=auth
            ).status_code
            == 200
        )
        token = call(
            "POST",
            "/api/v1/auth/token",
            json={"grant_type": "password", "phone": phone, "password": "journey-pass-1"},
        ).json()["access_token"]
        me = call("GET", "/api/v1/me", token=token).json()
        assert me["level"] == 2 and me["realname"] == {"status": "approved"}
        whole = call("GET", f"/api/v1/customers/{customer['customer_no']}", token=token).json()
        assert whole["reserved_phone"] == customer["reserved_phone"] and "*" not in whole["name"]
        assert me["phone"] == "136****4444"
        # Logging out ends the access token at the gateway at once.
        assert call("POST", "/api/v1/auth/logout", token=token).status_code == 204
        after = call("GET", "/api/v1/me", token=token)
        assert after.status_code == 401 and after.json()["code"] == "auth.invalid_token"
    finally:
        instance.stop()


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.settimeout(2)
        return probe.connect_ex((host, port)) == 0


def test_up_keeps_internal_listeners_off_the_channel_address(up_dir: Path) -> None:
    """`--host` is the channel-facing address: only the gateway binds there, and the services
    behind it refuse identity headers that the gateway did not sign."""
    exposed = "127.0.0.2"  # another loopback address stands for the channel-facing one
    instance = Up(up_dir, "--host", exposed)
    try:
        demo = instance.urls
        assert str(demo["gateway"]).startswith(f"http://{exposed}:")
        for role in ("admin", "registry", "accounts"):
            url = httpx.URL(str(demo[role]))
            assert url.host == "127.0.0.1", (role, url)
            assert url.port is not None and not _port_open(exposed, url.port), role
        # Every demo instance registered on loopback, and answers nothing on the exposed one.
        token = json.loads((up_dir / "keys.json").read_text())["registry_token"]
        registry = str(demo["registry"])
        auth = {"Authorization": f"Bearer {token}"}
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            found = httpx.get(f"{registry}/registry/v1/services/billing/instances", headers=auth)
            instances = found.json()["instances"]
            if len(instances) == 2 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert len(instances) == 2
        for item in instances:
            assert item["host"] == "127.0.0.1" and not _port_open(exposed, item["port"])
        # Called directly with the headers the gateway would set, the services refuse.
        customer = demo["customers"][0]["customer_no"]  # type: ignore[index]
        forged = {"X-GG-Channel": "app", "X-GG-Account": "0" * 32, "X-GG-Level": "2"}
        bills = f"/api/v1/customers/{customer}/bills"
        billing = f"http://127.0.0.1:{instances[0]['port']}"
        for answer in (
            httpx.get(f"{demo['accounts']}/api/v1/me", headers=forged),
            httpx.get(f"{billing}{bills}", headers=forged),
            httpx.get(
                f"{billing}{bills}", headers={**forged, "X-GG-Internal": "v1;billing;1;" + "0" * 64}
            ),
        ):
            assert answer.status_code == 401, answer.text
            assert answer.json()["code"] == "auth.internal_signature"
        assert httpx.get(f"{demo['accounts']}/.well-known/jwks.json").status_code == 200
        # Through the gateway both work: the demo system and the accounts service.
        secret = next(c["secret"] for c in demo["channels"] if c["code"] == "app")  # type: ignore[index]
        path, query = "/api/v1/notices/outages", "page=1"
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            headers = signed_headers("app", secret, "GET", path, query=query)
            outages = httpx.get(f"{demo['gateway']}{path}?{query}", headers=headers)
            if outages.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.2)  # the gateway's discovery may still be catching up
        assert outages.status_code == 200, outages.text
        body = json.dumps({"phone": "13655550000", "purpose": "register"}).encode()
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            headers = signed_headers("app", secret, "POST", "/api/v1/sms/codes", body=body)
            headers["content-type"] = "application/json"
            sent = httpx.post(f"{demo['gateway']}/api/v1/sms/codes", headers=headers, content=body)
            if sent.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert sent.status_code == 202, sent.text
    finally:
        instance.stop()

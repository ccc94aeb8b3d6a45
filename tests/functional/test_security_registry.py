"""Service-name ownership (issue 12, item 1), black-box: real `gridgate serve registry` and
`gridgate serve admin` processes, driven over HTTP only.

A business system's registry credentials let it write only the services it owns: the one named
by its code, and those its catalog interfaces target. Anything else is a 403
`registry.service_not_owned`, written to the audit trail without flooding it.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.redis import RedisServer

DEADLINE_S = 20.0
NOT_OWNED = "registry.service_not_owned"
OPERATOR = "sec-admin"


class Node:
    """One `gridgate serve <role>` process on a free port."""

    def __init__(self, role: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gridgate", "serve", role, "--port", "0"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        match = re.search(r"listening on (http://\S+)", line)
        assert match, f"unexpected first line of {role}: {line!r}"
        self.url = match.group(1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@dataclass
class Platform:
    """The registry and admin listeners on one data dir, and what the tests need of them."""

    registry: httpx.Client
    admin: httpx.Client
    token: str
    passwords: dict[str, str]

    def system(self, code: str) -> tuple[str, str]:
        """Credentials of a business system, created through the admin API on first use."""
        if code not in self.passwords:
            password = secrets.token_urlsafe(18)
            answer = self.admin.post(
                "/admin/v1/business-systems",
                json={
                    "code": code,
                    "name": code,
                    "host": "10.0.0.1",
                    "port": 80,
                    "password": password,
                },
            )
            assert answer.status_code == 201, answer.text
            self.passwords[code] = password
        return (code, self.passwords[code])

    def register(self, system: str, service: str, host: str, port: int = 9000) -> httpx.Response:
        return self.registry.post(
            "/registry/v1/instances",
            json={"service": service, "host": host, "port": port},
            auth=self.system(system),
        )

    def heartbeat(self, system: str, instance_id: str) -> httpx.Response:
        return self.registry.put(
            f"/registry/v1/instances/{instance_id}/heartbeat", auth=self.system(system)
        )

    def deregister(self, system: str, instance_id: str) -> httpx.Response:
        return self.registry.delete(
            f"/registry/v1/instances/{instance_id}", auth=self.system(system)
        )

    def hosts(self, service: str) -> set[str]:
        answer = self.registry.get(
            f"/registry/v1/services/{service}/instances",
            params={"healthy_only": "false"},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert answer.status_code == 200, answer.text
        return {item["host"] for item in answer.json()["instances"]}

    def refusals(self, system: str) -> list[dict[str, Any]]:
        answer = self.admin.get(
            "/admin/v1/audit",
            params={
                "action": "registry.refused",
                "actor": f"business_system:{system}",
                "page_size": 100,
            },
        )
        assert answer.status_code == 200, answer.text
        return list(answer.json()["items"])


def _gridgate(env: dict[str, str], *args: str, stdin: str | None = None) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gridgate", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture(scope="module", params=["memory", "redis"])
def platform(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Platform]:
    data_dir: Path = tmp_path_factory.mktemp(f"security-registry-{request.param}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env.update({"GRIDGATE_DATA_DIR": str(data_dir), "GRIDGATE_LOG_LEVEL": "error"})
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        env["GRIDGATE_REDIS_URL"] = server.url.replace("/0", "/6")
    _gridgate(env, "migrate")
    operator_password = secrets.token_urlsafe(24)
    _gridgate(
        env,
        *("operator", "create", "--username", OPERATOR, "--role", "admin", "--password-stdin"),
        stdin=operator_password + "\n",
    )
    keys = (data_dir / "keys.json").read_text()
    token = re.search(r'"registry_token":\s*"([^"]+)"', keys)
    assert token, "no registry token in keys.json"
    nodes: list[Node] = []
    try:
        nodes.append(Node("admin", env))
        nodes.append(Node("registry", env))
        admin_node, registry_node = nodes
        with (
            httpx.Client(base_url=admin_node.url, timeout=10) as admin,
            httpx.Client(base_url=registry_node.url, timeout=10) as registry,
        ):
            signed_in = admin.post(
                "/admin/v1/session", json={"username": OPERATOR, "password": operator_password}
            )
            assert signed_in.status_code == 200, signed_in.text
            admin.headers["Authorization"] = f"Bearer {signed_in.json()['access_token']}"
            found = Platform(registry, admin, token.group(1), {})
            for code in ("accounts", "permissions", "marketing"):
                found.system(code)
            yield found
    finally:
        for node in reversed(nodes):
            node.stop()


def _refused(answer: httpx.Response, service: str) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == NOT_OWNED
    assert body["service"] == service


def test_marketing_cannot_write_instances_of_accounts(platform: Platform) -> None:
    # Register under the platform's own service: refused, and nothing is listed.
    _refused(platform.register("marketing", "accounts", "10.66.0.1"), "accounts")
    assert "10.66.0.1" not in platform.hosts("accounts")

    # The owner registers; marketing can neither renew nor remove that instance.
    created = platform.register("accounts", "accounts", "10.11.0.1", 9101)
    assert created.status_code == 201, created.text
    instance_id = created.json()["instance_id"]
    _refused(platform.heartbeat("marketing", instance_id), "accounts")
    _refused(platform.deregister("marketing", instance_id), "accounts")
    assert "10.11.0.1" in platform.hosts("accounts")

    # The owner still can.
    assert platform.heartbeat("accounts", instance_id).status_code == 204
    assert platform.deregister("accounts", instance_id).status_code == 204
    assert "10.11.0.1" not in platform.hosts("accounts")


def test_refusals_are_in_the_audit_trail(platform: Platform) -> None:
    created = platform.register("accounts", "accounts", "10.11.0.2", 9101)
    assert created.status_code == 201, created.text
    instance_id = created.json()["instance_id"]
    attacker = "outage-notices"
    _refused(platform.register(attacker, "accounts", "10.66.0.2"), "accounts")
    _refused(platform.heartbeat(attacker, instance_id), "accounts")
    _refused(platform.deregister(attacker, instance_id), "accounts")
    assert platform.deregister("accounts", instance_id).status_code == 204

    events = platform.refusals(attacker)
    by_operation = {event["after"]["operation"]: event for event in events}
    assert sorted(by_operation) == ["deregister", "heartbeat", "register"]
    for event in events:
        assert event["resource_type"] == "registry_service"
        assert event["resource_id"] == "accounts"
        assert event["client_ip"] == "127.0.0.1"
        assert event["after"]["business_system"] == attacker
        assert event["after"]["code"] == NOT_OWNED
    assert by_operation["register"]["after"]["host"] == "10.66.0.2"
    assert by_operation["heartbeat"]["after"]["instance_id"] == instance_id
    assert by_operation["deregister"]["after"]["host"] == "10.11.0.2"


def test_repeated_refusals_do_not_flood_the_audit_trail(platform: Platform) -> None:
    created = platform.register("accounts", "accounts", "10.11.0.3", 9101)
    assert created.status_code == 201, created.text
    instance_id = created.json()["instance_id"]
    attacker = "billing-flood"
    for _ in range(25):
        _refused(platform.heartbeat(attacker, instance_id), "accounts")
    # Every refusal is answered, but a retried heartbeat is one event.
    assert [e["after"]["operation"] for e in platform.refusals(attacker)] == ["heartbeat"]
    # Distinct services are events of their own, up to 20 per system and minute; the
    # system's next event counts the refusals left out before it.
    for n in range(30):
        _refused(platform.register(attacker, f"probe-{n}", "10.66.0.3"), f"probe-{n}")
    events = platform.refusals(attacker)
    assert len(events) == 20
    left_out = {e["resource_id"]: e["after"]["left_out"] for e in events}
    assert left_out["probe-0"] == 24
    assert sum(left_out.values()) == 24
    assert platform.deregister("accounts", instance_id).status_code == 204


def test_a_service_belongs_to_the_providers_of_the_interfaces_targeting_it(
    platform: Platform,
) -> None:
    orders = platform.system("orders")
    answer = platform.admin.post(
        "/admin/v1/interfaces",
        json={
            "code": "orders.list",
            "name": "订单",
            "method": "GET",
            "path": "/api/v1/orders",
            "provider": "orders",
            "target_service": "orders-api",
        },
    )
    assert answer.status_code == 201, answer.text
    # The registry node learns the new interface from the catalog within a second or so.
    deadline = time.monotonic() + DEADLINE_S
    while (created := platform.register(orders[0], "orders-api", "10.12.0.1")).status_code != 201:
        assert created.status_code == 403 and time.monotonic() < deadline, created.text
        time.sleep(0.1)
    assert "10.12.0.1" in platform.hosts("orders-api")
    # Not anyone else's, and a name no interface targets belongs to no one.
    _refused(platform.register("marketing", "orders-api", "10.66.0.4"), "orders-api")
    _refused(platform.register("orders", "unclaimed", "10.12.0.2"), "unclaimed")
    # A service named like a business system is that system's, whatever interfaces target.
    _refused(platform.register("orders", "permissions", "10.12.0.3"), "permissions")
    assert platform.deregister("orders", created.json()["instance_id"]).status_code == 204

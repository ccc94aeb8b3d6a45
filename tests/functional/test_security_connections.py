"""Connection exhaustion (issue 12, item 2), tried on `gridgate up` over raw sockets.

Two `gridgate up` processes, started together:

- ``tight``: started with a soft descriptor limit of 512 under a hard one of 1024 and a gateway
  capped at 16 connections, 4 per client address. It is flooded with more connections than it
  has descriptors: the gateway refuses the excess at once, and the admin and registry listeners
  and the clients already connected go on being answered.
- ``quick``: deadlines of 1 s for a first byte, for a request head and for an idle keep-alive
  under pressure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from pathlib import Path

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

START_DEADLINE_S = 90
#: Longer than any deadline of the instances; a passing step never waits for it.
GUARD_S = 15.0
GATEWAY_CAP = 16
PER_ADDRESS = 4
#: More connections than the tight instance has descriptors.
FLOOD = 1100


_UNDER_LIMITS = (
    "import resource, runpy, sys; "
    "resource.setrlimit(resource.RLIMIT_NOFILE, ({soft}, {hard})); "
    "sys.argv[0] = 'gridgate'; runpy.run_module('gridgate', run_name='__main__')"
)


class Instance:
    """A `gridgate up` process on free ports, with extra settings and descriptor limits."""

    def __init__(
        self, root: Path, settings: dict[str, str], nofile: tuple[int, int] | None = None
    ) -> None:
        self.data_dir = root / "data"
        self.demo = self.data_dir / "demo.json"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
        env["GRIDGATE_LOG_LEVEL"] = "warning"
        env.update(settings)
        command = [sys.executable, "-m", "gridgate", "up", "--data-dir", str(self.data_dir)]
        command += ["--gateway-port", "0", "--admin-port", "0", "--registry-port", "0"]
        if nofile is not None:
            # `python -m gridgate` under the given descriptor limits (soft, hard).
            command[1:3] = ["-c", _UNDER_LIMITS.format(soft=nofile[0], hard=nofile[1])]
        # Into a file: a pipe nobody reads would stall the process once full.
        self.log = root / "stderr.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                command, env=env, stdout=subprocess.DEVNULL, stderr=log, text=True
            )

    def wait_until_up(self) -> None:
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"gridgate up exited: {self.log.read_text()}")
            if self.demo.exists() and self._ready():
                return
            time.sleep(0.1)
        raise AssertionError(f"gridgate up did not come up in time: {self.log.read_text()}")

    def _ready(self) -> bool:
        try:
            urls = json.loads(self.demo.read_text())
            return all(
                httpx.get(f"{urls[role]}/readyz", timeout=1).status_code == 200
                for role in ("admin", "registry", "gateway")
            )
        except (ValueError, KeyError, httpx.HTTPError):
            return False

    def address(self, role: str) -> tuple[str, int]:
        url = httpx.URL(json.loads(self.demo.read_text())[role])
        assert url.host is not None and url.port is not None
        return url.host, url.port

    def url(self, role: str) -> str:
        return str(json.loads(self.demo.read_text())[role])

    def metric(self, name: str, **labels: str) -> float | None:
        """A sample of the process's metrics (read on the admin listener), None if absent."""
        text = httpx.get(f"{self.url('admin')}/metrics", timeout=GUARD_S).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in labels.items()
                ):
                    return float(sample.value)
        return None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture(scope="module")
def instances(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Instance]]:
    """Both instances, started at the same time (each takes seconds to seed its demo data)."""
    tight = Instance(
        tmp_path_factory.mktemp("tight"),
        {
            "GRIDGATE_GATEWAY_MAX_CONNECTIONS": str(GATEWAY_CAP),
            "GRIDGATE_GATEWAY_MAX_CONNECTIONS_PER_ADDRESS": str(PER_ADDRESS),
            "GRIDGATE_ADMIN_MAX_CONNECTIONS": "64",
            "GRIDGATE_INTERNAL_MAX_CONNECTIONS": "64",
            # Small enough that these caps fit the 1024 descriptors as configured.
            "GRIDGATE_DESCRIPTOR_RESERVE": "64",
            # Nothing times out while a test holds its connections.
            "GRIDGATE_CONNECTION_FIRST_BYTE_TIMEOUT_S": "60",
            "GRIDGATE_REQUEST_HEAD_TIMEOUT_S": "60",
            "GRIDGATE_KEEP_ALIVE_UNDER_PRESSURE_S": "60",
        },
        nofile=(512, 1024),
    )
    quick = Instance(
        tmp_path_factory.mktemp("quick"),
        {
            "GRIDGATE_GATEWAY_MAX_CONNECTIONS": str(GATEWAY_CAP),
            "GRIDGATE_CONNECTION_FIRST_BYTE_TIMEOUT_S": "1",
            "GRIDGATE_REQUEST_HEAD_TIMEOUT_S": "1",
            "GRIDGATE_KEEP_ALIVE_UNDER_PRESSURE_S": "1",
        },
    )
    try:
        tight.wait_until_up()
        quick.wait_until_up()
        yield {"tight": tight, "quick": quick}
    finally:
        tight.stop()
        quick.stop()


class Clients:
    """Raw client sockets of one test, closed at its end."""

    def __init__(self) -> None:
        self.socks: list[socket.socket] = []

    def connect(self, address: tuple[str, int], local: str = "127.0.0.1") -> socket.socket:
        sock = socket.socket()
        self.socks.append(sock)
        sock.settimeout(GUARD_S)
        sock.bind((local, 0))
        sock.connect(address)
        return sock

    def close(self) -> None:
        for sock in self.socks:
            sock.close()
        self.socks.clear()


@pytest.fixture
def clients(instances: dict[str, Instance]) -> Iterator[Clients]:
    made = Clients()
    yield made
    made.close()
    # The next test starts from a gateway without connections.
    deadline = time.monotonic() + GUARD_S
    for instance in instances.values():
        while time.monotonic() < deadline:
            with suppress(httpx.HTTPError):
                if not instance.metric("gridgate_connections_open", listener="gateway"):
                    break
            time.sleep(0.05)


def ask(sock: socket.socket, path: str = "/healthz") -> tuple[int, bytes]:
    """Send a GET on ``sock`` (kept alive) and read its answer: (status, body)."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: test\r\n\r\n".encode())
    return read_answer(sock)


def read_answer(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"closed before an answer: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "closed inside an answer"
        body += chunk
    return int(lines[0].split(" ")[1]), body


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (GUARD_S at most)."""
    data = b""
    with suppress(ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def wait_for(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + GUARD_S
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


def refused(data: bytes) -> bool:
    """The server's refusal: a 503 ``flow.overloaded`` (or nothing, when it came too late)."""
    if not data:
        return True
    head, _, body = data.partition(b"\r\n\r\n")
    return head.startswith(b"HTTP/1.1 503 ") and orjson.loads(body)["code"] == "flow.overloaded"


def counted(instance: Instance, name: str, **labels: str) -> float:
    return instance.metric(name, **labels) or 0.0


# -- the tight instance ------------------------------------------------------------------------


def test_start_raises_the_soft_descriptor_limit(instances: dict[str, Instance]) -> None:
    limits = Path(f"/proc/{instances['tight'].proc.pid}/limits").read_text()
    [line] = [line for line in limits.splitlines() if line.startswith("Max open files")]
    soft, hard = line.split()[3:5]
    assert (soft, hard) == ("1024", "1024")  # started with 512
    assert counted(instances["tight"], "gridgate_connections_max", listener="gateway") == 16


def test_a_full_gateway_refuses_new_connections_and_the_rest_stays_reachable(
    instances: dict[str, Instance], clients: Clients
) -> None:
    tight = instances["tight"]
    gateway = tight.address("gateway")
    before = counted(
        tight, "gridgate_connections_refused_total", listener="gateway", reason="listener_full"
    )
    kept = clients.connect(gateway)
    assert ask(kept)[0] == 200
    # Loopback is a trusted proxy (a load balancer): held to the listener's cap only.
    holders = [clients.connect(gateway) for _ in range(GATEWAY_CAP - 1)]
    for sock in holders:
        assert ask(sock)[0] == 200

    flood = [clients.connect(gateway) for _ in range(FLOOD)]
    for role in ("admin", "registry"):
        answer = httpx.get(f"{tight.url(role)}/healthz", timeout=GUARD_S)
        assert answer.status_code == 200 and answer.json()["listener"] == role
    for sock in (kept, holders[0]):  # the clients connected before are still answered
        assert ask(sock)[0] == 200
    assert all(refused(read_until_closed(sock)) for sock in flood)

    after = counted(
        tight, "gridgate_connections_refused_total", listener="gateway", reason="listener_full"
    )
    assert after - before == FLOOD
    assert counted(tight, "gridgate_connections_open", listener="gateway") == GATEWAY_CAP

    # Refusals are logged (by the engine within its one-second tick), but not one line each.
    def refusals() -> list[str]:
        return [
            line for line in tight.log.read_text().splitlines() if "connections_refused" in line
        ]

    wait_for(lambda: len(refusals()) >= 1)
    assert len(refusals()) < 10

    for sock in holders:
        sock.close()
    wait_for(
        lambda: counted(tight, "gridgate_connections_open", listener="gateway") <= 1,
    )
    assert ask(clients.connect(gateway))[0] == 200  # freed slots take new clients


def test_one_client_address_cannot_take_the_whole_gateway(
    instances: dict[str, Instance], clients: Clients
) -> None:
    tight = instances["tight"]
    gateway = tight.address("gateway")
    before = counted(
        tight, "gridgate_connections_refused_total", listener="gateway", reason="address_full"
    )
    mine = [clients.connect(gateway, local="127.0.0.2") for _ in range(PER_ADDRESS)]
    for sock in mine:
        assert ask(sock)[0] == 200
    extra = clients.connect(gateway, local="127.0.0.2")
    assert refused(read_until_closed(extra))
    assert ask(clients.connect(gateway, local="127.0.0.3"))[0] == 200
    assert ask(mine[0])[0] == 200
    after = counted(
        tight, "gridgate_connections_refused_total", listener="gateway", reason="address_full"
    )
    assert after - before == 1


# -- the quick instance ------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["gateway", "admin", "registry"])
def test_a_connection_that_sends_nothing_is_closed(
    instances: dict[str, Instance], clients: Clients, role: str
) -> None:
    quick = instances["quick"]
    began = time.monotonic()
    silent = clients.connect(quick.address(role))
    assert read_until_closed(silent) == b""
    assert time.monotonic() - began >= 1.0
    assert counted(
        quick, "gridgate_connections_timed_out_total", listener=role, reason="first_byte"
    )


@pytest.mark.parametrize("role", ["gateway", "admin"])
def test_a_request_head_that_does_not_end_gets_408(
    instances: dict[str, Instance], clients: Clients, role: str
) -> None:
    quick = instances["quick"]
    slow = clients.connect(quick.address(role))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: test\r\nX-Slow: ")
    data = read_until_closed(slow)
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 408 "), data
    assert b"connection: close" in head.lower()
    assert orjson.loads(body)["code"] == "request.timeout"
    assert counted(quick, "gridgate_connections_timed_out_total", listener=role, reason="head")


def test_idle_keep_alive_is_cut_short_under_pressure(
    instances: dict[str, Instance], clients: Clients
) -> None:
    quick = instances["quick"]
    gateway = quick.address("gateway")
    # 14 of 16: above 3/4 of the cap.
    idle = [clients.connect(gateway, local=f"127.0.0.{10 + n}") for n in range(14)]
    for sock in idle:
        assert ask(sock)[0] == 200
    # Idle clients are closed (well before the 65 s keep-alive): every one that sat idle while
    # the listener was under pressure.
    for sock in idle[:2]:
        sock.settimeout(GUARD_S)
    closed = [read_until_closed(sock) for sock in idle[:2]]
    assert closed == [b"", b""]
    assert counted(
        quick,
        "gridgate_connections_timed_out_total",
        listener="gateway",
        reason="idle_under_pressure",
    )
    wait_for(lambda: counted(quick, "gridgate_connections_open", listener="gateway") <= 12)

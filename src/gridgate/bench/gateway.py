"""``gridgate bench gateway``: the gateway's cost per core against nginx, on a 1 KB JSON backend.

Three servers answer the same ``GET /api/v1/bench/{customer_no}`` with the same 1 KB JSON body:

(a) nginx returning the body itself (``return 200``), the ceiling of one core;
(b) nginx ``proxy_pass`` to a backend nginx over keep-alive connections, the reference proxy;
(c) the real gateway (``gridgate serve gateway``: route, channel signature + nonce, customer
    token, level check, rate limit, concurrency gate, dispatch, access log) to that backend,
    which it finds through a real registry node (``gridgate serve registry``);
(d) the floor under (c): the gateway's own HTTP/1.1 server and upstream pool forwarding to the
    backend with nothing between them (``gridgate.bench.passthrough``) — what Python's
    transport alone costs, so that (c) − (d) is the gateway's own work.

The measured server — the front nginx (one worker) for (a) and (b), the gateway for (c), the
floor for (d) — runs alone on core 0. Everything else — the backend nginx (one worker, also
serving the JWKS), the registry node, ``wrk`` and this process with the backend's heartbeat —
is pinned to core 1, so the figures are what one core of each does. Each server gets
``wrk -t1 -c32`` (maximum throughput), then (b) and (c) a paced run (``lua/pace.lua``, 16
connections) at about half of the gateway's maximum rate, for the p99 latency the gateway adds
at that load (wrk2 is not available).

Every request to the gateway is signed with a nonce of its own: they are pre-signed into a file
per wrk run (``rate`` per second of the run), which ``lua/gateway.lua`` walks through once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gridgate.bench.registry import (
    LOAD_CORE,
    NODE_CORE,
    BenchReport,
    Row,
    _first_line,
    _free_port,
    _Processes,
    _wait_until,
    bench_catalog,
    machine_info,
)
from gridgate.gateway.signing import sign

__all__ = ["run_gateway_bench"]

BUSINESS_SYSTEM = "bench"
CHANNEL = "bench"
INTERFACE = "bench.customer"
SERVICE = "bench-backend"
PATH_PREFIX = "/api/v1/bench/"
KID = "bench-1"
_CONNECTIONS = 32
_PACED_CONNECTIONS = 16
#: A call's own time at moderate load, which each paced connection adds to its pace.
_PACED_CALL_MS = 0.5
_CUSTOMERS = 1000
_BODY_BYTES = 1024
#: Pre-signed requests per second of a gateway run: far above what one core can serve.
_SIGNED_PER_S = 30_000
_TARGET_RATIO = 0.5
_TARGET_ADDED_P99_MS = 3.0


# -- pieces ----------------------------------------------------------------------------------


def backend_body() -> str:
    """A 1 KB JSON document (exactly ``_BODY_BYTES`` bytes) with nothing nginx would expand."""
    doc: dict[str, object] = {
        "customer_no": "C0000001",
        "name": "Benchmark Customer",
        "level": 1,
        "accounts": [
            {"account_no": f"62220000{i:08d}", "type": "savings", "balance": 1234.56 + i}
            for i in range(6)
        ],
        "note": "",
    }
    text = json.dumps(doc, separators=(",", ":"))
    doc["note"] = "x" * (_BODY_BYTES - len(text))
    text = json.dumps(doc, separators=(",", ":"))
    assert len(text) == _BODY_BYTES, len(text)  # noqa: S101 - construction check
    return text


def _customer(index: int) -> str:
    return f"C{index % _CUSTOMERS:07d}"


def write_signed_requests(path: Path, secret: str, count: int) -> None:
    """``count`` requests signed now, each with its own nonce: path, timestamp, nonce, signature."""
    timestamp = int(time.time())
    with path.open("w") as out:
        for index in range(count):
            target = PATH_PREFIX + _customer(index)
            nonce = secrets.token_urlsafe(18)  # 24 characters of [A-Za-z0-9_-]
            signature = sign(secret, "GET", target, "", timestamp, nonce, b"")
            out.write(f"{target}\t{timestamp}\t{nonce}\t{signature}\n")


def _tree_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its children (nginx master + worker)."""
    total = 0.0
    pending = [pid]
    tick = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{current}/task").iterdir():
                children = (task / "children").read_text().split()
                pending.extend(int(child) for child in children)
    return total


def _render(work: Path, template: str, name: str, **values: object) -> Path:
    text = (resources.files("gridgate.bench") / "nginx" / template).read_text()
    (work / f"nginx-{name}-tmp").mkdir()
    path = work / f"nginx-{name}.conf"
    path.write_text(Template(text).substitute(work=work, name=name, **values))
    return path


def _script(work: Path, name: str, *, paced: bool = False) -> Path:
    """The Lua script ``name`` with the shared reporter (and the pacing) appended."""
    lua = resources.files("gridgate.bench") / "lua"
    parts = [name, "report.lua", *(["pace.lua"] if paced else [])]
    path = work / (f"paced-{name}" if paced else name)
    path.write_text("\n".join((lua / part).read_text() for part in parts))
    return path


# -- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WrkRun:
    connections: int
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    server_cpu: float  # share of one core the measured server used

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def detail(self) -> str:
        errors = f", **{self.errors} errors**" if self.errors else ""
        return (
            f"-c{self.connections}: p50 {self.p50_ms:.2f} ms, p99 {self.p99_ms:.2f} ms, "
            f"server CPU {self.server_cpu:.0%}{errors}"
        )


def _wrk(
    procs: _Processes,
    server_pid: int,
    script: Path,
    url: str,
    args: list[str],
    *,
    duration: int,
    connections: int,
    pace_ms: int = 0,
) -> _WrkRun:
    argv = procs.argv(
        LOAD_CORE,
        [
            *("wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"),
            *("-s", str(script), url, "--", *args),
        ],
    )
    cpu_before, started = _tree_cpu(server_pid), time.monotonic()
    done = subprocess.run(  # noqa: S603 - our own binaries and arguments
        argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=duration + 120,
        env={**os.environ, "GRIDGATE_BENCH_PACE_MS": str(pace_ms)},
    )
    cpu = (_tree_cpu(server_pid) - cpu_before) / (time.monotonic() - started)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return _WrkRun(
        connections=connections,
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        server_cpu=cpu,
    )


# -- setup -----------------------------------------------------------------------------------


async def _prepare(data_dir: Path, database_url: str, password: str, secret: str) -> None:
    """The catalog: business system, channel, the level-1 interface authorized for it."""
    from gridgate.catalog.schemas import (  # noqa: PLC0415 - heavy imports
        Authorizations,
        ChannelCreate,
        InterfaceCreate,
    )

    # keys.json in the data dir is shared by the registry and the gateway processes.
    async with bench_catalog(password, data_dir=data_dir, database_url=database_url) as (
        _,
        catalog,
    ):
        await catalog.create_channel(
            ChannelCreate.model_validate({"code": CHANNEL, "name": "Bench", "type": "app"}),
            secret=secret,
        )
        await catalog.create_interface(
            InterfaceCreate.model_validate(
                {
                    "code": INTERFACE,
                    "name": "Benchmark customer",
                    "method": "GET",
                    "path": PATH_PREFIX + "{customer_no}",
                    "provider": BUSINESS_SYSTEM,
                    "target_service": SERVICE,
                    "timeout_ms": 5000,
                    "min_level": 1,  # so the token is checked
                    "rate_limit_per_s": 1_000_000,  # counted on every call, never refused
                }
            )
        )
        await catalog.set_authorizations(INTERFACE, Authorizations(channels=[CHANNEL]))


def _token_and_jwks(issuer: str, audience: str, ttl_s: int) -> tuple[str, dict[str, object]]:
    """An EdDSA customer token (level 1, the bench channel) and the JWKS that verifies it."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    now = int(time.time())
    claims = {
        "iss": issuer,
        "aud": audience,
        "sub": "bench-account",
        "lvl": 1,
        "ch": CHANNEL,
        "sid": "bench-session",
        "iat": now,
        "exp": now + ttl_s,
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})
    return token, {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "EdDSA"}]}


class _Heartbeat:
    """The backend registered in the registry, heartbeating, on a thread of this process."""

    def __init__(self, registry_url: str, password: str, port: int) -> None:
        self.args = (registry_url, password, port)
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._main, name="bench-heartbeat", daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # reported to the main thread
            self.error = exc
            self.ready.set()

    async def _run(self) -> None:
        from gridgate.registry.client import RegistryClient  # noqa: PLC0415

        url, password, port = self.args
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        client = RegistryClient([url], credentials=(BUSINESS_SYSTEM, password))
        try:
            async with client.registration(SERVICE, host="127.0.0.1", port=port):
                self.ready.set()
                await self._stop.wait()
        finally:
            await client.aclose()

    def start(self) -> None:
        self._thread.start()
        self.ready.wait(30)
        if self.error is not None or not self.ready.is_set():
            raise RuntimeError(f"registering the backend failed: {self.error}")

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop may be gone already
                self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, _Processes, list[Callable[[], None]]]]:
    pin = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    # Ctrl-C and SIGTERM both end in the cleanup below (even if SIGINT came in ignored).
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="gridgate-bench-gw-"))
    work.chmod(0o711)  # nginx workers (nobody, when started as root) read jwks.json in here
    procs = _Processes(pin)
    first: list[Callable[[], None]] = []  # run before the processes stop (the heartbeat)
    affinity = os.sched_getaffinity(0)
    try:
        if pin:  # the load side shares core 1: the measured server alone has core 0
            os.sched_setaffinity(0, {LOAD_CORE})
        yield work, procs, first
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        # The work dir is about to go: keep what the servers said about the failure.
        said = ""
        logs = ("gateway.log", "engine.log", "registry.log", "nginx-front.log", "nginx-backend.log")
        for name in logs:
            log = work / name
            if log.exists() and log.stat().st_size:
                said += f"\n-- {name} (end) --\n" + log.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{exc}{said}") from exc
    finally:
        for step in first:
            step()
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        os.sched_setaffinity(0, affinity)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@dataclass(frozen=True, slots=True)
class _Servers:
    direct_url: str
    proxy_url: str
    gateway_url: str
    front_pid: int
    gateway_pid: int
    backend_port: int
    secret: str
    token: str


def _nginx_binary() -> str | None:
    """nginx on the PATH, or where Debian puts it (/usr/sbin is not on every user's PATH)."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def nginx_bench_report(command: str) -> BenchReport:
    """An empty report of a bench against nginx, with the machine; refused without the tools."""
    if shutil.which("wrk") is None or _nginx_binary() is None:
        raise RuntimeError("nginx or wrk not found: `make bench-servers` installs them")
    report = BenchReport(command, machine_info())
    report.machine.pop("Redis", None)
    report.machine["nginx"] = _first_line([_nginx_binary() or "nginx", "-v"])
    return report


class NginxPair(NamedTuple):
    """The backend nginx (the upstream) and the front nginx (direct answers and proxy_pass)."""

    backend_port: int
    direct_port: int
    proxy_port: int
    front_pid: int


def start_nginx_pair(
    procs: _Processes, work: Path, body: str, say: Callable[[str], None]
) -> NginxPair:
    """The backend on the load core and the front (the reference) on the measured core."""
    backend_port, direct_port, proxy_port = _free_port(), _free_port(), _free_port()
    say(f"backend nginx on port {backend_port}, core {LOAD_CORE}")
    conf = _render(work, "backend.conf", "backend", port=backend_port, body=body)
    _nginx(procs, LOAD_CORE, conf, work, "backend")
    say(f"front nginx on ports {direct_port} (direct), {proxy_port} (proxy), core {NODE_CORE}")
    conf = _render(
        work,
        "front.conf",
        "front",
        backend_port=backend_port,
        direct_port=direct_port,
        proxy_port=proxy_port,
        body=body,
    )
    front_pid = _nginx(procs, NODE_CORE, conf, work, "front")
    return NginxPair(backend_port, direct_port, proxy_port, front_pid)


def _nginx(procs: _Processes, core: int, conf: Path, work: Path, name: str) -> int:
    argv = [
        _nginx_binary() or "nginx",
        "-p",
        f"{work}/",
        "-e",
        str(work / f"nginx-{name}.log"),
        "-c",
        str(conf),
    ]
    return procs.start(core, argv, log=work / f"nginx-{name}.out").pid


def _start(
    work: Path,
    procs: _Processes,
    first: list[Callable[[], None]],
    duration: int,
    say: Callable[[str], None],
) -> _Servers:
    from gridgate.settings import Settings  # noqa: PLC0415

    body = backend_body()
    registry_port, gateway_port = _free_port(), _free_port()
    defaults = Settings()
    token, jwks = _token_and_jwks(
        defaults.token_issuer, defaults.token_audience, ttl_s=duration * 20 + 3600
    )
    (work / "jwks.json").write_text(json.dumps(jwks))
    (work / "jwks.json").chmod(0o644)

    backend_port, direct_port, proxy_port, front_pid = start_nginx_pair(procs, work, body, say)
    backend = f"http://127.0.0.1:{backend_port}"
    _wait_until(lambda: httpx.get(f"{backend}/jwks.json").status_code == 200, "backend nginx")
    _wait_until(
        lambda: httpx.get(f"http://127.0.0.1:{proxy_port}/x").content == body.encode(),
        "front nginx",
    )

    data_dir = work / "data"
    database_url = f"sqlite+aiosqlite:///{data_dir / 'gridgate.db'}"
    password = "bench-" + secrets.token_hex(12)
    secret = "bench-channel-" + secrets.token_hex(16)
    say("catalog: business system, channel, interface (level 1, rate limit 1,000,000/s)")
    asyncio.run(_prepare(data_dir, database_url, password, secret))
    registry_url = f"http://127.0.0.1:{registry_port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env |= {
        "GRIDGATE_DATA_DIR": str(data_dir),
        "GRIDGATE_DATABASE_URL": database_url,
        "GRIDGATE_REGISTRY_URLS": registry_url,
        "GRIDGATE_ACCOUNTS_JWKS_URL": f"{backend}/jwks.json",
        "GRIDGATE_TOKEN_MAX_LIFETIME_S": str(duration * 20 + 3600),  # the bench's one token
        # The Python request path (the engine that serves by default: `gridgate bench engine`).
        "GRIDGATE_GATEWAY_DATA_PLANE": "python",
    }
    say(f"registry node on port {registry_port}, core {LOAD_CORE}")
    registry = procs.start(
        LOAD_CORE,
        [sys.executable, "-m", "gridgate", "serve", "registry", "--port", str(registry_port)],
        log=work / "registry.log",
        env=env,
    )

    def registry_ready() -> bool:
        if registry.poll() is not None:
            raise RuntimeError("the registry node exited")
        return httpx.get(f"{registry_url}/readyz").status_code == 200

    _wait_until(registry_ready, "the registry node")
    heartbeat = _Heartbeat(registry_url, password, backend_port)
    first.append(heartbeat.stop)  # before the node stops: it deregisters there
    heartbeat.start()

    say(f"gateway on port {gateway_port}, core {NODE_CORE}")
    gateway = procs.start(
        NODE_CORE,
        [sys.executable, "-m", "gridgate", "serve", "gateway", "--port", str(gateway_port)],
        log=work / "gateway.log",
        env=env,
    )
    gateway_url = f"http://127.0.0.1:{gateway_port}"

    def gateway_answers() -> bool:
        if gateway.poll() is not None:
            raise RuntimeError("the gateway exited")
        target = PATH_PREFIX + _customer(0)
        timestamp, nonce = int(time.time()), secrets.token_urlsafe(18)
        headers = {
            "X-GG-Channel": CHANNEL,
            "X-GG-Timestamp": str(timestamp),
            "X-GG-Nonce": nonce,
            "X-GG-Signature": sign(secret, "GET", target, "", timestamp, nonce, b""),
            "Authorization": f"Bearer {token}",
        }
        answer = httpx.get(gateway_url + target, headers=headers)
        # Until discovery and the JWKS are in: 503 (no instance) or 401 (unknown key).
        return answer.status_code == 200 and answer.content == body.encode()

    _wait_until(gateway_answers, "the gateway (signed, token-checked call through to nginx)")

    return _Servers(
        direct_url=f"http://127.0.0.1:{direct_port}{PATH_PREFIX}{_customer(1)}",
        proxy_url=f"http://127.0.0.1:{proxy_port}{PATH_PREFIX}{_customer(1)}",
        gateway_url=gateway_url,
        front_pid=front_pid,
        gateway_pid=gateway.pid,
        backend_port=backend_port,
        secret=secret,
        token=token,
    )


def _start_floor(
    work: Path, procs: _Processes, backend_port: int
) -> tuple[str, subprocess.Popen[bytes]]:
    """The floor proxy (d) on core 0, answering; its URL and process (stop it after use)."""
    port = _free_port()
    floor = procs.start(
        NODE_CORE,
        [sys.executable, "-m", "gridgate.bench.passthrough", str(port), str(backend_port)],
        log=work / "floor.log",
    )
    url = f"http://127.0.0.1:{port}{PATH_PREFIX}{_customer(1)}"
    expected = backend_body().encode()

    def answers() -> bool:
        if floor.poll() is not None:
            raise RuntimeError("the floor proxy exited")
        return httpx.get(url).content == expected

    _wait_until(answers, "the floor proxy")
    return url, floor


def _measure_floor(
    work: Path,
    procs: _Processes,
    backend_port: int,
    duration: int,
    run: Callable[[str, int, int, int], _WrkRun],
) -> _WrkRun:
    """Start the floor, warm it up, measure it with ``run(url, seconds, pace_ms, pid)``, stop it."""
    url, floor = _start_floor(work, procs, backend_port)
    try:
        run(url, 2, 0, floor.pid)
        return run(url, duration, 0, floor.pid)
    finally:
        floor.terminate()
        floor.wait(timeout=10)


# -- the benchmark ---------------------------------------------------------------------------


def run_gateway_bench(
    *,
    duration: int = 10,
    half_rate: int | None = None,
    profile: Path | None = None,
    command: str = "gridgate bench gateway",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run (a), (b), (c) and the half-load runs; every process and file is gone afterwards.

    The half-load runs pace ``_PACED_CONNECTIONS`` connections (``lua/pace.lua``) to
    ``half_rate`` requests/s in all, by default half of (c)'s maximum; (b) gets the same pacing.
    ``profile`` adds a py-spy recording of the gateway under full load (after the measured
    runs), written there as collapsed stacks.
    """
    report = nginx_bench_report(command)
    say = progress or (lambda _message: None)
    with _workspace() as (work, procs, first):
        if not procs.pin:
            report.machine["note"] = "not pinned (taskset missing or fewer than 2 cores)"
        servers = _start(work, procs, first, duration, say)
        runs = 0

        def nginx(url: str, seconds: int, pace_ms: int = 0, pid: int = 0) -> _WrkRun:
            paced = pace_ms > 0
            return _wrk(
                procs,
                pid or servers.front_pid,
                _script(work, "plain.lua", paced=paced),
                url,
                [],
                duration=seconds,
                connections=_PACED_CONNECTIONS if paced else _CONNECTIONS,
                pace_ms=pace_ms,
            )

        def gateway(seconds: int, pace_ms: int = 0) -> _WrkRun:
            nonlocal runs
            runs += 1
            requests = work / f"signed-{runs}.tsv"
            write_signed_requests(requests, servers.secret, seconds * _SIGNED_PER_S)
            paced = pace_ms > 0
            try:
                return _wrk(
                    procs,
                    servers.gateway_pid,
                    _script(work, "gateway.lua", paced=paced),
                    servers.gateway_url,
                    [str(requests), CHANNEL, f"Bearer {servers.token}"],
                    duration=seconds,
                    connections=_PACED_CONNECTIONS if paced else _CONNECTIONS,
                    pace_ms=pace_ms,
                )
            finally:
                requests.unlink()

        say("warm-up")
        nginx(servers.direct_url, 2)
        nginx(servers.proxy_url, 2)
        gateway(3)
        say(f"(a) nginx direct, {duration} s")
        direct = nginx(servers.direct_url, duration)
        say(f"(b) nginx proxy_pass, {duration} s")
        proxy = nginx(servers.proxy_url, duration)
        say(f"(c) gateway, {duration} s")
        full = gateway(duration)
        # The floor runs only now, so that (c) has core 0 to itself (the gateway idles now).
        say(f"(d) floor: gridgate's server + pool alone, {duration} s")
        floor = _measure_floor(work, procs, servers.backend_port, duration, nginx)

        target = half_rate or max(1, round(full.rate / 2))
        # Each connection sends one request per pace: 0 .. 2 × pace_ms of wait, then the call.
        # wrk's delay() takes whole milliseconds: 16 connections keep the rounding small.
        pace_ms = max(1, round(1000 * _PACED_CONNECTIONS / target - _PACED_CALL_MS))
        say(f"(b) and (c) paced to ~{target:,} requests/s, {duration} s each")
        proxy_half = nginx(servers.proxy_url, duration, pace_ms)
        gateway_half = gateway(duration, pace_ms)

        if profile is not None:
            say(f"py-spy on the gateway under full load, {duration} s")
            _profile(procs, servers, profile, duration, lambda: gateway(duration + 2))

    ratio = full.rate / proxy.rate if proxy.rate else 0.0
    added = gateway_half.p99_ms - proxy_half.p99_ms
    share = gateway_half.rate / full.rate if full.rate else 0.0
    paced = f"; paced, mean {pace_ms} ms between calls per connection"
    report.rows += [
        Row("(a) nginx direct, RPS per core", f"{direct.rate:,.0f}", direct.detail()),
        Row("(b) nginx proxy_pass, RPS per core", f"{proxy.rate:,.0f}", proxy.detail()),
        Row("(c) gridgate gateway, RPS per core", f"{full.rate:,.0f}", full.detail()),
        Row(
            "(d) floor: gridgate's server + pool alone, RPS per core",
            f"{floor.rate:,.0f}",
            floor.detail() + f"; d / b = {floor.rate / proxy.rate if proxy.rate else 0:.2f}×, "
            f"c / d = {full.rate / floor.rate if floor.rate else 0:.2f}×",
        ),
        Row(
            "c / b",
            f"{ratio:.2f}×",
            f"c / a = {full.rate / direct.rate if direct.rate else 0:.2f}×",
            f"≥ {_TARGET_RATIO}",
            ratio >= _TARGET_RATIO and not full.errors,
        ),
        Row("(b) nginx proxy_pass, same load", f"{proxy_half.rate:,.0f}", proxy_half.detail()),
        Row(
            "(c) gateway, about half load",
            f"{gateway_half.rate:,.0f}",
            gateway_half.detail() + f"; {share:.0%} of (c)'s maximum" + paced,
        ),
        Row(
            "p99 added by the gateway",
            f"{added:+.2f} ms",
            f"p99 (c) − p99 (b), same pacing; "
            f"p50 {gateway_half.p50_ms - proxy_half.p50_ms:+.2f} ms",
            f"≤ {_TARGET_ADDED_P99_MS:g} ms",
            added <= _TARGET_ADDED_P99_MS and not gateway_half.errors,
        ),
    ]
    return report


def _profile(
    procs: _Processes,
    servers: _Servers,
    out: Path,
    duration: int,
    load: Callable[[], _WrkRun],
) -> None:
    """Record the gateway with py-spy (collapsed stacks in ``out``) while ``load`` runs."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        raise RuntimeError("py-spy not found: .venv/bin/pip install py-spy")
    argv = procs.argv(
        LOAD_CORE,
        [
            *(py_spy, "record", "--format", "raw", "--rate", "200"),
            *("-d", str(duration), "-p", str(servers.gateway_pid), "-o", str(out.resolve())),
        ],
    )
    recorder = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
        argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    procs.started.append(recorder)
    time.sleep(1)
    load()
    _, errors = recorder.communicate(timeout=60)
    if recorder.returncode != 0:
        raise RuntimeError(f"py-spy failed: {errors.decode(errors='replace')[-2000:]}")

"""``gridgate bench registry``: throughput per core and watch latency of one registry node.

The node is the real one (``gridgate serve registry``: catalog-backed auth with its cache, the
Redis store, the listener middleware) in its own process pinned to core 0. Everything else —
a throwaway redis-server, ``wrk`` with the Lua scripts of ``lua/``, the long-poll watchers and
this process — is pinned to core 1, so the figures are what one core of registry node does.

Phases: pre-register ``instances`` instances over ``services`` services (straight into the
store), then wrk runs of heartbeats, discovery queries and registrations, and between them the
watch latency: ``watchers`` long-poll watchers in a separate process, ``changes`` instance
updates (re-registrations with new metadata) sent one by one, each receipt timed against its
send time.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

if TYPE_CHECKING:
    from gridgate.catalog.services import CatalogService
    from gridgate.runtime import Runtime

__all__ = ["BenchReport", "Row", "run_registry_bench"]

NODE_CORE = 0
LOAD_CORE = 1
BUSINESS_SYSTEM = "bench"
#: Heartbeat timings long enough that no instance expires while the benchmark runs (a sweep
#: marking thousands unhealthy would also wake every watcher).
_NODE_TIMINGS = {"HEARTBEAT_S": "60", "UNHEALTHY_S": "600", "REMOVE_S": "3600"}
_API = "/registry/v1"
_SMALL_SERVICES = 10
_SMALL_SIZE = 10
_REGISTER_PREFIX, _REGISTER_SERVICES = "bench-reg-", 10
_CHANGE_INTERVAL_S = 0.2
_CONNECTIONS = 64
_NODE_REDIS_POOL = 1000
_TARGET_RATE = 5000.0
_TARGET_P99_MS = 200.0


@dataclass(frozen=True, slots=True)
class Row:
    """One figure of the report."""

    metric: str
    result: str
    detail: str
    target: str = ""
    met: bool | None = None


@dataclass(slots=True)
class BenchReport:
    """The figures and what they were measured on."""

    command: str
    machine: dict[str, str]
    rows: list[Row] = field(default_factory=list)

    def markdown(self) -> str:
        """The report as Markdown (a machine list and a table)."""
        lines = [f"Command: `{self.command}`", ""]
        lines += [f"- {name}: {value}" for name, value in self.machine.items()]
        lines += ["", "| Metric | Result | Detail | Target | Met |", "|---|---|---|---|---|"]
        for row in self.rows:
            met = "" if row.met is None else ("yes" if row.met else "**no**")
            lines.append(f"| {row.metric} | {row.result} | {row.detail} | {row.target} | {met} |")
        return "\n".join(lines) + "\n"


# -- processes -------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class _Processes:
    """Every child started, stopped together (also on Ctrl-C)."""

    def __init__(self, pin: bool) -> None:
        self.pin = pin
        self.started: list[subprocess.Popen[bytes]] = []

    def argv(self, core: int, argv: Sequence[str]) -> list[str]:
        return ["taskset", "-c", str(core), *argv] if self.pin else list(argv)

    def start(
        self, core: int, argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        with log.open("wb") as out:
            process = subprocess.Popen(  # noqa: S603 - our own binaries and arguments
                self.argv(core, argv), stdout=out, stderr=subprocess.STDOUT, env=env
            )
        self.started.append(process)
        return process

    def stop_all(self) -> None:
        for process in reversed(self.started):
            if process.poll() is None:
                process.terminate()
        for process in reversed(self.started):
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until(check: Any, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, httpx.HTTPError):
            if check():
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {deadline_s:g} s")


def _redis_pings(port: int) -> bool:
    with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
        sock.sendall(b"PING\r\n")
        return sock.recv(16).startswith(b"+PONG")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- machine ---------------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)  # noqa: S603
    except OSError:
        return "?"
    return (
        (done.stdout or done.stderr).strip().splitlines()[0] if done.stdout or done.stderr else "?"
    )


def machine_info() -> dict[str, str]:
    """nproc, CPU model, RAM and the versions that matter."""
    cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
    model = next(
        (ln.split(":", 1)[1].strip() for ln in cpuinfo.splitlines() if ln.startswith("model name")),
        platform.processor() or "?",
    )
    meminfo = Path("/proc/meminfo").read_text()
    kib = next(int(ln.split()[1]) for ln in meminfo.splitlines() if ln.startswith("MemTotal"))
    return {
        "nproc": str(len(os.sched_getaffinity(0))),
        "CPU": model,
        "RAM": f"{kib / 1024 / 1024:.1f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "Redis": _first_line(["redis-server", "--version"]),
        "wrk": _first_line(["wrk", "--version"]).split(" [")[0],
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


# -- setup -----------------------------------------------------------------------------------


def _address(index: int) -> tuple[str, int]:
    """The host and port of pre-registered instance ``index``."""
    return f"10.1.{index // 250 % 250}.{index % 250 + 1}", 8000 + index // 62500


def _service(index: int, services: int) -> str:
    return f"bench-svc-{index % services:04d}"


@asynccontextmanager
async def bench_catalog(
    password: str, **settings: Any
) -> AsyncIterator[tuple[Runtime, CatalogService]]:
    """A migrated data dir whose catalog holds the bench business system, open for more.

    Shared by the benchmarks that start real ``gridgate serve`` processes on that data dir
    (they read the same keys.json).
    """
    from gridgate.catalog.schemas import BusinessSystemCreate  # noqa: PLC0415 - heavy imports
    from gridgate.catalog.services import CatalogService  # noqa: PLC0415
    from gridgate.operators.audit import Actor  # noqa: PLC0415
    from gridgate.runtime import Runtime  # noqa: PLC0415
    from gridgate.settings import load_settings  # noqa: PLC0415

    loaded = load_settings(env="development", **settings).with_development_keys()
    runtime = Runtime.build(loaded)
    try:
        await runtime.db.migrate()
        async with runtime.db.transaction() as session:
            catalog = CatalogService(session, runtime.box, Actor(username="system:bench"))
            await catalog.create_business_system(
                BusinessSystemCreate.model_validate(
                    {
                        "code": BUSINESS_SYSTEM,
                        "name": "Benchmark",
                        "host": "127.0.0.1",
                        "port": 9000,
                        "password": password,
                    }
                )
            )
            yield runtime, catalog
    finally:
        await runtime.close()


async def _prepare(
    data_dir: Path, database_url: str, redis_url: str, password: str, instances: int, services: int
) -> tuple[str, list[str]]:
    """Catalog with the bench business system; the instances registered. Token and ids."""
    from gridgate.catalog.schemas import InterfaceCreate  # noqa: PLC0415 - heavy imports

    async with bench_catalog(
        password, data_dir=data_dir, database_url=database_url, redis_url=redis_url
    ) as (runtime, catalog):
        # The registry lets a business system write only the services it owns: the bench
        # system provides one interface targeting each of its services.
        names = {_service(i, services) for i in range(min(instances, services))}
        names |= {f"bench-small-{i:02d}" for i in range(_SMALL_SERVICES)}
        names |= {f"{_REGISTER_PREFIX}{i}" for i in range(_REGISTER_SERVICES)}
        for name in sorted(names):
            await catalog.create_interface(
                InterfaceCreate.model_validate(
                    {
                        "code": name,
                        "name": name,
                        "method": "GET",
                        "path": f"/bench/{name}",
                        "provider": BUSINESS_SYSTEM,
                        "target_service": name,
                    }
                )
            )
        gate = asyncio.Semaphore(64)

        async def one(service: str, host: str, port: int) -> str:
            async with gate:
                found = await runtime.registry.register(service, host, port, owner=BUSINESS_SYSTEM)
                return found.instance_id

        jobs = [one(_service(i, services), *_address(i)) for i in range(instances)]
        jobs += [
            one(f"bench-small-{i % _SMALL_SERVICES:02d}", f"10.2.0.{i + 1}", 8000)
            for i in range(_SMALL_SERVICES * _SMALL_SIZE)
        ]
        ids = await asyncio.gather(*jobs)
        token = runtime.settings.registry_token
        assert token is not None  # noqa: S101 - with_development_keys sets it
        return token.get_secret_value(), ids[:instances]


# -- wrk -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _WrkRun:
    requests: int
    seconds: float
    errors: int
    p50_ms: float
    p99_ms: float
    node_cpu: float  # share of one core the node used

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def detail(self) -> str:
        errors = f", {self.errors} errors" if self.errors else ""
        return (
            f"p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms, "
            f"node CPU {self.node_cpu:.0%}{errors}"
        )


def _script(work: Path, name: str) -> Path:
    """The Lua script ``name`` with the shared reporter appended, as a file wrk can read."""
    lua = resources.files("gridgate.bench") / "lua"
    path = work / name
    path.write_text((lua / name).read_text() + "\n" + (lua / "report.lua").read_text())
    return path


def _wrk(
    procs: _Processes, node_pid: int, script: Path, url: str, args: list[str], duration: int
) -> _WrkRun:
    argv = procs.argv(
        LOAD_CORE,
        ["wrk", "-t1", f"-c{_CONNECTIONS}", f"-d{duration}s", "-s", str(script), url, "--", *args],
    )
    cpu_before, started = _cpu_seconds(node_pid), time.monotonic()
    done = subprocess.run(  # noqa: S603
        argv, capture_output=True, text=True, check=False, timeout=duration + 60
    )
    cpu = (_cpu_seconds(node_pid) - cpu_before) / (time.monotonic() - started)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH ")), None)
    if done.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    data = json.loads(line.removeprefix("BENCH "))
    errors = sum(data[k] for k in ("connect", "read", "write", "status", "timeout"))
    return _WrkRun(
        requests=data["requests"],
        seconds=data["duration_us"] / 1e6,
        errors=errors,
        p50_ms=data["p50_us"] / 1000,
        p99_ms=data["p99_us"] / 1000,
        node_cpu=cpu,
    )


# -- watchers (run in their own process: ``python -m gridgate.bench.registry watchers``) -------


async def _http_get(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, target: str, token: str
) -> tuple[int, bytes, float]:
    """One keep-alive GET; the status, the body and when the body was complete."""
    writer.write(
        f"GET {target} HTTP/1.1\r\nHost: registry\r\nAuthorization: Bearer {token}\r\n\r\n".encode()
    )
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = next(
        int(ln.split(":", 1)[1]) for ln in lines[1:] if ln.lower().startswith("content-length:")
    )
    body = await reader.readexactly(length)
    return status, body, time.time()


async def _watch_one(
    port: int, token: str, revision: int, last_seq: int, seen: dict[int, float]
) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while last_seq not in seen:
            status, body, received = await _http_get(
                reader, writer, f"{_API}/watch?revision={revision}&timeout=30", token
            )
            if status != 200:
                raise RuntimeError(f"watch answered {status}: {body[:200]!r}")
            data = orjson.loads(body)
            for change in data["changes"]:
                seq = ((change.get("instance") or {}).get("metadata") or {}).get("bench_seq")
                if seq is not None:
                    seen.setdefault(int(seq), received)
            revision = int(data["revision"])
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def _watchers_main(port: int, token: str, count: int, changes: int, limit_s: float) -> None:
    async with httpx.AsyncClient() as client:
        answer = await client.get(
            f"http://127.0.0.1:{port}{_API}/services/{_service(0, 1)}/instances",
            headers={"Authorization": f"Bearer {token}"},
        )
    answer.raise_for_status()
    revision = int(answer.json()["revision"])
    seen: list[dict[int, float]] = [{} for _ in range(count)]
    tasks = [asyncio.create_task(_watch_one(port, token, revision, changes - 1, s)) for s in seen]
    sys.stdout.write(f"ready {revision}\n")
    sys.stdout.flush()
    _, pending = await asyncio.wait(tasks, timeout=limit_s)
    for task in pending:
        task.cancel()
    sys.stdout.write(orjson.dumps([{str(k): v for k, v in s.items()} for s in seen]).decode())
    sys.stdout.write("\n")
    sys.stdout.flush()


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def _watch_latency(
    procs: _Processes,
    port: int,
    token: str,
    password: str,
    *,
    watchers: int,
    changes: int,
    services: int,
    work: Path,
) -> Row:
    limit_s = changes * _CHANGE_INTERVAL_S + 30
    argv = procs.argv(
        LOAD_CORE,
        [
            *(sys.executable, "-m", "gridgate.bench.registry", "watchers", str(port), token),
            *(str(watchers), str(changes), str(limit_s)),
        ],
    )
    with (work / "watchers.log").open("wb") as log:
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log)  # noqa: S603
    procs.started.append(process)
    assert process.stdout is not None  # noqa: S101 - stdout=PIPE
    ready = process.stdout.readline().decode()
    if not ready.startswith("ready"):
        raise RuntimeError(f"the watchers did not start: {(work / 'watchers.log').read_text()}")
    time.sleep(1.5)  # every watcher parked in its long poll
    sent: dict[int, float] = {}
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", auth=(BUSINESS_SYSTEM, password)
    ) as client:
        for seq in range(changes):
            host, inst_port = _address(seq)
            body = {
                "service": _service(seq, services),  # instance ``seq`` as it is, new metadata
                "host": host,
                "port": inst_port,
                "metadata": {"bench_seq": str(seq)},
            }
            sent[seq] = time.time()
            client.post(f"{_API}/instances", json=body).raise_for_status()
            time.sleep(_CHANGE_INTERVAL_S)
    output, _ = process.communicate(timeout=limit_s + 30)
    received: list[dict[str, float]] = orjson.loads(output)
    latencies = [
        (at - sent[int(seq)]) * 1000 for per_watcher in received for seq, at in per_watcher.items()
    ]
    expected = watchers * changes
    if not latencies:
        return Row("watch push latency", "no change arrived", f"{expected} expected", "", False)
    p50, p99 = _percentile(latencies, 50), _percentile(latencies, 99)
    missed = expected - len(latencies)
    detail = (
        f"p50 {p50:.1f} ms; {changes} changes × {watchers} watchers = {len(latencies)} "
        f"receipts, max {max(latencies):.0f} ms, mean {statistics.fmean(latencies):.1f} ms"
        + (f", {missed} missed" if missed else "")
    )
    return Row(
        "watch push latency p99",
        f"{p99:.1f} ms",
        detail,
        f"p99 ≤ {_TARGET_P99_MS:g} ms",
        p99 <= _TARGET_P99_MS and not missed,
    )


# -- the benchmark ---------------------------------------------------------------------------


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, _Processes]]:
    pin = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    # Ctrl-C and SIGTERM both end in the cleanup below (even if SIGINT came in ignored).
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="gridgate-bench-"))
    procs = _Processes(pin)
    affinity = os.sched_getaffinity(0)
    try:
        if pin:  # the load side shares core 1: the registry node alone has core 0
            os.sched_setaffinity(0, {LOAD_CORE})
        yield work, procs
    except (httpx.HTTPError, RuntimeError, OSError) as exc:
        # The work dir is about to go: keep what the node said about the failure.
        log = work / "node.log"
        said = log.read_text(errors="replace")[-4000:] if log.exists() else ""
        raise RuntimeError(f"{exc}\n-- node log (end) --\n{said}") from exc
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
        os.sched_setaffinity(0, affinity)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


@dataclass(frozen=True, slots=True)
class _Node:
    url: str
    port: int
    pid: int
    token: str
    password: str
    ids: list[str]


def _start(
    work: Path, procs: _Processes, instances: int, services: int, say: Callable[[str], None]
) -> _Node:
    """A throwaway redis-server, a catalog with the bench business system, the instances
    registered and a registry node serving them, pinned to its core."""
    redis_port, node_port = _free_port(), _free_port()
    (work / "redis").mkdir()
    say(f"redis-server on port {redis_port}")
    procs.start(
        LOAD_CORE,
        [
            *("redis-server", "--port", str(redis_port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(work / "redis")),
        ],
        log=work / "redis.log",
    )
    _wait_until(lambda: _redis_pings(redis_port), "redis-server")
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    data_dir = work / "data"
    database_url = f"sqlite+aiosqlite:///{data_dir / 'gridgate.db'}"
    password = "bench-" + os.urandom(12).hex()
    say(f"catalog and {instances:,} instances over {services} services")
    token, ids = asyncio.run(
        _prepare(data_dir, database_url, redis_url, password, instances, services)
    )
    (work / "ids.txt").write_text("\n".join(ids) + "\n")
    (work / "services.txt").write_text(
        "\n".join(_service(i, services) for i in range(min(services, instances))) + "\n"
    )
    (work / "small.txt").write_text(
        "\n".join(f"bench-small-{i:02d}" for i in range(_SMALL_SERVICES)) + "\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("GRIDGATE_")}
    env |= {
        "GRIDGATE_DATA_DIR": str(data_dir),
        "GRIDGATE_DATABASE_URL": database_url,
        # Each parked watcher holds a pooled Redis connection (XREAD BLOCK); redis-py's pool
        # stops at 100 by default, after which every call of the node fails.
        "GRIDGATE_REDIS_URL": f"{redis_url}?max_connections={_NODE_REDIS_POOL}",
        **{f"GRIDGATE_REGISTRY_{k}": v for k, v in _NODE_TIMINGS.items()},
    }
    say(f"registry node on port {node_port}, core {NODE_CORE}")
    node = procs.start(
        NODE_CORE,
        [sys.executable, "-m", "gridgate", "serve", "registry", "--port", str(node_port)],
        log=work / "node.log",
        env=env,
    )
    url = f"http://127.0.0.1:{node_port}"

    def node_ready() -> bool:
        if node.poll() is not None:
            raise RuntimeError(f"the node exited:\n{(work / 'node.log').read_text()}")
        return httpx.get(f"{url}/readyz").status_code == 200

    _wait_until(node_ready, "the registry node")
    return _Node(url, node_port, node.pid, token, password, ids)


def _rate_row(metric: str, run: _WrkRun, extra: str = "") -> Row:
    return Row(
        metric,
        f"{run.rate:,.0f}",
        run.detail() + extra,
        f"≥ {_TARGET_RATE:,.0f}",
        run.rate >= _TARGET_RATE and not run.errors,
    )


def run_registry_bench(
    *,
    duration: int = 10,
    instances: int = 10_000,
    watchers: int = 200,
    services: int = 100,
    changes: int = 50,
    command: str = "gridgate bench registry",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run every phase and return the figures; every process and file is gone afterwards."""
    for binary in ("redis-server", "wrk"):
        if shutil.which(binary) is None:
            raise RuntimeError(f"{binary} not found: `make bench-servers` installs it")
    say = progress or (lambda _message: None)
    report = BenchReport(command, machine_info())
    with _workspace() as (work, procs):
        if not procs.pin:
            report.machine["note"] = "not pinned (taskset missing or fewer than 2 cores)"
        node = _start(work, procs, instances, services, say)
        basic = "Basic " + base64.b64encode(f"{BUSINESS_SYSTEM}:{node.password}".encode()).decode()
        bearer = f"Bearer {node.token}"
        heartbeat, query = _script(work, "heartbeat.lua"), _script(work, "query.lua")
        ids_file, services_file, small_file = (
            str(work / name) for name in ("ids.txt", "services.txt", "small.txt")
        )

        def wrk(script: Path, args: list[str], seconds: int = duration) -> _WrkRun:
            return _wrk(procs, node.pid, script, node.url, args, seconds)

        say("warm-up")
        wrk(heartbeat, [ids_file, basic], 2)
        wrk(query, [small_file, bearer], 1)
        say(f"heartbeats, {duration} s")
        run = wrk(heartbeat, [ids_file, basic])
        report.rows.append(
            _rate_row("heartbeats/s per core", run, f"; over {len(node.ids):,} instances")
        )
        say(f"discovery queries, {duration} s")
        per_service = instances // max(1, services)
        run = wrk(query, [services_file, bearer])
        report.rows.append(_rate_row(f"queries/s per core ({per_service} inst./service)", run))
        say(f"discovery queries on small services, {duration} s")
        run = wrk(query, [small_file, bearer])
        report.rows.append(_rate_row(f"queries/s per core ({_SMALL_SIZE} inst./service)", run))
        say(f"watch latency: {watchers} watchers, {changes} changes")
        report.rows.append(
            _watch_latency(
                procs,
                node.port,
                node.token,
                node.password,
                watchers=watchers,
                changes=min(changes, instances),
                services=services,
                work=work,
            )
        )
        say(f"registrations, {duration} s")
        run = wrk(_script(work, "register.lua"), [basic, _REGISTER_PREFIX, str(_REGISTER_SERVICES)])
        report.rows.append(
            Row("registrations/s per core", f"{run.rate:,.0f}", run.detail() + "; new instances")
        )
        say("stopping")
    return report


if __name__ == "__main__" and sys.argv[1:2] == ["watchers"]:
    _port, _token, _count, _changes, _limit = sys.argv[2:7]
    import uvloop  # only the watcher process needs it

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as _runner:
        _runner.run(_watchers_main(int(_port), _token, int(_count), int(_changes), float(_limit)))

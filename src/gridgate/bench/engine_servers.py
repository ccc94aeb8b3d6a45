"""The servers and clients of ``gridgate bench engine`` (its parts are in :mod:`.engine`).

- the bench's customer token and its JWKS, and requests signed with a nonce each, for wrk
  (a file ``lua/gateway.lua`` walks through) or as bytes for the socket clients;
- the engine host (:mod:`gridgate.bench.engine_host`) started on the measured core, in
  process or in Redis mode, with one worker or more, or under valgrind;
- nginx as one process (``nginx/single.conf``) for the idle-connection and callgrind parts;
- :class:`EngineBench`: what every part shares (work dir, processes, keys, the reference
  nginx) and its wrk runs.
"""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gridgate.bench.clients import call_all
from gridgate.bench.engine_host import CHANNEL, PATH_PREFIX
from gridgate.bench.proxy import (
    _PACED_CALL_MS,
    NginxPair,
    _nginx_binary,
    _render,
    _script,
    _wrk,
    _WrkRun,
    backend_body,
)
from gridgate.bench.registry import LOAD_CORE, NODE_CORE, _free_port, _Processes, _wait_until
from gridgate.gateway.signing import sign, signed_headers
from gridgate.pii import mask_name

__all__ = [
    "AUDIENCE",
    "ISSUER",
    "BothCores",
    "EngineBench",
    "Server",
    "bench_token",
    "pace_ms",
    "signed_calls",
    "start_engine_host",
    "stop_server",
]

KID = "bench-1"
ISSUER = "gridgate-accounts"
AUDIENCE = "gridgate"
CONNECTIONS = 32
#: Connections of the paced runs: enough that the pace stays a few whole milliseconds.
PACED_CONNECTIONS = 32
#: Keep-alive connections of the callgrind client (the requests spread over them).
CALLGRIND_CONNECTIONS = 4
#: Customers in the token's ``cns`` claim, which every request's path names one of.
_CUSTOMERS = 50
#: Pre-signed requests per second of an engine run: far above what one core can serve.
SIGNED_PER_S = 60_000
#: A server under callgrind starts 20–50 times slower (Python's imports for the engine host).
VALGRIND_START_S = 180.0


def customer(index: int) -> str:
    """The customer number of request ``index`` (one of the token's)."""
    return f"C{index % _CUSTOMERS:07d}"


def bench_token(ttl_s: int) -> tuple[str, dict[str, object]]:
    """A level-1 EdDSA customer token holding the bench's customers, and its JWKS."""
    key = Ed25519PrivateKey.generate()
    jwk = OKPAlgorithm.to_jwk(key.public_key(), as_dict=True)
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench-account",
        "lvl": 1,
        "ch": CHANNEL,
        "sid": "bench-session",
        "iat": now,
        "exp": now + ttl_s,
        "cns": [customer(index) for index in range(_CUSTOMERS)],
    }
    token = jwt.encode(claims, key, algorithm="EdDSA", headers={"kid": KID})
    return token, {"keys": [{**jwk, "kid": KID, "use": "sig", "alg": "EdDSA"}]}


def _signed(secret: str, count: int) -> list[tuple[str, int, str, str]]:
    """``count`` requests signed now, each with its own nonce: target, time, nonce, signature."""
    timestamp = int(time.time())
    made = []
    for index in range(count):
        target = PATH_PREFIX + customer(index)
        nonce = secrets.token_urlsafe(18)
        made.append(
            (target, timestamp, nonce, sign(secret, "GET", target, "", timestamp, nonce, b""))
        )
    return made


def _write_signed(path: Path, secret: str, count: int) -> None:
    """The signed requests as ``lua/gateway.lua`` reads them, one a line, tab-separated."""
    with path.open("w") as out:
        for target, timestamp, nonce, signature in _signed(secret, count):
            out.write(f"{target}\t{timestamp}\t{nonce}\t{signature}\n")


def signed_calls(secret: str, token: str, count: int, port: int) -> list[bytes]:
    """``count`` full-pipeline requests as bytes on the wire (what wrk sends from the file)."""
    return [
        (
            f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            f"X-GG-Channel: {CHANNEL}\r\nX-GG-Timestamp: {timestamp}\r\n"
            f"X-GG-Nonce: {nonce}\r\nX-GG-Signature: {signature}\r\n"
            f"Authorization: Bearer {token}\r\n\r\n"
        ).encode()
        for target, timestamp, nonce, signature in _signed(secret, count)
    ]


def pace_ms(rate: float, connections: int = PACED_CONNECTIONS) -> int:
    """The mean wait before each call (``lua/pace.lua``) for ``rate`` calls/s over
    ``connections``: each sends one call per wait plus the call's own time (whole ms)."""
    return max(1, round(1000 * connections / rate - _PACED_CALL_MS))


class Server(NamedTuple):
    """A running server of the bench (an engine host, nginx, Envoy): its URL and process."""

    url: str
    process: subprocess.Popen[bytes]

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self.url.rsplit(":", 1)[1])


class BothCores(_Processes):
    """Children on both cores: the two-worker run, whose load shares the engine's cores."""

    def argv(self, core: int, argv: Sequence[str]) -> list[str]:
        del core  # every child of this kind gets both
        cores = f"{NODE_CORE},{LOAD_CORE}"
        return ["taskset", "-c", cores, *argv] if self.pin else list(argv)


def start_engine_host(
    procs: _Processes,
    work: Path,
    *,
    backend_port: int,
    secret: str,
    token: str,
    jwks: dict[str, object],
    token_ttl_s: int,
    name: str = "engine",
    workers: int = 1,
    redis_url: str | None = None,
    wrapper: Sequence[str] = (),
) -> Server:
    """An engine host on core 0 (``procs`` decides), once it answered a signed call masked.

    ``wrapper`` goes before the interpreter (valgrind); ``name`` names its log and spool.
    """
    port = _free_port()
    args = {
        "port": port,
        "backend_port": backend_port,
        "secret": secret,
        "jwks": jwks,
        "token_max_lifetime_s": token_ttl_s,
        "spool": str(work / f"spool-{name}"),
        "workers": workers,
        "redis_url": redis_url,
    }
    log = work / f"{name}.log"
    engine = procs.start(
        NODE_CORE,
        [*wrapper, sys.executable, "-m", "gridgate.bench.engine_host", json.dumps(args)],
        log=log,
    )
    url = f"http://127.0.0.1:{port}"
    target = PATH_PREFIX + customer(1)
    expected = {**json.loads(backend_body()), "name": mask_name("Benchmark Customer")}

    def answers() -> bool:
        if engine.poll() is not None:
            said = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"the engine ({name}) exited ({engine.returncode}):\n{said}")
        headers = signed_headers(CHANNEL, secret, "GET", target)
        answer = httpx.get(url + target, headers={**headers, "Authorization": f"Bearer {token}"})
        if answer.status_code in (401, 403, 404):  # the pipeline refused: no use waiting
            raise RuntimeError(f"the engine answered {answer.status_code}: {answer.text}")
        return answer.status_code == 200 and answer.json() == expected

    deadline = VALGRIND_START_S if wrapper else 30.0
    _wait_until(answers, f"the engine ({name}: signed, token-checked, masked call)", deadline)
    return Server(url, engine)


def stop_server(process: subprocess.Popen[bytes]) -> None:
    """Stop one of the bench's servers now (the others keep running)."""
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def all_answered(statuses: Counter[int], what: str) -> None:
    """Refuse a measurement whose calls were not all answered 200 (it counted refusals)."""
    other = {status: count for status, count in statuses.items() if status != 200}
    if other:
        raise RuntimeError(f"{what} answered other than 200: {other}")


@dataclass
class EngineBench:
    """What every part shares: the work dir, the processes, the keys, the reference nginx."""

    work: Path
    procs: _Processes
    duration: int
    say: Callable[[str], None]
    nginx_pair: NginxPair
    secret: str
    token: str
    jwks: dict[str, object]
    ttl_s: int
    runs: int = 0

    @property
    def proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.nginx_pair.proxy_port}{PATH_PREFIX}{customer(1)}"

    def nginx(self, seconds: int, pace: int = 0) -> _WrkRun:
        """wrk on the front nginx's proxy_pass (paced when ``pace`` > 0)."""
        return _wrk(
            self.procs,
            self.nginx_pair.front_pid,
            _script(self.work, "plain.lua", paced=pace > 0),
            self.proxy_url,
            [],
            duration=seconds,
            connections=PACED_CONNECTIONS if pace else CONNECTIONS,
            pace_ms=pace,
        )

    def signed(
        self,
        server: Server,
        seconds: int,
        *,
        pace: int = 0,
        per_s: int = SIGNED_PER_S,
        procs: _Processes | None = None,
    ) -> _WrkRun:
        """wrk with signed, token-carrying requests (each nonce once) on ``server``."""
        self.runs += 1
        requests = self.work / f"signed-{self.runs}.tsv"
        _write_signed(requests, self.secret, seconds * per_s)
        try:
            return _wrk(
                procs or self.procs,
                server.process.pid,
                _script(self.work, "gateway.lua", paced=pace > 0),
                server.url,
                [str(requests), CHANNEL, f"Bearer {self.token}"],
                duration=seconds,
                connections=PACED_CONNECTIONS if pace else CONNECTIONS,
                pace_ms=pace,
            )
        finally:
            requests.unlink()

    def engine_host(
        self,
        name: str,
        *,
        procs: _Processes | None = None,
        workers: int = 1,
        redis_url: str | None = None,
        wrapper: Sequence[str] = (),
    ) -> Server:
        """An engine host of the bench's keys and backend (see :func:`start_engine_host`)."""
        return start_engine_host(
            procs or self.procs,
            self.work,
            backend_port=self.nginx_pair.backend_port,
            secret=self.secret,
            token=self.token,
            jwks=self.jwks,
            token_ttl_s=self.ttl_s,
            name=name,
            workers=workers,
            redis_url=redis_url,
            wrapper=wrapper,
        )

    def single_nginx(self, name: str, *, connections: int, wrapper: Sequence[str] = ()) -> Server:
        """nginx as one process (``nginx/single.conf``) on core 0, proxying to the backend."""
        port = _free_port()
        conf = _render(
            self.work,
            "single.conf",
            name,
            backend_port=self.nginx_pair.backend_port,
            port=port,
            connections=connections,
            files=2 * connections + 1000,  # each client's socket and its share of upstreams
        )
        argv = [
            *wrapper,
            *(_nginx_binary() or "nginx", "-p", f"{self.work}/"),
            *("-e", str(self.work / f"nginx-{name}.log"), "-c", str(conf)),
        ]
        process = self.procs.start(NODE_CORE, argv, log=self.work / f"nginx-{name}.out")
        url = f"http://127.0.0.1:{port}"
        body = backend_body().encode()

        def answers() -> bool:
            if process.poll() is not None:
                said = (self.work / f"nginx-{name}.out").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"nginx ({name}) exited ({process.returncode}):\n{said}")
            return httpx.get(url + PATH_PREFIX + customer(1)).content == body

        _wait_until(answers, f"nginx ({name})", VALGRIND_START_S if wrapper else 30.0)
        return Server(url, process)

    def sender(self, port: int, what: str) -> Callable[[int], None]:
        """``send(n)``: ``n`` fresh signed calls to ``port``, every one answered 200."""

        def send(count: int) -> None:
            calls = signed_calls(self.secret, self.token, count, port)
            answers = call_all("127.0.0.1", port, calls, connections=CALLGRIND_CONNECTIONS)
            all_answered(answers, what)

        return send

"""``gridgate bench gateway-work``: the gateway's own work per request, in process.

``GatewayApp.handle`` with everything ``gridgate serve gateway`` puts on the request path — the
catalog snapshot, channel signature and nonce, customer token, level check, rate limit,
concurrency gate, metrics and the access log into the log service (whose job runs, appending
to the spool) — and the business system's answer made in memory instead of over a socket. No
server, no upstream connection: what this costs is what the gateway adds to the floor of
``gridgate bench gateway``'s row (d).

Wall-clock runs of identical code differ by up to a third on a shared VM, so ``--callgrind``
counts instructions instead: the harness runs under ``valgrind --tool=callgrind`` for ``n`` and
``n + 1000`` requests, and the difference over 1,000 is the instructions of one request
(start-up cancels out). Whatever else the machine does, the count of the same code repeats to
within about ±8k of ~260k: the log service's timed jobs run more or less often per request.

``python -m gridgate.bench.gateway_work N`` is the harness itself (what valgrind runs).
"""

from __future__ import annotations

import asyncio
import gc
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import uvloop

from gridgate.bench import gateway as bench
from gridgate.gateway.signing import sign
from gridgate.gateway.upstream import Dispatcher, Outbound, UpstreamResponse
from gridgate.web.http1 import Request

__all__ = ["WorkResult", "count_instructions", "measure"]

_ROUNDS = 8
_ANSWER_HEADERS = [("content-type", "application/json"), ("server", "nginx")]


@dataclass(frozen=True, slots=True)
class WorkResult:
    """CPU time of the gateway's own work per request."""

    requests: int
    best_us: float
    median_us: float


class _Answering(Dispatcher):
    """Answers every call at once with the benchmark's 1 KB body (no connection)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = bench.backend_body().encode()

    async def call(self, outbound: Outbound) -> UpstreamResponse:
        return UpstreamResponse(200, list(_ANSWER_HEADERS), self.body, "bench-1")


def _requests(secret: str, token: str, count: int) -> list[Request]:
    timestamp = int(time.time())
    made = []
    for index in range(count):
        target = bench.PATH_PREFIX + bench._customer(index)
        nonce = secrets.token_urlsafe(18)
        headers = [
            ("host", "127.0.0.1:8080"),
            ("user-agent", "wrk"),
            ("x-gg-channel", bench.CHANNEL),
            ("x-gg-timestamp", str(timestamp)),
            ("x-gg-nonce", nonce),
            ("x-gg-signature", sign(secret, "GET", target, "", timestamp, nonce, b"")),
            ("authorization", f"Bearer {token}"),
        ]
        made.append(Request("GET", target, "", headers, b"", "127.0.0.1", 40000))
    return made


async def _run(count: int) -> WorkResult:
    # Heavy imports here: the module is imported by the CLI for --help too.
    from gridgate.app import build_gateway  # noqa: PLC0415
    from gridgate.gateway.app import GatewayApp  # noqa: PLC0415
    from gridgate.gateway.service import GatewayParts  # noqa: PLC0415
    from gridgate.gateway.tokens import JwksVerifier  # noqa: PLC0415
    from gridgate.logconfig import configure_logging  # noqa: PLC0415
    from gridgate.runtime import Runtime  # noqa: PLC0415
    from gridgate.server import tune_for_serving  # noqa: PLC0415
    from gridgate.settings import load_settings  # noqa: PLC0415

    configure_logging("warning", "console")
    work = Path(tempfile.mkdtemp(prefix="gridgate-bench-work-"))
    try:
        database_url = f"sqlite+aiosqlite:///{work / 'gridgate.db'}"
        secret = "bench-channel-" + secrets.token_hex(16)
        await bench._prepare(work, database_url, "bench-" + secrets.token_hex(12), secret)
        settings = load_settings(
            env="development",
            data_dir=work,
            database_url=database_url,
            log_level="warning",
            token_max_lifetime_s=3600,  # the harness's one token outlives a customer's
            gateway_data_plane="python",  # this harness measures the Python request path
        ).with_development_keys()
        runtime = Runtime.build(settings)
        token, jwks = bench._token_and_jwks(
            settings.token_issuer, settings.token_audience, ttl_s=3600
        )
        parts = GatewayParts.build(runtime)
        verifier = parts.verifier
        assert isinstance(verifier, JwksVerifier)  # noqa: S101 - what GatewayParts builds
        verifier.set_keys(jwks)
        parts.dispatcher = _Answering()
        await parts.holder.refresh()
        app = build_gateway(runtime, parts)
        assert isinstance(app, GatewayApp)  # noqa: S101 - the gateway role's app
        stopping = asyncio.Event()
        log_job = asyncio.create_task(parts.logs.service.run(stopping))
        requests = _requests(secret, token, count + 1)
        first = await app.handle(requests.pop())
        if first.status != 200:
            raise RuntimeError(f"the gateway answered {first.status}: {first.body[:300]!r}")
        tune_for_serving()
        per_round = max(1, len(requests) // _ROUNDS)
        times = []
        for start in range(0, len(requests), per_round):
            chunk = requests[start : start + per_round]
            began = time.process_time()
            for index, request in enumerate(chunk):
                await app.handle(request)
                if index % 100 == 99:
                    await asyncio.sleep(0)  # let the log service's job run, as under load
            times.append((time.process_time() - began) / len(chunk) * 1e6)
        stopping.set()
        await log_job
        await parts.dispatcher.close()
        await runtime.close()
        times.sort()
        return WorkResult(count, times[0], times[len(times) // 2])
    finally:
        shutil.rmtree(work, ignore_errors=True)


def measure(count: int) -> WorkResult:
    """Run ``count`` signed, token-carrying requests through the gateway's request path.

    The interpreter is tuned as ``gridgate serve`` tunes it, and put back afterwards.
    """
    threshold, interval = gc.get_threshold(), sys.getswitchinterval()
    try:
        return uvloop.run(_run(count))
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)
        sys.setswitchinterval(interval)


def count_instructions(count: int = 300, *, python: str = sys.executable) -> float:
    """Instructions per request under callgrind: the runs of ``count`` and ``count + 1000``."""
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise RuntimeError("valgrind not found (apt-get install valgrind)")
    totals = []
    with tempfile.TemporaryDirectory(prefix="gridgate-callgrind-") as out:
        for n in (count, count + 1000):
            done = subprocess.run(  # noqa: S603 - our own interpreter and module
                [
                    valgrind,
                    "--tool=callgrind",
                    f"--callgrind-out-file={out}/callgrind.{n}",
                    python,
                    "-m",
                    "gridgate.bench.gateway_work",
                    str(n),
                ],
                capture_output=True,
                text=True,
                check=False,
                # One dict layout in both runs: string hashing is randomised per process.
                env={**os.environ, "PYTHONHASHSEED": "0"},
            )
            found = re.search(r"Collected : (\d+)", done.stderr)
            if done.returncode != 0 or found is None:
                raise RuntimeError(f"callgrind failed ({done.returncode}): {done.stderr[-2000:]}")
            totals.append(int(found.group(1)))
    return (totals[1] - totals[0]) / 1000


def main() -> None:
    """The harness: ``python -m gridgate.bench.gateway_work [REQUESTS]``."""
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    result = measure(count)
    sys.stdout.write(
        f"{result.requests} requests: best {result.best_us:.1f} µs, "
        f"median {result.median_us:.1f} µs of CPU each\n"
    )


if __name__ == "__main__":
    main()

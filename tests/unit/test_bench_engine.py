"""``gridgate bench engine``: its engine host serves the full pipeline, and it refuses clearly."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

import gridgate
from gridgate.bench import gateway as gateway_bench
from gridgate.bench.engine import bench_token, start_engine_host
from gridgate.bench.engine_host import CHANNEL, PATH_PREFIX
from gridgate.bench.gateway import backend_body
from gridgate.bench.registry import _Processes
from gridgate.cli.bench import bench_app
from gridgate.gateway.signing import signed_headers


@pytest.fixture
def backend() -> Iterator[int]:
    """The bench's 1 KB JSON document on every GET, as the backend nginx serves it."""
    body = backend_body().encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_the_engine_host_serves_signed_token_carrying_calls_masked(
    tmp_path: Path, backend: int
) -> None:
    token, jwks = bench_token(ttl_s=600)
    secret = "bench-channel-secret-0123456789"
    procs = _Processes(pin=False)
    try:
        # Returns only once a signed call came back 200 with the name masked by the engine.
        url, _pid = start_engine_host(
            procs,
            tmp_path,
            backend_port=backend,
            secret=secret,
            token=token,
            jwks=jwks,
            token_ttl_s=600,
        )
        target = PATH_PREFIX + "C0000007"
        signed = signed_headers(CHANNEL, secret, "GET", target)
        answer = httpx.get(url + target, headers={**signed, "Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert answer.json()["name"] == "B*****************"
        # A customer outside the token's, and the same nonce again, are refused.
        other = PATH_PREFIX + "C0000050"
        headers = {
            **signed_headers(CHANNEL, secret, "GET", other),
            "Authorization": f"Bearer {token}",
        }
        outside = httpx.get(url + other, headers=headers)
        assert (outside.status_code, outside.json()["code"]) == (403, "perm.not_bound")
        replay = httpx.get(url + target, headers={**signed, "Authorization": f"Bearer {token}"})
        assert (replay.status_code, replay.json()["code"]) == (401, "channel.replayed")
    finally:
        procs.stop_all()
    assert procs.started[0].returncode == 0  # SIGTERM: the engine stopped cleanly


def test_the_command_refuses_without_the_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    # As if the extension were not built: importing gridgate._engine fails.
    monkeypatch.setitem(sys.modules, "gridgate._engine", None)
    monkeypatch.delattr(gridgate, "_engine", raising=False)
    result = CliRunner().invoke(bench_app, ["engine", "--duration", "1"])
    assert result.exit_code == 1
    assert "error: gridgate._engine is missing" in result.output


def test_the_command_refuses_without_nginx(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gateway_bench, "_nginx_binary", lambda: None)
    result = CliRunner().invoke(bench_app, ["engine", "--duration", "1"])
    assert result.exit_code == 1
    assert "error: nginx or wrk not found" in result.output

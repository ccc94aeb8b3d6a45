"""A gateway in Redis mode whose Redis goes away: 503 ``service.unavailable``, never a 500."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator

import httpx
import pytest

from tests.functional.gateway_harness import Gateway
from tests.support.redis import RedisServer, _answers_ping, _binary


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A Redis of this test alone: it is killed, so the session's shared one is not used."""
    server = RedisServer.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def redis_mode(own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    # Autouse: set before the harness's gateway builds its settings from the environment.
    monkeypatch.setenv("GRIDGATE_REDIS_URL", own_redis.url)


def _kill(server: RedisServer) -> None:
    server.process.kill()
    server.process.wait(timeout=10)


def _serve_again(server: RedisServer) -> None:
    """Start redis-server again on the same port (the dead one's connections stay dead)."""
    argv = [_binary(), "--port", str(server.port), "--bind", "127.0.0.1"]
    argv += ["--save", "", "--appendonly", "no", "--dir", str(server.root)]
    server.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not _answers_ping(server.port):
        assert server.process.poll() is None, "redis-server did not start again"
        assert time.monotonic() < deadline, "redis-server did not answer PING again"
        time.sleep(0.02)


def _assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["retry-after"] == "1"
    body = response.json()
    assert body["code"] == "service.unavailable"
    assert body["status"] == 503


async def _until_ok(
    send: Callable[[], Awaitable[httpx.Response]], deadline_s: float = 15.0
) -> httpx.Response:
    """Send until 200; meanwhile only 503 ``service.unavailable`` is acceptable."""
    deadline = time.monotonic() + deadline_s
    while True:
        response = await send()
        if response.status_code == 200:
            return response
        _assert_unavailable(response)
        assert time.monotonic() < deadline, "the gateway did not recover with Redis"


async def test_redis_down_answers_503_and_recovers(
    gateway: Gateway, own_redis: RedisServer
) -> None:
    await gateway.interface(
        "t.open", "/api/v1/open/ok", requires_client_auth=False, rate_limit_per_s=1000
    )

    async def signed() -> httpx.Response:
        return await gateway.send("GET", "/api/v1/t/3300000001/ok")

    async def unsigned() -> httpx.Response:
        return await gateway.client.get("/api/v1/open/ok")

    assert (await signed()).status_code == 200  # the nonce went through Redis
    assert (await unsigned()).status_code == 200  # so did the rate window

    _kill(own_redis)
    for _ in range(3):
        _assert_unavailable(await signed())  # the nonce check
        _assert_unavailable(await unsigned())  # the rate window

    _serve_again(own_redis)
    await _until_ok(signed)
    await _until_ok(unsigned)
    # Once back, a replay is refused again: nonces are checked, not skipped.
    nonce = "nonce-after-restart-0001"
    first = await gateway.send("GET", "/api/v1/t/3300000001/ok", nonce=nonce)
    assert first.status_code == 200
    again = await gateway.send("GET", "/api/v1/t/3300000001/ok", nonce=nonce)
    assert again.json()["code"] == "channel.replayed"

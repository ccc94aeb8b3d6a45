"""The gateway's request path against real upstream processes."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

from gridgate.catalog.schemas import ChannelUpdate, InterfaceUpdate
from gridgate.gateway.tokens import JwksFetcher, JwksVerifier
from tests.functional.gateway_harness import APP_SECRET, AUDIENCE, ISSUER, Gateway, Upstream

OK = "/api/v1/t/3300000001/ok"


def _problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    return body


async def test_signed_request_reaches_an_upstream_and_back(gateway: Gateway) -> None:
    answer = await gateway.send(
        "GET",
        OK,
        query="b=2&a=1",
        headers={"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
    )
    assert answer.status_code == 200, answer.text
    seen = answer.json()
    # The query arrives in the canonical form the signature covered (api.md).
    assert seen["path"] == OK and seen["query"] == "a=1&b=2"
    # The trace id is the caller's, once; the upstream's own header does not leak through.
    assert answer.headers.get_list("x-trace-id") == ["4bf92f3577b34da6a3ce929d0e0e4736"]
    assert seen["headers"]["x-trace-id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert seen["headers"]["traceparent"].startswith("00-4bf92f3577b34da6a3ce929d0e0e4736-")
    assert seen["headers"]["x-gg-channel"] == "app"
    # Signing material and hop-by-hop headers stay at the gateway.
    assert not {"x-gg-signature", "x-gg-nonce", "authorization"} & set(seen["headers"])
    assert answer.headers["x-upstream"] in {"u1", "u2"}


async def test_post_body_is_forwarded(gateway: Gateway) -> None:
    await gateway.interface("t.post", "/api/v1/t/post/ok", method="POST")
    answer = await gateway.send("POST", "/api/v1/t/post/ok", body='{"名":"张三"}'.encode())
    assert answer.status_code == 200
    assert answer.json()["body"] == '{"名":"张三"}'


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"secret": "wrong-secret"}, 401, "channel.bad_signature"),
        ({"channel": "ghost"}, 401, "channel.unknown"),
        ({"timestamp_offset": -400}, 401, "channel.expired"),
        ({"timestamp_offset": 400}, 401, "channel.expired"),
        (
            {"channel": "web", "secret": "web-secret-for-gateway-tests"},
            403,
            "channel.not_authorized",
        ),
    ],
)
async def test_channel_authentication_failures(
    gateway: Gateway, change: dict[str, Any], status: int, code: str
) -> None:
    change = dict(change)
    if "timestamp_offset" in change:  # relative to now: the suite may run long after collection
        change["timestamp"] = int(time.time()) + change.pop("timestamp_offset")
    _problem(await gateway.send("GET", OK, **change), status, code)


async def test_replayed_nonce_is_refused(gateway: Gateway) -> None:
    nonce = "replay-nonce-0000000001"
    assert (await gateway.send("GET", OK, nonce=nonce)).status_code == 200
    _problem(await gateway.send("GET", OK, nonce=nonce), 401, "channel.replayed")


async def test_missing_or_malformed_signing_headers(gateway: Gateway) -> None:
    _problem(await gateway.client.get(OK), 401, "channel.unknown")
    answer = await gateway.client.get(
        OK,
        headers={
            "X-GG-Channel": "app",
            "X-GG-Timestamp": "soon",
            "X-GG-Nonce": "short",
            "X-GG-Signature": "x",
        },
    )
    _problem(answer, 401, "channel.bad_signature")


async def test_disabled_channel_and_ip_allowlist(gateway: Gateway) -> None:
    await gateway.change("update_channel", "app", ChannelUpdate(allowed_ips=["10.9.0.0/16"]))
    _problem(await gateway.send("GET", OK), 403, "channel.ip_denied")
    await gateway.change("update_channel", "app", ChannelUpdate(allowed_ips=["127.0.0.0/8"]))
    assert (await gateway.send("GET", OK)).status_code == 200
    await gateway.change("update_channel", "app", ChannelUpdate(enabled=False))
    _problem(await gateway.send("GET", OK), 401, "channel.unknown")


async def test_forwarded_address_is_believed_from_trusted_proxies_only(gateway: Gateway) -> None:
    await gateway.change("update_channel", "app", ChannelUpdate(allowed_ips=["10.9.0.0/16"]))
    # The harness connects from 127.0.0.1, a trusted proxy by default: the last hop before
    # the trusted ones is the caller.
    behind = {"x-forwarded-for": "203.0.113.7, 10.9.1.2, 127.0.0.1"}
    assert (await gateway.send("GET", OK, headers=behind)).status_code == 200
    spoofed = {"x-forwarded-for": "10.9.1.2, 203.0.113.7"}
    _problem(await gateway.send("GET", OK, headers=spoofed), 403, "channel.ip_denied")


async def test_unknown_route_and_method(gateway: Gateway) -> None:
    _problem(await gateway.send("GET", "/api/v1/nothing"), 404, "not_found")
    _problem(await gateway.send("DELETE", OK), 405, "request.method_not_allowed")


async def test_levels_and_tokens(gateway: Gateway) -> None:
    await gateway.interface("t.level1", "/api/v1/t/level1/ok", min_level=1)
    path = "/api/v1/t/level1/ok"
    _problem(await gateway.send("GET", path), 401, "auth.required")
    body = _problem(
        await gateway.send("GET", path, token=gateway.token(level=0)), 403, "perm.level_required"
    )
    assert body["required_level"] == 1
    answer = await gateway.send("GET", path, token=gateway.token(level=1))
    assert answer.status_code == 200
    assert answer.json()["headers"]["x-gg-account"] == "acc-1"
    assert answer.json()["headers"]["x-gg-level"] == "1"
    _problem(await gateway.send("GET", path, token="garbage"), 401, "auth.invalid_token")
    _problem(
        await gateway.send("GET", path, token=gateway.token(level=2, ttl=-60)),
        401,
        "auth.invalid_token",
    )
    _problem(
        await gateway.send("GET", path, token=gateway.token(level=2, channel="web")),
        403,
        "perm.denied",
    )
    gateway.parts.revocations.revoke("s1", time.time() + 900)
    _problem(
        await gateway.send("GET", path, token=gateway.token(level=2)), 401, "auth.invalid_token"
    )


async def test_idempotent_calls_retry_once_on_another_instance(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    # u1 fails ("fail" path goes to u1 only through a dedicated service), u2 answers.
    failing = upstreams["u1"].info("mixed")
    healthy = upstreams["u2"].info("mixed")
    await gateway.instances("mixed", [failing, healthy])
    await gateway.change("create_business_system", _system("mixed"))
    for method in ("GET", "POST"):
        await gateway.interface(
            f"mixed.{method.lower()}",
            "/api/v1/mixed/fail",
            method=method,
            target_service="mixed",
            provider="mixed",
        )
    before = upstreams["u1"].calls() + upstreams["u2"].calls()
    answers = [await gateway.send("GET", "/api/v1/mixed/fail") for _ in range(2)]
    # Both instances answer 500 on this path: GET tries two instances, then gives the answer.
    assert [a.status_code for a in answers] == [500, 500]
    assert upstreams["u1"].calls() + upstreams["u2"].calls() - before == 4
    before = upstreams["u1"].calls() + upstreams["u2"].calls()
    post = await gateway.send("POST", "/api/v1/mixed/fail")
    assert post.status_code == 500
    assert upstreams["u1"].calls() + upstreams["u2"].calls() - before == 1  # never retried


async def test_connection_errors_retry_and_unavailable(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    dead = upstreams["u1"].info("flaky")
    dead = type(dead)("dead", "flaky", "127.0.0.1", _dead_port(), 100, None, {}, True)
    await gateway.instances("flaky", [dead, upstreams["u2"].info("flaky")])
    await gateway.change("create_business_system", _system("flaky"))
    await gateway.interface(
        "flaky.get", "/api/v1/flaky/ok", target_service="flaky", provider="flaky"
    )
    await gateway.interface(
        "flaky.post", "/api/v1/flaky/ok", method="POST", target_service="flaky", provider="flaky"
    )
    for _ in range(4):
        answer = await gateway.send("GET", "/api/v1/flaky/ok")
        assert answer.status_code == 200 and answer.json()["instance"] == "u2"
    await gateway.instances("flaky", [dead])
    _problem(await gateway.send("GET", "/api/v1/flaky/ok"), 503, "upstream.unavailable")
    _problem(await gateway.send("POST", "/api/v1/flaky/ok"), 503, "upstream.unavailable")
    await gateway.instances("flaky", [])
    _problem(await gateway.send("GET", "/api/v1/flaky/ok"), 503, "upstream.unavailable")


async def test_breaker_ejects_a_failing_instance(
    gateway: Gateway, upstreams: dict[str, Upstream]
) -> None:
    calls: list[str] = []

    class Failing(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # its health check passes: only the calls fail
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def do_POST(self) -> None:
            calls.append(self.path)
            self.send_response(500)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bad = type(upstreams["u1"].info())(
            "bad", "solo", "127.0.0.1", server.server_address[1], 100, None, {}, True
        )
        await gateway.instances("solo", [bad, upstreams["u2"].info("solo")])
        await gateway.change("create_business_system", _system("solo"))
        await gateway.interface(
            "solo.post", "/api/v1/solo/ok", method="POST", target_service="solo", provider="solo"
        )
        answers = [(await gateway.send("POST", "/api/v1/solo/ok")).status_code for _ in range(30)]
    finally:
        server.shutdown()
        server.server_close()
    # Round robin sends every other call to the failing instance until it is ejected (a POST
    # is never retried after a 500): without ejection it would have had 15 of the 30.
    assert 0 < len(calls) < 10
    assert answers[-10:] == [200] * 10


async def test_timeout_is_504(gateway: Gateway) -> None:
    await gateway.interface("t.slow", "/api/v1/t/x/slow", timeout_ms=200)
    _problem(await gateway.send("GET", "/api/v1/t/x/slow"), 504, "upstream.timeout")


async def test_rate_limit_is_429_with_retry_after(gateway: Gateway) -> None:
    await gateway.interface("t.rated", "/api/v1/t/rated/ok", rate_limit_per_s=3)
    statuses = [(await gateway.send("GET", "/api/v1/t/rated/ok")).status_code for _ in range(5)]
    assert statuses[:3] == [200, 200, 200]
    refused = await gateway.send("GET", "/api/v1/t/rated/ok")
    body = _problem(refused, 429, "flow.rate_limited")
    assert int(refused.headers["retry-after"]) >= 1 and body["retry_after"] >= 1


async def test_concurrency_queue_admits_then_overflows(gateway: Gateway) -> None:
    await gateway.interface(
        "t.narrow",
        "/api/v1/t/n/slow",
        max_concurrency=1,
        max_queue=1,
        max_wait_ms=10_000,
        timeout_ms=5000,
    )
    calls = [asyncio.create_task(gateway.send("GET", "/api/v1/t/n/slow")) for _ in range(3)]
    done = await asyncio.gather(*calls)
    statuses = sorted(a.status_code for a in done)
    # One runs, one waits its turn and then runs, the third finds the queue full.
    assert statuses == [200, 200, 503]
    refused = next(a for a in done if a.status_code == 503)
    assert refused.json()["code"] == "flow.overloaded" and "retry-after" in refused.headers


async def test_body_too_large(gateway: Gateway) -> None:
    await gateway.interface("t.big", "/api/v1/t/big/ok", method="POST")
    big = b"x" * (gateway.runtime.settings.gateway_max_body_bytes + 1)
    _problem(await gateway.send("POST", "/api/v1/t/big/ok", body=big), 413, "request.too_large")


async def test_catalog_reload_under_traffic(gateway: Gateway) -> None:
    errors: list[int] = []
    stop = asyncio.Event()

    async def traffic() -> None:
        while not stop.is_set():
            answer = await gateway.send("GET", OK)
            if answer.status_code != 200:
                errors.append(answer.status_code)

    runner = asyncio.create_task(traffic())
    for n in range(5):
        await gateway.interface(f"t.new{n}", f"/api/v1/t/new{n}/ok")
        assert (await gateway.send("GET", f"/api/v1/t/new{n}/ok")).status_code == 200
    await gateway.change("update_interface", "t.new0", InterfaceUpdate(enabled=False))
    _problem(await gateway.send("GET", "/api/v1/t/new0/ok"), 404, "not_found")
    stop.set()
    await runner
    assert errors == []


async def test_access_log_and_bounded_metrics(gateway: Gateway) -> None:
    await gateway.send("GET", OK)
    await gateway.send("GET", "/api/v1/scanner/probe/12345")
    # The engine's writer appends to the spool; the log pipeline's buffer follows it.
    lines: list[str] = []
    deadline = time.monotonic() + 10
    while len(lines) < 2 and time.monotonic() < deadline:
        entries = await gateway.parts.logs.buffer.read("test", 100, block_ms=100)
        lines += [entry.data.decode().replace(" ", "") for entry in entries]
    assert any('"interface":"t.ok"' in line and '"status":200' in line for line in lines)
    assert any('"code":"not_found"' in line for line in lines)
    assert APP_SECRET not in "".join(lines)
    metrics = (await gateway.client.get("/metrics")).text
    assert 'interface="unmatched"' in metrics and "scanner" not in metrics


def _system(code: str) -> Any:
    from gridgate.catalog.schemas import BusinessSystemCreate  # noqa: PLC0415

    return BusinessSystemCreate.model_validate(
        {"code": code, "name": code, "host": "127.0.0.1", "port": 80, "password": "system-pass-1"}
    )


def _dead_port() -> int:
    from tests.support.postgres import free_port  # noqa: PLC0415

    return free_port()


async def test_a_token_of_a_new_signing_key_makes_the_gateway_fetch_the_jwks_early(
    gateway: Gateway,
) -> None:
    # The accounts service signs with a new key as soon as it rotates: the engine refuses the
    # first token of it, and its control plane fetches the JWKS again at once, not a minute
    # later, so the next call passes.
    first = dict(gateway.parts.verifier.jwks or {})  # type: ignore[union-attr]
    new_key = Ed25519PrivateKey.generate()
    rotated = {
        "keys": [
            *first["keys"],
            {**OKPAlgorithm.to_jwk(new_key.public_key(), as_dict=True), "kid": "k2"},
        ]
    }
    served = [first]

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            data = json.dumps(served[-1]).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    verifier = gateway.parts.verifier
    assert isinstance(verifier, JwksVerifier)
    fetcher = JwksFetcher(
        f"http://127.0.0.1:{server.server_address[1]}/jwks",
        verifier,
        interval_s=3600,
        min_refresh_s=0.2,
    )
    stopping = asyncio.Event()
    fetching = asyncio.create_task(fetcher.run(stopping))
    try:
        await asyncio.sleep(0.5)  # the first fetch: the old keys only
        served.append(rotated)
        now = int(time.time())
        claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "acc-1", "lvl": 0, "ch": "app"}
        claims |= {"sid": "s9", "iat": now, "exp": now + 900, "cns": []}
        token = jwt.encode(claims, new_key, algorithm="EdDSA", headers={"kid": "k2"})
        _problem(await gateway.send("GET", OK, token=token), 401, "auth.invalid_token")
        deadline = time.monotonic() + 10
        while (await gateway.send("GET", OK, token=token)).status_code != 200:
            assert time.monotonic() < deadline, "the new key never reached the engine"
            await asyncio.sleep(0.1)
    finally:
        stopping.set()
        await fetching
        server.shutdown()
        server.server_close()

"""Security hardening of the gateway, black-box over HTTP and raw sockets (issue 12).

Limits per client address and per account (item 5), malformed numbers (item 7), one canonical
query (item 8), the token lifetime cap and a nonce store that refuses when full (item 11).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import urlsplit

import jwt
import pytest

from gridgate.catalog.schemas import ChannelUpdate
from gridgate.gateway.signing import sign, signed_headers
from tests.functional.gateway_harness import APP_SECRET, AUDIENCE, ISSUER, Gateway

OK = "/api/v1/t/3300000001/ok"


def _problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    return body


async def _raw(gateway: Gateway, request: bytes) -> tuple[int, dict[str, Any]]:
    """Send bytes as they are; the status and the JSON body of the answer."""
    url = urlsplit(gateway.url)
    reader, writer = await asyncio.open_connection(url.hostname, url.port)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=10)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        length = next(
            int(line.split(":", 1)[1])
            for line in lines
            if line.lower().startswith("content-length")
        )
        body = await asyncio.wait_for(reader.readexactly(length), timeout=10)
    finally:
        writer.close()
    return status, json.loads(body)


def _token(gateway: Gateway, account: str, *, lifetime_s: int = 900) -> str:
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": account,
        "lvl": 1,
        "ch": "app",
        "sid": f"s-{account}",
        "iat": now,
        "exp": now + lifetime_s,
    }
    return jwt.encode(claims, gateway.key, algorithm="EdDSA", headers={"kid": "k1"})


# -- item 8: the business system reads exactly what was signed ---------------------------------


@pytest.mark.parametrize(
    ("sent", "forwarded"),
    [
        ("q=a+b", "q=a%2Bb"),  # a plus, never a space a form decoder would make of it
        ("flag&b=2", "b=2&flag="),  # `a` and `a=` sign alike, so both reach it as `a=`
        ("a=1&&b=2&", "a=1&b=2"),  # empty segments are dropped, not passed on
        ("b=2&a=1", "a=1&b=2"),
        ("k=%7e%3a", "k=~%3A"),
        ("x;y=1", "x%3By=1"),  # ';' is data: no parser may split on it
    ],
)
async def test_the_business_system_gets_the_canonical_query_that_was_signed(
    gateway: Gateway, sent: str, forwarded: str
) -> None:
    answer = await gateway.send("GET", OK, query=sent)

    assert answer.status_code == 200, answer.text
    assert answer.json()["query"] == forwarded


async def test_two_queries_that_sign_alike_reach_the_business_system_alike(
    gateway: Gateway,
) -> None:
    # A signature made for "q=a+b" also verifies "q=a%2Bb" (one canonical form): what the
    # business system reads must then be the same for both, whichever the wire carried.
    nonce = "nonce-plus-0000000001"
    headers = signed_headers("app", APP_SECRET, "GET", OK, query="q=a+b", nonce=nonce)
    first = await gateway.client.get(f"{OK}?q=a+b", headers=headers)
    headers = signed_headers("app", APP_SECRET, "GET", OK, query="q=a+b")
    second = await gateway.client.get(f"{OK}?q=a%2Bb", headers=headers)

    assert first.status_code == second.status_code == 200, (first.text, second.text)
    assert first.json()["query"] == second.json()["query"] == "q=a%2Bb"


async def test_a_changed_reading_does_not_verify(gateway: Gateway) -> None:
    headers = signed_headers("app", APP_SECRET, "GET", OK, query="q=a%20b")
    tampered = await gateway.client.get(f"{OK}?q=a+b", headers=headers)
    _problem(tampered, 401, "channel.bad_signature")


# -- item 7: malformed numbers are 4xx, never 500 ----------------------------------------------


def _headers_with_timestamp(timestamp: str, nonce: str) -> dict[str, Any]:
    # Signed over the odd timestamp exactly as the gateway will read it (latin-1 of its bytes):
    # only the format check stands between it and int().
    return {
        "X-GG-Channel": "app",
        "X-GG-Timestamp": timestamp.encode("latin-1", "replace"),
        "X-GG-Nonce": nonce,
        "X-GG-Signature": sign(APP_SECRET, "GET", OK, "", timestamp, nonce, b""),
    }


@pytest.mark.parametrize(
    "suffix",
    ["²", "³", "¹"],  # latin-1 bytes B2, B3, B9: str.isdigit() takes them, int() does not
)
async def test_a_superscript_in_the_timestamp_is_401_not_500(gateway: Gateway, suffix: str) -> None:
    timestamp = f"{int(time.time())}{suffix}"
    answer = await gateway.client.get(
        OK, headers=_headers_with_timestamp(timestamp, "nonce-super-000000001")
    )
    _problem(answer, 401, "channel.bad_signature")


async def test_a_timestamp_too_long_for_int_is_401_not_500(gateway: Gateway) -> None:
    answer = await gateway.client.get(
        OK, headers=_headers_with_timestamp("9" * 5000, "nonce-long-0000000001")
    )
    _problem(answer, 401, "channel.bad_signature")


@pytest.mark.parametrize(
    "digits",
    [
        "١٧٦٣٧٧٩٢٠٠",  # Arabic-Indic
        "۱۷۶۳۷۷۹۲۰۰",  # extended Arabic-Indic (Persian)
        "１７６３７７９２００",  # full-width
    ],
)
async def test_non_ascii_digits_in_the_timestamp_are_401(gateway: Gateway, digits: str) -> None:
    nonce = "nonce-digits-00000001"
    headers = {
        "X-GG-Channel": "app",
        "X-GG-Timestamp": digits.encode(),  # UTF-8 on the wire
        "X-GG-Nonce": nonce,
        "X-GG-Signature": sign(APP_SECRET, "GET", OK, "", digits, nonce, b""),
    }
    _problem(await gateway.client.get(OK, headers=headers), 401, "channel.bad_signature")


@pytest.mark.parametrize("length", ["²", "١٢", "１２", "+12", "0x10", "1_0"])
async def test_a_non_ascii_or_odd_content_length_is_400(gateway: Gateway, length: str) -> None:
    await gateway.interface("t.post", "/api/v1/t/post/ok", method="POST")
    request = (
        "POST /api/v1/t/post/ok HTTP/1.1\r\nHost: gateway\r\nConnection: close\r\n"
        f"Content-Length: {length}\r\n\r\n0123456789ab"
    ).encode()
    status, body = await _raw(gateway, request)
    assert status == 400 and body["code"] == "request.malformed", body


# -- item 5: limits per client address and per account -----------------------------------------


async def _until_refused(gateway: Gateway, path: str, **send: Any) -> list[int]:
    statuses = []
    for _ in range(20):
        answer = await gateway.send("GET", path, **send)
        statuses.append(answer.status_code)
        if answer.status_code == 429:
            body = _problem(answer, 429, "flow.rate_limited")
            assert int(answer.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
            break
    return statuses


async def test_one_client_address_cannot_take_more_than_its_share(gateway: Gateway) -> None:
    path = "/api/v1/t/per-client/ok"
    await gateway.interface("t.per_client", path, client_rate_limit_per_s=2)
    first = {"x-forwarded-for": "203.0.113.7"}

    statuses = await _until_refused(gateway, path, headers=first)

    assert statuses[:2] == [200, 200] and statuses[-1] == 429
    # The address the trusted-proxy rule yields is what counts: the same client behind our
    # proxy is still the same client.
    behind = {"x-forwarded-for": "203.0.113.7, 127.0.0.1"}
    _problem(await gateway.send("GET", path, headers=behind), 429, "flow.rate_limited")
    other = {"x-forwarded-for": "203.0.113.8"}
    assert (await gateway.send("GET", path, headers=other)).status_code == 200


async def test_requests_refused_per_client_do_not_spend_the_channel(gateway: Gateway) -> None:
    path = "/api/v1/t/shared/ok"
    await gateway.interface("t.shared", path, client_rate_limit_per_s=1)
    await gateway.change("update_channel", "app", ChannelUpdate(rate_limit_per_s=3))
    greedy = {"x-forwarded-for": "198.51.100.66"}
    flood = await asyncio.gather(*(gateway.send("GET", path, headers=greedy) for _ in range(8)))
    assert 429 in [a.status_code for a in flood]

    # The channel's 3/s counted only what the greedy client got through (one per second):
    # two other customers of the same app still get in.
    for address in ("198.51.100.1", "198.51.100.2"):
        answer = await gateway.send("GET", path, headers={"x-forwarded-for": address})
        assert answer.status_code == 200, answer.text


async def test_one_account_cannot_take_more_than_its_share(gateway: Gateway) -> None:
    path = "/api/v1/t/per-account/ok"
    await gateway.interface("t.per_account", path, account_rate_limit_per_s=1)

    statuses = await _until_refused(gateway, path, token=_token(gateway, "acc-greedy"))

    assert statuses[0] == 200 and statuses[-1] == 429
    # Another account from the very same address is not held back.
    assert (await gateway.send("GET", path, token=_token(gateway, "acc-other"))).status_code == 200


# -- item 11: token lifetime cap, nonces never forgotten ---------------------------------------


@pytest.mark.parametrize("lifetime_s", [3600, 30 * 86_400])
async def test_a_token_living_longer_than_issued_is_refused(
    gateway: Gateway, lifetime_s: int
) -> None:
    answer = await gateway.send("GET", OK, token=_token(gateway, "acc-1", lifetime_s=lifetime_s))
    _problem(answer, 401, "auth.invalid_token")
    assert (await gateway.send("GET", OK, token=_token(gateway, "acc-1"))).status_code == 200


@pytest.mark.gateway_settings(gateway_max_nonces=1000)
async def test_a_full_nonce_store_refuses_and_never_lets_a_replay_through(
    gateway: Gateway,
) -> None:
    used: list[str] = []
    refused = None
    for n in range(1500):  # the store holds 1000 (its shards may fill a little earlier)
        nonce = f"nonce-full-{n:010d}"
        answer = await gateway.send("GET", OK, nonce=nonce)
        if answer.status_code != 200:
            refused = answer
            break
        used.append(nonce)
    # The store's shards are chosen by a keyed hash: one may fill well before 1000 in all.
    assert refused is not None and len(used) >= 100

    body = _problem(refused, 503, "flow.overloaded")
    assert int(refused.headers["retry-after"]) >= 1 and body["retry_after"] >= 1
    for nonce in used[:3] + used[-3:]:  # nothing was forgotten to make room
        _problem(await gateway.send("GET", OK, nonce=nonce), 401, "channel.replayed")

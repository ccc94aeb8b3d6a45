"""What the gateway says when it refuses: an unsigned request, a token behind the account."""

from __future__ import annotations

from typing import Any

from tests.functional.gateway_harness import Gateway

OK = "/api/v1/t/3300000001/ok"


def _problem(answer: Any, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = answer.json()
    assert body["code"] == code
    return body


async def test_an_unsigned_request_is_told_so_not_that_its_channel_is_unknown(
    gateway: Gateway,
) -> None:
    unsigned = _problem(await gateway.client.get(OK), 401, "channel.unknown")
    assert unsigned["detail"].startswith("the request is not signed")
    assert "X-GG-Signature" in unsigned["detail"]
    assert unsigned["title"].startswith("Unsigned request")
    # A signed request that leaves out its channel, and an unknown channel, are not unsigned.
    headless = await gateway.client.get(
        OK, headers={"X-GG-Timestamp": "1", "X-GG-Nonce": "n" * 16, "X-GG-Signature": "x"}
    )
    assert "X-GG-Channel is missing" in _problem(headless, 401, "channel.unknown")["detail"]
    ghost = _problem(await gateway.send("GET", OK, channel="ghost"), 401, "channel.unknown")
    assert "not signed" not in ghost["detail"] and "unknown" in ghost["detail"]


async def test_a_level_refusal_with_a_token_says_to_refresh_it(gateway: Gateway) -> None:
    await gateway.interface("t.level2", "/api/v1/t/level2/ok", min_level=2)
    # The token says level 1: issued before the account passed real-name review, perhaps.
    answer = await gateway.send("GET", "/api/v1/t/level2/ok", token=gateway.token(level=1))
    body = _problem(answer, 403, "perm.level_required")
    assert body["required_level"] == 2
    assert "issued at level 1" in body["detail"]
    assert "refresh the token" in body["detail"]
    assert "grant_type refresh_token" in body["detail"]

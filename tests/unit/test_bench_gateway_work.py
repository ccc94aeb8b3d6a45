"""The in-process gateway harness runs the real request path and reports its CPU time."""

from __future__ import annotations

import pytest

from gridgate.bench import gateway_work
from gridgate.bench.gateway_work import measure


def test_the_harness_serves_signed_token_carrying_requests() -> None:
    # measure() refuses to time anything unless the first request came back 200: signature,
    # nonce, token, level, rate limit and the access log all ran.
    result = measure(200)
    assert result.requests == 200
    assert 0 < result.best_us <= result.median_us


def test_a_failing_request_path_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    # Badly signed requests: the harness must say so rather than time refusals.
    monkeypatch.setattr(gateway_work, "sign", lambda *_args: "bm90IGEgc2lnbmF0dXJl")
    with pytest.raises(RuntimeError, match="answered 401"):
        measure(100)

"""The engine's request series read back for the gateway's traffic line."""

from __future__ import annotations

import pytest

from gridgate.gateway.plane import copy_request_counts, request_counts
from gridgate.web.metrics import LATENCY_BUCKETS
from gridgate.web.traffic import TrafficSummary


def _engine_text(fast: int, slow: int) -> str:
    """The two families as engine/src/metrics.rs renders them: ``fast`` requests of 2 ms
    (one refused), ``slow`` of 0.3 s that failed."""
    lines = [
        "# TYPE gridgate_gateway_requests_total counter",
        f'gridgate_gateway_requests_total{{channel="app",interface="a",status="2xx"}} {fast - 1}.0',
        'gridgate_gateway_requests_total{channel="app",interface="a",status="4xx"} 1.0',
        f'gridgate_gateway_requests_total{{channel="app",interface="a",status="5xx"}} {slow}.0',
        "# TYPE gridgate_gateway_request_duration_seconds histogram",
    ]
    for bound in LATENCY_BUCKETS:
        below = (fast if bound >= 0.0025 else 0) + (slow if bound >= 0.5 else 0)
        lines.append(
            f'gridgate_gateway_request_duration_seconds_bucket{{interface="a",le="{float(bound)}"}}'
            f" {below}.0"
        )
    lines += [
        f'gridgate_gateway_request_duration_seconds_bucket{{interface="a",le="+Inf"}} '
        f"{fast + slow}.0",
        f'gridgate_gateway_request_duration_seconds_count{{interface="a"}} {fast + slow}.0',
        f'gridgate_gateway_request_duration_seconds_sum{{interface="a"}} '
        f"{fast * 0.002 + slow * 0.3}",
    ]
    return "\n".join(lines) + "\n"


def test_the_engines_series_become_per_bucket_counts() -> None:
    counts = request_counts(_engine_text(fast=10, slow=2))

    assert counts.counts == {
        ("app", "a", "2xx"): 9,
        ("app", "a", "4xx"): 1,
        ("app", "a", "5xx"): 2,
    }
    row = counts.rows[("a",)]
    assert row[LATENCY_BUCKETS.index(0.0025)] == 10  # not cumulative: each request once
    assert row[LATENCY_BUCKETS.index(0.5)] == 2
    assert sum(row[:-1]) == 12
    assert row[-1] == pytest.approx(10 * 0.002 + 2 * 0.3)


def test_a_window_is_what_the_engine_counted_since_the_last_look() -> None:
    summary = TrafficSummary(request_counts(_engine_text(fast=10, slow=0)))
    copy_request_counts(_engine_text(fast=110, slow=2), summary.metrics)

    window = summary.take()
    assert window is not None
    assert (window.requests, window.refused, window.errors) == (102, 0, 2)
    assert 0.25 < window.p99_s <= 0.5  # the two slow ones are the slowest 2 %
    assert summary.take() is None

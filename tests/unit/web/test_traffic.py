"""The console's traffic line: requests, refusals, errors and p99 of the last window only."""

from __future__ import annotations

import asyncio

import pytest
from structlog.testing import capture_logs

from gridgate.web.metrics import RequestMetrics
from gridgate.web.traffic import TrafficSummary, log_traffic, quantile


def _metrics() -> RequestMetrics:
    return RequestMetrics(
        ("t_requests", "test", ("interface", "status")),
        ("t_seconds", "test", ("interface",)),
        buckets=(0.01, 0.1, 1.0),
        registry=None,
    )


def test_quantile_interpolates_within_the_bucket() -> None:
    assert quantile(0.5, (0.01, 0.1, 1.0), [0, 10, 0, 0]) == pytest.approx(0.055)
    assert quantile(0.99, (0.01, 0.1, 1.0), [99, 0, 0, 1]) == pytest.approx(0.01)
    assert quantile(0.99, (0.01, 0.1, 1.0), [0, 0, 0, 5]) == 1.0  # beyond the highest bound


def test_a_window_counts_only_what_came_since_the_last_look() -> None:
    metrics = _metrics()
    metrics.observe(("a", "2xx"), ("a",), 0.005)  # before the summary: not in any window
    summary = TrafficSummary(metrics)
    assert summary.take() is None  # no traffic, no line
    for _ in range(97):
        metrics.observe(("a", "2xx"), ("a",), 0.005)
    metrics.observe(("b", "4xx"), ("b",), 0.005)
    metrics.observe(("b", "5xx"), ("b",), 0.5)
    metrics.observe(("b", "5xx"), ("b",), 0.5)
    window = summary.take()
    assert window is not None
    assert (window.requests, window.refused, window.errors) == (100, 1, 2)
    assert 0.1 < window.p99_s <= 1.0  # the two slow errors are the slowest 2 %
    assert summary.take() is None


async def test_the_job_logs_one_line_per_window_with_traffic() -> None:
    metrics = _metrics()
    stopping = asyncio.Event()
    job = asyncio.create_task(log_traffic(metrics, listener="gateway", interval_s=0.05)(stopping))
    with capture_logs() as logs:
        metrics.observe(("a", "2xx"), ("a",), 0.02)
        async with asyncio.timeout(10):
            while not logs:
                await asyncio.sleep(0.01)
        stopping.set()
        await job
    [line] = logs
    assert line["event"] == "traffic" and line["listener"] == "gateway"
    assert (line["requests"], line["refused"], line["errors"]) == (1, 0, 0)
    assert 10 < line["p99_ms"] <= 100  # within the 20 ms request's bucket

"""Request metrics counted on the event loop: what Prometheus scrapes is what was observed."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from gridgate.web.metrics import RequestMetrics


def _metrics(registry: CollectorRegistry) -> RequestMetrics:
    return RequestMetrics(
        ("t_requests", "Requests.", ("route", "status")),
        ("t_seconds", "Latency.", ("route",)),
        buckets=(0.01, 0.1, 1),
        registry=registry,
    )


def _samples(registry: CollectorRegistry) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_counts_and_cumulative_buckets_as_prometheus_reads_them() -> None:
    registry = CollectorRegistry()
    metrics = _metrics(registry)
    # A bound counts what equals it ("le"); beyond the last bound only +Inf does.
    for seconds in (0.005, 0.01, 0.05, 0.5, 1.0, 7.0):
        metrics.observe(("/a", "2xx"), ("/a",), seconds)
    metrics.observe(("/a", "5xx"), ("/a",), 0.2)
    metrics.observe(("/b", "2xx"), ("/b",), 0.001)
    samples = _samples(registry)

    assert samples["t_requests_total", (("route", "/a"), ("status", "2xx"))] == 6
    assert samples["t_requests_total", (("route", "/a"), ("status", "5xx"))] == 1
    assert samples["t_requests_total", (("route", "/b"), ("status", "2xx"))] == 1

    def bucket(route: str, le: str) -> float:
        return samples["t_seconds_bucket", (("le", le), ("route", route))]

    assert [bucket("/a", le) for le in ("0.01", "0.1", "1.0", "+Inf")] == [2, 3, 6, 7]
    assert [bucket("/b", le) for le in ("0.01", "0.1", "1.0", "+Inf")] == [1, 1, 1, 1]
    assert samples["t_seconds_count", (("route", "/a"),)] == 7
    assert samples["t_seconds_sum", (("route", "/a"),)] == pytest.approx(8.765)


def test_names_are_registered_once() -> None:
    registry = CollectorRegistry()
    _metrics(registry)
    with pytest.raises(ValueError, match="Duplicated"):
        _metrics(registry)


def test_nothing_observed_exposes_no_series() -> None:
    registry = CollectorRegistry()
    _metrics(registry)
    assert not [name for name, _ in _samples(registry)]

"""Prometheus metrics of every listener, labelled by route template (never a raw path)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["LATENCY_BUCKETS", "RequestMetrics", "metrics_endpoint", "observe_request"]

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


class RequestMetrics:
    """A request counter and a latency histogram, counted on the event loop without locks.

    prometheus_client's own metrics take a lock on every update (they may be updated from any
    thread) and find the bucket in a Python loop: three locked updates per request. Requests
    are answered on one event loop, and ``/metrics`` is read on that loop too, so plain
    dictionaries will do; they are turned into metric families only when scraped. Label sets
    must stay bounded (route templates, catalog codes, status classes), as for any metric.
    """

    def __init__(
        self,
        counter: tuple[str, str, Sequence[str]],
        histogram: tuple[str, str, Sequence[str]],
        *,
        buckets: Sequence[float] = LATENCY_BUCKETS,
        registry: CollectorRegistry | None = REGISTRY,
    ) -> None:
        """``counter`` and ``histogram`` are (name, help, label names)."""
        self.counter = counter
        self.histogram = histogram
        self.bounds = tuple(float(bound) for bound in buckets)
        self._le = [*(f"{bound}" for bound in self.bounds), "+Inf"]
        self.counts: dict[tuple[str, ...], int] = {}
        #: Per label set: the count of each bucket (not cumulative), then +Inf, then the sum.
        self.rows: dict[tuple[str, ...], list[float]] = {}
        if registry is not None:
            registry.register(self)

    def observe(
        self, counter_labels: tuple[str, ...], histogram_labels: tuple[str, ...], seconds: float
    ) -> None:
        """Count one request and its latency."""
        counts = self.counts
        counts[counter_labels] = counts.get(counter_labels, 0) + 1
        row = self.rows.get(histogram_labels)
        if row is None:
            row = self.rows[histogram_labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect_left(self.bounds, seconds)] += 1  # "le": a bound counts what equals it
        row[-1] += seconds

    def describe(self) -> Iterable[Metric]:
        """The two families without samples (for the registry's duplicate check)."""
        name, doc, labels = self.counter
        yield CounterMetricFamily(name, doc, labels=labels)
        name, doc, labels = self.histogram
        yield HistogramMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        """The counter and the histogram as they are now."""
        name, doc, labels = self.counter
        counter = CounterMetricFamily(name, doc, labels=labels)
        for key, value in list(self.counts.items()):
            counter.add_metric(key, value)
        yield counter
        name, doc, labels = self.histogram
        histogram = HistogramMetricFamily(name, doc, labels=labels)
        for key, row in list(self.rows.items()):
            total = 0.0
            buckets = []
            for le, count in zip(self._le, row, strict=False):
                total += count
                buckets.append((le, total))
            histogram.add_metric(key, buckets, sum_value=row[-1])
        yield histogram


LISTENER_METRICS = RequestMetrics(
    (
        "gridgate_http_requests",
        "HTTP requests answered, by listener, route template, method and status class.",
        ("listener", "route", "method", "status"),
    ),
    (
        "gridgate_http_request_duration_seconds",
        "Time to answer HTTP requests, by listener and route template.",
        ("listener", "route"),
    ),
)
#: The path of the catch-all route that answers 404 on listeners without a route table.
CATCH_ALL = "/{path:path}"
_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _route_label(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    # Unmatched paths share one label, so a scanner cannot blow up the series count.
    if not isinstance(path, str) or path == CATCH_ALL:
        return "unmatched"
    return path


def observe_request(listener: str, scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request."""
    route = _route_label(scope)
    method = scope.get("method", "")
    LISTENER_METRICS.observe(
        (listener, route, method if method in _METHODS else "other", f"{status // 100}xx"),
        (listener, route),
        seconds,
    )


async def metrics_endpoint(_request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

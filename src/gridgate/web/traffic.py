"""One log line a minute about the requests a listener answered, and none when there were none.

The console of ``gridgate up`` keeps quiet about routine work; this line is what it says about
traffic: requests, refusals (4xx), errors (5xx) and the 99th-percentile latency of the last
minute. It reads the counts :class:`~gridgate.web.metrics.RequestMetrics` keeps anyway, so the
request path pays nothing for it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from gridgate.web.metrics import RequestMetrics

__all__ = ["TrafficSummary", "TrafficWindow", "log_traffic", "quantile"]

_log = structlog.get_logger("gridgate.traffic")


@dataclass(frozen=True, slots=True)
class TrafficWindow:
    """What was answered between two looks."""

    requests: int
    refused: int
    errors: int
    #: The latency under which 99 % of the requests were answered, from the histogram's
    #: buckets (linear within a bucket, as Prometheus's ``histogram_quantile``).
    p99_s: float


def quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The ``q`` quantile of a histogram: ``counts`` per bucket (not cumulative), the last
    one above every bound; beyond the highest bound the answer is that bound."""
    total = sum(counts)
    rank = q * total
    below = 0.0
    for index, count in enumerate(counts):
        if count and below + count >= rank:
            if index >= len(bounds):
                return float(bounds[-1])
            lower = bounds[index - 1] if index else 0.0
            return float(lower + (bounds[index] - lower) * (rank - below) / count)
        below += count
    return float(bounds[-1]) if total else 0.0


class TrafficSummary:
    """The difference of a :class:`RequestMetrics` since the previous :meth:`take`.

    The status class (``2xx`` … ``5xx``) is the last label of the metrics' counter.
    """

    def __init__(self, metrics: RequestMetrics) -> None:
        self.metrics = metrics
        self._counts, self._rows = self._now()

    def _now(self) -> tuple[dict[tuple[str, ...], int], dict[tuple[str, ...], list[float]]]:
        # Copies: the event loop goes on counting into the originals.
        counts = dict(self.metrics.counts)
        rows = {labels: list(row) for labels, row in self.metrics.rows.items()}
        return counts, rows

    def take(self) -> TrafficWindow | None:
        """What was answered since the previous look; None when nothing was."""
        counts, rows = self._now()
        by_class: dict[str, int] = {}
        for labels, count in counts.items():
            status = labels[-1] if labels else ""
            by_class[status] = by_class.get(status, 0) + count - self._counts.get(labels, 0)
        buckets = [0.0] * (len(self.metrics.bounds) + 1)
        for labels, row in rows.items():
            before = self._rows.get(labels)
            for index in range(len(buckets)):
                buckets[index] += row[index] - (before[index] if before else 0.0)
        self._counts, self._rows = counts, rows
        requests = sum(by_class.values())
        if requests <= 0:
            return None
        return TrafficWindow(
            requests=requests,
            refused=by_class.get("4xx", 0),
            errors=by_class.get("5xx", 0),
            p99_s=quantile(0.99, self.metrics.bounds, buckets),
        )


def log_traffic(
    metrics: RequestMetrics,
    *,
    listener: str,
    interval_s: float = 60.0,
    refresh: Callable[[], None] | None = None,
) -> Callable[[asyncio.Event], Coroutine[Any, Any, None]]:
    """A background job: one ``traffic`` line per ``interval_s`` in which requests came.

    ``refresh`` brings ``metrics`` up to date before each look, where another counts the
    requests (the gateway's engine).
    """
    summary = TrafficSummary(metrics)

    async def job(stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            if stopping.is_set():
                return  # a part of a window: its line would say less than it seems to
            if refresh is not None:
                refresh()
            window = summary.take()
            if window is not None:
                _log.info(
                    "traffic",
                    listener=listener,
                    window_s=interval_s,
                    requests=window.requests,
                    refused=window.refused,
                    errors=window.errors,
                    p99_ms=round(window.p99_s * 1000, 1),
                )

    return job

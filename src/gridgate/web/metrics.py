"""Prometheus metrics of every listener, labelled by route template (never a raw path)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Scope

__all__ = ["metrics_endpoint", "observe_request"]

REQUESTS = Counter(
    "gridgate_http_requests",
    "HTTP requests answered, by listener, route template, method and status class.",
    ["listener", "route", "method", "status"],
)
LATENCY = Histogram(
    "gridgate_http_request_duration_seconds",
    "Time to answer HTTP requests, by listener and route template.",
    ["listener", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
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


# The labelled children, looked up once per label set: ``labels()`` costs a lock and a tuple
# hash on every request, and the label sets are few (bounded by routes and status classes).
_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}


def observe_request(listener: str, scope: Scope, status: int, seconds: float) -> None:
    """Count one answered request."""
    route = _route_label(scope)
    method = scope.get("method", "")
    key = (listener, route, method if method in _METHODS else "other", f"{status // 100}xx")
    pair = _children.get(key)
    if pair is None:
        pair = _children[key] = (REQUESTS.labels(*key), LATENCY.labels(listener, route))
    pair[0].inc()
    pair[1].observe(seconds)


async def metrics_endpoint(_request: Request) -> Response:
    """``GET /metrics`` in the Prometheus text format."""
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

"""``/healthz`` (the process answers) and ``/readyz`` (its stores answer) of every listener."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gridgate.web.metrics import metrics_endpoint

__all__ = ["Check", "probe_routes"]

#: A readiness check: True when the store it watches answers.
Check = Callable[[], Awaitable[bool]]


def probe_routes(listener: str, checks: Mapping[str, Check]) -> list[BaseRoute]:
    """The health, readiness and metrics routes of a listener."""

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "listener": listener})

    async def readyz(_request: Request) -> JSONResponse:
        results = {name: await check() for name, check in checks.items()}
        ready = all(results.values())
        body = {
            "status": "ready" if ready else "unavailable",
            "listener": listener,
            "checks": {name: "ok" if ok else "failing" for name, ok in results.items()},
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    return [
        Route("/healthz", healthz, methods=["GET"], include_in_schema=False),
        Route("/readyz", readyz, methods=["GET"], include_in_schema=False),
        Route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False),
    ]

"""``/healthz`` (the process answers) and ``/readyz`` (its stores answer) of every listener."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from gridgate.web.metrics import metrics_endpoint

__all__ = ["Check", "Verdict", "probe_routes", "readiness"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """A check's answer with a reason: ``warning`` is shown but leaves the listener ready."""

    status: Literal["ok", "warning", "failing"]
    detail: str | None = None


#: A readiness check: True (or an ``ok``/``warning`` verdict) when what it watches is fit.
Check = Callable[[], Awaitable[bool | Verdict]]


def _verdict(result: bool | Verdict) -> Verdict:
    if isinstance(result, Verdict):
        return result
    return Verdict("ok" if result else "failing")


async def readiness(listener: str, checks: Mapping[str, Check]) -> tuple[bool, dict[str, object]]:
    """Run ``checks``: whether the listener is ready, and the ``/readyz`` answer's body."""
    results = {name: _verdict(await check()) for name, check in checks.items()}
    ready = all(verdict.status != "failing" for verdict in results.values())
    body: dict[str, object] = {
        "status": "ready" if ready else "unavailable",
        "listener": listener,
        "checks": {name: verdict.status for name, verdict in results.items()},
    }
    details = {name: v.detail for name, v in results.items() if v.detail is not None}
    if details:
        body["details"] = details
    return ready, body


def probe_routes(listener: str, checks: Mapping[str, Check]) -> list[BaseRoute]:
    """The health, readiness and metrics routes of a listener."""

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "listener": listener})

    async def readyz(_request: Request) -> JSONResponse:
        ready, body = await readiness(listener, checks)
        return JSONResponse(body, status_code=200 if ready else 503)

    return [
        Route("/healthz", healthz, methods=["GET"], include_in_schema=False),
        Route("/readyz", readyz, methods=["GET"], include_in_schema=False),
        Route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False),
    ]

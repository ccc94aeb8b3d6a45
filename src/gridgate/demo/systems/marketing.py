"""The demo marketing system (营销业务系统): customer master data of each 户号.

``/api/v1/customers/{customer_no}`` is the channel-facing interface of api.md; the
``/internal/v1`` routes serve the accounts service, which proves control of a 户号 with its
service password (服务密码). The service password itself never leaves this system.

The internal routes serve the platform only: a call the gateway forwarded from a channel
(it carries the gateway's ``X-GG-*`` identity or ``X-Forwarded-For``) is refused, whatever the
catalog routes here. And the password check is no unlimited oracle: it answers each caller
(client address) a bounded number of checks per minute, and after ten wrong passwords for one
户号 within an hour it answers 429 ``flow.rate_limited`` for that 户号 until the hour is over.
"""

from __future__ import annotations

import hmac
import math
import time
from collections.abc import Callable
from typing import Annotated

from pydantic import StringConstraints
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Route

from gridgate.demo.data import DemoData
from gridgate.demo.systems._web import JSONResponse, build_system, customer_of, read_body
from gridgate.errors import NotFound, PermissionDenied, RateLimited
from gridgate.schemas import StrictModel

__all__ = ["ServicePasswordCheck", "create_app"]

#: Headers the gateway sets on what it forwards from channels, never on the platform's calls.
_FORWARDED = frozenset(
    {"x-gg-channel", "x-gg-account", "x-gg-session", "x-gg-client-ip", "x-forwarded-for"}
)
#: Counters kept at most; the stale ones are swept first (a demo keeps them in memory).
_MAX_COUNTERS = 100_000


class ServicePasswordCheck(StrictModel):
    """Body of ``verify-service-password``."""

    service_password: Annotated[str, StringConstraints(max_length=64)]


class _Windows:
    """Events per key in fixed windows, in memory."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._counts: dict[str, tuple[int, float]] = {}  # key: (count, window end)

    def wait(self, key: str, most: int) -> float:
        """Seconds until ``key`` may have another event, 0 when it may now."""
        count, end = self._counts.get(key, (0, 0.0))
        left = end - self._clock()
        return left if count >= most and left > 0 else 0.0

    def count(self, key: str, window_s: float) -> None:
        """Count one event of ``key`` in its current window."""
        now = self._clock()
        if len(self._counts) >= _MAX_COUNTERS:
            self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        count, end = self._counts.get(key, (0, 0.0))
        self._counts[key] = (count + 1, end) if end > now else (1, now + window_s)


def _platform_only(request: Request) -> None:
    if _FORWARDED.intersection(request.headers.keys()):
        raise PermissionDenied("an internal interface: only the platform calls it")


def create_app(
    data: DemoData,
    *,
    clock: Callable[[], float] = time.monotonic,
    checks_per_caller: int = 600,
    caller_window_s: float = 60,
    failures_per_customer: int = 10,
    customer_window_s: float = 3600,
) -> Starlette:
    """The marketing system's ASGI app over ``data``; the password check answers each caller
    ``checks_per_caller`` times per ``caller_window_s``, and each 户号 until it has had
    ``failures_per_customer`` wrong passwords in ``customer_window_s``."""
    windows = _Windows(clock)

    async def profile(request: Request) -> JSONResponse:
        customer = customer_of(data, request.path_params["customer_no"])
        return JSONResponse(customer.profile())

    async def internal_profile(request: Request) -> JSONResponse:
        _platform_only(request)
        return await profile(request)

    def _limit(wait: float, detail: str) -> None:
        if wait > 0:
            raise RateLimited(detail, retry_after=max(1, math.ceil(wait)))

    async def verify_service_password(request: Request) -> JSONResponse:
        _platform_only(request)
        caller = f"caller:{request.client.host if request.client else ''}"
        _limit(windows.wait(caller, checks_per_caller), "too many checks from this caller")
        windows.count(caller, caller_window_s)
        customer_no = request.path_params["customer_no"]
        check = await read_body(request, ServicePasswordCheck)
        wrong = f"customer:{customer_no}"
        _limit(windows.wait(wrong, failures_per_customer), "too many wrong passwords for this 户号")
        try:
            customer = customer_of(data, customer_no)
        except NotFound:
            windows.count(wrong, customer_window_s)  # an unknown 户号 is no free guess
            raise
        # Constant time: the answer must not leak how many leading digits were right.
        valid = hmac.compare_digest(
            check.service_password.encode(), customer.service_password.encode()
        )
        if not valid:
            windows.count(wrong, customer_window_s)
        return JSONResponse({"valid": valid})

    return build_system(
        "marketing",
        [
            Route("/api/v1/customers/{customer_no}", profile, methods=["GET"]),
            Route("/internal/v1/customers/{customer_no}", internal_profile, methods=["GET"]),
            Route(
                "/internal/v1/customers/{customer_no}/verify-service-password",
                verify_service_password,
                methods=["POST"],
            ),
        ],
    )

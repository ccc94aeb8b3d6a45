"""The gateway's shared store (Redis) failing: one domain error, and a warning that does not flood.

In Redis mode every signed request checks its nonce in Redis, and every rate-limited one its
windows. When Redis cannot be reached (refused, reset, timed out) the request is answered 503
``service.unavailable`` with ``Retry-After: 1``, as the Rust engine does (``StoreUnavailable``):
the caller may try again, and nothing was let through unchecked (fail closed). A down Redis
fails every such request, so the warning is logged at most once per ``WARN_EVERY_S`` seconds,
with the number of failures since the last one.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gridgate.errors import ServiceUnavailable

__all__ = ["UNREACHABLE", "WARN_EVERY_S", "StoreWarnings", "unavailable"]

#: redis-py's errors of a Redis that cannot be reached (BusyLoadingError is a ConnectionError).
UNREACHABLE: tuple[type[Exception], ...] = (RedisConnectionError, RedisTimeoutError)
WARN_EVERY_S = 5.0
_DETAIL = "the gateway's shared store (Redis) is unavailable; try again shortly"
_log = structlog.get_logger("gridgate.gateway")


class StoreWarnings:
    """Logs a store failure at most once per ``every_s``, counting the ones it kept quiet."""

    def __init__(
        self, every_s: float = WARN_EVERY_S, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._every_s = every_s
        self._clock = clock
        self._next_at = float("-inf")
        self._quiet = 0

    def failed(self, store: str, error: BaseException) -> None:
        """Note one failure of ``store``; log it unless one was logged within ``every_s``."""
        now = self._clock()
        if now < self._next_at:
            self._quiet += 1
            return
        # The error's class and text name the host and the cause, never a password.
        _log.warning(
            "shared_store_unavailable",
            store=store,
            error=type(error).__name__,
            reason=str(error)[:200],
            failures_not_logged=self._quiet,
        )
        self._quiet = 0
        self._next_at = now + self._every_s


_warnings = StoreWarnings()


def unavailable(store: str, error: BaseException) -> ServiceUnavailable:
    """The 503 for ``error`` of ``store`` (``nonces``, ``rate_limits``); warns now and then."""
    _warnings.failed(store, error)
    return ServiceUnavailable(_DETAIL)

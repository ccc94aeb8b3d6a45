"""The shared store's failures: one 503 each, a warning only now and then."""

from __future__ import annotations

from structlog.testing import capture_logs

from gridgate.errors import ServiceUnavailable
from gridgate.gateway.shared_store import StoreWarnings, unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_flood_of_failures_logs_one_warning_per_period() -> None:
    clock = Clock()
    warnings = StoreWarnings(5.0, clock=clock)
    with capture_logs() as logs:
        for _ in range(1000):
            warnings.failed("nonces", ConnectionError("refused"))
        clock.now += 5.0
        warnings.failed("nonces", ConnectionError("refused"))
    assert [log["event"] for log in logs] == ["shared_store_unavailable"] * 2
    assert logs[0]["failures_not_logged"] == 0
    assert logs[1]["failures_not_logged"] == 999


def test_the_error_is_503_service_unavailable_retry_after_1() -> None:
    error = unavailable("rate_limits", ConnectionError("refused"))
    assert isinstance(error, ServiceUnavailable)
    assert (error.status, error.code) == (503, "service.unavailable")
    assert error.headers["Retry-After"] == "1"

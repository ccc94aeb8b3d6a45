"""Passive health: ejection after consecutive failures, doubling back-off, one probe, panic mode."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from gridgate.registry.outlier import OutlierDetector


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` pass."""
        self.now += seconds


@dataclass(frozen=True)
class Instance:
    """A registered instance as the registry client returns it."""

    instance_id: str
    weight: int = 100
    host: str = "10.0.0.1"
    port: int = 8080


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def detector(clock: FakeClock) -> OutlierDetector:
    return OutlierDetector(consecutive_failures=5, base_ejection_s=2.0, clock=clock)


def fail(detector: OutlierDetector, instance_id: str, times: int) -> None:
    for _ in range(times):
        detector.record_failure(instance_id)


def eject_then_probe_fails(detector: OutlierDetector, clock: FakeClock, wait: float) -> None:
    """Wait out the current ejection, send the probe, and watch it fail."""
    clock.advance(wait)
    assert not detector.ejected("a")
    detector.record_start("a")
    detector.record_failure("a")


def test_four_failures_do_not_eject(detector: OutlierDetector) -> None:
    fail(detector, "a", 4)
    assert not detector.ejected("a")


def test_five_failures_in_a_row_eject(detector: OutlierDetector) -> None:
    fail(detector, "a", 5)
    assert detector.ejected("a")
    assert not detector.ejected("b")


def test_a_success_breaks_the_run(detector: OutlierDetector) -> None:
    fail(detector, "a", 4)
    detector.record_success("a")
    fail(detector, "a", 4)
    assert not detector.ejected("a")
    detector.record_failure("a")
    assert detector.ejected("a")


def test_ejection_lasts_the_base_period(detector: OutlierDetector, clock: FakeClock) -> None:
    fail(detector, "a", 5)
    clock.advance(1.99)
    assert detector.ejected("a")
    clock.advance(0.01)
    assert not detector.ejected("a")


def test_failed_probes_double_the_ejection_up_to_the_cap(clock: FakeClock) -> None:
    detector = OutlierDetector(3, base_ejection_s=2.0, max_ejection_s=10.0, clock=clock)
    fail(detector, "a", 3)
    periods = []
    for _ in range(5):
        waited = 0.0
        while detector.ejected("a"):
            clock.advance(0.5)
            waited += 0.5
        periods.append(waited)
        detector.record_start("a")
        detector.record_failure("a")
    assert periods == [2.0, 4.0, 8.0, 10.0, 10.0]


def test_half_open_lets_exactly_one_probe_through(
    detector: OutlierDetector, clock: FakeClock
) -> None:
    a, b = Instance("a"), Instance("b")
    fail(detector, "a", 5)
    assert detector.eligible([a, b]) == [b]
    clock.advance(2.0)
    assert detector.eligible([a, b]) == [a, b]
    detector.record_start("a")
    # While the probe is out no other call goes to a, however many calls arrive meanwhile.
    assert detector.ejected("a")
    assert detector.eligible([a, b]) == [b]
    detector.record_start("a")
    assert detector.eligible([a, b]) == [b]


def test_successful_probe_closes_and_resets_the_back_off(
    detector: OutlierDetector, clock: FakeClock
) -> None:
    fail(detector, "a", 5)
    eject_then_probe_fails(detector, clock, 2.0)  # now ejected for 4 s
    clock.advance(4.0)
    detector.record_start("a")
    detector.record_success("a")
    assert not detector.ejected("a")
    # Closed again: it takes a full run of failures, and the next ejection is the base period.
    fail(detector, "a", 4)
    assert not detector.ejected("a")
    detector.record_failure("a")
    clock.advance(2.0)
    assert not detector.ejected("a")


def test_failed_probe_ejects_again_for_twice_as_long(
    detector: OutlierDetector, clock: FakeClock
) -> None:
    fail(detector, "a", 5)
    eject_then_probe_fails(detector, clock, 2.0)
    clock.advance(3.99)
    assert detector.ejected("a")
    clock.advance(0.01)
    assert not detector.ejected("a")


def test_late_results_do_not_change_an_ejection(
    detector: OutlierDetector, clock: FakeClock
) -> None:
    fail(detector, "a", 5)
    # Calls sent before the ejection finish while it runs: neither kind moves the clock.
    detector.record_success("a")
    fail(detector, "a", 10)
    assert detector.ejected("a")
    clock.advance(2.0)
    assert not detector.ejected("a")


def test_an_abandoned_probe_frees_its_slot(clock: FakeClock) -> None:
    detector = OutlierDetector(1, base_ejection_s=2.0, clock=clock, probe_timeout_s=30.0)
    detector.record_failure("a")
    clock.advance(2.0)
    detector.record_start("a")  # the call is then cancelled: no outcome is ever reported
    clock.advance(29.0)
    assert detector.ejected("a")
    clock.advance(1.0)
    assert not detector.ejected("a")


def test_panic_mode_returns_everyone_when_all_are_ejected(detector: OutlierDetector) -> None:
    endpoints = [Instance("a"), Instance("b")]
    fail(detector, "a", 5)
    assert detector.eligible(endpoints) == [Instance("b")]
    fail(detector, "b", 5)
    assert detector.ejected("a")
    assert detector.ejected("b")
    assert detector.eligible(endpoints) == endpoints


def test_eligible_of_nothing_is_nothing(detector: OutlierDetector) -> None:
    assert detector.eligible([]) == []


def test_forget_clears_an_ejection(detector: OutlierDetector) -> None:
    fail(detector, "a", 5)
    detector.forget("a")
    assert not detector.ejected("a")
    fail(detector, "a", 4)
    assert not detector.ejected("a")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"consecutive_failures": 0}, "consecutive_failures"),
        ({"base_ejection_s": 0.0}, "base_ejection_s"),
        ({"base_ejection_s": 10.0, "max_ejection_s": 5.0}, "max_ejection_s"),
        ({"probe_timeout_s": 0.0}, "probe_timeout_s"),
    ],
)
def test_nonsense_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        OutlierDetector(**kwargs)

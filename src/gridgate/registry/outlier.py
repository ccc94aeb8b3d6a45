"""Passive health: eject instances whose calls keep failing (outlier detection, circuit breaker).

The caller reports what each call did; nothing here sends traffic of its own::

    endpoints = detector.eligible(instances)
    endpoint = balancer.pick(endpoints, exclude=tried)
    detector.record_start(endpoint.instance_id)
    ...  # then record_success or record_failure with the outcome

An instance whose calls fail ``consecutive_failures`` times in a row is ejected. The ejection lasts
``base_ejection_s`` and doubles with each ejection in a row (2, 4, 8 … s, capped at
``max_ejection_s``), like APISIX's api-breaker. When it ends the instance is half-open: it is
eligible for exactly one call, the probe, marked by :meth:`OutlierDetector.record_start`. The
probe's success closes the breaker and resets the back-off; its failure ejects the instance again
for twice as long. A probe whose outcome never arrives (the call was cancelled) frees the slot
after ``probe_timeout_s``, so an instance is never shut out for good.

Panic mode: when every endpoint offered to :meth:`OutlierDetector.eligible` is ejected, all of them
are returned. A registry-wide fault or a broken upstream of theirs would otherwise drop all
traffic; sending it to possibly sick instances is the better failure (Envoy's panic threshold,
Nacos's protection threshold).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from gridgate.registry.balancers import Endpoint

__all__ = ["OutlierDetector"]

E = TypeVar("E", bound=Endpoint)

# 2 ** 64 × any sane base is beyond any cap; the bound keeps the float from overflowing.
_MAX_DOUBLINGS = 64


@dataclass(slots=True)
class _Health:
    """What the detector remembers about an instance that has failed lately."""

    failures: int = 0  # consecutive failed calls while the breaker is closed
    ejections: int = 0  # ejections in a row, without a successful probe in between
    ejected_until: float | None = None  # None while the breaker is closed
    probe_started: float | None = None  # when the half-open probe was sent


class OutlierDetector:
    """Ejects an instance after consecutive failures, with doubling back-off and one probe."""

    def __init__(
        self,
        consecutive_failures: int = 5,
        base_ejection_s: float = 2.0,
        max_ejection_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
        *,
        probe_timeout_s: float = 30.0,
    ) -> None:
        if consecutive_failures < 1:
            raise ValueError("consecutive_failures must be at least 1")
        if not 0 < base_ejection_s <= max_ejection_s:
            raise ValueError("need 0 < base_ejection_s <= max_ejection_s")
        if probe_timeout_s <= 0:
            raise ValueError("probe_timeout_s must be positive")
        self._threshold = consecutive_failures
        self._base = base_ejection_s
        self._max = max_ejection_s
        self._probe_timeout = probe_timeout_s
        self._clock = clock
        # Only instances with something to remember are kept: healthy ones cost nothing.
        self._health: dict[str, _Health] = {}

    def record_start(self, instance_id: str) -> None:
        """Note a call sent to ``instance_id``; for a half-open instance it is the one probe."""
        health = self._health.get(instance_id)
        if health is None or health.ejected_until is None:
            return
        now = self._clock()
        if now >= health.ejected_until and not self._probing(health, now):
            health.probe_started = now

    def record_success(self, instance_id: str) -> None:
        """Note a call to ``instance_id`` that succeeded."""
        health = self._health.get(instance_id)
        if health is None:
            return
        if health.ejected_until is None or self._clock() >= health.ejected_until:
            # Closed: the failure run is broken. Half-open: the probe passed, back-off resets.
            del self._health[instance_id]
        # Still ejected: a call sent before the ejection (or in panic mode) finished late; the
        # ejection runs its course and a probe decides.

    def record_failure(self, instance_id: str) -> None:
        """Note a call to ``instance_id`` that failed (error, timeout, refused connection)."""
        health = self._health.setdefault(instance_id, _Health())
        now = self._clock()
        if health.ejected_until is None:
            health.failures += 1
            if health.failures >= self._threshold:
                self._eject(health, now)
        elif now >= health.ejected_until:
            self._eject(health, now)
        # Still ejected: a late or panic-mode failure says nothing new, so the period stands.

    def ejected(self, instance_id: str) -> bool:
        """True while ``instance_id`` must not be called: ejected, or its probe is out."""
        health = self._health.get(instance_id)
        return health is not None and self._ejected(health, self._clock())

    def eligible(self, endpoints: Sequence[E]) -> list[E]:
        """The endpoints that may be called now; all of them when every one is ejected."""
        if not self._health:
            return list(endpoints)
        now = self._clock()
        healthy = [
            e
            for e in endpoints
            if (health := self._health.get(e.instance_id)) is None or not self._ejected(health, now)
        ]
        return healthy or list(endpoints)

    def forget(self, instance_id: str) -> None:
        """Drop what is known about ``instance_id`` (it left the registry)."""
        self._health.pop(instance_id, None)

    def _eject(self, health: _Health, now: float) -> None:
        period = min(self._base * 2 ** min(health.ejections, _MAX_DOUBLINGS), self._max)
        health.ejected_until = now + period
        health.ejections += 1
        health.failures = 0
        health.probe_started = None

    def _probing(self, health: _Health, now: float) -> bool:
        started = health.probe_started
        return started is not None and now - started < self._probe_timeout

    def _ejected(self, health: _Health, now: float) -> bool:
        if health.ejected_until is None:
            return False
        return now < health.ejected_until or self._probing(health, now)

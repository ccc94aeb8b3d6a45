"""Load-balancing strategies shared by the registry client SDK and the gateway's dispatch stage.

A balancer picks one endpoint from the instances the registry returned::

    endpoint = balancer.pick(endpoints, key=customer_no, exclude={failed_id})
    if endpoint is not None:
        with track(balancer, endpoint.instance_id):
            await call(endpoint)

``acquire``/``release`` (or the :func:`track` context manager around them) tell the balancer a
call is in flight; only :class:`LeastInFlight` uses that, the others accept it and do nothing, so
callers write the same code whichever strategy a setting names.

Weights run from 0 to 100. Weight 0 drains an instance: it is never chosen while any candidate
left after ``exclude`` has a positive weight; when none has, the zero-weight ones share the
traffic equally, so a retry reaches a draining instance rather than failing outright.

Balancers are not thread-safe: ``pick`` is synchronous, so within one event loop no two picks
interleave. Share one across threads only behind your own lock.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections import OrderedDict
from collections.abc import Callable, Collection, Container, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Protocol, TypeVar

__all__ = [
    "BALANCERS",
    "Balancer",
    "ConsistentHash",
    "Endpoint",
    "LeastInFlight",
    "RoundRobin",
    "WeightedRandom",
    "balancer",
    "track",
]

_FULL_WEIGHT = 100
# Virtual nodes of an instance at full weight; 160 is what nginx and Dubbo use per server.
_VNODES_AT_FULL_WEIGHT = 160


class Endpoint(Protocol):
    """One registered instance as a balancer sees it (read-only attributes suffice)."""

    @property
    def instance_id(self) -> str: ...
    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def weight(self) -> int: ...


E = TypeVar("E", bound=Endpoint)


class Balancer(Protocol):
    """A strategy that picks one endpoint per call."""

    def pick(
        self,
        endpoints: Sequence[E],
        *,
        key: str | None = None,
        exclude: Collection[str] = (),
    ) -> E | None:
        """The endpoint for the next call, or None when none is eligible."""

    def acquire(self, instance_id: str) -> None:
        """Note that a call to ``instance_id`` has started."""

    def release(self, instance_id: str) -> None:
        """Note that a call to ``instance_id`` has ended, however it ended."""


@contextmanager
def track(balancer: Balancer, instance_id: str) -> Iterator[None]:
    """Hold one in-flight call to ``instance_id`` for the duration of the ``with`` block."""
    balancer.acquire(instance_id)
    try:
        yield
    finally:
        balancer.release(instance_id)


def _weighted(endpoints: Sequence[E], exclude: Collection[str]) -> list[tuple[E, int]]:
    """The candidates left after ``exclude``, each with the weight to balance by."""
    allowed = [e for e in endpoints if e.instance_id not in exclude]
    weighted = [(e, e.weight) for e in allowed if e.weight > 0]
    return weighted or [(e, _FULL_WEIGHT) for e in allowed]


def _prune(state: dict[str, int], endpoints: Sequence[Endpoint]) -> None:
    """Forget instances that left the endpoint list, so a returning one starts afresh."""
    # Every pick gives each current candidate an entry: more entries than endpoints means
    # some left (the check spares building a set on every call).
    if len(state) > len(endpoints):
        for stale in state.keys() - {e.instance_id for e in endpoints}:
            del state[stale]


def _smooth_pick(current: dict[str, int], weighted: list[tuple[E, int]]) -> E:
    """nginx's smooth weighted round-robin step over a non-empty candidate list."""
    total = 0
    for endpoint, weight in weighted:
        current[endpoint.instance_id] = current.get(endpoint.instance_id, 0) + weight
        total += weight
    best, _ = max(weighted, key=lambda pair: current[pair[0].instance_id])
    current[best.instance_id] -= total
    return best


class _NoTracking:
    """acquire/release for strategies that do not look at in-flight calls."""

    def acquire(self, instance_id: str) -> None:
        """Accepted and ignored: this strategy does not count calls."""

    def release(self, instance_id: str) -> None:
        """Accepted and ignored: this strategy does not count calls."""


class RoundRobin(_NoTracking):
    """Smooth weighted round-robin (nginx): exact weight shares, heavy instances interleaved."""

    def __init__(self) -> None:
        # Keyed by instance id, not list position, so the rotation survives a changed list.
        self._current: dict[str, int] = {}

    def pick(
        self,
        endpoints: Sequence[E],
        *,
        key: str | None = None,
        exclude: Collection[str] = (),
    ) -> E | None:
        """The next endpoint in the weighted rotation; ``key`` is ignored."""
        if len(endpoints) == 1:  # one instance: no rotation to keep
            only = endpoints[0]
            return None if only.instance_id in exclude else only
        _prune(self._current, endpoints)
        weighted = _weighted(endpoints, exclude)
        return _smooth_pick(self._current, weighted) if weighted else None


class WeightedRandom(_NoTracking):
    """Independent random picks with probability proportional to weight."""

    def __init__(self, rng: random.Random | None = None) -> None:
        # Tests pass a seeded generator; balancing is not security, so no CSPRNG is needed.
        self._rng = rng or random.Random()  # noqa: S311 - load balancing, not security

    def pick(
        self,
        endpoints: Sequence[E],
        *,
        key: str | None = None,
        exclude: Collection[str] = (),
    ) -> E | None:
        """A random endpoint, weighted; ``key`` is ignored."""
        weighted = _weighted(endpoints, exclude)
        if not weighted:
            return None
        chosen = self._rng.choices(weighted, weights=[weight for _, weight in weighted])
        return chosen[0][0]


class LeastInFlight:
    """The instance with the fewest calls in flight; ties go by smooth weighted round-robin."""

    def __init__(self) -> None:
        self._in_flight: dict[str, int] = {}
        self._current: dict[str, int] = {}

    def acquire(self, instance_id: str) -> None:
        """Count one more call in flight to ``instance_id``."""
        self._in_flight[instance_id] = self._in_flight.get(instance_id, 0) + 1

    def release(self, instance_id: str) -> None:
        """Count one call fewer; a release without an acquire is ignored, never negative."""
        count = self._in_flight.get(instance_id, 0)
        if count > 1:
            self._in_flight[instance_id] = count - 1
        else:
            # Dropping idle ids keeps the table as small as the calls in flight.
            self._in_flight.pop(instance_id, None)

    def in_flight(self, instance_id: str) -> int:
        """Calls to ``instance_id`` acquired and not yet released."""
        return self._in_flight.get(instance_id, 0)

    def pick(
        self,
        endpoints: Sequence[E],
        *,
        key: str | None = None,
        exclude: Collection[str] = (),
    ) -> E | None:
        """The least busy endpoint; ``key`` is ignored."""
        # Raw counts, not counts per weight: a faster instance drains its calls sooner, so the
        # count already reflects capacity. Weights decide among equally busy instances, which
        # makes sequential traffic follow the weights exactly.
        _prune(self._current, endpoints)
        weighted = _weighted(endpoints, exclude)
        if not weighted:
            return None
        fewest = min(self.in_flight(e.instance_id) for e, _ in weighted)
        idlest = [(e, w) for e, w in weighted if self.in_flight(e.instance_id) == fewest]
        return _smooth_pick(self._current, idlest)


def _hash64(text: str) -> int:
    """A hash that is the same in every process (Python's ``hash()`` is salted per process)."""
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class _Ring:
    """Virtual-node positions in ascending order and the instance owning each."""

    points: list[int]
    owners: list[str]

    @classmethod
    def build(cls, weights: Collection[tuple[str, int]]) -> _Ring:
        """A ring with virtual nodes proportional to each instance's weight."""
        nodes = sorted(
            (_hash64(f"{instance_id}#{index}"), instance_id)
            for instance_id, weight in weights
            for index in range(max(1, round(_VNODES_AT_FULL_WEIGHT * weight / _FULL_WEIGHT)))
        )
        return cls([point for point, _ in nodes], [owner for _, owner in nodes])

    def owner(self, key: str, allowed: Container[str]) -> str | None:
        """The first allowed instance clockwise from ``key``'s position."""
        start = bisect.bisect_left(self.points, _hash64(key))
        size = len(self.owners)
        # Usually the first node; skipping excluded owners moves only their own keys.
        for step in range(size):
            owner = self.owners[(start + step) % size]
            if owner in allowed:
                return owner
        return None


class ConsistentHash(_NoTracking):
    """A hash ring: the same key reaches the same instance while the instance set holds."""

    def __init__(self, *, ring_cache_size: int = 16) -> None:
        # Several rings are kept because one balancer may serve several services.
        self._rings: OrderedDict[frozenset[tuple[str, int]], _Ring] = OrderedDict()
        self._ring_cache_size = ring_cache_size
        self._fallback = RoundRobin()

    def _ring(self, weighted: list[tuple[E, int]]) -> _Ring:
        signature = frozenset((e.instance_id, weight) for e, weight in weighted)
        ring = self._rings.get(signature)
        if ring is None:
            ring = self._rings[signature] = _Ring.build(signature)
            if len(self._rings) > self._ring_cache_size:
                self._rings.popitem(last=False)
        else:
            self._rings.move_to_end(signature)
        return ring

    def pick(
        self,
        endpoints: Sequence[E],
        *,
        key: str | None = None,
        exclude: Collection[str] = (),
    ) -> E | None:
        """The endpoint owning ``key`` on the ring; round-robin when ``key`` is None."""
        if key is None:
            return self._fallback.pick(endpoints, exclude=exclude)
        candidates = {e.instance_id: e for e, _ in _weighted(endpoints, exclude)}
        if not candidates:
            return None
        # The ring is built without ``exclude`` so that a retry's exclusion does not reshuffle
        # other keys; the walk just steps past excluded owners.
        owner = self._ring(_weighted(endpoints, ())).owner(key, candidates)
        if owner is None:
            # Only zero-weight instances are left, and they are not on the full ring.
            owner = self._ring(_weighted(list(candidates.values()), ())).owner(key, candidates)
        return candidates[owner] if owner is not None else None


_STRATEGIES: dict[str, Callable[[], Balancer]] = {
    "round_robin": RoundRobin,
    "weighted_random": WeightedRandom,
    "least_in_flight": LeastInFlight,
    "consistent_hash": ConsistentHash,
}
BALANCERS: tuple[str, ...] = tuple(_STRATEGIES)


def balancer(name: str) -> Balancer:
    """A fresh balancer of the strategy ``name`` (one of :data:`BALANCERS`)."""
    try:
        return _STRATEGIES[name]()
    except KeyError:
        expected = ", ".join(BALANCERS)
        raise ValueError(f"unknown balancer {name!r}; expected one of {expected}") from None

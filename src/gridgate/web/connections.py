"""Connection limits of every listener: how many connections it keeps, and for how long.

Every open connection holds a file descriptor, and a process has a fixed number of them
(``RLIMIT_NOFILE``). Without limits, a few thousand idle connections to the gateway take the
last descriptor and every listener of the process stops accepting, the admin listener and the
probes included. A :class:`ConnectionGuard` per listener therefore:

- refuses a connection beyond the listener's cap, or beyond the cap of one client address
  (its /64 for IPv6), at once: a short ``503`` with ``Connection: close`` and the descriptor is
  freed before the next accept;
- closes a connection whose first byte does not come within ``first_byte_s``, and a request
  whose head does not arrive within ``head_s`` of its first byte (408);
- shortens the idle keep-alive to ``pressure_keep_alive_s`` while more than 3/4 of the cap is
  in use, so idle clients give their slots to new ones;
- counts refusals and early closes in Prometheus, and logs them at most every 10 s.

The uvicorn listeners use it (:mod:`gridgate.web.uvicorn_protocol`); the gateway's engine
enforces the same policy itself (``engine/src/connections.rs``), handed to it by
:mod:`gridgate.server`. The caps come from the settings and are fitted below the process's
descriptor limit at start (:class:`ConnectionBudget`), with room kept for upstream
connections, the database, Redis and files.
"""

from __future__ import annotations

import contextlib
import math
import resource
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http import HTTPStatus
from typing import TYPE_CHECKING, Protocol

import orjson
import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import CollectorRegistry

from gridgate.addresses import client_bucket
from gridgate.errors import (
    PROBLEM_CONTENT_TYPE,
    GridgateError,
    Overloaded,
    RequestTimeout,
    problem_body,
)

if TYPE_CHECKING:
    from gridgate.settings import Settings

__all__ = [
    "METRICS",
    "PRESSURE_RATIO",
    "ConnectionBudget",
    "ConnectionGuard",
    "ConnectionPolicy",
    "Guarded",
    "raise_descriptor_limit",
]

_log = structlog.get_logger("gridgate.connections")
#: Above this share of its cap a listener is under pressure: idle keep-alives are cut short.
PRESSURE_RATIO = 0.75
#: Refusals and early closes are logged at most this often per listener, with their counts.
LOG_INTERVAL_S = 10.0
#: No listener's cap is fitted below this, however few descriptors there are.
MIN_CAP = 16
#: The most connections a demo business system listener takes (two per system in `gridgate up`).
DEMO_CAP = 256
#: Client addresses named in one refusal log line, at most.
_SAMPLE_ADDRESSES = 5


@dataclass(frozen=True, slots=True)
class ConnectionPolicy:
    """What one listener allows: its caps and deadlines (the default limits nothing)."""

    #: Connections the listener keeps open at once; a further one is refused.
    max_connections: int | None = None
    #: Connections one client address (an IPv6 /64) may hold on the listener.
    max_per_address: int | None = None
    #: Addresses not held to ``max_per_address``: load balancers, which carry every client.
    exempt: frozenset[str] = frozenset()
    #: A new connection must send the first byte of a request within this time.
    first_byte_s: float = math.inf
    #: A request's line and headers must arrive within this time of its first byte.
    head_s: float = math.inf
    #: The idle keep-alive while the listener is under pressure (above PRESSURE_RATIO).
    pressure_keep_alive_s: float = math.inf


class Guarded(Protocol):
    """A connection a guard admitted: it closes itself when one of its deadlines passed."""

    def sweep(self, now: float) -> None:
        """Close the connection if it waited too long for what it is waiting for."""


class _Transport(Protocol):
    def get_extra_info(self, name: str, default: object = None) -> object: ...

    def write(self, data: bytes) -> None: ...

    def close(self) -> None: ...


class ConnectionGuard:
    """Admits, counts and times the connections of one listener."""

    def __init__(self, listener: str, policy: ConnectionPolicy | None = None) -> None:
        self.listener = listener
        self.policy = policy = policy or ConnectionPolicy()
        #: Admitted connections, with the address bucket each is counted in.
        self.open: dict[Guarded, str] = {}
        self.by_address: dict[str, int] = {}
        self.max_connections = policy.max_connections or math.inf
        self.max_per_address = policy.max_per_address or math.inf
        self.pressure_at = self.max_connections * PRESSURE_RATIO
        self.refused = _Tally(listener, "connections_refused", METRICS.refused, warn=True)
        self.timed_out = _Tally(listener, "connections_timed_out", METRICS.timed_out, warn=False)
        METRICS.guards.add(self)

    @property
    def under_pressure(self) -> bool:
        """More than PRESSURE_RATIO of the cap is in use."""
        return len(self.open) > self.pressure_at

    def admit(self, connection: Guarded, transport: _Transport) -> bool:
        """Count ``connection`` in, or refuse it: answer 503, close it, return False."""
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        bucket = client_bucket(address)
        if len(self.open) >= self.max_connections:
            reason = "listener_full"
        elif self.by_address.get(bucket, 0) >= self.max_per_address and not (
            address in self.policy.exempt or bucket in self.policy.exempt
        ):
            reason = "address_full"
        else:
            self.open[connection] = bucket
            self.by_address[bucket] = self.by_address.get(bucket, 0) + 1
            return True
        # Written into an empty send buffer: close() frees the descriptor at once.
        transport.write(_REFUSAL)
        transport.close()
        self.refused.count(reason, bucket, now_open=len(self.open))
        return False

    def release(self, connection: Guarded) -> None:
        """``connection`` is closed."""
        bucket = self.open.pop(connection, None)
        if bucket is None:
            return
        left = self.by_address[bucket] - 1
        if left:
            self.by_address[bucket] = left
        else:
            del self.by_address[bucket]

    def idle_deadline(self, keep_alive_s: float, *, fresh: bool) -> tuple[float, str | None]:
        """How long a connection with nothing in flight may stay, and why if shorter than
        ``keep_alive_s``: a ``fresh`` one has not sent a byte yet."""
        limit = keep_alive_s
        if self.under_pressure:
            limit = min(limit, self.policy.pressure_keep_alive_s)
        if fresh:
            limit = min(limit, self.policy.first_byte_s)
        if limit >= keep_alive_s:
            return keep_alive_s, None
        return limit, "first_byte" if fresh else "idle_under_pressure"

    def closed_early(self, reason: str) -> None:
        """A connection was closed because a deadline of this guard passed (``reason``)."""
        self.timed_out.count(reason, None, now_open=len(self.open))

    def sweep(self, now: float) -> None:
        """Let every connection close itself if it waited too long; log what was counted."""
        for connection in list(self.open):
            connection.sweep(now)
        self.refused.flush(now_open=len(self.open))
        self.timed_out.flush(now_open=len(self.open))

    def close(self) -> None:
        """The listener stopped: its connections no longer show in the metrics."""
        METRICS.guards.discard(self)


def raw_problem(error: GridgateError) -> bytes:
    """A whole ``Connection: close`` answer of ``error``, written straight to a transport."""
    body = orjson.dumps(problem_body(error, None))
    status = HTTPStatus(error.status)
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"content-type: {PROBLEM_CONTENT_TYPE}",
        f"content-length: {len(body)}",
        *(f"{name.lower()}: {value}" for name, value in error.headers.items()),
        "connection: close",
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


_REFUSAL = raw_problem(Overloaded("too many open connections", retry_after=1))
#: Sent when a request's head does not arrive in time (the uvicorn listeners; the gateway's
#: server answers it itself, with a trace id).
HEAD_TIMEOUT = raw_problem(RequestTimeout("the request head did not arrive in time"))


class _Tally:
    """Counts events by reason for Prometheus, and logs them at most every LOG_INTERVAL_S."""

    def __init__(
        self, listener: str, event: str, totals: dict[tuple[str, str], int], *, warn: bool
    ) -> None:
        self.listener = listener
        self.event = event
        #: The Prometheus counter's values, by (listener, reason).
        self.totals = totals
        self.warn = warn
        self.pending: dict[str, int] = {}
        self.addresses: set[str] = set()
        self.logged_at = -math.inf

    def count(self, reason: str, address: str | None, *, now_open: int) -> None:
        """One more event for ``reason`` (from ``address``, when it is worth naming)."""
        key = (self.listener, reason)
        self.totals[key] = self.totals.get(key, 0) + 1
        self.pending[reason] = self.pending.get(reason, 0) + 1
        if address is not None and len(self.addresses) < _SAMPLE_ADDRESSES:
            self.addresses.add(address)
        self.flush(now_open=now_open)

    def flush(self, *, now_open: int) -> None:
        """Log what was counted since the last line, unless that line is too recent."""
        if not self.pending:
            return
        now = time.monotonic()
        if now - self.logged_at < LOG_INTERVAL_S:
            return
        self.logged_at = now
        log = _log.warning if self.warn else _log.info
        fields: dict[str, object] = {"listener": self.listener, "open": now_open, **self.pending}
        if self.addresses:
            fields["addresses"] = sorted(self.addresses)
        log(self.event, **fields)
        self.pending = {}
        self.addresses = set()


class _ConnectionMetrics:
    """Refusals, early closes and open connections per listener, read when scraped."""

    def __init__(self, registry: CollectorRegistry | None = REGISTRY) -> None:
        self.guards: weakref.WeakSet[ConnectionGuard] = weakref.WeakSet()
        self.refused: dict[tuple[str, str], int] = {}
        self.timed_out: dict[tuple[str, str], int] = {}
        #: Listeners that keep their own counts (the gateway's engine): each gives the
        #: samples of these families, by family name, when scraped.
        self.sources: list[Callable[[], Mapping[str, Iterable[tuple[tuple[str, ...], float]]]]]
        self.sources = []
        if registry is not None:
            registry.register(self)

    def describe(self) -> Iterable[Metric]:
        """The families without samples (for the registry's duplicate check)."""
        return self._families(with_samples=False)

    def collect(self) -> Iterator[Metric]:
        """The families as they are now."""
        return self._families(with_samples=True)

    def _families(self, *, with_samples: bool) -> Iterator[Metric]:
        refused = CounterMetricFamily(
            "gridgate_connections_refused",
            "Connections closed as soon as accepted, by listener and reason.",
            labels=("listener", "reason"),
        )
        timed_out = CounterMetricFamily(
            "gridgate_connections_timed_out",
            "Connections closed because a deadline of the listener passed, by reason.",
            labels=("listener", "reason"),
        )
        opened = GaugeMetricFamily(
            "gridgate_connections_open", "Connections open now, by listener.", labels=("listener",)
        )
        caps = GaugeMetricFamily(
            "gridgate_connections_max",
            "The most connections a listener keeps open (after fitting to the descriptors).",
            labels=("listener",),
        )
        if with_samples:
            for key, value in list(self.refused.items()):
                refused.add_metric(key, value)
            for key, value in list(self.timed_out.items()):
                timed_out.add_metric(key, value)
            now_open: dict[str, int] = {}
            now_max: dict[str, float] = {}
            for guard in list(self.guards):
                now_open[guard.listener] = now_open.get(guard.listener, 0) + len(guard.open)
                if guard.policy.max_connections is not None:
                    cap = now_max.get(guard.listener, 0) + guard.policy.max_connections
                    now_max[guard.listener] = cap
            for listener, count in now_open.items():
                opened.add_metric((listener,), count)
            for listener, cap in now_max.items():
                caps.add_metric((listener,), cap)
            families = {f.name: f for f in (refused, timed_out, opened, caps)}
            for source in self.sources:
                for name, samples in source().items():
                    if name in families:
                        for labels, number in samples:
                            families[name].add_metric(labels, number)
        yield from (refused, timed_out, opened, caps)


METRICS = _ConnectionMetrics()


# -- descriptors --------------------------------------------------------------------------------


def raise_descriptor_limit() -> tuple[int, int]:
    """Raise this process's soft ``RLIMIT_NOFILE`` to its hard limit; (soft, hard) now.

    The soft limit is often 1024 (systemd, most shells) while the hard one is far higher: a
    process may raise its own soft limit up to the hard one. An unlimited hard limit is
    taken as the kernel's ceiling (``fs.nr_open``, 1,048,576 by default).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = hard
    if hard == resource.RLIM_INFINITY:
        wanted = _kernel_ceiling()
    if soft != resource.RLIM_INFINITY and soft < wanted:
        # Refused on some systems (macOS caps at OPEN_MAX): keep the soft limit then.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def _kernel_ceiling() -> int:
    try:
        with open("/proc/sys/fs/nr_open", encoding="ascii") as handle:  # noqa: PTH123
            return int(handle.read())
    except (OSError, ValueError):
        return 1_048_576


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """The connection policies the settings ask for, by kind of listener, and the
    descriptors to keep free for everything else."""

    gateway: ConnectionPolicy
    admin: ConnectionPolicy
    #: The registry, accounts, logs and demo listeners.
    internal: ConnectionPolicy
    #: Descriptors left to upstream connections, the database, Redis, log files.
    reserve: int
    #: Whether caps lowered to fit the descriptor limit deserve a warning. In production they
    #: do (raise the limit); in development a small limit is normal and the line stays quiet.
    warn_when_lowered: bool = True

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionBudget:
        """The policies of the settings (caps not yet fitted to the descriptor limit)."""
        deadlines = ConnectionPolicy(
            exempt=frozenset(settings.gateway_trusted_proxies),
            first_byte_s=settings.connection_first_byte_timeout_s,
            head_s=settings.request_head_timeout_s,
            pressure_keep_alive_s=settings.keep_alive_under_pressure_s,
        )
        return cls(
            gateway=replace(
                deadlines,
                max_connections=settings.gateway_max_connections,
                max_per_address=settings.gateway_max_connections_per_address,
            ),
            admin=replace(
                deadlines,
                max_connections=settings.admin_max_connections,
                max_per_address=settings.admin_max_connections_per_address,
            ),
            internal=replace(
                deadlines,
                max_connections=settings.internal_max_connections,
                max_per_address=settings.internal_max_connections_per_address,
            ),
            reserve=settings.descriptor_reserve,
            warn_when_lowered=settings.production,
        )

    def wanted(self, listener: str) -> ConnectionPolicy:
        """The policy of ``listener`` as configured."""
        if listener == "gateway":
            return self.gateway
        if listener == "admin":
            return self.admin
        if listener.startswith("demo-"):
            # Development stand-ins for business systems: one gateway's pool is their load.
            cap = min(self.internal.max_connections or DEMO_CAP, DEMO_CAP)
            per_address = min(self.internal.max_per_address or cap, cap)
            return replace(self.internal, max_connections=cap, max_per_address=per_address)
        return self.internal

    def fit(self, listeners: Sequence[str], descriptors: int) -> list[ConnectionPolicy]:
        """The policy of each listener (names may repeat: two instances of a demo system),
        caps lowered by one factor (to MIN_CAP at least) when together they would leave
        fewer than ``reserve`` of ``descriptors`` free.

        The reserve is at most half the descriptors, so that a small limit still serves.
        """
        wanted = [self.wanted(name) for name in listeners]
        reserve = min(self.reserve, descriptors // 2)
        # One descriptor per listening socket too.
        budget = max(0, descriptors - reserve - len(wanted))
        total = sum(policy.max_connections or 0 for policy in wanted)
        if total <= budget:
            return wanted
        factor = budget / total
        fitted: list[ConnectionPolicy] = []
        for policy in wanted:
            cap = max(MIN_CAP, int((policy.max_connections or 0) * factor))
            per_address = min(policy.max_per_address or cap, cap)
            fitted.append(replace(policy, max_connections=cap, max_per_address=per_address))
        return fitted

    def plan(self, listeners: Sequence[str]) -> list[ConnectionPolicy]:
        """Raise the descriptor limit, fit the caps below it and log both (once, at start)."""
        soft, hard = raise_descriptor_limit()
        descriptors = soft if soft != resource.RLIM_INFINITY else _kernel_ceiling()
        policies = self.fit(listeners, descriptors)
        lowered = any(p != self.wanted(name) for name, p in zip(listeners, policies, strict=True))
        log = _log.warning if lowered and self.warn_when_lowered else _log.info
        log(
            "connection_limits",
            descriptors=descriptors,
            hard_limit=None if hard == resource.RLIM_INFINITY else hard,
            reserve=min(self.reserve, descriptors // 2),
            lowered_to_fit=lowered,
            # Instances of one demo system share a name and a policy: one entry each.
            listeners={
                name: {"max": p.max_connections, "per_address": p.max_per_address}
                for name, p in zip(listeners, policies, strict=True)
            },
        )
        return policies

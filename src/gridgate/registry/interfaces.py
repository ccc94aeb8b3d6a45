"""The registry store contract: instances, their health, the change log and node membership.

Health follows Nacos: an instance that sends no heartbeat for ``unhealthy_after_s`` is marked
unhealthy, after ``remove_after_s`` it is removed. The marking is done by
:meth:`RegistryStore.sweep`, which every registry node runs on a timer, so that each state change
is also a change-log entry a watcher receives. Times are seconds of the store clock, which is
not necessarily the epoch.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol

from gridgate.errors import InvalidRequest, NotFound, PermissionDenied

__all__ = [
    "Change",
    "ChangeKind",
    "Changes",
    "ForeignInstance",
    "Instance",
    "InvalidInstance",
    "NodeInfo",
    "Registration",
    "RegistryStore",
    "ServiceSummary",
    "Timings",
    "UnknownInstance",
    "check_service",
    "check_threshold",
    "protect",
]

ChangeKind = Literal["registered", "updated", "unhealthy", "healthy", "removed"]

SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_.\-]{0,127}$")
_OWNER = re.compile(r"^[a-z][a-z0-9_.\-]{0,63}$")  # a business-system code (schemas.Code)
_ZONE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")
_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)(\.[A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?)*$"
)
#: Metadata travels in every watch answer and gateway snapshot, so it is kept small.
MAX_METADATA_ENTRIES = 32
MAX_METADATA_CHARS = 4096


class UnknownInstance(NotFound):
    """No live instance has this id (never registered, deregistered or expired)."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(f"no registered instance {instance_id}", instance_id=instance_id)
        self.instance_id = instance_id


class ForeignInstance(PermissionDenied):
    """The instance belongs to another business system; the store changed nothing."""

    def __init__(self, instance: Instance) -> None:
        super().__init__("the instance belongs to another business system")
        self.instance = instance


class InvalidInstance(InvalidRequest):
    """A registration or service setting the store refuses; ``field`` names the culprit."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}", field=field)
        self.field = field
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Timings:
    """Heartbeat timings; the defaults are those of Nacos."""

    heartbeat_interval_s: float = 5
    unhealthy_after_s: float = 15
    remove_after_s: float = 30

    def __post_init__(self) -> None:
        if not 0 < self.heartbeat_interval_s < self.unhealthy_after_s <= self.remove_after_s:
            raise ValueError(
                "registry timings need 0 < heartbeat_interval_s < unhealthy_after_s"
                " <= remove_after_s"
            )


@dataclass(frozen=True, slots=True)
class Instance:
    """One registered process of a service, reachable at ``host:port``."""

    instance_id: str
    service: str
    host: str
    port: int
    weight: int
    zone: str | None
    metadata: dict[str, str]
    healthy: bool
    registered_at: float
    last_heartbeat: float
    owner: str


@dataclass(frozen=True, slots=True)
class Change:
    """One entry of the change log; ``instance`` is the new state, ``None`` once removed."""

    revision: int
    kind: ChangeKind
    service: str
    instance_id: str
    instance: Instance | None


@dataclass(frozen=True, slots=True)
class Changes:
    """A watch answer: the changes after the caller's revision, or ``snapshot`` to reload.

    ``revision`` is the one to ask from next time: that of the last change returned (fewer than
    all when ``limit`` cut the answer), else the store's current revision.
    """

    revision: int
    changes: list[Change] = field(default_factory=list)
    snapshot: bool = False


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """A service and how many of its instances are registered and healthy."""

    service: str
    instances: int
    healthy: int


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A registry node (注册中心节点) alive now, with the URL other nodes and clients use."""

    node_id: str
    url: str
    last_seen: float


def check_service(service: object) -> str:
    """``service`` if it is a valid service name, else :class:`InvalidInstance`."""
    if not isinstance(service, str) or not SERVICE_NAME.match(service):
        raise InvalidInstance("service", f"must match {SERVICE_NAME.pattern}")
    return service


def _check_host(host: object) -> str:
    if not isinstance(host, str) or not host:
        raise InvalidInstance("host", "must be an IP address or a DNS host name")
    try:
        # Canonical form, so that "::1" and "0::1" are one instance address.
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not _HOSTNAME.match(host):
        raise InvalidInstance("host", "must be an IP address or a DNS host name")
    return host.lower()


def _check_int(name: str, value: object, low: int, high: int) -> int:
    # bool is an int in Python, but "weight": true is a caller's mistake.
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidInstance(name, f"must be an integer from {low} to {high}")
    return value


def _check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, Mapping):
        raise InvalidInstance("metadata", "must be an object of strings")
    items = dict(metadata)
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in items.items()):
        raise InvalidInstance("metadata", "keys and values must be strings")
    if len(items) > MAX_METADATA_ENTRIES:
        raise InvalidInstance("metadata", f"at most {MAX_METADATA_ENTRIES} entries")
    if sum(len(k) + len(v) for k, v in items.items()) > MAX_METADATA_CHARS:
        raise InvalidInstance("metadata", f"at most {MAX_METADATA_CHARS} characters in all")
    return items


@dataclass(frozen=True, slots=True)
class Registration:
    """The checked and normalized fields of a ``register`` call."""

    service: str
    host: str
    port: int
    weight: int
    zone: str | None
    metadata: dict[str, str]
    owner: str

    @classmethod
    def checked(
        cls,
        service: str,
        host: str,
        port: int,
        *,
        weight: int,
        zone: str | None,
        metadata: Mapping[str, str] | None,
        owner: str,
    ) -> Registration:
        """Validate every field, raising :class:`InvalidInstance` naming the first bad one."""
        service = check_service(service)
        host = _check_host(host)
        port = _check_int("port", port, 1, 65535)
        weight = _check_int("weight", weight, 0, 100)
        if zone is not None and (not isinstance(zone, str) or not _ZONE.match(zone)):
            raise InvalidInstance("zone", f"must match {_ZONE.pattern}")
        checked_metadata = _check_metadata(metadata)
        if not isinstance(owner, str) or not _OWNER.match(owner):
            raise InvalidInstance("owner", "must be a business-system code")
        return cls(service, host, port, weight, zone, checked_metadata, owner)


def check_threshold(protect_threshold: object) -> float:
    """``protect_threshold`` as a float if it lies in 0–1, else :class:`InvalidInstance`."""
    if (
        not isinstance(protect_threshold, int | float)
        or isinstance(protect_threshold, bool)
        or not 0 <= protect_threshold <= 1
    ):
        raise InvalidInstance("protect_threshold", "must be a number from 0 to 1")
    return float(protect_threshold)


def protect(
    instances: Iterable[Instance], *, healthy_only: bool, threshold: float
) -> list[Instance]:
    """The instances to hand out, with the Nacos protection threshold (保护阈值) applied.

    When fewer than ``threshold`` of the instances are healthy, all of them are returned:
    sending every call to the few healthy ones left would knock those over too.
    """
    every = sorted(instances, key=lambda inst: (inst.host, inst.port))
    if not healthy_only:
        return every
    healthy = [inst for inst in every if inst.healthy]
    if every and len(healthy) / len(every) < threshold:
        return every
    return healthy


class RegistryStore(Protocol):
    """Registry state: instances, heartbeats, the ordered change log and registry nodes."""

    timings: Timings

    async def register(
        self,
        service: str,
        host: str,
        port: int,
        *,
        weight: int = 100,
        zone: str | None = None,
        metadata: Mapping[str, str] | None = None,
        owner: str,
    ) -> Instance:
        """Add an instance, or refresh the one already at ``service`` + ``host:port``."""
        ...

    async def heartbeat(self, instance_id: str, *, owner: str | None = None) -> Instance:
        """Record that the instance is alive; an unhealthy one becomes healthy again.

        With ``owner``, an instance of another business system is left as it is and
        :class:`ForeignInstance` is raised (one atomic step: heartbeats are the hot write).
        """
        ...

    async def get(self, instance_id: str) -> Instance | None:
        """The instance with this id, or ``None`` if there is none."""
        ...

    async def deregister(self, instance_id: str) -> None:
        """Remove the instance now (a clean shutdown)."""
        ...

    async def instances(
        self, service: str, *, healthy_only: bool = True
    ) -> tuple[int, list[Instance]]:
        """The current revision and the instances by host and port (none for an unknown service)."""
        ...

    async def services(self) -> list[ServiceSummary]:
        """Every service that has instances, by name."""
        ...

    async def revision(self) -> int:
        """The current revision (cheap: lets a node serve cached answers while it holds)."""
        ...

    async def configure_service(self, service: str, *, protect_threshold: float) -> None:
        """Set the protection threshold (0–1, default 0) of a service."""
        ...

    async def changes_since(self, revision: int, *, limit: int = 1000) -> Changes:
        """The changes after ``revision`` in order, or ``snapshot`` if the log lacks some."""
        ...

    async def wait_for_changes(self, revision: int, *, timeout_s: float) -> Changes:
        """Like :meth:`changes_since`, but wait up to ``timeout_s`` for a change if none is new."""
        ...

    async def sweep(self) -> int:
        """Mark silent instances unhealthy and remove expired ones; the number changed."""
        ...

    async def register_node(self, node_id: str, url: str) -> None:
        """Announce (or keep alive) a registry node for ``remove_after_s``."""
        ...

    async def nodes(self) -> list[NodeInfo]:
        """The registry nodes alive now, by id."""
        ...

    async def remove_node(self, node_id: str) -> None:
        """Forget a registry node (it is shutting down)."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers."""
        ...

    async def close(self) -> None:
        """Release what the store holds."""
        ...

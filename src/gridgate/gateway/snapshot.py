"""The gateway's in-memory view of the catalog: routes, channels and interfaces.

The request path reads only a :class:`Snapshot`; it never touches the database. A new snapshot
is compiled off to the side whenever the catalog revision moves and swapped in whole, so a
reload never stalls a request and a request never sees half a catalog.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from gridgate.catalog.models import (
    BusinessSystem,
    CatalogRevision,
    Channel,
    Interface,
    InterfaceChannelGrant,
    InterfaceSystemGrant,
)
from gridgate.catalog.paths import PathTemplate
from gridgate.catalog.services import CHANNEL_SECRET, SYSTEM_PASSWORD
from gridgate.permissions.fields import FieldFilter, FieldRule, compile_rules
from gridgate.permissions.levels import (
    Floor,
    MenuNode,
    combine_floors,
    function_floors,
    menu_levels,
)
from gridgate.permissions.models import (
    FieldRuleRow,
    FunctionInterface,
    FunctionRow,
    InterfacePermission,
    MenuRow,
)
from gridgate.storage.crypto import SecretBox
from gridgate.storage.db import Database

__all__ = [
    "ChannelView",
    "InterfaceView",
    "Match",
    "Router",
    "Snapshot",
    "SnapshotHolder",
    "SystemView",
    "compile_snapshot",
    "load_snapshot",
    "required_level",
]

_log = structlog.get_logger("gridgate.gateway.snapshot")
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class ChannelView:
    """What the gateway needs of a channel."""

    code: str
    secret: str = field(repr=False)
    enabled: bool
    networks: tuple[IpNetwork, ...]
    rate_limit_per_s: int | None

    def allows(self, address: str) -> bool:
        """True when ``address`` lies in an allowed network (no networks: any address)."""
        if not self.networks:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.networks)


@dataclass(frozen=True, slots=True)
class SystemView:
    """What the gateway needs of a business system calling interfaces in its own name."""

    code: str
    #: Its password: the key it signs its calls with (``X-GG-System``).
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class InterfaceView:
    """What the gateway needs of an interface."""

    code: str
    method: str
    path: str
    enabled: bool
    requires_client_auth: bool
    min_level: int
    idempotent: bool
    timeout_s: float
    target_service: str
    balancer: str
    rate_limit_per_s: int | None
    max_concurrency: int | None
    max_queue: int
    max_wait_s: float
    channels: frozenset[str]
    customer_scope: str | None = None
    #: Requests per second of one client address, and of one account, on this interface.
    client_rate_limit_per_s: int | None = None
    account_rate_limit_per_s: int | None = None
    #: The version its instances run, and a canary (the engine routes by them; this path not).
    version: str = "1"
    canary_version: str | None = None
    canary_percent: int = 0
    #: The business systems granted this interface (system-to-system calls).
    systems: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Match:
    """A routed request: the interface and the path parameters."""

    interface: InterfaceView
    params: dict[str, str]


class _Node:
    __slots__ = ("by_method", "literal", "param", "param_names")

    def __init__(self) -> None:
        self.literal: dict[str, _Node] = {}
        self.param: _Node | None = None
        self.by_method: dict[str, InterfaceView] = {}
        # Templates of one shape may name their parameters differently per method.
        self.param_names: dict[str, tuple[str, ...]] = {}


class Router:
    """A segment trie: literal segments first, then a parameter segment (one per level)."""

    def __init__(self, interfaces: Iterable[InterfaceView]) -> None:
        self._root = _Node()
        for interface in interfaces:
            template = PathTemplate.parse(interface.path)
            node = self._root
            for segment in template.segments:
                if segment.startswith("{"):
                    node.param = node.param or _Node()
                    node = node.param
                else:
                    node = node.literal.setdefault(segment, _Node())
            node.by_method[interface.method] = interface
            node.param_names[interface.method] = template.params

    def match(self, method: str, path: str) -> Match | bool | None:
        """The match; ``False`` when the path exists for other methods only; None if unknown."""
        if not path.startswith("/"):
            return None
        segments = path[1:].split("/") if path != "/" else []
        values: list[str] = []
        # The common case without backtracking first: a literal segment where there is one,
        # else the parameter. That is the path the full search would find first.
        node: _Node | None = self._root
        for segment in segments:
            assert node is not None  # noqa: S101 - set on every iteration
            child = node.literal.get(segment)
            if child is None and node.param is not None and segment:
                values.append(segment)
                child = node.param
            node = child
            if node is None:
                break
        if node is None or not node.by_method:
            values = []
            node = self._walk(self._root, segments, 0, values)
        if node is None:
            return None
        interface = node.by_method.get(method)
        if interface is None:
            return False
        return Match(interface, dict(zip(node.param_names[method], values, strict=True)))

    def _walk(
        self, node: _Node, segments: list[str], index: int, values: list[str]
    ) -> _Node | None:
        if index == len(segments):
            return node if node.by_method else None
        segment = segments[index]
        child = node.literal.get(segment)
        if child is not None:
            found = self._walk(child, segments, index + 1, values)
            if found is not None:
                return found
        if node.param is not None and segment:
            values.append(segment)
            found = self._walk(node.param, segments, index + 1, values)
            if found is not None:
                return found
            values.pop()
        return None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """One consistent compiled catalog."""

    revision: int
    router: Router
    channels: dict[str, ChannelView]
    interfaces: dict[str, InterfaceView]
    #: (channel, interface) → level its interface permission asks for.
    perm_levels: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Interfaces with at least one interface permission: other channels may not call them.
    permissioned: frozenset[str] = frozenset()
    #: (channel, interface) → the level components and functions ask for there, None when
    #: they refuse it there (permissions/levels.py).
    levels: dict[tuple[str, str], int | None] = field(default_factory=dict)
    #: Interfaces with at least one entry in ``levels``.
    leveled: frozenset[str] = frozenset()
    #: (interface, channel or None) → the compiled field rules (data control).
    filters: dict[tuple[str, str | None], FieldFilter] = field(default_factory=dict)
    #: Business systems by code (their grants are on the interfaces).
    systems: dict[str, SystemView] = field(default_factory=dict)

    def field_filter(self, interface: str, channel: str | None) -> FieldFilter | None:
        """The field rules for a caller of ``interface`` on ``channel``, if any."""
        found = self.filters.get((interface, channel)) if channel else None
        return found or self.filters.get((interface, None))

    @property
    def services(self) -> frozenset[str]:
        """The target services of the enabled interfaces (what discovery must follow)."""
        return frozenset(i.target_service for i in self.interfaces.values() if i.enabled)


def required_level(snapshot: Snapshot, channel: str, interface: InterfaceView) -> int | None:
    """The level a caller on ``channel`` needs for ``interface``; None when the channel may not.

    The rule the engine applies on every request (``Snapshot::required_level``), over the same
    compiled tables; the permissions bench and the tests decide with it here. The interface
    permission says which channels may call; components and functions (``levels``) only raise
    the level on their channel, or refuse there when disabled.
    """
    required = interface.min_level
    code = interface.code
    if code in snapshot.permissioned:
        granted = snapshot.perm_levels.get((channel, code))
        if granted is None:
            return None
        required = max(required, granted)
    if code in snapshot.leveled and (channel, code) in snapshot.levels:
        floor = snapshot.levels[(channel, code)]
        if floor is None:
            return None
        required = max(required, floor)
    return required


@dataclass(frozen=True, slots=True)
class PermissionView:
    """An interface permission: ``channel`` may call ``interface`` from ``min_level``."""

    channel: str
    interface: str
    min_level: int


@dataclass(frozen=True, slots=True)
class FieldRuleView:
    """A field rule of an interface, on one channel or (None) on all."""

    interface: str
    channel: str | None
    rule: FieldRule


def compile_snapshot(
    revision: int,
    channels: Iterable[ChannelView],
    interfaces: Iterable[InterfaceView],
    permissions: Iterable[PermissionView] = (),
    field_rules: Iterable[FieldRuleView] = (),
    floors: Iterable[Floor] = (),
    systems: Iterable[SystemView] = (),
) -> Snapshot:
    """Build the router and look-up tables (CPU only: safe to run in a worker thread)."""
    by_code = {i.code: i for i in interfaces}
    channel_views = {c.code: c for c in channels}
    perm_levels = {(p.channel, p.interface): p.min_level for p in permissions}
    levels = combine_floors(floors)
    general: dict[str, list[FieldRule]] = {}
    specific: dict[tuple[str, str], list[FieldRule]] = {}
    for view in field_rules:
        if view.channel is None:
            general.setdefault(view.interface, []).append(view.rule)
        else:
            specific.setdefault((view.interface, view.channel), []).append(view.rule)
    filters: dict[tuple[str, str | None], FieldFilter] = {
        (code, None): compile_rules(rules) for code, rules in general.items()
    }
    for (code, channel), rules in specific.items():
        filters[(code, channel)] = compile_rules([*general.get(code, []), *rules])
    return Snapshot(
        revision=revision,
        router=Router(by_code.values()),
        channels=channel_views,
        interfaces=by_code,
        perm_levels=perm_levels,
        permissioned=frozenset(interface for _, interface in perm_levels),
        levels=levels,
        leveled=frozenset(interface for _, interface in levels),
        filters=filters,
        systems={s.code: s for s in systems},
    )


def _interface_view(
    row: Interface, channels: frozenset[str], systems: frozenset[str] = frozenset()
) -> InterfaceView:
    return InterfaceView(
        code=row.code,
        method=row.method,
        path=row.path,
        enabled=row.enabled,
        requires_client_auth=row.requires_client_auth,
        min_level=row.min_level,
        idempotent=row.idempotent,
        timeout_s=row.timeout_ms / 1000,
        target_service=row.target_service,
        balancer=row.balancer,
        rate_limit_per_s=row.rate_limit_per_s,
        max_concurrency=row.max_concurrency,
        max_queue=row.max_queue,
        max_wait_s=row.max_wait_ms / 1000,
        channels=channels,
        customer_scope=row.customer_scope,
        client_rate_limit_per_s=row.client_rate_limit_per_s,
        account_rate_limit_per_s=row.account_rate_limit_per_s,
        version=row.version,
        canary_version=row.canary_version,
        canary_percent=row.canary_percent,
        systems=systems,
    )


async def _function_floors(session: AsyncSession) -> list[Floor]:
    """What functions ask of the interfaces they cover, per channel."""
    menus = menu_levels(
        MenuNode(*row)
        for row in await session.execute(
            select(MenuRow.id, MenuRow.parent_id, MenuRow.min_level, MenuRow.enabled)
        )
    )
    covers = await session.execute(
        select(Channel.code, Interface.code, FunctionRow.menu_id, FunctionRow.min_level)
        .select_from(FunctionInterface)
        .join(FunctionRow, FunctionRow.id == FunctionInterface.function_id)
        .join(MenuRow, MenuRow.id == FunctionRow.menu_id)
        .join(Channel, Channel.id == MenuRow.channel_id)
        .join(Interface, Interface.id == FunctionInterface.interface_id)
    )
    return function_floors(covers, menus)


async def read_revision(db: Database) -> int:
    """The catalog revision now."""
    async with db.sessions() as session:
        return int(await session.scalar(select(CatalogRevision.revision)) or 0)


async def load_snapshot(db: Database, box: SecretBox) -> Snapshot:
    """Read the catalog in one transaction and compile it."""
    async with db.sessions() as session, session.begin():
        revision = int(await session.scalar(select(CatalogRevision.revision)) or 0)
        channel_rows = list(await session.scalars(select(Channel)))
        interface_rows = list(
            await session.scalars(
                select(Interface).options(
                    selectinload(Interface.channel_grants).selectinload(
                        InterfaceChannelGrant.channel
                    ),
                    selectinload(Interface.system_grants).selectinload(
                        InterfaceSystemGrant.business_system
                    ),
                )
            )
        )
        channels = [
            ChannelView(
                code=row.code,
                secret=box.open(row.secret_sealed, CHANNEL_SECRET),
                enabled=row.enabled,
                networks=tuple(ipaddress.ip_network(n) for n in row.allowed_ips),
                rate_limit_per_s=row.rate_limit_per_s,
            )
            for row in channel_rows
        ]
        interfaces = [
            _interface_view(
                row,
                frozenset(g.channel.code for g in row.channel_grants),
                frozenset(g.business_system.code for g in row.system_grants),
            )
            for row in interface_rows
        ]
        systems = [
            SystemView(code=row.code, secret=box.open(row.password_sealed, SYSTEM_PASSWORD))
            for row in await session.scalars(select(BusinessSystem))
        ]
        permissions: list[PermissionView] = []
        floors: list[Floor] = []
        for row in await session.scalars(select(InterfacePermission)):
            permissions.append(PermissionView(row.channel.code, row.interface.code, row.min_level))
            if row.component is not None:  # R6: the component's level; disabled, it refuses
                level = row.component.min_level if row.component.enabled else None
                floors.append(Floor(row.channel.code, row.interface.code, level))
        floors += await _function_floors(session)
        rules = [
            FieldRuleView(
                row.interface.code,
                row.channel.code if row.channel else None,
                FieldRule(row.path, row.action, row.below_level),
            )
            for row in await session.scalars(select(FieldRuleRow).order_by(FieldRuleRow.id))
        ]
    # Compiling 10,000 routes takes tens of milliseconds: off the event loop.
    return await asyncio.to_thread(
        compile_snapshot, revision, channels, interfaces, permissions, rules, floors, systems
    )


class SnapshotHolder:
    """Holds the current snapshot and replaces it when the catalog changes.

    A change is noticed at once when the admin listener runs in this process (:meth:`notify`),
    and otherwise by comparing the revision every ``poll_s`` seconds.
    """

    def __init__(self, db: Database, box: SecretBox, *, poll_s: float = 0.5) -> None:
        self._db = db
        self._box = box
        self.poll_s = poll_s
        self.current = compile_snapshot(-1, [], [])
        self._wake = asyncio.Event()
        self._listeners: list[Any] = []

    def on_change(self, callback: Any) -> None:
        """Call ``callback(snapshot)`` (a coroutine function) after every swap."""
        self._listeners.append(callback)

    def notify(self) -> None:
        """Tell the holder the catalog just changed."""
        self._wake.set()

    async def refresh(self) -> bool:
        """Reload if the revision moved; True when a new snapshot was swapped in."""
        if await read_revision(self._db) == self.current.revision:
            return False
        fresh = await load_snapshot(self._db, self._box)
        self.current = fresh
        _log.info("catalog_snapshot", revision=fresh.revision, interfaces=len(fresh.interfaces))
        for callback in self._listeners:
            await callback(fresh)
        return True

    async def run(self, stopping: asyncio.Event) -> None:
        """Keep the snapshot fresh until ``stopping`` is set."""
        while not stopping.is_set():
            try:
                await self.refresh()
            except Exception as exc:  # the old snapshot keeps serving meanwhile
                _log.warning(
                    "catalog_snapshot_failed", error_type=type(exc).__name__, error=str(exc)
                )
            self._wake.clear()
            waits = [
                asyncio.ensure_future(self._wake.wait()),
                asyncio.ensure_future(stopping.wait()),
            ]
            await asyncio.wait(waits, timeout=self.poll_s, return_when=asyncio.FIRST_COMPLETED)
            for waiter in waits:
                waiter.cancel()

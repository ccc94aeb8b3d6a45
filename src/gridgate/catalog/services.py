"""Catalog maintenance (R3–R6): every change validated, audited and counted in the revision."""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python
from sqlalchemy import FromClause, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql import Select

from gridgate.catalog.models import (
    BusinessSystem,
    CatalogRevision,
    Channel,
    Component,
    Interface,
    InterfaceChannelGrant,
    InterfaceSystemGrant,
)
from gridgate.catalog.paths import PathTemplate
from gridgate.catalog.schemas import (
    Authorizations,
    BusinessSystemCreate,
    BusinessSystemCreated,
    BusinessSystemOut,
    BusinessSystemUpdate,
    ChannelCreate,
    ChannelOut,
    ChannelUpdate,
    ChannelWithSecret,
    ComponentCreate,
    ComponentOut,
    ComponentUpdate,
    InterfaceCreate,
    InterfaceOut,
    InterfaceUpdate,
)
from gridgate.errors import Conflict, InvalidRequest, NotFound
from gridgate.operators.audit import Actor, record
from gridgate.storage.crypto import SecretBox
from gridgate.storage.models import Base, utcnow

__all__ = ["CHANNEL_SECRET", "SYSTEM_PASSWORD", "CatalogService", "record_catalog_change"]

#: Associated data of sealed values: a ciphertext opens only for the column it was made for.
CHANNEL_SECRET = "channel.secret"  # noqa: S105 - a label, not a secret
SYSTEM_PASSWORD = "business_system.password"  # noqa: S105 - a label, not a secret

Row = TypeVar("Row")
#: Interface fields a PATCH may clear with ``null`` (no limit, no data scope).
_NULLABLE_INTERFACE_FIELDS = frozenset(
    {
        "rate_limit_per_s",
        "max_concurrency",
        "customer_scope",
        "client_rate_limit_per_s",
        "account_rate_limit_per_s",
        "canary_version",
    }
)


def _changes(data: BaseModel, nullable: Iterable[str] = ()) -> dict[str, Any]:
    """The fields a PATCH body sets; ``null`` is accepted only where a value may be absent."""
    changes = data.model_dump(exclude_unset=True)
    for field, value in changes.items():
        if value is None and field not in nullable:
            raise InvalidRequest(f"{field} cannot be null", field=field)
    return changes


def _check_scope(path: str, scope: str | None) -> None:
    """A path-declared 户号 must be a parameter of the path template."""
    named = scope.removeprefix("path:") if scope and scope.startswith("path:") else None
    if named is not None and named not in PathTemplate.parse(path).params:
        raise InvalidRequest(
            "customer_scope names a parameter the path does not have", field="customer_scope"
        )


def _check_canary(
    version: str, canary_version: str | None, canary_percent: int, sent: Iterable[str]
) -> None:
    """A canary runs another version than the interface's, and a share needs a canary."""
    sent = set(sent)
    if canary_version is not None and canary_version == version:
        # Name what the request changed: a new version that meets the canary's, or the canary.
        field = "canary_version" if "canary_version" in sent or "version" not in sent else "version"
        raise InvalidRequest("canary_version must differ from version", field=field)
    if canary_version is None and canary_percent > 0:
        raise InvalidRequest(
            "canary_percent needs a canary_version (set it, or set canary_percent to 0)",
            field="canary_percent",
        )


async def record_catalog_change(
    session: AsyncSession,
    actor: Actor,
    action: str,
    kind: str,
    key: str,
    before: BaseModel | dict[str, Any] | None,
    after: BaseModel | None,
) -> None:
    """Audit a catalog change and bump the revision gateways compare their snapshot with."""
    await session.flush()
    await record(
        session,
        actor,
        action,
        kind,
        key,
        before=before.model_dump(mode="json") if isinstance(before, BaseModel) else before,
        after=after.model_dump(mode="json") if after is not None else None,
    )
    await session.execute(
        update(CatalogRevision)
        .where(CatalogRevision.id == 1)
        .values(revision=CatalogRevision.revision + 1, changed_at=utcnow())
    )


def business_system_out(row: BusinessSystem) -> BusinessSystemOut:
    """The public view of a business system."""
    return BusinessSystemOut.model_validate(row, from_attributes=True)


def channel_out(row: Channel) -> ChannelOut:
    """The public view of a channel."""
    return ChannelOut.model_validate(row, from_attributes=True)


def interface_out(row: Interface) -> InterfaceOut:
    """The public view of an interface, with its authorizations."""
    return InterfaceOut(
        **{
            name: getattr(row, name)
            for name in InterfaceOut.model_fields
            if hasattr(row, name) and name not in {"provider", "authorizations"}
        },
        provider=row.provider.code,
        authorizations=Authorizations(
            channels=sorted(grant.channel.code for grant in row.channel_grants),
            business_systems=sorted(grant.business_system.code for grant in row.system_grants),
        ),
    )


def component_out(row: Component) -> ComponentOut:
    """The public view of a component."""
    return ComponentOut(
        **{name: getattr(row, name) for name in ComponentOut.model_fields if name != "channel"},
        channel=row.channel.code,
    )


class CatalogService:
    """Reads and changes the catalog inside the caller's transaction."""

    def __init__(self, session: AsyncSession, box: SecretBox, actor: Actor) -> None:
        self.session = session
        self.box = box
        self.actor = actor
        #: True once this transaction changed the catalog (gateways must reload).
        self.changed = False

    # -- shared -----------------------------------------------------------------------------

    async def _page(
        self, query: Select[Row], *, page: int, page_size: int
    ) -> tuple[list[Row], int]:
        total = await self.session.scalar(select(func.count()).select_from(query.subquery()))
        rows = await self.session.scalars(query.offset((page - 1) * page_size).limit(page_size))
        return list(rows.unique()), int(total or 0)

    async def _one(self, model: type[Row], kind: str, **where: Any) -> Row:
        row = (await self.session.scalars(select(model).filter_by(**where))).unique().first()
        if row is None:
            key = ", ".join(str(v) for v in where.values())
            raise NotFound(f"{kind} {key!r} does not exist")
        return row

    async def _absent(self, model: type[Any], kind: str, **where: Any) -> None:
        if (await self.session.scalars(select(model).filter_by(**where))).first() is not None:
            raise Conflict(f"{kind} {where['code']!r} already exists", field="code")

    async def _changed(
        self,
        action: str,
        kind: str,
        key: str,
        before: BaseModel | dict[str, Any] | None,
        after: BaseModel | None,
    ) -> None:
        await record_catalog_change(self.session, self.actor, action, kind, key, before, after)
        self.changed = True

    async def _cascaded(self, table: FromClause, key: int) -> dict[str, list[dict[str, Any]]]:
        """The rows the database deletes with row ``key`` of ``table`` (``ON DELETE CASCADE``
        of other tables, such as interface permissions and field rules), by table."""
        found: dict[str, list[dict[str, Any]]] = {}
        for other in Base.metadata.sorted_tables:
            for foreign in other.foreign_keys:
                if foreign.column.table is table and (foreign.ondelete or "").upper() == "CASCADE":
                    query = select(other).where(foreign.parent == key)
                    rows = (await self.session.execute(query)).mappings().all()
                    if rows:
                        found.setdefault(other.name, []).extend(dict(row) for row in rows)
        return found

    async def revision(self) -> int:
        """The catalog revision: it grows with every change."""
        return int(await self.session.scalar(select(CatalogRevision.revision)) or 0)

    # -- business systems (R3) --------------------------------------------------------------

    async def list_business_systems(
        self, *, page: int, page_size: int
    ) -> tuple[list[BusinessSystemOut], int]:
        """Business systems by code."""
        rows, total = await self._page(
            select(BusinessSystem).order_by(BusinessSystem.code), page=page, page_size=page_size
        )
        return [business_system_out(r) for r in rows], total

    async def get_business_system(self, code: str) -> BusinessSystemOut:
        """One business system."""
        return business_system_out(await self._one(BusinessSystem, "business system", code=code))

    async def create_business_system(self, data: BusinessSystemCreate) -> BusinessSystemCreated:
        """Register a business system; its password is sealed, or generated and shown once."""
        await self._absent(BusinessSystem, "business system", code=data.code)
        generated = secrets.token_urlsafe(24) if data.password is None else None
        password = generated or (data.password.get_secret_value() if data.password else "")
        row = BusinessSystem(
            code=data.code,
            name=data.name,
            host=data.host,
            port=data.port,
            username=data.username or data.code,
            password_sealed=self.box.seal(password, SYSTEM_PASSWORD),
            description=data.description,
        )
        self.session.add(row)
        await self.session.flush()
        out = business_system_out(row)
        await self._changed("business_system.create", "business_system", row.code, None, out)
        return BusinessSystemCreated(**out.model_dump(), password=generated)

    async def update_business_system(
        self, code: str, data: BusinessSystemUpdate
    ) -> BusinessSystemOut:
        """Change a business system."""
        row = await self._one(BusinessSystem, "business system", code=code)
        before = business_system_out(row)
        for field, value in _changes(data).items():
            if field == "password":
                # model_dump keeps SecretStr wrapped; the clear value comes from the model.
                assert data.password is not None  # noqa: S101 - set, since it is among the changes
                row.password_sealed = self.box.seal(
                    data.password.get_secret_value(), SYSTEM_PASSWORD
                )
            else:
                setattr(row, field, value)
        await self.session.flush()
        after = business_system_out(row)
        await self._changed("business_system.update", "business_system", code, before, after)
        return after

    async def delete_business_system(self, code: str) -> None:
        """Remove a business system that no interface refers to."""
        row = await self._one(BusinessSystem, "business system", code=code)
        provides = list(
            await self.session.scalars(
                select(Interface.code)
                .where(Interface.provider_id == row.id)
                .order_by(Interface.code)
            )
        )
        granted = list(
            await self.session.scalars(
                select(Interface.code)
                .join(InterfaceSystemGrant, InterfaceSystemGrant.interface_id == Interface.id)
                .where(InterfaceSystemGrant.business_system_id == row.id)
                .order_by(Interface.code)
            )
        )
        if provides or granted:
            raise Conflict(
                f"business system {code!r} is still referenced by interfaces",
                provider_of=provides,
                authorized_for=granted,
            )
        before = business_system_out(row)
        await self.session.delete(row)
        await self._changed("business_system.delete", "business_system", code, before, None)

    async def business_system_password(self, code: str) -> str | None:
        """The business system's password in clear, for the platform's own use (never the API)."""
        row = (await self.session.scalars(select(BusinessSystem).filter_by(code=code))).first()
        return None if row is None else self.box.open(row.password_sealed, SYSTEM_PASSWORD)

    async def check_business_system_password(self, code: str, password: str) -> bool:
        """True when ``password`` is the business system's (constant-time compare)."""
        stored = await self.business_system_password(code)
        return stored is not None and secrets.compare_digest(stored.encode(), password.encode())

    # -- channels (R4) ----------------------------------------------------------------------

    async def list_channels(self, *, page: int, page_size: int) -> tuple[list[ChannelOut], int]:
        """Channels by code."""
        rows, total = await self._page(
            select(Channel).order_by(Channel.code), page=page, page_size=page_size
        )
        return [channel_out(r) for r in rows], total

    async def get_channel(self, code: str) -> ChannelOut:
        """One channel."""
        return channel_out(await self._one(Channel, "channel", code=code))

    async def create_channel(
        self, data: ChannelCreate, *, secret: str | None = None
    ) -> ChannelWithSecret:
        """Register a channel with a new signing secret, returned this once."""
        await self._absent(Channel, "channel", code=data.code)
        secret = secret or secrets.token_urlsafe(32)
        row = Channel(
            **data.model_dump(),
            secret_sealed=self.box.seal(secret, CHANNEL_SECRET),
            secret_rotated_at=utcnow(),
        )
        self.session.add(row)
        await self.session.flush()
        out = channel_out(row)
        await self._changed("channel.create", "channel", row.code, None, out)
        return ChannelWithSecret(**out.model_dump(), secret=secret)

    async def update_channel(self, code: str, data: ChannelUpdate) -> ChannelOut:
        """Change a channel's settings (not its secret)."""
        row = await self._one(Channel, "channel", code=code)
        before = channel_out(row)
        for field, value in _changes(data, nullable={"rate_limit_per_s"}).items():
            setattr(row, field, value)
        await self.session.flush()
        after = channel_out(row)
        await self._changed("channel.update", "channel", code, before, after)
        return after

    async def rotate_channel_secret(self, code: str) -> ChannelWithSecret:
        """Replace a channel's signing secret; the new one is returned this once."""
        row = await self._one(Channel, "channel", code=code)
        before = channel_out(row)
        secret = secrets.token_urlsafe(32)
        row.secret_sealed = self.box.seal(secret, CHANNEL_SECRET)
        row.secret_rotated_at = utcnow()
        await self.session.flush()
        after = channel_out(row)
        await self._changed("channel.rotate_secret", "channel", code, before, after)
        return ChannelWithSecret(**after.model_dump(), secret=secret)

    async def delete_channel(self, code: str) -> None:
        """Remove a channel that no component or authorization refers to."""
        row = await self._one(Channel, "channel", code=code)
        components = list(
            await self.session.scalars(
                select(Component.code)
                .where(Component.channel_id == row.id)
                .order_by(Component.code)
            )
        )
        granted = list(
            await self.session.scalars(
                select(Interface.code)
                .join(InterfaceChannelGrant, InterfaceChannelGrant.interface_id == Interface.id)
                .where(InterfaceChannelGrant.channel_id == row.id)
                .order_by(Interface.code)
            )
        )
        if components or granted:
            raise Conflict(
                f"channel {code!r} is still referenced",
                components=components,
                authorized_for=granted,
            )
        before = channel_out(row)
        await self.session.delete(row)
        await self._changed("channel.delete", "channel", code, before, None)

    # -- interfaces and authorizations (R5) -------------------------------------------------

    async def list_interfaces(
        self,
        *,
        page: int,
        page_size: int,
        provider: str | None = None,
        channel: str | None = None,
        enabled: bool | None = None,
    ) -> tuple[list[InterfaceOut], int]:
        """Interfaces by code, optionally of one provider, for one channel, or by state."""
        query = select(Interface).order_by(Interface.code)
        if provider is not None:
            query = query.join(BusinessSystem, Interface.provider).where(
                BusinessSystem.code == provider
            )
        if channel is not None:
            query = (
                query.join(
                    InterfaceChannelGrant, InterfaceChannelGrant.interface_id == Interface.id
                )
                .join(Channel, Channel.id == InterfaceChannelGrant.channel_id)
                .where(Channel.code == channel)
            )
        if enabled is not None:
            query = query.where(Interface.enabled.is_(enabled))
        rows, total = await self._page(query, page=page, page_size=page_size)
        return [interface_out(r) for r in rows], total

    async def get_interface(self, code: str) -> InterfaceOut:
        """One interface with its authorizations."""
        return interface_out(await self._one(Interface, "interface", code=code))

    async def _provider(self, code: str) -> BusinessSystem:
        row = (await self.session.scalars(select(BusinessSystem).filter_by(code=code))).first()
        if row is None:
            raise InvalidRequest(f"business system {code!r} does not exist", field="provider")
        return row

    async def _route_free(self, method: str, path: str, except_id: int | None = None) -> str:
        shape = PathTemplate.parse(path).shape
        query = select(Interface.code).where(
            Interface.method == method, Interface.path_shape == shape
        )
        if except_id is not None:
            query = query.where(Interface.id != except_id)
        clash = (await self.session.scalars(query)).first()
        if clash is not None:
            raise Conflict(
                f"{method} {path} is already routed to interface {clash!r}", field="path"
            )
        return shape

    async def create_interface(self, data: InterfaceCreate) -> InterfaceOut:
        """Register an interface (no channel may call it until authorized)."""
        _check_canary(data.version, data.canary_version, data.canary_percent, data.model_fields_set)
        await self._absent(Interface, "interface", code=data.code)
        provider = await self._provider(data.provider)
        shape = await self._route_free(data.method, data.path)
        _check_scope(data.path, data.customer_scope)
        fields = data.model_dump(exclude={"provider", "idempotent"})
        idempotent = data.idempotent if data.idempotent is not None else data.method == "GET"
        row = Interface(**fields, provider=provider, path_shape=shape, idempotent=idempotent)
        self.session.add(row)
        await self.session.flush()
        await self.session.refresh(row, ["channel_grants", "system_grants"])
        out = interface_out(row)
        await self._changed("interface.create", "interface", row.code, None, out)
        return out

    async def update_interface(self, code: str, data: InterfaceUpdate) -> InterfaceOut:
        """Change an interface."""
        row = await self._one(Interface, "interface", code=code)
        before = interface_out(row)
        changes = _changes(data, nullable=_NULLABLE_INTERFACE_FIELDS)
        if "provider" in changes:
            row.provider = await self._provider(changes.pop("provider"))
        if "method" in changes or "path" in changes:
            method = changes.get("method", row.method)
            path = changes.get("path", row.path)
            row.path_shape = await self._route_free(method, path, except_id=row.id)
        _check_scope(
            changes.get("path", row.path), changes.get("customer_scope", row.customer_scope)
        )
        _check_canary(
            changes.get("version", row.version),
            changes.get("canary_version", row.canary_version),
            changes.get("canary_percent", row.canary_percent),
            changes,
        )
        for field, value in changes.items():
            setattr(row, field, value)
        await self.session.flush()
        after = interface_out(row)
        await self._changed("interface.update", "interface", code, before, after)
        return after

    async def delete_interface(self, code: str) -> None:
        """Remove an interface, its authorizations and what the database removes with it
        (interface permissions, field rules): the audit event's ``before`` lists them all."""
        row = await self._one(Interface, "interface", code=code)
        before = interface_out(row).model_dump(mode="json")
        removed = await self._cascaded(Interface.__table__, row.id)
        if removed:  # kept in the audit event, so that nothing disappears unaudited
            before["removed_with_it"] = to_jsonable_python(removed)
        await self.session.delete(row)
        await self._changed("interface.delete", "interface", code, before, None)

    async def set_authorizations(self, code: str, data: Authorizations) -> InterfaceOut:
        """Replace which channels and business systems may call an interface."""
        row = await self._one(Interface, "interface", code=code)
        before = interface_out(row)
        channels = await self._by_codes(Channel, data.channels, "channels")
        systems = await self._by_codes(BusinessSystem, data.business_systems, "business_systems")
        row.channel_grants = [InterfaceChannelGrant(channel=c) for c in channels]
        row.system_grants = [InterfaceSystemGrant(business_system=s) for s in systems]
        await self.session.flush()
        after = interface_out(row)
        await self._changed("interface.authorize", "interface", code, before, after)
        return after

    async def _by_codes(self, model: type[Row], codes: list[str], field: str) -> list[Row]:
        wanted = sorted(set(codes))
        rows = list(await self.session.scalars(select(model).where(model.code.in_(wanted))))  # type: ignore[attr-defined]
        missing = sorted(set(wanted) - {row.code for row in rows})  # type: ignore[attr-defined]
        if missing:
            raise InvalidRequest(f"unknown codes: {', '.join(missing)}", field=field)
        return rows

    # -- components (R6) --------------------------------------------------------------------

    async def list_components(
        self, *, page: int, page_size: int, channel: str | None = None
    ) -> tuple[list[ComponentOut], int]:
        """Components by channel and code."""
        query = (
            select(Component)
            .join(Channel, Component.channel)
            .order_by(Channel.code, Component.code)
        )
        if channel is not None:
            query = query.where(Channel.code == channel)
        rows, total = await self._page(query, page=page, page_size=page_size)
        return [component_out(r) for r in rows], total

    async def get_component(self, component_id: int) -> ComponentOut:
        """One component."""
        return component_out(await self._one(Component, "component", id=component_id))

    async def create_component(self, data: ComponentCreate) -> ComponentOut:
        """Register a component of a channel (codes are unique within a channel)."""
        channel = (await self.session.scalars(select(Channel).filter_by(code=data.channel))).first()
        if channel is None:
            raise InvalidRequest(f"channel {data.channel!r} does not exist", field="channel")
        await self._absent(Component, "component", channel_id=channel.id, code=data.code)
        row = Component(**data.model_dump(exclude={"channel"}), channel=channel)
        self.session.add(row)
        await self.session.flush()
        out = component_out(row)
        await self._changed("component.create", "component", str(row.id), None, out)
        return out

    async def update_component(self, component_id: int, data: ComponentUpdate) -> ComponentOut:
        """Change a component."""
        row = await self._one(Component, "component", id=component_id)
        before = component_out(row)
        for field, value in _changes(data).items():
            setattr(row, field, value)
        await self.session.flush()
        after = component_out(row)
        await self._changed("component.update", "component", str(component_id), before, after)
        return after

    async def delete_component(self, component_id: int) -> None:
        """Remove a component."""
        row = await self._one(Component, "component", id=component_id)
        before = component_out(row)
        await self.session.delete(row)
        await self._changed("component.delete", "component", str(component_id), before, None)

"""Admin API of the catalog: business systems, channels, interfaces, components."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Response

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
from gridgate.catalog.services import CatalogService
from gridgate.schemas import Page
from gridgate.web.deps import ADMIN_PREFIX, Admin, PageParams, require

__all__ = ["router"]

# The full prefix lives here so each route's own path is its whole template (metrics labels).
router = APIRouter(prefix=ADMIN_PREFIX)
Reader = Annotated[Admin, Depends(require("admin", "auditor"))]
Writer = Annotated[Admin, Depends(require("admin"))]
CodeParam = Annotated[str, Path(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
IdParam = Annotated[int, Path(ge=1, le=2**62)]
CodeFilter = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]
_NO_CONTENT = 204


@asynccontextmanager
async def _catalog(admin: Admin) -> AsyncIterator[CatalogService]:
    async with admin.transaction() as session:
        service = CatalogService(session, admin.runtime.box, admin.actor)
        yield service
    if service.changed:  # committed: a gateway in this process reloads now (reads do not)
        admin.runtime.catalog_changed()


# -- business systems ----------------------------------------------------------------------


@router.get("/business-systems", tags=["business systems"])
async def list_business_systems(admin: Reader, paging: PageParams) -> Page[BusinessSystemOut]:
    """Business systems by code (passwords are never shown)."""
    async with _catalog(admin) as catalog:
        items, total = await catalog.list_business_systems(
            page=paging.page, page_size=paging.page_size
        )
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/business-systems", status_code=201, tags=["business systems"])
async def create_business_system(
    body: BusinessSystemCreate, admin: Writer
) -> BusinessSystemCreated:
    """Register a business system; omit ``password`` to have one generated and shown once."""
    async with _catalog(admin) as catalog:
        return await catalog.create_business_system(body)


@router.get("/business-systems/{code}", tags=["business systems"])
async def read_business_system(code: CodeParam, admin: Reader) -> BusinessSystemOut:
    """One business system."""
    async with _catalog(admin) as catalog:
        return await catalog.get_business_system(code)


@router.patch("/business-systems/{code}", tags=["business systems"])
async def update_business_system(
    code: CodeParam, body: BusinessSystemUpdate, admin: Writer
) -> BusinessSystemOut:
    """Change a business system (a new ``password`` replaces the old one)."""
    async with _catalog(admin) as catalog:
        return await catalog.update_business_system(code, body)


@router.delete("/business-systems/{code}", status_code=_NO_CONTENT, tags=["business systems"])
async def delete_business_system(code: CodeParam, admin: Writer) -> Response:
    """Remove a business system; 409 while interfaces refer to it."""
    async with _catalog(admin) as catalog:
        await catalog.delete_business_system(code)
    return Response(status_code=_NO_CONTENT)


# -- channels ------------------------------------------------------------------------------


@router.get("/channels", tags=["channels"])
async def list_channels(admin: Reader, paging: PageParams) -> Page[ChannelOut]:
    """Channels by code (secrets are never shown)."""
    async with _catalog(admin) as catalog:
        items, total = await catalog.list_channels(page=paging.page, page_size=paging.page_size)
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/channels", status_code=201, tags=["channels"])
async def create_channel(body: ChannelCreate, admin: Writer) -> ChannelWithSecret:
    """Register a channel; the answer carries its signing secret, shown this once."""
    async with _catalog(admin) as catalog:
        return await catalog.create_channel(body)


@router.get("/channels/{code}", tags=["channels"])
async def read_channel(code: CodeParam, admin: Reader) -> ChannelOut:
    """One channel."""
    async with _catalog(admin) as catalog:
        return await catalog.get_channel(code)


@router.patch("/channels/{code}", tags=["channels"])
async def update_channel(code: CodeParam, body: ChannelUpdate, admin: Writer) -> ChannelOut:
    """Change a channel's name, type, allowed networks, port or enabled flag."""
    async with _catalog(admin) as catalog:
        return await catalog.update_channel(code, body)


@router.post("/channels/{code}/secret", tags=["channels"])
async def rotate_channel_secret(code: CodeParam, admin: Writer) -> ChannelWithSecret:
    """Replace the channel's signing secret; the new secret is shown this once."""
    async with _catalog(admin) as catalog:
        return await catalog.rotate_channel_secret(code)


@router.delete("/channels/{code}", status_code=_NO_CONTENT, tags=["channels"])
async def delete_channel(code: CodeParam, admin: Writer) -> Response:
    """Remove a channel; 409 while components or authorizations refer to it."""
    async with _catalog(admin) as catalog:
        await catalog.delete_channel(code)
    return Response(status_code=_NO_CONTENT)


# -- interfaces ----------------------------------------------------------------------------


@router.get("/interfaces", tags=["interfaces"])
async def list_interfaces(
    admin: Reader,
    paging: PageParams,
    provider: CodeFilter = None,
    channel: CodeFilter = None,
    enabled: bool | None = None,
) -> Page[InterfaceOut]:
    """Interfaces by code, optionally of one provider, callable by one channel, or by state."""
    async with _catalog(admin) as catalog:
        items, total = await catalog.list_interfaces(
            page=paging.page,
            page_size=paging.page_size,
            provider=provider,
            channel=channel,
            enabled=enabled,
        )
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/interfaces", status_code=201, tags=["interfaces"])
async def create_interface(body: InterfaceCreate, admin: Writer) -> InterfaceOut:
    """Register an interface; no channel may call it until authorized."""
    async with _catalog(admin) as catalog:
        return await catalog.create_interface(body)


@router.get("/interfaces/{code}", tags=["interfaces"])
async def read_interface(code: CodeParam, admin: Reader) -> InterfaceOut:
    """One interface with its authorizations."""
    async with _catalog(admin) as catalog:
        return await catalog.get_interface(code)


@router.patch("/interfaces/{code}", tags=["interfaces"])
async def update_interface(code: CodeParam, body: InterfaceUpdate, admin: Writer) -> InterfaceOut:
    """Change an interface."""
    async with _catalog(admin) as catalog:
        return await catalog.update_interface(code, body)


@router.delete("/interfaces/{code}", status_code=_NO_CONTENT, tags=["interfaces"])
async def delete_interface(code: CodeParam, admin: Writer) -> Response:
    """Remove an interface and its authorizations."""
    async with _catalog(admin) as catalog:
        await catalog.delete_interface(code)
    return Response(status_code=_NO_CONTENT)


@router.get("/interfaces/{code}/authorizations", tags=["interfaces"])
async def read_authorizations(code: CodeParam, admin: Reader) -> Authorizations:
    """Which channels and business systems may call the interface."""
    async with _catalog(admin) as catalog:
        found = await catalog.get_interface(code)
    return found.authorizations


@router.put("/interfaces/{code}/authorizations", tags=["interfaces"])
async def replace_authorizations(
    code: CodeParam, body: Authorizations, admin: Writer
) -> Authorizations:
    """Replace the channels and business systems that may call the interface."""
    async with _catalog(admin) as catalog:
        found = await catalog.set_authorizations(code, body)
    return found.authorizations


# -- components ----------------------------------------------------------------------------


@router.get("/components", tags=["components"])
async def list_components(
    admin: Reader,
    paging: PageParams,
    channel: CodeFilter = None,
) -> Page[ComponentOut]:
    """Channel components by channel and code."""
    async with _catalog(admin) as catalog:
        items, total = await catalog.list_components(
            page=paging.page, page_size=paging.page_size, channel=channel
        )
    return Page(items=items, total=total, page=paging.page, page_size=paging.page_size)


@router.post("/components", status_code=201, tags=["components"])
async def create_component(body: ComponentCreate, admin: Writer) -> ComponentOut:
    """Register a component of a channel with the level it needs."""
    async with _catalog(admin) as catalog:
        return await catalog.create_component(body)


@router.get("/components/{component_id}", tags=["components"])
async def read_component(component_id: IdParam, admin: Reader) -> ComponentOut:
    """One component."""
    async with _catalog(admin) as catalog:
        return await catalog.get_component(component_id)


@router.patch("/components/{component_id}", tags=["components"])
async def update_component(
    component_id: IdParam, body: ComponentUpdate, admin: Writer
) -> ComponentOut:
    """Change a component."""
    async with _catalog(admin) as catalog:
        return await catalog.update_component(component_id, body)


@router.delete("/components/{component_id}", status_code=_NO_CONTENT, tags=["components"])
async def delete_component(component_id: IdParam, admin: Writer) -> Response:
    """Remove a component."""
    async with _catalog(admin) as catalog:
        await catalog.delete_component(component_id)
    return Response(status_code=_NO_CONTENT)

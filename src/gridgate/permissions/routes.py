"""Admin API of the permission model (``/admin/v1/permissions/…``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Response

from gridgate.permissions.schemas import (
    FieldRuleIn,
    FieldRuleOut,
    FieldRuleUpdate,
    FunctionIn,
    FunctionOut,
    FunctionUpdate,
    InterfacePermissionIn,
    InterfacePermissionOut,
    InterfacePermissionUpdate,
    MenuIn,
    MenuOut,
    MenuUpdate,
)
from gridgate.permissions.services import PermissionService
from gridgate.web.deps import ADMIN_PREFIX, Admin, PageParams, Pagination, require

__all__ = ["router"]

router = APIRouter(prefix=f"{ADMIN_PREFIX}/permissions", tags=["permissions"])
Reader = Annotated[Admin, Depends(require("admin", "auditor"))]
Writer = Annotated[Admin, Depends(require("admin"))]
IdParam = Annotated[int, Path(ge=1, le=2**62)]
CodeFilter = Annotated[str | None, Query(pattern=r"^[a-z][a-z0-9_.\-]{0,63}$")]


@asynccontextmanager
async def _service(admin: Admin) -> AsyncIterator[PermissionService]:
    async with admin.transaction() as session:
        service = PermissionService(session, admin.actor)
        yield service
    if service.changed:  # committed: a gateway in this process reloads now (reads do not)
        admin.runtime.catalog_changed()


def _page(items: list[Any], paging: Pagination) -> dict[str, Any]:
    # A channel's permission model is read whole (hundreds of entries at most), then paged.
    start = (paging.page - 1) * paging.page_size
    return {
        "items": items[start : start + paging.page_size],
        "total": len(items),
        "page": paging.page,
        "page_size": paging.page_size,
    }


@router.get("/menus")
async def list_menus(
    admin: Reader, paging: PageParams, channel: CodeFilter = None
) -> dict[str, Any]:
    """Menus of every channel, or of one."""
    async with _service(admin) as service:
        return _page(await service.menus(channel), paging)


@router.post("/menus", status_code=201)
async def create_menu(body: MenuIn, admin: Writer) -> MenuOut:
    """Add a menu."""
    async with _service(admin) as service:
        return await service.create_menu(body)


@router.patch("/menus/{menu_id}")
async def update_menu(menu_id: IdParam, body: MenuUpdate, admin: Writer) -> MenuOut:
    """Change a menu (its channel and code stay)."""
    async with _service(admin) as service:
        return await service.update_menu(menu_id, body)


@router.delete("/menus/{menu_id}", status_code=204)
async def delete_menu(menu_id: IdParam, admin: Writer) -> Response:
    """Remove a menu (409 while it has sub-menus or functions)."""
    async with _service(admin) as service:
        await service.delete_menu(menu_id)
    return Response(status_code=204)


@router.get("/functions")
async def list_functions(
    admin: Reader, paging: PageParams, channel: CodeFilter = None
) -> dict[str, Any]:
    """Functions of every channel, or of one."""
    async with _service(admin) as service:
        return _page(await service.functions(channel), paging)


@router.post("/functions", status_code=201)
async def create_function(body: FunctionIn, admin: Writer) -> FunctionOut:
    """Add a function under a menu."""
    async with _service(admin) as service:
        return await service.create_function(body)


@router.patch("/functions/{function_id}")
async def update_function(function_id: IdParam, body: FunctionUpdate, admin: Writer) -> FunctionOut:
    """Change a function, or move it to another menu of its channel."""
    async with _service(admin) as service:
        return await service.update_function(function_id, body)


@router.delete("/functions/{function_id}", status_code=204)
async def delete_function(function_id: IdParam, admin: Writer) -> Response:
    """Remove a function."""
    async with _service(admin) as service:
        await service.delete_function(function_id)
    return Response(status_code=204)


@router.get("/interfaces")
async def list_interface_permissions(
    admin: Reader, paging: PageParams, channel: CodeFilter = None
) -> dict[str, Any]:
    """Interface permissions of every channel, or of one."""
    async with _service(admin) as service:
        return _page(await service.interface_permissions(channel), paging)


@router.post("/interfaces", status_code=201)
async def create_interface_permission(
    body: InterfacePermissionIn, admin: Writer
) -> InterfacePermissionOut:
    """Let a channel call an interface from a level."""
    async with _service(admin) as service:
        return await service.create_interface_permission(body)


@router.patch("/interfaces/{permission_id}")
async def update_interface_permission(
    permission_id: IdParam, body: InterfacePermissionUpdate, admin: Writer
) -> InterfacePermissionOut:
    """Change the component or level of an interface permission."""
    async with _service(admin) as service:
        return await service.update_interface_permission(permission_id, body)


@router.delete("/interfaces/{permission_id}", status_code=204)
async def delete_interface_permission(permission_id: IdParam, admin: Writer) -> Response:
    """Remove an interface permission."""
    async with _service(admin) as service:
        await service.delete_interface_permission(permission_id)
    return Response(status_code=204)


@router.get("/fields")
async def list_field_rules(
    admin: Reader, paging: PageParams, interface: CodeFilter = None
) -> dict[str, Any]:
    """Field rules of every interface, or of one."""
    async with _service(admin) as service:
        return _page(await service.field_rules(interface), paging)


@router.post("/fields", status_code=201)
async def create_field_rule(body: FieldRuleIn, admin: Writer) -> FieldRuleOut:
    """Drop or mask a response field for callers below a level."""
    async with _service(admin) as service:
        return await service.create_field_rule(body)


@router.patch("/fields/{rule_id}")
async def update_field_rule(rule_id: IdParam, body: FieldRuleUpdate, admin: Writer) -> FieldRuleOut:
    """Change a field rule (its interface stays)."""
    async with _service(admin) as service:
        return await service.update_field_rule(rule_id, body)


@router.delete("/fields/{rule_id}", status_code=204)
async def delete_field_rule(rule_id: IdParam, admin: Writer) -> Response:
    """Remove a field rule."""
    async with _service(admin) as service:
        await service.delete_field_rule(rule_id)
    return Response(status_code=204)

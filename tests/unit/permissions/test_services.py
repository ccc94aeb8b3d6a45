"""The permission service on its own: what a function covers, within one transaction."""

from __future__ import annotations

from pydantic import SecretStr
from sqlalchemy import func, select

from gridgate.catalog.schemas import (
    Authorizations,
    BusinessSystemCreate,
    ChannelCreate,
    InterfaceCreate,
)
from gridgate.catalog.services import CatalogService
from gridgate.operators.audit import Actor
from gridgate.permissions.models import FunctionInterface
from gridgate.permissions.schemas import FunctionIn, FunctionUpdate, MenuIn
from gridgate.permissions.services import PermissionService
from gridgate.runtime import Runtime


async def test_a_function_is_edited_and_removed_in_the_transaction_that_made_it(
    runtime: Runtime,
) -> None:
    # The demo seed and scripts create and change entries in one transaction: the identity
    # map then holds the function, and its interfaces must still load and cascade.
    async with runtime.db.transaction() as session:
        catalog = CatalogService(session, runtime.box, Actor("test"))
        await catalog.create_business_system(
            BusinessSystemCreate(
                code="svc", name="svc", host="10.0.0.1", port=80, password=SecretStr("pw-1234567")
            )
        )
        await catalog.create_channel(ChannelCreate(code="app", name="App", type="app"))
        for code in ("a", "b"):
            await catalog.create_interface(
                InterfaceCreate(
                    code=code,
                    name=code,
                    method="GET",
                    path=f"/api/v1/{code}",
                    provider="svc",
                    target_service="svc",
                )
            )
            await catalog.set_authorizations(code, Authorizations(channels=["app"]))
        service = PermissionService(session, Actor("test"))
        await service.create_menu(MenuIn(channel="app", code="m", name="m"))
        made = await service.create_function(
            FunctionIn(channel="app", menu="m", code="f", name="f", interfaces=["b", "a"])
        )
        assert made.interfaces == ["a", "b"]
        changed = await service.update_function(made.id, FunctionUpdate(interfaces=["b"]))
        assert changed.interfaces == ["b"]
        assert [f.interfaces for f in await service.functions("app")] == [["b"]]
        await service.delete_function(made.id)
        left = await session.scalar(select(func.count()).select_from(FunctionInterface))
        assert left == 0

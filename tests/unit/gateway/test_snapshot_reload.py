"""A gateway in another process notices catalog changes by the revision check alone (≤ 1 s)."""

from __future__ import annotations

import asyncio

from gridgate.catalog.schemas import BusinessSystemCreate, ChannelCreate
from gridgate.catalog.services import CatalogService
from gridgate.gateway.snapshot import SnapshotHolder
from gridgate.operators.audit import Actor
from gridgate.runtime import Runtime


async def test_revision_check_picks_up_changes_without_notification(runtime: Runtime) -> None:
    holder = SnapshotHolder(runtime.db, runtime.box, poll_s=0.2)
    stopping = asyncio.Event()
    task = asyncio.create_task(holder.run(stopping))
    try:
        async with asyncio.timeout(10):
            while holder.current.revision < 0:
                await asyncio.sleep(0.01)
        loaded = holder.current.revision
        # Changed as another process would: nobody calls holder.notify().
        async with runtime.db.transaction() as session:
            catalog = CatalogService(session, runtime.box, Actor("elsewhere"))
            await catalog.create_business_system(
                BusinessSystemCreate.model_validate(
                    {
                        "code": "svc",
                        "name": "svc",
                        "host": "10.0.0.1",
                        "port": 80,
                        "password": "pw-12345678",
                    }
                )
            )
            await catalog.create_channel(ChannelCreate(code="app", name="App", type="app"))
        async with asyncio.timeout(5):
            while "app" not in holder.current.channels:
                await asyncio.sleep(0.01)
        assert holder.current.revision > loaded
    finally:
        stopping.set()
        await task

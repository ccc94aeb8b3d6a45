"""Migrations: they build exactly the models' schema on both engines, and can be undone."""

from __future__ import annotations

from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy.engine import Connection

import gridgate.accounts.models
import gridgate.catalog.models
import gridgate.logs.models
import gridgate.operators.models
import gridgate.permissions.models  # noqa: F401 - registers the tables
from gridgate.storage.db import Database
from gridgate.storage.models import Base


async def test_schema_matches_models(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.migrate()  # already at head: a no-op

        def diff(connection: Connection) -> list[Any]:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, Base.metadata))

        async with db.engine.connect() as conn:
            assert await conn.run_sync(diff) == []
        assert await db.current_revision() is not None
    finally:
        await db.dispose()


async def test_downgrade_and_upgrade_again(database_url: str) -> None:
    db = Database(database_url)
    try:
        await db.downgrade("base")
        assert await db.current_revision() is None
        await db.migrate()
        assert await db.current_revision() is not None
    finally:
        await db.dispose()

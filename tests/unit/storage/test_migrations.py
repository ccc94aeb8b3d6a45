"""Migrations: they build exactly the models' schema on both engines, and can be undone."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

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


async def test_a_table_others_refer_to_is_altered_with_its_rows(database_url: str) -> None:
    # 0007 drops a column of `channels`, which SQLite does by copying the table: with rows of
    # other tables referring to it, that needs foreign keys off while migrating.
    db = Database(database_url)
    try:
        await db.downgrade("0006")
        async with db.engine.begin() as conn:
            await conn.execute(
                text(
                    "INSERT INTO channels (id, code, name, type, allowed_ips, port, enabled,"
                    " secret_sealed, secret_rotated_at, description, created_at, updated_at)"
                    " VALUES (1, 'app', 'App', 'app', '[]', 8443, true, 'x',"
                    " '2026-01-01T00:00:00Z', '', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z')"
                )
            )
            await conn.execute(
                text(
                    "INSERT INTO components (id, channel_id, code, name, kind, min_level,"
                    " enabled, description, created_at, updated_at) VALUES"
                    " (1, 1, 'pay', 'pay', 'function', 1, true, '', '2026-01-01T00:00:00Z',"
                    " '2026-01-01T00:00:00Z')"
                )
            )
        await db.migrate()
        async with db.engine.connect() as conn:
            rows = await conn.execute(
                text(
                    "SELECT channels.code, components.code FROM components"
                    " JOIN channels ON channels.id = components.channel_id"
                )
            )
            assert rows.all() == [("app", "pay")]
            columns = await conn.run_sync(
                lambda sync: {c["name"] for c in inspect(sync).get_columns("channels")}
            )
            assert "port" not in columns
            # Foreign keys hold again after the migration.
            with pytest.raises(IntegrityError):
                await conn.execute(text("DELETE FROM channels"))
    finally:
        await db.dispose()

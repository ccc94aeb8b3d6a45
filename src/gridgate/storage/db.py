"""The relational database: one engine, sessions, health check and migrations."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

__all__ = ["POOL_RECYCLE_S", "Database", "alembic_config"]

#: Pooled PostgreSQL connections older than this are replaced at checkout (seconds).
POOL_RECYCLE_S = 1800


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration pointing at gridgate's migrations (no alembic.ini needed)."""
    config = Config()
    config.set_main_option(
        "script_location", str(resources.files("gridgate.storage") / "migrations")
    )
    if url is not None:
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Foreign keys are off by default in SQLite; WAL lets readers run beside the one writer.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class Database:
    """An async engine and its session factory for one database URL."""

    def __init__(self, url: str, *, pool_size: int = 10) -> None:
        self.url = url
        kwargs: dict[str, Any] = {}
        if not self.is_sqlite:
            # No pool_pre_ping: it costs a `SELECT 1` round trip at every checkout, i.e. per
            # transaction (one of a look-up's four round trips). Connections are
            # recycled before servers, proxies or firewalls drop idle ones; the trade-off is
            # that a connection dropped anyway (server restart, failover) fails the one call
            # that finds it — SQLAlchemy then invalidates the pool, so the next call reconnects.
            kwargs["pool_size"] = pool_size
            kwargs["pool_recycle"] = POOL_RECYCLE_S
        self.engine: AsyncEngine = create_async_engine(url, **kwargs)
        if self.is_sqlite:
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        """True for the embedded SQLite engine."""
        return self.url.startswith("sqlite")

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction, committed on success and rolled back on error."""
        async with self.sessions() as session, session.begin():
            yield session

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            async with self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception:
            return False
        return True

    async def migrate(self, revision: str = "head") -> None:
        """Bring the schema up to ``revision`` (default: the newest)."""
        await self._alembic(command.upgrade, revision)

    async def downgrade(self, revision: str) -> None:
        """Take the schema back to ``revision`` (``base``: no tables at all)."""
        await self._alembic(command.downgrade, revision)

    async def _alembic(self, step: Callable[[Config, str], None], revision: str) -> None:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            step(config, revision)

        async with self.engine.connect() as conn:
            if self.is_sqlite:
                # SQLite alters a table by copying it and dropping the original: with foreign
                # keys on, dropping a table that other rows refer to fails. They are off while
                # migrating (a pragma takes effect only outside a transaction) and checked at
                # the end instead.
                await conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
                await conn.commit()
            try:
                async with conn.begin():
                    await conn.run_sync(run)
                    if self.is_sqlite:
                        broken = (await conn.exec_driver_sql("PRAGMA foreign_key_check")).all()
                        if broken:
                            raise RuntimeError(f"migration broke foreign keys: {broken[:5]}")
            finally:
                if self.is_sqlite:
                    await conn.exec_driver_sql("PRAGMA foreign_keys=ON")
                    await conn.commit()

    async def current_revision(self) -> str | None:
        """The schema revision the database is at, or None when never migrated."""

        def read(connection: Connection) -> str | None:
            from alembic.runtime.migration import MigrationContext  # noqa: PLC0415

            return MigrationContext.configure(connection).get_current_revision()

        async with self.engine.connect() as conn:
            return await conn.run_sync(read)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

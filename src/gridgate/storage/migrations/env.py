"""Alembic environment: runs on the connection gridgate hands over, or on a URL offline."""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

import gridgate.accounts.models
import gridgate.catalog.models
import gridgate.logs.models
import gridgate.operators.models
import gridgate.permissions.models  # noqa: F401 - registers the tables on Base.metadata
from gridgate.storage.models import Base

target_metadata = Base.metadata
config = context.config


def run_with(connection: Connection) -> None:
    """Run the migrations on an open synchronous connection."""
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,  # SQLite alters tables by copying them
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_with(connection)
elif context.is_offline_mode():
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    raise RuntimeError("gridgate runs migrations through `gridgate migrate`")

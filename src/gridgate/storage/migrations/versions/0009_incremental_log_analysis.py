"""incremental log analysis: analysed files, mergeable summaries on traffic rows

Revision ID: 0009
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import gridgate.storage.models

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Hours analysed before keep their rows; the first file that arrives for one of them has
    # it recomputed whole from its files, once (gridgate.logs.analysis).
    op.create_table(
        "log_analyzed_files",
        sa.Column("hour", gridgate.storage.models.UTCDateTime(timezone=True), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column(
            "analyzed_at", gridgate.storage.models.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("hour", "name", name=op.f("pk_log_analyzed_files")),
    )
    with op.batch_alter_table("log_traffic_hourly", schema=None) as batch_op:
        batch_op.add_column(sa.Column("latency_sketch", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("queue_wait_sketch", sa.LargeBinary(), nullable=True))
        batch_op.add_column(sa.Column("accounts_sketch", sa.LargeBinary(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("log_traffic_hourly", schema=None) as batch_op:
        batch_op.drop_column("accounts_sketch")
        batch_op.drop_column("queue_wait_sketch")
        batch_op.drop_column("latency_sketch")
    op.drop_table("log_analyzed_files")

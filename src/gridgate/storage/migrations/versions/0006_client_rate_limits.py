"""client rate limits

Revision ID: 0006
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Per-client-address and per-account requests per second of an interface (null: the
    # gateway-wide default, if any).
    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("client_rate_limit_per_s", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("account_rate_limit_per_s", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.drop_column("account_rate_limit_per_s")
        batch_op.drop_column("client_rate_limit_per_s")

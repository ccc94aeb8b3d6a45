"""account attributes: the e-mail address sealed, with a look-up hash

Revision ID: 0008
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The plain-text column was never written by gridgate; if something else filled it, stop
    # rather than drop personal data that this migration cannot seal (it has no data key).
    filled = op.get_bind().scalar(sa.text("SELECT count(*) FROM accounts WHERE email IS NOT NULL"))
    if filled:
        raise RuntimeError(
            f"{filled} accounts have a plain-text e-mail address: move them out of "
            "accounts.email before upgrading (gridgate stores e-mail addresses sealed)"
        )
    # Adding columns and an index never copies the table on SQLite; neither does dropping an
    # unindexed column (native since SQLite 3.35), so nothing here rebuilds `accounts`.
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_sealed", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("email_hash", sa.String(length=64), nullable=True))
        batch_op.create_index(batch_op.f("ix_accounts_email_hash"), ["email_hash"], unique=False)
    op.drop_column("accounts", "email")


def downgrade() -> None:
    op.add_column("accounts", sa.Column("email", sa.String(length=254), nullable=True))
    op.drop_index(op.f("ix_accounts_email_hash"), table_name="accounts")
    op.drop_column("accounts", "email_hash")
    op.drop_column("accounts", "email_sealed")

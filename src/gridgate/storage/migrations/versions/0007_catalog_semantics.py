"""catalog semantics: function interfaces, canary settings, no channel port

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    # The interfaces a function covers: on its channel they need at least its level.
    op.create_table(
        "perm_function_interfaces",
        sa.Column("function_id", _ID, nullable=False),
        sa.Column("interface_id", _ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["function_id"],
            ["perm_functions.id"],
            name=op.f("fk_perm_function_interfaces_function_id_perm_functions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["interface_id"],
            ["interfaces.id"],
            name=op.f("fk_perm_function_interfaces_interface_id_interfaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "function_id", "interface_id", name=op.f("pk_perm_function_interfaces")
        ),
    )
    with op.batch_alter_table("perm_function_interfaces", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_perm_function_interfaces_interface_id"), ["interface_id"], unique=False
        )

    # Canary release of an interface: the version its canary instances register with, and
    # the share of calls they take (the schemas bound it to 0-100, as the other settings).
    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.add_column(sa.Column("canary_version", sa.String(length=32), nullable=True))
        batch_op.add_column(
            sa.Column("canary_percent", sa.Integer(), server_default="0", nullable=False)
        )

    # A channel's port was stored and never enforced: removed (docs/decisions.md).
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_channels_port_range"), type_="check")
        batch_op.drop_column("port")


def downgrade() -> None:
    with op.batch_alter_table("channels", schema=None) as batch_op:
        batch_op.add_column(sa.Column("port", sa.Integer(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_channels_port_range"), "port IS NULL OR port BETWEEN 1 AND 65535"
        )

    with op.batch_alter_table("interfaces", schema=None) as batch_op:
        batch_op.drop_column("canary_percent")
        batch_op.drop_column("canary_version")

    with op.batch_alter_table("perm_function_interfaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_perm_function_interfaces_interface_id"))
    op.drop_table("perm_function_interfaces")

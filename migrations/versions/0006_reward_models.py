"""adapter.kind: reward models in the adapter registry

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03 10:00:00.000000

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = "0006"
down_revision: Union[str, None] = "0005"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Every existing row is a policy adapter; reward models number their own versions
    # (<assistant>-rm-v<N>), so the version is unique per (assistant, kind).
    with op.batch_alter_table("adapter", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                server_default="policy",
                nullable=False,
            )
        )
        batch_op.create_index(batch_op.f("ix_adapter_kind"), ["kind"], unique=False)
        batch_op.drop_constraint("uq_adapter_version", type_="unique")
        batch_op.create_unique_constraint(
            "uq_adapter_kind_version", ["assistant", "kind", "version"]
        )


def downgrade() -> None:
    op.execute("DELETE FROM adapter WHERE kind <> 'policy'")
    with op.batch_alter_table("adapter", schema=None) as batch_op:
        batch_op.drop_constraint("uq_adapter_kind_version", type_="unique")
        batch_op.create_unique_constraint("uq_adapter_version", ["assistant", "version"])
        batch_op.drop_index(batch_op.f("ix_adapter_kind"))
        batch_op.drop_column("kind")

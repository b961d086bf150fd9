"""rating.pressed_at: when the bot received the stored press, so an older press is ignored

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 16:00:00.000000

"""

from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op


# revision identifiers, used by Alembic.
revision: str = "0009"
down_revision: Union[str, None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    # Nullable, no default: ratings stored before the upgrade have no stamp (any press wins).
    with op.batch_alter_table("rating", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pressed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rating", schema=None) as batch_op:
        batch_op.drop_column("pressed_at")

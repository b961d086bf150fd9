"""answer_candidate (best-of-n) and answer_score (reward model scores of sent answers)

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 14:00:00.000000

"""

from typing import Sequence, Union

from alembic import op
import sqlalchemy as sa
import sqlmodel


# revision identifiers, used by Alembic.
revision: str = "0007"
down_revision: Union[str, None] = "0006"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "answer_candidate",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("reward", sa.Float(), nullable=True),
        sa.Column("reward_model", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
        sa.Column("chosen", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["interaction_id"], ["interaction.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("interaction_id", "position", name="uq_answer_candidate_position"),
    )
    with op.batch_alter_table("answer_candidate", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_answer_candidate_interaction_id"), ["interaction_id"], unique=False
        )
    op.create_table(
        "answer_score",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("interaction_id", sa.Integer(), nullable=False),
        sa.Column("reward_model", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["interaction_id"], ["interaction.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("interaction_id", "reward_model", name="uq_answer_score_model"),
    )
    with op.batch_alter_table("answer_score", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_answer_score_interaction_id"), ["interaction_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_answer_score_reward_model"), ["reward_model"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_answer_score_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("answer_score")
    op.drop_table("answer_candidate")
    op.execute("DELETE FROM preference_pair WHERE source = 'best_of_n'")

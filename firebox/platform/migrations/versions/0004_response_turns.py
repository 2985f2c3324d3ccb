"""Stored responses hold their own turn: the earlier turns are walked through
`previous_response_id` (indexed), not copied into every row; deleted responses that a later one
continues are kept hidden; `created` is indexed for retention.

Rows written before this revision keep the whole conversation in `input_items` and are marked
`holds_history` (a walk stops at them). A downgrade keeps the rows but loses the marks: a
continuation of a response stored after this revision then sees only its own turn's items.

Revision ID: 0004
Revises: 0003
Create Date: 2025-01-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("responses", sa.Column("holds_history", sa.Boolean(), nullable=False, server_default=sa.true()))
    op.add_column("responses", sa.Column("deleted", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.create_index("ix_responses_previous_response_id", "responses", ["previous_response_id"])
    op.create_index("ix_responses_created", "responses", ["created"])


def downgrade() -> None:
    op.drop_index("ix_responses_created", table_name="responses")
    op.drop_index("ix_responses_previous_response_id", table_name="responses")
    op.execute(sa.text("DELETE FROM responses WHERE deleted"))
    with op.batch_alter_table("responses") as batch:
        batch.drop_column("deleted")
        batch.drop_column("holds_history")

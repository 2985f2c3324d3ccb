"""Stored responses of the Responses API (`POST /v1/responses` with `store: true`).

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("seq", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("response_id", sa.String(64), nullable=False, unique=True),
        sa.Column("account_id", sa.String(63), nullable=False),
        sa.Column("previous_response_id", sa.String(64), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.DateTime(), nullable=False),
        sa.Column("updated", sa.DateTime(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("input_items", sa.JSON(), nullable=False),
    )
    op.create_index("ix_responses_account_seq", "responses", ["account_id", "seq"])


def downgrade() -> None:
    op.drop_index("ix_responses_account_seq", table_name="responses")
    op.drop_table("responses")

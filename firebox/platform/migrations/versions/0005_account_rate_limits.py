"""Account-level rate limits: requests and tokens per minute for all of an account's keys together
(`None` = unlimited), beside each key's own.

Revision ID: 0005
Revises: 0004
Create Date: 2025-01-05
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("requests_per_minute", sa.Integer(), nullable=True))
    op.add_column("accounts", sa.Column("tokens_per_minute", sa.Integer(), nullable=True))


def downgrade() -> None:
    # Not in batch mode: on SQLite that copies the table and drops the old one, and with foreign keys
    # on, dropping `accounts` deletes every user through ON DELETE CASCADE. SQLite 3.35+ drops a column
    # in place.
    op.drop_column("accounts", "tokens_per_minute")
    op.drop_column("accounts", "requests_per_minute")

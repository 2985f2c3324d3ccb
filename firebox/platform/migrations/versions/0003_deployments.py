"""On-demand deployments.

Revision ID: 0003
Revises: 0002
Create Date: 2025-01-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "deployments",
        sa.Column("account_id", sa.String(63), primary_key=True),
        sa.Column("deployment_id", sa.String(63), primary_key=True),
        sa.Column("base_model", sa.String(256), nullable=False),
        sa.Column("display_name", sa.String(128), nullable=False),
        sa.Column("description", sa.String(1024), nullable=False),
        sa.Column("min_replica_count", sa.Integer(), nullable=False),
        sa.Column("max_replica_count", sa.Integer(), nullable=False),
        sa.Column("desired_replica_count", sa.Integer(), nullable=False),
        sa.Column("max_context_length", sa.Integer(), nullable=True),
        sa.Column("autoscaling_policy", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("status_code", sa.String(32), nullable=False),
        sa.Column("status_message", sa.String(1024), nullable=False),
        sa.Column("create_time", sa.DateTime(), nullable=False),
        sa.Column("update_time", sa.DateTime(), nullable=False),
        sa.Column("delete_time", sa.DateTime(), nullable=True),
    )


def downgrade() -> None:
    op.drop_table("deployments")

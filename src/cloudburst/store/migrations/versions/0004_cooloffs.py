"""Add capacity cool-offs: sites (and instance types) that just refused for capacity.

Revision ID: 0004_cooloffs
Revises: 0003_leader_lease
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_cooloffs"
down_revision = "0003_leader_lease"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cooloffs",
        sa.Column("host_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("instance_type", sa.String(64), primary_key=True),
        sa.Column("until", sa.Float, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("cooloffs")

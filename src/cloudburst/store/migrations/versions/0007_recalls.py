"""Recalls: cloud VMs being brought back home, and the rate limit's record.

Revision ID: 0007_recalls
Revises: 0006_history_cluster
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_recalls"
down_revision = "0006_history_cluster"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recalls",
        sa.Column("vm_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("replacement_id", sa.Integer, nullable=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("started", sa.Float, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
    )
    op.create_index("ix_recalls_started", "recalls", ["started"])


def downgrade() -> None:
    op.drop_index("ix_recalls_started", "recalls")
    op.drop_table("recalls")

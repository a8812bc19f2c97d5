"""Burst policy: each VM's placement reason, and the price of each stay.

Revision ID: 0005_burst_policy
Revises: 0004_cooloffs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_burst_policy"
down_revision = "0004_cooloffs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("vms") as batch:
        batch.add_column(sa.Column("placement", sa.Text, nullable=False, server_default=""))
    with op.batch_alter_table("history") as batch:
        batch.add_column(sa.Column("price", sa.Float, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("history") as batch:
        batch.drop_column("price")
    with op.batch_alter_table("vms") as batch:
        batch.drop_column("placement")

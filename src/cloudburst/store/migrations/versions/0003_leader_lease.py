"""Add the leader lease table (daemons sharing a PostgreSQL store).

Revision ID: 0003_leader_lease
Revises: 0002_tenancy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_leader_lease"
down_revision = "0002_tenancy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("epoch", sa.Integer, nullable=False),
        sa.Column("expires", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("leases")

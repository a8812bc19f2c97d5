"""Orphan sightings and VM logs in the store.

The orphan trackers' first sightings and each VM's log were kept by the
daemon that led at the time (in memory, in its own ``CLOUDBURST_HOME``); in
the store a new leader continues the grace periods and every daemon shows a
VM's whole log.

Revision ID: 0009_orphans_and_vm_logs
Revises: 0008_vm_backoffs
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_orphans_and_vm_logs"
down_revision = "0008_vm_backoffs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "orphan_sightings",
        sa.Column("host_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("orphan", sa.String(128), primary_key=True),
        sa.Column("first_seen", sa.Float, nullable=False),
        sa.Column("sweeps", sa.Integer, nullable=False),
    )
    op.create_table(
        "vm_logs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.Integer, nullable=False),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("level", sa.String(1), nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_vm_logs_vm_id", "vm_logs", ["vm_id", "id"])


def downgrade() -> None:
    op.drop_index("ix_vm_logs_vm_id", table_name="vm_logs")
    op.drop_table("vm_logs")
    op.drop_table("orphan_sightings")

"""Per-VM backoffs: hosts a VM is kept off after a failed deploy, stop retries.

They were kept in the leading daemon's memory; in the store a new leader
continues them.

Revision ID: 0008_vm_backoffs
Revises: 0007_recalls
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_vm_backoffs"
down_revision = "0007_recalls"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "vm_backoffs",
        sa.Column("vm_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("work", sa.String(16), primary_key=True),
        sa.Column("host_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
        sa.Column("until", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("vm_backoffs")

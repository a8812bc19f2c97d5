"""The store as release 0.1 made it (before migrations existed).

Stores created by that release have these tables but no ``alembic_version``;
``store.migrate`` stamps them with this revision before upgrading. This is a
frozen copy: never edit it, add a revision instead.

Revision ID: 0001_initial
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
    )
    op.create_table(
        "sequences",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("next_id", sa.Integer, nullable=False),
    )
    op.create_table(
        "users",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("gid", sa.Integer, nullable=False),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("auth_driver", sa.String(32), nullable=False),
        sa.Column("enabled", sa.Integer, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
    )
    op.create_table(
        "hosts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), nullable=False, unique=True),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("prev_state", sa.Integer, nullable=False),
        sa.Column("im_mad", sa.String(128), nullable=False),
        sa.Column("vm_mad", sa.String(128), nullable=False),
        sa.Column("tm_mad", sa.String(128), nullable=False),
        sa.Column("vn_mad", sa.String(128), nullable=False),
        sa.Column("cluster_id", sa.Integer, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("last_mon_time", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("max_cpu", sa.Integer, nullable=False),
        sa.Column("max_mem", sa.Integer, nullable=False),
        sa.Column("free_cpu", sa.Integer, nullable=False),
        sa.Column("free_mem", sa.Integer, nullable=False),
        sa.Column("used_cpu", sa.Integer, nullable=False),
        sa.Column("used_mem", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_table(
        "vms",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uid", sa.Integer, nullable=False),
        sa.Column("gid", sa.Integer, nullable=False),
        sa.Column("state", sa.Integer, nullable=False),
        sa.Column("lcm_state", sa.Integer, nullable=False),
        sa.Column("prev_state", sa.Integer, nullable=False),
        sa.Column("prev_lcm_state", sa.Integer, nullable=False),
        sa.Column("stime", sa.Integer, nullable=False),
        sa.Column("etime", sa.Integer, nullable=False),
        sa.Column("deploy_id", sa.String(255), nullable=False),
        sa.Column("host_id", sa.Integer, nullable=True),
        sa.Column("cpu", sa.Float, nullable=False),
        sa.Column("cpu_share", sa.Integer, nullable=False),
        sa.Column("memory", sa.Integer, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
        sa.Column("user_template", sa.Text, nullable=False),
        sa.Column("monitoring", sa.Text, nullable=False),
        sa.Column("last_poll", sa.Integer, nullable=False),
        sa.Column("error", sa.Text, nullable=False),
        sa.Column("sched_message", sa.Text, nullable=False),
        sa.Column("resched", sa.Integer, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
    )
    op.create_index("ix_vms_state", "vms", ["state", "id"])
    op.create_index("ix_vms_host", "vms", ["host_id", "state"])
    op.create_table(
        "history",
        sa.Column("vm_id", sa.Integer, sa.ForeignKey("vms.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("hostname", sa.String(255), nullable=False),
        sa.Column("vm_mad", sa.String(128), nullable=False),
        sa.Column("tm_mad", sa.String(128), nullable=False),
        sa.Column("stime", sa.Integer, nullable=False),
        sa.Column("etime", sa.Integer, nullable=False),
        sa.Column("pstime", sa.Integer, nullable=False),
        sa.Column("petime", sa.Integer, nullable=False),
        sa.Column("rstime", sa.Integer, nullable=False),
        sa.Column("retime", sa.Integer, nullable=False),
        sa.Column("estime", sa.Integer, nullable=False),
        sa.Column("eetime", sa.Integer, nullable=False),
        sa.Column("action", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
    )
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("vm_id", sa.Integer, nullable=False),
        sa.Column("host_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("token", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created", sa.Float, nullable=False),
        sa.Column("finished", sa.Float, nullable=False),
        sa.Column("result", sa.Text, nullable=False),
        sa.UniqueConstraint("token", "action", name="uq_journal_token_action"),
    )
    op.create_index("ix_journal_status", "journal", ["status"])
    op.create_index("ix_journal_vm", "journal", ["vm_id"])
    op.create_table(
        "vm_templates",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("uid", sa.Integer, nullable=False),
        sa.Column("gid", sa.Integer, nullable=False),
        sa.Column("regtime", sa.Integer, nullable=False),
        sa.Column("template", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("vm_templates", "journal", "history", "vms", "hosts", "users", "sequences",
                  "meta"):
        op.drop_table(table)

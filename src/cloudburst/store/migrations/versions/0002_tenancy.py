"""Tenancy: groups, memberships, group admins, clusters, login tokens, ACL rules,
quotas, the audit trail, and permissions on VMs and templates.

Seeds what a fresh OpenNebula has: groups ``oneadmin`` (0) and ``users`` (1),
cluster ``default`` (0), the six default ACL rules (ids 0-5), and new ids
from 100 for groups and clusters, from 2 for users (1 is OpenNebula's
``serveradmin``, which cloudburst does not create).

Revision ID: 0002_tenancy
Revises: 0001_initial
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_tenancy"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_DEFAULT_PERMS = str(0o600)

# Frozen numeric forms of OpenNebula's default ACL rules (id, user, resource, rights, zone):
#   0  @1 VM+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VMGROUP+BACKUPJOB/* CREATE *
#   1  * ZONE/* USE *
#   2  * MARKETPLACE+MARKETPLACEAPP/* USE *
#   3  @1 HOST/* MANAGE #0
#   4  @1 NET/* USE #0
#   5  @1 DATASTORE/* USE #0
_DEFAULT_ACL = [
    (0, 0x200000001, 0x121429400000000, 0x8, 0x400000000),
    (1, 0x400000000, 0x800400000000, 0x1, 0x400000000),
    (2, 0x400000000, 0x18000400000000, 0x1, 0x400000000),
    (3, 0x200000001, 0x2400000000, 0x2, 0x100000000),
    (4, 0x200000001, 0x4400000000, 0x1, 0x100000000),
    (5, 0x200000001, 0x100400000000, 0x1, 0x100000000),
]


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy of ``vms`` would cascade into history.
    for table in ("vms", "vm_templates"):
        op.add_column(table, sa.Column("perms", sa.Integer, nullable=False,
                                       server_default=_DEFAULT_PERMS))
    groups = op.create_table(
        "groups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("template", sa.Text, nullable=False),
    )
    op.create_table(
        "user_groups",
        sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("group_id", sa.Integer, primary_key=True, autoincrement=False),
    )
    op.create_index("ix_user_groups_group", "user_groups", ["group_id"])
    op.create_table(
        "group_admins",
        sa.Column("group_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user_id", sa.Integer, primary_key=True, autoincrement=False),
    )
    clusters = op.create_table(
        "clusters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(128), nullable=False, unique=True),
        sa.Column("template", sa.Text, nullable=False),
    )
    op.create_table(
        "login_tokens",
        sa.Column("digest", sa.String(64), primary_key=True),
        sa.Column("user_id", sa.Integer, nullable=False),
        sa.Column("prefix", sa.String(16), nullable=False),
        sa.Column("expires", sa.Integer, nullable=False),
        sa.Column("egid", sa.Integer, nullable=False),
    )
    op.create_index("ix_login_tokens_user", "login_tokens", ["user_id"])
    acl = op.create_table(
        "acl_rules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("user", sa.BigInteger, nullable=False),
        sa.Column("resource", sa.BigInteger, nullable=False),
        sa.Column("rights", sa.BigInteger, nullable=False),
        sa.Column("zone", sa.BigInteger, nullable=False),
        sa.UniqueConstraint("user", "resource", "rights", "zone", name="uq_acl_rule"),
    )
    op.create_table(
        "quotas",
        sa.Column("owner_kind", sa.String(8), primary_key=True),
        sa.Column("owner_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("cluster_id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("limit", sa.Float, nullable=False),
    )
    op.create_table(
        "audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.Float, nullable=False),
        sa.Column("uid", sa.Integer, nullable=False),
        sa.Column("uname", sa.String(128), nullable=False),
        sa.Column("method", sa.String(64), nullable=False),
        sa.Column("object", sa.String(64), nullable=False),
        sa.Column("success", sa.Integer, nullable=False),
        sa.Column("message", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_time", "audit", ["time"])

    op.bulk_insert(groups, [{"id": 0, "name": "oneadmin", "template": "[]"},
                            {"id": 1, "name": "users", "template": "[]"}])
    op.bulk_insert(clusters, [{"id": 0, "name": "default", "template": "[]"}])
    op.bulk_insert(acl, [{"id": i, "user": u, "resource": r, "rights": g, "zone": z}
                         for i, u, r, g, z in _DEFAULT_ACL])
    op.execute("INSERT INTO user_groups (user_id, group_id) SELECT id, gid FROM users")
    op.execute("UPDATE hosts SET cluster_id = 0 WHERE cluster_id < 0")
    sequences = sa.table("sequences", sa.column("name", sa.String),
                         sa.column("next_id", sa.Integer))
    op.execute(sequences.delete().where(sequences.c.name.in_(["group", "cluster", "acl"])))
    op.bulk_insert(sequences, [{"name": "group", "next_id": 100},
                               {"name": "cluster", "next_id": 100},
                               {"name": "acl", "next_id": len(_DEFAULT_ACL)}])
    op.execute("UPDATE sequences SET next_id = 2 WHERE name = 'user' AND next_id < 2")
    op.execute("INSERT INTO sequences (name, next_id) SELECT 'user', 2 WHERE NOT EXISTS "
               "(SELECT 1 FROM sequences WHERE name = 'user')")


def downgrade() -> None:
    for table in ("audit", "quotas", "acl_rules", "login_tokens", "clusters", "group_admins",
                  "user_groups", "groups"):
        op.drop_table(table)
    for table in ("vm_templates", "vms"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("perms")

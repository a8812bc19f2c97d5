"""Record the cluster of each VM stay (history ``CID``), as oned does.

Stays recorded before this revision were all in the default cluster 0: hosts
could not be in another cluster until ``0002_tenancy``, and the ones moved
since are taken from their host's current cluster.

Revision ID: 0006_history_cluster
Revises: 0005_burst_policy
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_history_cluster"
down_revision = "0005_burst_policy"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("history") as batch:
        batch.add_column(sa.Column("cluster_id", sa.Integer, nullable=False,
                                   server_default="0"))
    op.execute("UPDATE history SET cluster_id = (SELECT hosts.cluster_id FROM hosts "
               "WHERE hosts.id = history.host_id) "
               "WHERE EXISTS (SELECT 1 FROM hosts WHERE hosts.id = history.host_id)")


def downgrade() -> None:
    with op.batch_alter_table("history") as batch:
        batch.drop_column("cluster_id")

"""The journal's index of every status becomes an index of handed entries only.

Every VM action finishes its journal entry by VM, action and status. PostgreSQL
without statistics on the journal (a young store, early in a burst, before its
first autoanalyze) answered that update by intersecting the VM index with the
status index, walking every started entry: 0.44 ms per update in a burst of
10,000 VMs, 11 us once the status index was gone (server time, pg_stat_statements;
s23-pg notes). The adopter's scans of handed entries keep a partial index; the
scan of started entries runs at start and takeover only.

Revision ID: 0011_journal_handed_index
Revises: 0010_vm_host_usage_index
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011_journal_handed_index"
down_revision = "0010_vm_host_usage_index"
branch_labels = None
depends_on = None

_HANDED = "status = 'handed'"


def upgrade() -> None:
    op.drop_index("ix_journal_status", table_name="journal")
    op.create_index("ix_journal_handed", "journal", ["id"], sqlite_where=sa.text(_HANDED),
                    postgresql_where=sa.text(_HANDED))


def downgrade() -> None:
    op.drop_index("ix_journal_handed", table_name="journal")
    op.create_index("ix_journal_status", "journal", ["status"])

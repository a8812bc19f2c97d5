"""Alembic's environment: run the revisions on the connection the daemon hands over.

``store.migrate.upgrade`` puts an open connection in ``config.attributes``;
there is no ``alembic.ini`` and no URL here. ``render_as_batch`` lets a
revision use ``op.batch_alter_table`` so column changes also work on SQLite.
"""

from __future__ import annotations

from alembic import context

from cloudburst.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata,
                  render_as_batch=connection.dialect.name == "sqlite",
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()

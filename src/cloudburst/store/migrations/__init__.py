"""Alembic revisions of the store schema (see ``store/migrate.py`` and docs/architecture.md)."""

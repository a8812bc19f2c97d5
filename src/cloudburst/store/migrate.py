"""Schema migrations: bring any store up to the newest revision on start.

The revisions live in ``store/migrations/versions`` (Alembic). :func:`upgrade`
runs in one transaction, under an advisory lock on PostgreSQL so that daemons
starting together against one store do not migrate it twice. A store made
before migrations existed (it has ``meta`` but no ``alembic_version``) is
stamped with the first revision, which describes exactly that schema, and
then upgraded like any other.

Helpers for developers (see docs/architecture.md, "Changing the schema")::

    python -m cloudburst.store.migrate heads
    python -m cloudburst.store.migrate revision "add the widgets table"
"""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

#: The revision that describes the schema of release 0.1 (no version table).
BASELINE = "0001_initial"

#: Arbitrary constant key of the PostgreSQL advisory lock held while migrating.
_LOCK_KEY = 0x636C6462  # "cldb"


def config(connection: Connection | None = None) -> Config:
    """An Alembic configuration for our revisions, bound to ``connection`` if given."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("file_template", "%%(rev)s")
    cfg.attributes["connection"] = connection
    return cfg


def script_directory() -> ScriptDirectory:
    """The revision graph."""
    return ScriptDirectory.from_config(config())


def head_revision() -> str:
    """The newest revision (exactly one head is a rule: see the tests)."""
    head = script_directory().get_current_head()
    assert head is not None
    return head


def current_revision(connection: Connection) -> str | None:
    """The revision a store is at; None for an empty or pre-migration store."""
    if "alembic_version" not in inspect(connection).get_table_names():
        return None
    value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    return None if value is None else str(value)


def upgrade(engine: Engine) -> None:
    """Create or upgrade the store behind ``engine`` to the newest revision."""
    # Alembic narrates every plugin and step at INFO; the daemon's log wants warnings only.
    logging.getLogger("alembic").setLevel(logging.WARNING)
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        tables = set(inspect(connection).get_table_names())
        cfg = config(connection)
        if "alembic_version" not in tables and "meta" in tables:
            command.stamp(cfg, BASELINE)
        command.upgrade(cfg, "head")


def main(argv: list[str] | None = None) -> int:
    """``heads`` prints the head revision(s); ``revision MESSAGE`` starts a new one."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["heads"]:
        for head in script_directory().get_heads():
            print(head)
        return 0
    if len(args) == 2 and args[0] == "revision":
        heads = script_directory().get_heads()
        number = len(list(script_directory().walk_revisions())) + 1
        slug = re.sub(r"[^a-z0-9]+", "_", args[1].lower()).strip("_")[:40]
        command.revision(config(), message=args[1], head=heads[0],
                         rev_id=f"{number:04d}_{slug}")
        return 0
    print("usage: python -m cloudburst.store.migrate heads | revision MESSAGE", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())

"""Schema migrations: one head, fresh stores match ``schema.py``, release-0.1 stores upgrade.

The release-0.1 stores are SQL dumps of what the code before migrations wrote
(``tests/fixtures/store_0_1``, with the script that made them).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, create_engine, text

import pg_server
from cloudburst.model.states import LcmState, VmState
from cloudburst.service.users import bootstrap_admin
from cloudburst.store import host_pool, migrate, user_pool, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.schema import metadata
from cloudburst.store.sequences import next_ids

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "store_0_1"

postgres = pg_server.session_fixture()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    if request.param == "sqlite":
        yield "sqlite", f"sqlite:///{tmp_path / 'store.db'}"
    else:
        server: pg_server.PostgresServer = request.getfixturevalue("postgres")
        yield "postgresql", server.create_database("mig")


def load_release_0_1(kind: str, url: str) -> None:
    """Fill an empty database with the release-0.1 store."""
    dump = (FIXTURES / f"{kind}.sql").read_text()
    if kind == "sqlite":
        connection = sqlite3.connect(url.removeprefix("sqlite:///"))
        connection.executescript(dump)
        connection.close()
        return
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(dump)  # type: ignore[arg-type]


def schema_differences(url: str) -> list[object]:
    """What separates the store at ``url`` from ``schema.metadata`` (empty when equal)."""
    engine = Database(url).write_engine
    try:
        with engine.connect() as connection:
            return list(compare_metadata(MigrationContext.configure(connection), metadata))
    finally:
        engine.dispose()


def revision_of(url: str) -> str | None:
    engine = create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as connection:
            return migrate.current_revision(connection)
    finally:
        engine.dispose()


def test_the_revision_graph_has_exactly_one_head() -> None:
    heads = migrate.script_directory().get_heads()
    assert len(heads) == 1, (
        f"several schema heads {heads}: point your revision's down_revision at the other "
        "engineer's revision (docs/architecture.md, 'Changing the schema')")


def test_every_revision_but_the_first_has_a_parent_and_a_unique_id() -> None:
    revisions = list(migrate.script_directory().walk_revisions())
    assert [r.revision for r in revisions if r.down_revision is None] == [migrate.BASELINE]
    assert len({r.revision for r in revisions}) == len(revisions)


def test_a_fresh_store_is_at_head_and_matches_schema_py(backend: tuple[str, str]) -> None:
    _, url = backend
    store = Database(url)
    store.create_schema()
    store.create_schema()  # a second start changes nothing
    store.close()
    assert revision_of(url) == migrate.head_revision()
    assert schema_differences(url) == []


def test_a_release_0_1_store_upgrades_in_place_and_keeps_its_data(
        backend: tuple[str, str]) -> None:
    kind, url = backend
    load_release_0_1(kind, url)
    assert revision_of(url) is None
    store = Database(url)
    store.create_schema()
    try:
        assert revision_of(url) == migrate.head_revision()
        assert schema_differences(url) == []

        def contents(connection: Connection) -> tuple[object, ...]:
            vms = vm_pool.list_vms(connection)
            return (
                [(vm.id, vm.name, vm.state, vm.lcm_state, vm.host_id) for vm in vms],
                [host.name for host in host_pool.list_hosts(connection)],
                [user.name for user in user_pool.list_users(connection)],
            )

        running, done = int(VmState.ACTIVE), int(VmState.DONE)
        assert store.read_sync(contents) == (
            [(0, "vm-0", running, int(LcmState.RUNNING), 0),
             (1, "vm-1", running, int(LcmState.RUNNING), 1),
             (2, "vm-2", done, int(LcmState.LCM_INIT), 0)],
            ["site-a", "site-b"],
            ["oneadmin"],
        )
        assert store.read_sync(seeds) == SEEDS
    finally:
        store.close()


def seeds(connection: Connection) -> tuple[object, ...]:
    """What revision 0002 puts in every store: OpenNebula's groups, cluster, rules, ids."""
    def rows(sql: str) -> list[tuple[object, ...]]:
        return [tuple(row) for row in connection.execute(text(sql))]

    return (rows("SELECT id, name FROM groups ORDER BY id"),
            rows("SELECT id, name FROM clusters ORDER BY id"),
            rows("SELECT id FROM acl_rules ORDER BY id"),
            rows("SELECT user_id, group_id FROM user_groups ORDER BY user_id"),
            rows("SELECT name, next_id FROM sequences WHERE name IN ('group', 'cluster', 'acl')"
                 " ORDER BY name"))


SEEDS = ([(0, "oneadmin"), (1, "users")], [(0, "default")], [(i,) for i in range(6)],
         [(0, 0)], [("acl", 6), ("cluster", 100), ("group", 100)])


def test_a_fresh_store_has_opennebulas_groups_cluster_rules_and_oneadmin(
        backend: tuple[str, str], tmp_path: Path) -> None:
    _, url = backend
    store = Database(url)
    store.create_schema()
    try:
        assert bootstrap_admin(store, tmp_path / "one_auth")
        assert store.read_sync(seeds) == SEEDS
        assert store.read_sync(lambda c: next_ids(c, "user")) == 2
    finally:
        store.close()

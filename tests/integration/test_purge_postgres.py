"""``cloudburst purge-done``'s store work on a real PostgreSQL server (the SQLite
store and the command itself: tests/e2e/test_purge_done.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
import sqlalchemy
from test_handover import daemon_on
from test_lease import until

import pg_server
from cloudburst.daemon.app import Daemon
from cloudburst.model.states import LcmState, VmState
from cloudburst.store import purge
from cloudburst.store.schema import history, journal, sequences, vm_logs, vms

postgres = pg_server.session_fixture()
pytestmark = pytest.mark.postgres

VM = "CPU = 0.1\nMEMORY = 16\n"


def test_done_vms_and_their_rows_are_purged_on_postgresql(
        postgres: pg_server.PostgresServer, tmp_path: Path) -> None:
    url = postgres.create_database()

    async def main() -> list[int]:
        daemon = daemon_on(tmp_path / "a", url)
        try:
            await daemon.start(serve_api=False)
            await daemon.hosts.allocate("node", "dummy", "dummy")
            vm_ids = [await daemon.vms.allocate(VM) for _ in range(3)]
            for vm_id in vm_ids:
                await until(lambda vm_id=vm_id: _lcm_is(daemon, vm_id, LcmState.RUNNING), 60,
                            f"VM {vm_id} to run")
            for vm_id in vm_ids[:2]:
                await daemon.vms.action("terminate-hard", vm_id)
            for vm_id in vm_ids[:2]:
                await until(lambda vm_id=vm_id: _done(daemon, vm_id), 60, f"VM {vm_id} DONE")
        finally:
            await daemon.stop()  # its last log lines written
        return vm_ids

    vm_ids = asyncio.run(main())
    ended, kept = vm_ids[:2], vm_ids[2]
    engine = sqlalchemy.create_engine(url)
    try:
        assert _rows(engine, ended)["vm_logs"] > 0
        next_id = _next_vm_id(engine)
        assert purge.purge_done(url, 0, time.time(), operator="test", settle=0,
                                dry_run=True) == ended
        assert _rows(engine, ended)["vms"] == 2
        assert purge.purge_done(url, 0, time.time(), operator="test", settle=0) == ended
        assert _rows(engine, ended) == {"vms": 0, "history": 0, "journal": 0, "vm_logs": 0}
        assert _rows(engine, [kept])["vms"] == 1 and _rows(engine, [kept])["history"] == 1
        assert _next_vm_id(engine) == next_id  # ids are never handed out again
        assert purge.purge_done(url, 0, time.time(), operator="test", settle=0) == []
    finally:
        engine.dispose()


async def _lcm_is(daemon: Daemon, vm_id: int, state: LcmState) -> bool:
    return (await daemon.vms.info(vm_id)).lcm_state is state


async def _done(daemon: Daemon, vm_id: int) -> bool:
    return (await daemon.vms.info(vm_id)).state is VmState.DONE


def _rows(engine: sqlalchemy.Engine, vm_ids: list[int]) -> dict[str, int]:
    with engine.connect() as connection:
        counts = {table.name: int(connection.execute(
            sqlalchemy.select(sqlalchemy.func.count()).select_from(table)
            .where(table.c.vm_id.in_(vm_ids))).scalar_one())
            for table in (history, journal, vm_logs)}
        counts["vms"] = int(connection.execute(
            sqlalchemy.select(sqlalchemy.func.count()).select_from(vms)
            .where(vms.c.id.in_(vm_ids))).scalar_one())
    return counts


def _next_vm_id(engine: sqlalchemy.Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(sqlalchemy.select(sequences.c.next_id)
                                      .where(sequences.c.name == "vm")).scalar_one())

"""Nothing a new leader needs is process-local: two daemons on a real PostgreSQL server.

Backoffs survive a change of leader, work that leaves a VM where it is (reboot,
reset) asked through a follower is run by the leader, and a host enabled
through a follower is monitored by the leader at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy
from test_lease import FAST, until
from test_lifecycle_faults import inject

import pg_server
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.store import backoffs, journal

postgres = pg_server.session_fixture()

pytestmark = pytest.mark.postgres

VM = "CPU=0.1 MEMORY=16"


@pytest.fixture
def pg_url(postgres: pg_server.PostgresServer) -> str:
    return postgres.create_database()


def daemon_on(home: Path, url: str, **changes: Any) -> Daemon:
    settings, _ = load_settings(home)
    return Daemon(dataclasses.replace(settings, db_url=url, lease=FAST, **changes))


@contextlib.asynccontextmanager
async def leader_and_follower(tmp_path: Path, url: str, *, homes: tuple[str, str] = ("a", "b"),
                              **changes: Any) -> AsyncIterator[tuple[Daemon, Daemon]]:
    """Two daemons on ``url`` with homes ``tmp_path/<homes>``, started in turn (the first
    leads); both stopped after."""
    first = daemon_on(tmp_path / homes[0], url, **changes)
    second = daemon_on(tmp_path / homes[1], url, **changes)
    try:
        await first.start(serve_api=False)
        await second.start(serve_api=False)
        assert first.leadership.is_leader and not second.leadership.is_leader
        yield first, second
    finally:
        await first.stop()
        await second.stop()


async def vm_backoff(daemon: Daemon, vm_id: int, work: str) -> tuple[int, float | None]:
    """(tries, due) of the VM's ``work`` backoff, as the store has it."""
    return await daemon.db.read(lambda c: (backoffs.tries(c, vm_id, work),
                                           backoffs.due(c, vm_id, work)))


async def lcm_state(daemon: Daemon, vm_id: int) -> LcmState:
    return (await daemon.vms.info(vm_id)).lcm_state


def test_a_new_leader_continues_a_deploy_backoff(pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url,
                                       driver_retry_delay=0.3) as (first, second):
            for daemon in (first, second):
                inject(daemon, "deploy", "transient: DescribeInstances throttled")
            await first.hosts.allocate("node", "dummy", "dummy")
            vm_id = await second.vms.allocate(VM)

            async def tried(daemon: Daemon, count: int) -> bool:
                return (await vm_backoff(daemon, vm_id, backoffs.DEPLOY))[0] >= count

            await until(lambda: tried(first, 2), 30, "two deploys that created nothing")
            await first.stop()  # hands the lease over at once
            tries, due = await vm_backoff(second, vm_id, backoffs.DEPLOY)
            assert due is not None
            handed_at = await second.db.read(lambda c: len(journal.entries_for(c, vm_id)))
            await until(lambda: second.leadership.is_leader, 5, "the follower to lead")
            await until(lambda: tried(second, tries + 1), 30, "the new leader's next try")
            # It kept counting and waited out the delay the old leader had set.
            entries = await second.db.read(lambda c: journal.entries_for(c, vm_id))
            tries_after = [entry for entry in entries[handed_at:] if entry.action == "deploy"]
            assert tries_after and min(entry.created for entry in tries_after) >= due
            assert (await vm_backoff(second, vm_id, backoffs.DEPLOY))[0] == tries + 1

            inject(second, "deploy", None)
            await until(lambda: _is(second, vm_id, LcmState.RUNNING), 30, "the VM to run")
            assert await vm_backoff(second, vm_id, backoffs.DEPLOY) == (0, None)
            assert await second.vms.cooloffs() == {}

    asyncio.run(main())


def test_a_new_leader_waits_out_a_stop_backoff(pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url,
                                       driver_retry_delay=0.3) as (first, second):
            await first.hosts.allocate("node", "dummy", "dummy")
            vm_id = await first.vms.allocate(VM)
            await until(lambda: _is(first, vm_id, LcmState.RUNNING), 30, "the VM to run")
            for daemon in (first, second):
                inject(daemon, "cancel", "transient: partner cloud unreachable")
            await second.vms.action("terminate-hard", vm_id)

            async def tried(daemon: Daemon, count: int) -> bool:
                return (await vm_backoff(daemon, vm_id, backoffs.STOP))[0] >= count

            await until(lambda: tried(first, 2), 30, "two stops that hit the outage")
            await first.stop()
            tries, due = await vm_backoff(second, vm_id, backoffs.STOP)
            assert due is not None
            await until(lambda: second.leadership.is_leader, 5, "the follower to lead")
            await until(lambda: tried(second, tries + 1), 30, "the new leader's next try")
            assert (await vm_backoff(second, vm_id, backoffs.STOP))[0] == tries + 1
            log = second.files.log_path(vm_id).read_text()
            assert "trying again in" in log  # the new leader's own retry, with its delay
            inject(second, "cancel", None)
            await until(lambda: _in(second, vm_id, VmState.DONE), 30, "the VM to be done")
            assert await vm_backoff(second, vm_id, backoffs.STOP) == (0, None)

    asyncio.run(main())


def test_a_reboot_asked_through_a_follower_is_run_by_the_leader(
        pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url) as (first, second):
            assert first.leadership.is_leader and not second.leadership.is_leader
            await second.hosts.allocate("node", "dummy", "dummy")
            vm_id = await second.vms.allocate(VM)
            await until(lambda: _is(second, vm_id, LcmState.RUNNING), 30, "the VM to run")
            driver: Any = first.dispatcher.vm_driver("dummy")
            await second.vms.action("reboot", vm_id)
            await until(lambda: ("reboot", vm_id) in driver.calls, 15, "the leader's reboot")
            await second.vms.action("reboot-hard", vm_id)
            await until(lambda: ("reset", vm_id) in driver.calls, 15, "the leader's reset")

            async def settled() -> list[tuple[str, str]]:
                entries = await second.db.read(lambda c: journal.entries_for(c, vm_id))
                found = [(e.action, e.status) for e in entries if e.action in ("reboot", "reset")]
                return found if all(status == journal.DONE for _, status in found) else []

            assert await until(settled, 15, "the journal to record both") == [
                ("reboot", journal.DONE), ("reset", journal.DONE)]
            follower_driver: Any = second.dispatcher.vm_driver("dummy")
            assert ("reboot", vm_id) not in follower_driver.calls
            assert list(driver.calls).count(("reboot", vm_id)) == 1  # once, not again

            # Handed work whose VM moved on before the leader took it is settled, not run.
            adopting = [task for task in first._tasks if task.get_name() == "adopter"]
            for task in adopting:
                task.cancel()
            await asyncio.gather(*adopting, return_exceptions=True)
            await second.vms.action("reboot", vm_id)
            await first.vms.action("poweroff-hard", vm_id)
            await until(lambda: _in(first, vm_id, VmState.POWEROFF), 15, "the power-off")
            await first.adopter.scan()
            entries = await first.db.read(lambda c: journal.entries_for(c, vm_id))
            last = [e for e in entries if e.action == "reboot"][-1]
            assert last.status == journal.FAILED and "moved on" in last.result
            assert list(driver.calls).count(("reboot", vm_id)) == 1

    asyncio.run(main())


def test_a_host_enabled_through_a_follower_is_monitored_at_once(
        pg_url: str, tmp_path: Path) -> None:
    # Without being told, the leader would look at the host again in ten minutes.
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url,
                                       monitoring_interval=600.0) as (_, second):
            host_id = await second.hosts.allocate("node", "dummy", "dummy")

            async def monitored_after(stamp: int) -> bool:
                host = await second.hosts.info(host_id)
                return host.state is HostState.MONITORED and host.last_mon_time > stamp

            await until(lambda: monitored_after(0), 15, "the first monitoring")
            await second.hosts.status(host_id, 2)  # offline: not monitored
            stamp = (await second.hosts.info(host_id)).last_mon_time
            await asyncio.sleep(1.1)  # monitoring times are in whole seconds
            await second.hosts.status(host_id, 0)  # enable: INIT until monitored
            await until(lambda: monitored_after(stamp), 15, "the leader to monitor it")

    asyncio.run(main())


async def _is(daemon: Daemon, vm_id: int, state: LcmState) -> bool:
    return await lcm_state(daemon, vm_id) is state


async def _in(daemon: Daemon, vm_id: int, state: VmState) -> bool:
    return (await daemon.vms.info(vm_id)).state is state


def test_an_action_that_loses_its_compare_and_swap_to_another_daemon_is_judged_again(
        pg_url: str, tmp_path: Path) -> None:
    # Between the follower's read of the VM and its compare-and-swap, another
    # connection commits a write of the VM (as the leader's poll does): the user's
    # action must not fail with "changed by another action" but apply to what it wrote.
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url) as (first, second):
            await first.hosts.allocate("node", "dummy", "dummy")
            vm_id = await first.vms.allocate(VM)
            await until(lambda: _is(first, vm_id, LcmState.RUNNING), 30, "the VM to run")
            raced: list[int] = []

            @sqlalchemy.event.listens_for(second.db.write_engine, "before_cursor_execute")
            def race(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
                if raced or not statement.lstrip().upper().startswith("UPDATE VMS"):
                    return
                with first.db.write_engine.begin() as other:
                    other.exec_driver_sql(
                        "UPDATE vms SET version = version + 1 WHERE id = %(id)s", {"id": vm_id})
                raced.append(vm_id)

            try:
                await second.vms.action("poweroff-hard", vm_id)
            finally:
                sqlalchemy.event.remove(second.db.write_engine, "before_cursor_execute", race)
            assert raced == [vm_id]  # the race really happened
            await until(lambda: _in(first, vm_id, VmState.POWEROFF), 30, "the power-off")

    asyncio.run(main())

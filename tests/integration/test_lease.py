"""The leader lease on a real PostgreSQL server: one leader, fenced writes, fast handover."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, text

import pg_server
from cloudburst.config.settings import LeaseSettings
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.errors import CloudburstError, LeaseLostError
from cloudburst.model.states import LcmState, VmState
from cloudburst.store import lease
from cloudburst.store.database import Database, postgres_url

postgres = pg_server.session_fixture()

pytestmark = pytest.mark.postgres

#: Short enough for quick tests, long enough that a loaded 2-core machine keeps it.
FAST = LeaseSettings(duration=3.0, renew=0.5, retry=0.2)


@pytest.fixture
def pg_url(postgres: pg_server.PostgresServer) -> str:
    return postgres.create_database()


def daemon_on(home: Path, url: str) -> Daemon:
    settings, _ = load_settings(home)
    return Daemon(dataclasses.replace(settings, db_url=url, lease=FAST))


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.05)


async def meta_rows(db: Database, key: str) -> int:
    return int(await db.read(lambda c: c.execute(
        text("SELECT count(*) FROM meta WHERE key = :key"), {"key": key}).scalar()))


def test_the_fence_refuses_a_deposed_leaders_writes(pg_url: str) -> None:
    db = Database(pg_url)
    db.create_schema()
    db.start()

    async def main() -> None:
        taken = db.write_sync(lambda c: lease.acquire(c, "a", 30.0))
        assert taken is not None and taken.epoch == 1 and taken.quiet == math.inf
        first = taken.epoch
        assert db.write_sync(lambda c: lease.acquire(c, "b", 30.0)) is None  # still held
        db.fence = lambda c: lease.fence(c, "a", first)
        await db.write(lambda c: c.execute(text("UPDATE meta SET value = value")))
        # "a" stalls past its expiry; "b" takes over under a new epoch.
        db.write_sync(lambda c: c.execute(text("UPDATE leases SET expires = 0")))
        taken = db.write_sync(lambda c: lease.acquire(c, "b", 30.0))
        assert taken is not None and taken.epoch == 2 and taken.quiet > 0
        with pytest.raises(LeaseLostError, match="no longer leads"):
            await db.write(lambda c: c.execute(text("INSERT INTO meta VALUES ('x', 'y')")))
        assert db.write_sync(lambda c: lease.renew(c, "a", first, 30.0)) is False
        assert db.write_sync(lambda c: lease.renew(c, "b", 2, 30.0)) is True
        db.fence = None
        assert await meta_rows(db, "x") == 0

    try:
        asyncio.run(main())
    finally:
        db.close()


def test_a_write_transaction_frozen_past_the_idle_limit_ends_and_frees_the_lease(
        pg_url: str) -> None:
    """A leader frozen inside a write transaction holds its fence's lock on the lease
    row, so no rival could take the lease before it woke: the server ends such a
    transaction after the store's idle limit (the lease's STALL), the rival takes the
    expired lease then, and the frozen write never lands."""
    db = Database(pg_url, idle_limit=1.0)
    db.create_schema()
    db.start()
    rival = create_engine(postgres_url(pg_url))

    def frozen(connection: Connection) -> None:
        connection.execute(text("UPDATE meta SET value = value"))
        time.sleep(4)  # its process stopped here: nothing reaches the server meanwhile
        connection.execute(text("INSERT INTO meta VALUES ('frozen', 'landed')"))

    def take() -> lease.Taken | None:
        with rival.begin() as connection:
            return lease.acquire(connection, "b", 30.0)

    async def main() -> None:
        taken = db.write_sync(lambda c: lease.acquire(c, "a", 0.5))
        assert taken is not None
        db.fence = lambda c: lease.fence(c, "a", taken.epoch)
        write = asyncio.ensure_future(db.write(frozen))
        await asyncio.sleep(0.7)  # the lease has expired; the frozen transaction holds on
        started = time.monotonic()
        again = await asyncio.to_thread(take)
        assert again is not None and again.epoch == taken.epoch + 1
        assert time.monotonic() - started < 2.0  # not after the 4 s freeze
        with pytest.raises(CloudburstError):
            await write
        db.fence = None
        assert await meta_rows(db, "frozen") == 0

    try:
        asyncio.run(main())
    finally:
        db.close()
        rival.dispose()


def test_one_daemon_leads_and_a_follower_takes_over(pg_url: str, tmp_path: Path) -> None:
    first, second = daemon_on(tmp_path / "a", pg_url), daemon_on(tmp_path / "b", pg_url)

    async def main() -> None:
        try:
            await first.start(serve_api=False)
            await second.start(serve_api=False)
            assert first.leadership.is_leader and not second.leadership.is_leader
            host_id = await second.hosts.allocate("node", "dummy", "dummy")
            # Created through the follower, placed and deployed by the leader.
            vm_id = await second.vms.allocate("CPU=1 MEMORY=64")

            async def running(daemon: Daemon, vm: int) -> bool:
                return (await daemon.vms.info(vm)).lcm_state is LcmState.RUNNING

            await until(lambda: running(second, vm_id), 10, "the VM to run")
            assert second.scheduler.passes == 0 and first.scheduler.passes > 0
            # A terminate through the follower is carried out by the leader.
            await second.vms.action("terminate-hard", vm_id)

            async def done() -> bool:
                return (await second.vms.info(vm_id)).state is VmState.DONE

            await until(done, 10, "the VM to be terminated")
            # The leader stops: the lease is released and the follower leads at once.
            started = time.monotonic()
            await first.stop()
            await until(lambda: second.leadership.is_leader, 5, "the follower to lead")
            assert time.monotonic() - started < FAST.duration
            assert second.leadership.epoch == 2
            other = await second.vms.allocate("CPU=1 MEMORY=64")
            await until(lambda: running(second, other), 10, "the second VM to run")
            assert (await second.hosts.info(host_id)).id == host_id
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(main())


def test_a_leader_whose_lease_is_taken_stops_driving(pg_url: str, tmp_path: Path) -> None:
    first, second = daemon_on(tmp_path / "a", pg_url), daemon_on(tmp_path / "b", pg_url)

    async def main() -> None:
        try:
            await first.start(serve_api=False)
            await second.start(serve_api=False)
            assert first.leadership.is_leader
            # As if the leader had stalled past its lease: the database says it expired.
            first.db.write_sync(lambda c: c.execute(text("UPDATE leases SET expires = 0")))
            await until(lambda: second.leadership.is_leader, 5, "the follower to lead")
            await until(lambda: not first.leadership.is_leader, 5, "the old leader to step down")
            assert not first.lifecycle.drives()  # at once: no new driver work
            # Its loops and tasks stop, then its queued writes are through the fence.
            await until(lambda: first.db.fence is None, 10, "the old leader to stop driving")
            assert first._tasks == [] and first.lifecycle.busy_vms() == set()
            vm_id = await first.vms.allocate("CPU=1 MEMORY=64")
            await second.hosts.allocate("node", "dummy", "dummy")

            async def running() -> bool:
                return (await first.vms.info(vm_id)).lcm_state is LcmState.RUNNING

            await until(running, 10, "the VM to run under the new leader")
            assert first.leadership.changes == 2 and second.leadership.changes == 1
        finally:
            await first.stop()
            await second.stop()

    asyncio.run(main())


def test_a_lone_leader_that_loses_its_lease_mid_burst_leads_again_and_resumes_every_vm(
        pg_url: str, tmp_path: Path) -> None:
    daemon = daemon_on(tmp_path / "a", pg_url)

    async def main() -> None:
        try:
            await daemon.start(serve_api=False)
            for index in range(3):
                host_id = await daemon.hosts.allocate(f"node{index}", "dummy", "dummy")
                # Deploys stay on the wire for a while: the lease ends with all in flight.
                await daemon.hosts.update(host_id, 'DUMMY_DEPLOY="sleep 1"', merge=True)
            vm_ids = await asyncio.gather(*(daemon.vms.allocate("CPU=0.1 MEMORY=64")
                                            for _ in range(40)))

            async def booting() -> bool:
                vms = [await daemon.vms.info(vm_id) for vm_id in vm_ids]
                return all(vm.lcm_state is LcmState.BOOT for vm in vms)

            await until(booting, 20, "every VM to be deploying")
            daemon.db.write_sync(lambda c: c.execute(text("UPDATE leases SET expires = 0")))
            await until(lambda: daemon.leadership.epoch == 2, 15, "the daemon to lead again")

            async def all_running() -> bool:
                vms = [await daemon.vms.info(vm_id) for vm_id in vm_ids]
                return all(vm.lcm_state is LcmState.RUNNING for vm in vms)

            await until(all_running, 20, "every VM to run")
            assert daemon.leadership.changes == 3  # led, stepped down, led again
            for vm_id in vm_ids:
                vm = await daemon.vms.info(vm_id)
                assert len(vm.history) == 1 and vm.deploy_id, vm  # one stay, deployed once
                lines = daemon.db.write_sync(lambda c, vm_id=vm_id: c.execute(text(
                    "SELECT count(*) FROM vm_logs WHERE vm_id = :vm AND message LIKE "
                    "'%restarted during BOOT%'"), {"vm": vm_id}).scalar())
                assert lines == 1
            unfinished = daemon.db.write_sync(lambda c: c.execute(text(
                "SELECT count(*) FROM journal WHERE status = 'started'")).scalar())
            assert unfinished == 0
        finally:
            await daemon.stop()

    asyncio.run(main())


def _hold_the_interpreter(seconds: float) -> None:
    """Keep this process's interpreter lock for at least ``seconds``: one C call that
    never gives it up, as a long garbage collection does, sized in this thread's CPU
    time (a loaded machine only makes it last longer)."""
    started = time.thread_time()
    sum(range(2_000_000))
    rate = 2_000_000 / max(1e-6, time.thread_time() - started)
    sum(range(int(rate * seconds)))


def test_a_leader_keeps_its_lease_while_its_interpreter_is_held(pg_url: str,
                                                                tmp_path: Path) -> None:
    daemon = daemon_on(tmp_path / "a", pg_url)

    def remaining() -> float:
        with daemon.leadership.engine.connect() as connection:
            current = lease.current(connection)
        assert current is not None and current[0] == daemon.leadership.holder
        return current[2]

    async def main() -> None:
        try:
            await daemon.start(serve_api=False)
            assert daemon.leadership.epoch == 1
            await asyncio.sleep(FAST.renew * 2)
            started = time.monotonic()
            _hold_the_interpreter(FAST.duration * 1.5)
            held = time.monotonic() - started
            assert held > FAST.duration  # the lease would have expired meanwhile
            # The keeper process renewed it all along: it is still this daemon's, and
            # the daemon goes on leading under the same epoch.
            assert remaining() > 0
            await asyncio.sleep(FAST.renew * 3)
            assert daemon.leadership.epoch == 1 and daemon.leadership.changes == 1
        finally:
            await daemon.stop()

    asyncio.run(main())


def test_a_leader_whose_lease_keeper_dies_steps_down_and_leads_again_with_a_new_one(
        pg_url: str, tmp_path: Path) -> None:
    daemon = daemon_on(tmp_path / "a", pg_url)

    async def main() -> None:
        try:
            await daemon.start(serve_api=False)
            first = daemon.leadership.keeper.pid
            assert daemon.leadership.epoch == 1 and first is not None
            os.kill(first, signal.SIGKILL)
            await until(lambda: daemon.leadership.epoch is None, 5, "the leader to step down")
            await until(lambda: daemon.leadership.epoch == 2, 15, "it to lead again")
            assert daemon.leadership.keeper.pid not in (None, first)
            vm_id = await daemon.vms.allocate("CPU=0.1 MEMORY=64")
            await daemon.hosts.allocate("node", "dummy", "dummy")

            async def running() -> bool:
                return (await daemon.vms.info(vm_id)).lcm_state is LcmState.RUNNING

            await until(running, 15, "a VM to run under the new epoch")
            # Held by the new keeper's renewals, well past one lease time.
            await asyncio.sleep(FAST.duration * 1.5)
            assert daemon.leadership.epoch == 2
        finally:
            await daemon.stop()

    asyncio.run(main())


def test_a_leader_resumed_after_its_lease_lapsed_calls_no_driver_first(
        pg_url: str, tmp_path: Path) -> None:
    """Stopped longer than its lease, a leader whose loop runs a driver call before its
    lease check (whichever is first due after a stop) is refused that call."""
    daemon = daemon_on(tmp_path / "a", pg_url)
    called: list[str] = []

    async def poll() -> None:
        called.append("poll")

    async def main() -> None:
        try:
            await daemon.start(serve_api=False)
            await daemon.dispatcher.run("VM_MAD", "dummy", "poll", poll)
            assert called == ["poll"]
            keeper = daemon.leadership.keeper.pid
            assert keeper is not None
            os.kill(keeper, signal.SIGSTOP)  # no renewal while the daemon is "stopped"
            try:
                time.sleep(FAST.duration)  # the whole loop held, as a stopped daemon's
                with pytest.raises(LeaseLostError, match="no longer leads: the lease could "
                                                         "not be renewed"):
                    await daemon.dispatcher.run("VM_MAD", "dummy", "poll", poll)
                assert called == ["poll"]
            finally:
                os.kill(keeper, signal.SIGCONT)
            await until(lambda: daemon.leadership.epoch is None, 5, "the leader to step down")
            await until(lambda: daemon.leadership.epoch == 2, 15, "it to lead again")
            await daemon.dispatcher.run("VM_MAD", "dummy", "poll", poll)
            assert called == ["poll", "poll"]
        finally:
            await daemon.stop()

    asyncio.run(main())


def test_a_leader_whose_loop_was_held_stops_at_once(pg_url: str, tmp_path: Path) -> None:
    """After the loop was held (a long collection, a stopped process), the adopter's
    wake-up and the stop's cancellation come due together; the stop still ends it."""
    daemon = daemon_on(tmp_path / "a", pg_url)

    async def main() -> None:
        await daemon.start(serve_api=False)
        time.sleep(FAST.duration)  # the whole loop held
        try:
            async with asyncio.timeout(15):
                await daemon.stop()
        except TimeoutError:
            raise AssertionError("the daemon did not stop within 15 s") from None

    asyncio.run(main())

"""The scheduler's kept placer against the store: a periodic pass with nothing
changed keeps it (no read of every VM holding capacity), and so does a pass after
the event bus lost changes; capacity changed behind the scheduler's back (no
event told it) is found and used."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import update
from test_daemon import (
    LOCAL_VM,
    _sched_message,
    add_dummy_host,
    make_home,
    run,
    running,
    wait_until,
    wait_vm,
)

from cloudburst.model import lifecycle
from cloudburst.model.states import LcmState, VmState
from cloudburst.store.database import make_engine
from cloudburst.store.schema import vms


def test_a_periodic_pass_keeps_the_placer_until_the_store_counts_otherwise(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1", total_cpu=200)  # two CPU=1 VMs
            first = await daemon.vms.allocate(LOCAL_VM)
            second = await daemon.vms.allocate(LOCAL_VM)
            for vm_id in (first, second):
                await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            late = await daemon.vms.allocate(LOCAL_VM)
            message = await wait_until(lambda: _sched_message(daemon, late), 15,
                                       "a waiting reason")
            assert message == "No host with enough capacity to deploy the VM"

            scheduler = daemon.scheduler
            rebuilds, checks = scheduler.rebuilds, scheduler.checks
            assert await scheduler.pass_once() == 0  # as the periodic pass: nothing changed
            assert (scheduler.rebuilds, scheduler.checks) == (rebuilds, checks + 1)

            # Another daemon ends the second VM; nothing tells this one.
            engine = make_engine(settings.database_url, writer=True)
            try:
                with engine.begin() as connection:
                    connection.execute(update(vms).where(vms.c.id == second).values(
                        state=int(VmState.DONE), lcm_state=int(LcmState.LCM_INIT),
                        version=vms.c.version + 1))
            finally:
                engine.dispose()
            assert await scheduler.pass_once() == 1
            assert scheduler.rebuilds == rebuilds + 1
            await wait_vm(daemon, late, lifecycle.RUNNING)
            assert (await daemon.hosts.info(host.id)).cpu_usage == 200

    run(scenario)


def test_lost_changes_make_the_next_pass_check_the_placer_not_build_it(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1", total_cpu=300)
            first = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, first, lifecycle.RUNNING)
            scheduler = daemon.scheduler
            rebuilds, checks = scheduler.rebuilds, scheduler.checks
            daemon.events.resync()  # as when a burst overflows the scheduler's queue
            second = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, second, lifecycle.RUNNING)
            assert (scheduler.rebuilds, scheduler.checks) == (rebuilds, checks + 1)

            # Lost changes that did move capacity: the check finds them.
            engine = make_engine(settings.database_url, writer=True)
            try:
                with engine.begin() as connection:
                    connection.execute(update(vms).where(vms.c.id == second).values(
                        cpu=2.0, cpu_share=200, version=vms.c.version + 1))
            finally:
                engine.dispose()
            daemon.events.resync()
            late = await daemon.vms.allocate(LOCAL_VM)
            message = await wait_until(lambda: _sched_message(daemon, late), 15,
                                       "a waiting reason")
            assert message == "No host with enough capacity to deploy the VM"
            assert scheduler.rebuilds == rebuilds + 1
            assert (await daemon.hosts.info(host.id)).cpu_usage == 300

    run(scenario)

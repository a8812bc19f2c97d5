"""When the real monitor polls: hosts created together get their regular polls at
spread times, a driver that polls across hosts gets capped calls, and every VM is
polled within its interval all the same."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from test_daemon import LOCAL_VM, add_dummy_host, make_home, run, running, wait_until, wait_vm

from cloudburst.daemon.app import Daemon
from cloudburst.drivers.dummy import DummyVmDriver
from cloudburst.model import lifecycle
from cloudburst.model.states import HostState

POLLING = 3.0


def test_hosts_created_together_are_polled_at_spread_times_in_capped_calls(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path, polling=POLLING)

    async def scenario() -> None:
        async with running(settings) as daemon:
            daemon.monitor.max_polled_together = 5
            hosts = await asyncio.gather(*(add_dummy_host(daemon, f"kvm-{i}", total_cpu=200)
                                           for i in range(12)))
            # Their regular polls are spread over the interval, none later than it.
            now = time.monotonic()
            due = sorted(at for host in hosts
                         if (at := daemon.monitor.next_poll(host.id)) is not None)
            assert len(due) == len(hosts)
            assert due[-1] <= now + POLLING
            assert due[-1] - due[0] > POLLING / 2

            vm_ids = [await daemon.vms.allocate(LOCAL_VM) for _ in range(24)]  # 2 per host
            for vm_id in vm_ids:
                await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            driver = daemon.dispatcher.vm_driver("dummy")
            assert isinstance(driver, DummyVmDriver)
            driver.polled.clear()

            def polled() -> set[int]:
                return {vm_id for call in list(driver.polled) for vm_id in call}

            await wait_until(lambda: polled() >= set(vm_ids), POLLING + 5,
                             "a regular poll of every VM")
            calls = list(driver.polled)
            # Two hosts' VMs at most: a third host's would make 6.
            assert calls and max(len(call) for call in calls) <= 5
            for host in hosts:
                assert (await daemon.hosts.info(host.id)).state is HostState.MONITORED

    run(scenario)


def test_a_host_taken_offline_loses_its_timers_and_gets_them_back_online(
        tmp_path: Path) -> None:
    """An offline host is neither monitored nor polled; back, it is monitored at once
    and polled again within the interval."""
    settings = make_home(tmp_path, polling=POLLING, monitoring=POLLING)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            await daemon.vms.action("poweroff-hard", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.POWEROFF)
            await daemon.hosts.status(host.id, 2)  # offline
            await wait_until(lambda: daemon.monitor.next_poll(host.id) is None, POLLING + 5,
                             "the offline host's poll timer to end")
            driver = daemon.dispatcher.vm_driver("dummy")
            assert isinstance(driver, DummyVmDriver)
            driver.polled.clear()
            stamp = (await daemon.hosts.info(host.id)).last_mon_time
            await asyncio.sleep(POLLING + 1)
            assert not driver.polled
            assert (await daemon.hosts.info(host.id)).last_mon_time == stamp

            await daemon.hosts.status(host.id, 0)  # enabled
            await wait_until(lambda: daemon.monitor.next_poll(host.id) is not None, 5,
                             "the poll timer back")
            await wait_until(lambda: any(vm_id in call for call in list(driver.polled)),
                             POLLING + 5, "a poll of the powered-off VM")

    run(scenario)


def test_a_restarted_daemon_spreads_the_first_monitorings_of_monitored_hosts(
        tmp_path: Path) -> None:
    """Hosts monitored lately are not all monitored again in the first tick of a
    daemon (or a new leader) but each at its place in the interval (no later than
    one interval after its last report: test_timers); a host in error is monitored
    at once."""
    settings = make_home(tmp_path, monitoring=60)

    async def stamps(daemon: Daemon, host_ids: list[int]) -> dict[int, int]:
        return {host_id: (await daemon.hosts.info(host_id)).last_mon_time
                for host_id in host_ids}

    async def scenario() -> None:
        async with running(settings) as daemon:
            hosts = [host.id for host in await asyncio.gather(
                *(add_dummy_host(daemon, f"kvm-{i}") for i in range(8)))]
            broken = await daemon.hosts.allocate("broken", "dummy", "dummy")
            await daemon.hosts.update(broken, "DUMMY_MONITOR=failure", merge=True)
            await wait_until(lambda: _state(daemon, broken, HostState.ERROR), 15,
                             "the host in error")
            before = await stamps(daemon, [*hosts, broken])
        await asyncio.sleep(1.1)  # a monitoring after the restart gets a later stamp
        async with running(settings) as daemon:
            await wait_until(lambda: _monitored_after(daemon, broken, before[broken]), 15,
                             "the host in error monitored at once")
            await asyncio.sleep(1.5)  # a tick or two more
            after = await stamps(daemon, hosts)
            again = [host_id for host_id in hosts if after[host_id] != before[host_id]]
            assert len(again) < len(hosts) // 2  # a few, whose place came first
            due = {host_id: at for host_id in hosts
                   if (at := daemon.monitor.next_monitoring(host_id)) is not None}
            assert len(due) == len(hosts)
            assert max(due.values()) - min(due.values()) > 10

    run(scenario)


async def _state(daemon: Daemon, host_id: int, state: HostState) -> bool:
    return (await daemon.hosts.info(host_id)).state is state


async def _monitored_after(daemon: Daemon, host_id: int, stamp: int) -> bool:
    return (await daemon.hosts.info(host_id)).last_mon_time > stamp

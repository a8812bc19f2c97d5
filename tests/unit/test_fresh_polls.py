"""When the monitor polls a host again right after one of its VMs enters RUNNING."""

from __future__ import annotations

import asyncio

from cloudburst.daemon.fresh_polls import FreshPolls
from cloudburst.events import EventBus
from cloudburst.model.states import LcmState

RUNNING = int(LcmState.RUNNING)
BOOT = int(LcmState.BOOT)


def vm(vm_id: int, lcm_state: int, host_id: int | None = 4) -> dict[str, object]:
    return {"id": vm_id, "lcm_state": lcm_state, "host_id": host_id}


def test_polls_follow_a_vm_entering_running() -> None:
    polls = FreshPolls(delays=(0.0, 2.0, 5.0))
    assert not polls.vm_changed(vm(1, BOOT), now=100.0)
    assert not polls.due(4, 100.0)
    assert polls.vm_changed(vm(1, RUNNING), now=100.0)
    assert polls.due(4, 100.0) and not polls.due(5, 100.0)
    polls.taken(4, 100.0)
    assert not polls.due(4, 101.9) and polls.due(4, 102.0)
    polls.taken(4, 103.0)  # a late tick serves the missed time once
    assert not polls.due(4, 104.9) and polls.due(4, 105.0)
    polls.taken(4, 105.0)
    assert not polls.due(4, 1000.0)


def test_only_a_new_start_counts() -> None:
    polls = FreshPolls(delays=(0.0,))
    assert polls.vm_changed(vm(1, RUNNING), now=0.0)
    polls.taken(4, 0.0)
    # Another change of a VM still running (e.g. an update) schedules nothing ...
    assert not polls.vm_changed(vm(1, RUNNING), now=1.0)
    assert not polls.due(4, 1.0)
    # ... but running again after leaving RUNNING does.
    assert not polls.vm_changed(vm(1, int(LcmState.UNKNOWN)), now=2.0)
    assert polls.vm_changed(vm(1, RUNNING), now=3.0)
    assert not polls.vm_changed(vm(2, RUNNING, host_id=None), now=3.0)


def test_many_vms_on_one_host_share_the_polls() -> None:
    polls = FreshPolls(delays=(0.0, 2.0))
    for vm_id in range(100):
        polls.vm_changed(vm(vm_id, RUNNING), now=10.0)
    polls.taken(4, 10.0)
    polls.taken(4, 12.0)
    assert not polls.due(4, 10_000.0)
    polls.vm_changed(vm(100, RUNNING), now=20.0)
    polls.forget_host(4)
    assert not polls.due(4, 20.0)


def test_a_fresh_poll_is_for_the_vms_that_started_until_their_last_one() -> None:
    polls = FreshPolls(delays=(0.0, 2.0))
    polls.vm_changed(vm(1, RUNNING), now=10.0)
    assert polls.taken(4, 10.0) == {1}
    polls.vm_changed(vm(2, RUNNING), now=11.0)
    assert polls.taken(4, 11.0) == {1, 2}
    assert polls.taken(4, 12.1) == {1, 2}  # VM 1's last poll (due at 12): then forgotten
    assert polls.taken(4, 13.0) == {2}
    assert polls.taken(4, 13.0) == frozenset() and not polls.due(4, 1000.0)
    assert polls.taken(5, 13.0) == frozenset()
    polls.vm_changed(vm(3, RUNNING), now=20.0)
    polls.forget_host(4)
    assert polls.taken(4, 20.0) == frozenset()


def test_each_host_gets_the_delays_its_driver_asks_for() -> None:
    delays = {4: (0.0,), 5: (0.0, 2.0)}
    polls = FreshPolls(delays_of=delays.__getitem__)
    polls.vm_changed(vm(1, RUNNING, host_id=4), now=10.0)
    polls.vm_changed(vm(2, RUNNING, host_id=5), now=10.0)
    assert polls.taken(4, 10.0) == {1} and polls.taken(5, 10.0) == {2}
    assert not polls.due(4, 1000.0)  # a driver whose first poll knows all: polled once
    assert polls.due(5, 12.0) and polls.taken(5, 12.0) == {2}
    assert not polls.due(5, 1000.0)


def test_watch_reads_committed_changes_from_the_bus() -> None:
    async def scenario() -> list[bool]:
        bus = EventBus()
        polls = FreshPolls(delays=(0.0,))
        woken = asyncio.Event()
        watcher = asyncio.create_task(polls.watch(bus, lambda: 50.0, woken.set))
        await asyncio.sleep(0)
        bus.publish("host", 4, {"id": 4})
        bus.publish("vm", 7, vm(7, BOOT))
        bus.publish("vm", 7, vm(7, RUNNING))
        await asyncio.wait_for(woken.wait(), timeout=5)
        seen = [polls.due(4, 50.0), polls.due(3, 50.0)]
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        seen.append(bus.subscribers == 0)
        return seen

    assert asyncio.run(scenario()) == [True, False, True]

"""The placement timeline's reading of VM changes: local, burst, recalled, failed."""

from __future__ import annotations

import asyncio

from cloudburst.events import Change, EventBus
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.template import Template
from cloudburst.web.timeline import Timeline


def _host(host_id: int, name: str, cloud: bool) -> HostRecord:
    template = Template()
    if cloud:
        template.set("PUBLIC_CLOUD", "YES")
        template.set("HYPERVISOR", "ec2")
    return HostRecord(id=host_id, name=name, state=HostState.MONITORED,
                      prev_state=HostState.MONITORED, im_mad="x", vm_mad="x", tm_mad="dummy",
                      vn_mad="dummy", cluster_id=0, template=template, last_mon_time=1,
                      version=1)


def _vm(vm_id: int, state: VmState, lcm: LcmState, prev_state: VmState, prev_lcm: LcmState,
        host_id: int | None) -> Change:
    data = {"id": vm_id, "name": f"one-{vm_id}", "uid": 0, "gid": 0, "state": int(state),
            "lcm_state": int(lcm), "prev_state": int(prev_state),
            "prev_lcm_state": int(prev_lcm), "host_id": host_id, "error": ""}
    return Change(vm_id, "vm", vm_id, data, 0.0)


def test_changes_become_local_burst_recalled_and_failed_entries() -> None:
    async def scenario() -> None:
        async def hosts() -> list[HostRecord]:
            return [_host(1, "kvm-1", False), _host(2, "aws", True)]

        timeline = Timeline(EventBus(), hosts)
        await timeline.reload_hosts()
        active, pending = VmState.ACTIVE, VmState.PENDING
        local = timeline.observe(_vm(1, active, LcmState.BOOT, active, LcmState.PROLOG, 1))
        burst = timeline.observe(_vm(2, active, LcmState.BOOT, active, LcmState.PROLOG, 2))
        recalled = timeline.observe(_vm(2, pending, LcmState.LCM_INIT, active, LcmState.BOOT,
                                        None))
        failed = timeline.observe(_vm(3, active, LcmState.BOOT_FAILURE, active, LcmState.BOOT, 1))
        running = timeline.observe(_vm(1, active, LcmState.RUNNING, active, LcmState.BOOT, 1))
        assert local is not None and (local["kind"], local["host"]) == ("local", "kvm-1")
        assert burst is not None and (burst["kind"], burst["host"]) == ("burst", "aws")
        assert recalled is not None and recalled["kind"] == "recalled"
        assert failed is not None and failed["kind"] == "failed"
        assert running is None

        # A site learnt from a host change counts from then on.
        timeline.observe(Change(9, "host", 5, {"name": "gcp", "public_cloud": True}, 0.0))
        later = timeline.observe(_vm(4, active, LcmState.BOOT, active, LcmState.PROLOG, 5))
        assert later is not None and (later["kind"], later["host"]) == ("burst", "gcp")
        timeline.observe(Change(10, "host", 5, {"name": "gcp", "removed": True}, 0.0))
        assert 5 not in timeline.hosts

    asyncio.run(scenario())


def test_resyncs_in_a_burst_reload_the_hosts_at_most_once_per_pause() -> None:
    """A queue overflowing again and again (a burst) reloads the host pool once per pause,
    not once per overflow; host changes delivered meanwhile still count."""
    async def scenario() -> None:
        loaded: list[float] = []

        async def hosts() -> list[HostRecord]:
            loaded.append(asyncio.get_running_loop().time())
            return [_host(1, "kvm-1", False)]

        bus = EventBus()
        timeline = Timeline(bus, hosts, reload_pause=0.5)
        await timeline.start()
        try:
            for _ in range(3):  # three overflows, each a Resync, within the pause
                bus.resync()
                await asyncio.sleep(0.05)
            bus.deliver("host", 7, {"name": "aws", "public_cloud": True})
            await asyncio.sleep(0.05)
            assert timeline.hosts.get(7) == ("aws", True)
            assert len(loaded) == 1  # at start only: the reload waits for the pause
            await asyncio.sleep(0.7)
            assert len(loaded) == 2  # one reload for the three overflows
            assert loaded[1] - loaded[0] >= 0.5
            await asyncio.sleep(0.6)
            assert len(loaded) == 2  # nothing lost since: no other reload
        finally:
            await timeline.stop()

    asyncio.run(scenario())

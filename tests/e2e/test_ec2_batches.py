"""Batched EC2 launches survive a SIGKILL at any moment: exactly one instance per VM.

A real daemon (subprocess) bursts 40 VMs of one template to one ``moto_server``
behind the counting proxy, with AWS's default limits enforced client-side, so
the VMs go out in a few ``RunInstances`` calls of many instances each. The
proxy holds every ``RunInstances`` for a moment, so the daemon can be killed
with calls in flight (they still land at EC2 after the kill), between calls,
or before the first. Restarted on the same store, the daemon must bind every
VM to exactly one instance, launch nothing twice and leave nothing behind.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from burst_helpers import cli, conf_text, kill, start
from daemon_fixture import RunningDaemon, stop, wait_for

from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VMS = 40
TEMPLATE = 'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair" ]\n'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as (server,):
        yield server


def running_in_store(root: Path) -> int:
    """VMs the (dead) daemon had recorded as RUNNING, read from its SQLite store."""
    with contextlib.closing(sqlite3.connect(root / "home" / "one.db")) as connection:
        return int(connection.execute(
            "SELECT COUNT(*) FROM vms WHERE state = 3 AND lcm_state = 3").fetchone()[0])


def states(daemon: RunningDaemon) -> dict[int, tuple[int, int, str]]:
    server = pyone.OneServer(daemon.url, session=daemon.session)
    return {vm.ID: (vm.STATE, vm.LCM_STATE, vm.DEPLOY_ID)
            for vm in server.vmpool.info(-2, -1, -1, -1).VM}


@pytest.mark.parametrize("moment", ["before-any-call", "first-call-in-flight",
                                    "calls-done-and-in-flight"])
def test_sigkill_during_batched_launch(tmp_path: Path, site: MotoServer, moment: str) -> None:
    site.reset()
    client = site.client()
    # Two launches at once, then one per second, at most 8 instances each:
    # 40 VMs take five calls (the daemon fills each batch), the last ones sent
    # after the first have landed, so a kill finds calls landed and in flight.
    write_ec2_etc(tmp_path, small_instances=VMS,
                  rc_extra="EC2_RATE_RUNINSTANCES=2/1\nEC2_BATCH_MAX=8\n")
    with FaultProxy(site.url) as proxy:
        # Every launch is held 1.5 s at the proxy, then reaches EC2 even if the
        # daemon that sent it is dead by then.
        proxy.set_delay("RunInstances", 1.5)
        daemon = start(tmp_path, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            server = pyone.OneServer(daemon.url, session=daemon.session)
            wait_for(lambda: server.host.info(0).STATE == 2, timeout=30)
            (tmp_path / "vm").write_text(TEMPLATE, encoding="utf-8")
            output = cli(daemon, "onevm", "submit", "-m", str(VMS), "vm").stdout
            vm_ids = [int(number) for number in re.findall(r"ID:\s*(\d+)", output)]
            assert len(vm_ids) == VMS
            if moment == "first-call-in-flight":
                wait_for(lambda: proxy.counts["RunInstances"] >= 1, timeout=60, interval=0.01)
            elif moment == "calls-done-and-in-flight":
                wait_for(lambda: len(instances_by_vm(client)) >= 1
                         and proxy.counts["RunInstances"] >= 3, timeout=60, interval=0.05)
            kill(daemon)
        finally:
            stop(daemon.process)
        sent_before = proxy.counts["RunInstances"]
        assert running_in_store(tmp_path) < VMS, "the kill came too late to test anything"
        time.sleep(2.0)  # calls the dead daemon sent land at EC2

        daemon = start(tmp_path, None, port=daemon.port)
        try:
            def all_running() -> bool:
                current = states(daemon)
                return all(current.get(vm_id, (0, 0, ""))[:2] == (3, 3) for vm_id in vm_ids)

            wait_for(all_running, timeout=120, interval=0.5)
            time.sleep(2.0)  # let any late launch land before counting
            by_vm = instances_by_vm(client)
            assert None not in by_vm, "an instance bound to no VM"
            duplicates = {vm_id: ids for vm_id, ids in by_vm.items() if len(ids) != 1}
            assert duplicates == {}
            assert sorted(by_vm) == sorted(vm_ids)
            for vm_id, (_, _, deploy_id) in states(daemon).items():
                assert by_vm[vm_id] == [deploy_id]
            # Batches, not one call per VM, before and after the kill.
            assert proxy.counts["RunInstances"] < VMS // 2, (sent_before, proxy.counts)
        finally:
            stop(daemon.process)

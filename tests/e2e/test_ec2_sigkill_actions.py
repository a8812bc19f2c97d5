"""SIGKILL of the daemon in the middle of EC2's long actions, then a restart: each action
completes, with no duplicate instance and no leak.

A real daemon (subprocess) runs three VMs on a ``moto_server`` site behind our
proxy. The proxy holds every ``StopInstances`` and ``TerminateInstances``; the
operator asks for ``onevm stop`` (save), ``onevm undeploy`` (poweroff) and
``onevm terminate`` (shutdown), and once the three calls are held in flight the
daemon is SIGKILLed. The held calls then either reach EC2 after the kill
(``lands``) or never do (``lost``). Restarted on the same store, the daemon
reads its journal and finishes each action: STOPPED and UNDEPLOYED with their
instance stopped, DONE with it terminated; moto's live instances are exactly
the live VMs' deploy ids, nothing is launched again, and the parked VMs resume
on their own instances.

``migrate``, the fourth long action, is refused by the EC2 driver before
anything starts (``tests/e2e/test_ec2_lifecycle.py``), so there is nothing to
interrupt.
"""

from __future__ import annotations

import contextlib
import re
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from burst_helpers import cli, conf_text, kill, start
from daemon_fixture import RunningDaemon, stop, wait_for

from cloudburst.model import lifecycle
from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TEMPLATE = 'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]\n'
WAIT = 120.0  # generous: moto, the proxy and two daemons share a loaded 2-core machine
RUNNING = (3, 3)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as (server,):
        yield server


def stored_positions(root: Path) -> dict[int, tuple[int, int]]:
    """Each VM's (STATE, LCM_STATE) as the dead daemon left it in its SQLite store."""
    with contextlib.closing(sqlite3.connect(root / "home" / "one.db")) as connection:
        return {int(vm_id): (int(state), int(lcm)) for vm_id, state, lcm in
                connection.execute("SELECT id, state, lcm_state FROM vms")}


def positions(daemon: RunningDaemon) -> dict[int, tuple[int, int, str]]:
    server = pyone.OneServer(daemon.url, session=daemon.session)
    return {vm.ID: (vm.STATE, vm.LCM_STATE, vm.DEPLOY_ID)
            for vm in server.vmpool.info(-2, -1, -1, -2).VM}


def states_at_ec2(moto: MotoServer, instance_ids: list[str]) -> dict[str, str]:
    reply = moto.client().describe_instances(InstanceIds=instance_ids)
    return {item["InstanceId"]: item["State"]["Name"]
            for reservation in reply["Reservations"] for item in reservation["Instances"]}


def numbers(position: lifecycle.StateKey) -> tuple[int, int]:
    return int(position[0]), int(position[1])


@pytest.mark.parametrize("call", ["lands", "lost"])
def test_sigkill_during_stop_undeploy_and_terminate(tmp_path: Path, site: MotoServer,
                                                    call: str) -> None:
    site.reset()
    write_ec2_etc(tmp_path, rc_extra="EC2_READ_TIMEOUT=30\n")
    with FaultProxy(site.url) as proxy:
        daemon = start(tmp_path, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            (tmp_path / "vm").write_text(TEMPLATE, encoding="utf-8")
            output = cli(daemon, "onevm", "submit", "-m", "3", str(tmp_path / "vm")).stdout
            stopped, undeployed, terminated = (
                int(number) for number in re.findall(r"ID:\s*(\d+)", output))
            wait_for(lambda: all(positions(daemon).get(vm_id, (0, 0))[:2] == RUNNING
                                 for vm_id in (stopped, undeployed, terminated)),
                     timeout=WAIT, interval=0.2)
            deploy_ids = {vm_id: found[2] for vm_id, found in positions(daemon).items()}
            launched = proxy.counts["RunInstances"]
            proxy.hold("StopInstances")
            proxy.hold("TerminateInstances")
            cli(daemon, "onevm", "stop", str(stopped))
            cli(daemon, "onevm", "undeploy", str(undeployed))
            cli(daemon, "onevm", "terminate", str(terminated))
            wait_for(lambda: proxy.counts["StopInstances"] >= 2
                     and proxy.counts["TerminateInstances"] >= 1, timeout=WAIT, interval=0.05)
            kill(daemon)
        finally:
            stop(daemon.process)

        # The kill came with the three actions under way, their calls in flight.
        left = stored_positions(tmp_path)
        assert (left[stopped], left[undeployed], left[terminated]) == (
            numbers(lifecycle.SAVE_STOP), numbers(lifecycle.SHUTDOWN_UNDEPLOY),
            numbers(lifecycle.SHUTDOWN))
        ids = [deploy_ids[stopped], deploy_ids[undeployed], deploy_ids[terminated]]
        proxy.release("StopInstances", forward=call == "lands")
        proxy.release("TerminateInstances", forward=call == "lands")
        if call == "lands":
            wait_for(lambda: list(states_at_ec2(site, ids).values()).count("running") == 0,
                     timeout=WAIT, interval=0.2)
        else:
            assert set(states_at_ec2(site, ids).values()) == {"running"}

        daemon = start(tmp_path, None, port=daemon.port)
        try:
            expected = {stopped: numbers(lifecycle.STOPPED),
                        undeployed: numbers(lifecycle.UNDEPLOYED),
                        terminated: numbers(lifecycle.DONE)}
            wait_for(lambda: {vm_id: found[:2] for vm_id, found in positions(daemon).items()}
                     == expected, timeout=WAIT, interval=0.2)
            assert states_at_ec2(site, ids) == {
                deploy_ids[stopped]: "stopped", deploy_ids[undeployed]: "stopped",
                deploy_ids[terminated]: "terminated"}
            # No duplicate, no leak, nothing launched again.
            assert instances_by_vm(site.client()) == {stopped: [deploy_ids[stopped]],
                                                      undeployed: [deploy_ids[undeployed]]}
            assert proxy.counts["RunInstances"] == launched

            # Both parked VMs come back on their own instances.
            cli(daemon, "onevm", "resume", str(stopped))
            cli(daemon, "onevm", "resume", str(undeployed))
            wait_for(lambda: all(positions(daemon)[vm_id] == (*RUNNING, deploy_ids[vm_id])
                                 for vm_id in (stopped, undeployed)),
                     timeout=WAIT, interval=0.2)
            assert states_at_ec2(site, ids[:2]) == {deploy_ids[stopped]: "running",
                                                    deploy_ids[undeployed]: "running"}
            assert instances_by_vm(site.client()) == {stopped: [deploy_ids[stopped]],
                                                      undeployed: [deploy_ids[undeployed]]}
            assert proxy.counts["RunInstances"] == launched
        finally:
            stop(daemon.process)


def test_sigkill_during_resize_runs_it_again(tmp_path: Path, site: MotoServer) -> None:
    """A powered-off VM's resize killed with its ModifyInstanceAttribute in flight (and
    lost): the restarted daemon runs it again, so the instance type matches the
    capacity the VM has."""
    site.reset()
    write_ec2_etc(tmp_path, rc_extra="EC2_READ_TIMEOUT=30\n")
    (tmp_path / "home" / "etc" / "im_ec2" / "im_ec2.conf").write_text(
        "INSTANCES_T3_MICRO=4\nINSTANCES_T3_MEDIUM=4\n", encoding="utf-8")
    (tmp_path / "home" / "etc" / "vmm_ec2" / "vmm_ec2.conf").write_text(
        "<TEMPLATE><EC2/></TEMPLATE>\n", encoding="utf-8")
    with FaultProxy(site.url) as proxy:
        daemon = start(tmp_path, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            server = pyone.OneServer(daemon.url, session=daemon.session)
            wait_for(lambda: "t3.medium:2:4096" in str(
                server.host.info(0).TEMPLATE.get("INSTANCE_TYPES", "")), timeout=WAIT)
            (tmp_path / "vm").write_text(TEMPLATE, encoding="utf-8")
            vm_id = int(cli(daemon, "onevm", "create", str(tmp_path / "vm")).stdout
                        .split(":")[-1])
            wait_for(lambda: positions(daemon)[vm_id][:2] == RUNNING, timeout=WAIT,
                     interval=0.2)
            deploy_id = positions(daemon)[vm_id][2]
            cli(daemon, "onevm", "poweroff", str(vm_id))
            wait_for(lambda: positions(daemon)[vm_id][:2] == (8, 0), timeout=WAIT,
                     interval=0.2)
            proxy.hold("ModifyInstanceAttribute")
            cli(daemon, "onevm", "resize", str(vm_id), "--cpu", "2", "--memory", "3072")
            wait_for(lambda: proxy.counts["ModifyInstanceAttribute"] >= 1, timeout=WAIT,
                     interval=0.05)
            kill(daemon)
        finally:
            stop(daemon.process)
        proxy.release("ModifyInstanceAttribute", forward=False)
        assert states_at_ec2(site, [deploy_id]) == {deploy_id: "stopped"}
        assert site.client().describe_instances(InstanceIds=[deploy_id])[
            "Reservations"][0]["Instances"][0]["InstanceType"] == "t3.micro"

        daemon = start(tmp_path, None, port=daemon.port)
        try:
            wait_for(lambda: site.client().describe_instances(InstanceIds=[deploy_id])[
                "Reservations"][0]["Instances"][0]["InstanceType"] == "t3.medium",
                timeout=WAIT, interval=0.2)
            server = pyone.OneServer(daemon.url, session=daemon.session)
            vm = server.vm.info(vm_id)
            assert (vm.STATE, vm.TEMPLATE["CPU"], vm.TEMPLATE["MEMORY"]) == (8, "2", "3072")
            log = (tmp_path / "home" / "vms" / str(vm_id) / "vm.log").read_text()
            assert "Daemon restarted during resize; running it again" in log
            cli(daemon, "onevm", "resume", str(vm_id))
            wait_for(lambda: positions(daemon)[vm_id] == (*RUNNING, deploy_id), timeout=WAIT,
                     interval=0.2)
            assert instances_by_vm(site.client()) == {vm_id: [deploy_id]}
        finally:
            stop(daemon.process)

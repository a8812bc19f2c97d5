"""The operator's VM actions on an EC2 host, through pyone and our CLI, against the real
daemon and a ``moto_server`` site (behind the counting proxy).

Each action is checked three ways: the VM's state, its history record (the 6.x
``ACTION`` code), and the instance as moto records it (state, type, id), with
the EC2 calls it cost. suspend and stop stop the instance and resume starts the
same one; resize (powered off or undeployed) changes the instance type to the
cheapest the site offers that fits; migrate is refused in one line; and at the
end moto's live instances are exactly the VM pool's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyone
import pytest
from burst_helpers import cli, conf_text, start
from daemon_fixture import RunningDaemon, stop, wait_for

from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_rc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

#: The site offers three types (sizes from moto's catalogue, prices from the shipped table):
#: t3.micro 2 VCPU 1 GB $0.0104, t3.medium 2 VCPU 4 GB $0.0416, c5.xlarge 4 VCPU 8 GB $0.17.
IM_CONF = "INSTANCES_T3_MICRO=4\nINSTANCES_T3_MEDIUM=4\nINSTANCES_C5_XLARGE=4\n"
VM = 'CPU=1\nMEMORY=512\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]\n'
RUNNING = (3, 3)
WAIT = 90.0  # generous: a loaded 2-core machine runs moto, the daemon and the proxy


@dataclass
class Site:
    daemon: RunningDaemon
    one: pyone.OneServer
    moto: MotoServer
    proxy: FaultProxy
    root: Path


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("ec2-lifecycle")
    etc = root / "home" / "etc"
    (etc / "im_ec2").mkdir(parents=True)
    (etc / "vmm_ec2").mkdir(parents=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text(IM_CONF, encoding="utf-8")
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text("<TEMPLATE><EC2/></TEMPLATE>\n",
                                                  encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc")
    with moto_servers(1, root) as (moto,), FaultProxy(moto.url) as proxy:
        daemon = start(root, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url),
                                       ORPHAN_GRACE_PERIOD="2"))
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            one = pyone.OneServer(daemon.url, session=daemon.session)
            wait_for(lambda: "c5.xlarge:4:8192" in str(
                one.host.info(0).TEMPLATE.get("INSTANCE_TYPES", "")), timeout=WAIT)
            yield Site(daemon, one, moto, proxy, root)
        finally:
            stop(daemon.process)


def position(site: Site, vm_id: int) -> tuple[int, int]:
    vm = site.one.vm.info(vm_id)
    return vm.STATE, vm.LCM_STATE


def reach(site: Site, vm_id: int, state: tuple[int, int]) -> Any:
    wait_for(lambda: position(site, vm_id) == state, timeout=WAIT, interval=0.2)
    return site.one.vm.info(vm_id)


def history(vm: Any) -> list[Any]:
    records = vm.HISTORY_RECORDS.HISTORY
    return list(records) if isinstance(records, list) else [records]


def instance(site: Site, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = site.moto.client().describe_instances(
        InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    return found


def second_host(site: Site) -> int:
    """The id of ``ec2b``, a second host of the same driver, created and monitored on first
    use (tests of this module may run apart: each asks for what it needs)."""
    def monitored() -> int | None:
        return next((host.ID for host in site.one.hostpool.info().HOST
                     if host.NAME == "ec2b" and host.STATE == 2), None)

    if not any(host.NAME == "ec2b" for host in site.one.hostpool.info().HOST):
        cli(site.daemon, "onehost", "create", "ec2b", "im_ec2", "vmm_ec2", "tm_dummy")
    else:
        cli(site.daemon, "onehost", "enable", "ec2b")
    found: int = wait_for(monitored, timeout=WAIT)
    return found


def new_vm(site: Site) -> tuple[int, str]:
    (site.root / "vm").write_text(VM, encoding="utf-8")
    vm_id = int(cli(site.daemon, "onevm", "create", str(site.root / "vm")).stdout
                .split(":")[-1])
    deploy_id = str(reach(site, vm_id, RUNNING).DEPLOY_ID)
    return vm_id, deploy_id


def test_suspend_stop_and_resume_stop_and_start_the_same_instance(site: Site) -> None:
    vm_id, deploy_id = new_vm(site)
    assert instance(site, deploy_id)["InstanceType"] == "t3.micro"
    site.proxy.reset_counts()

    # suspend (CLI): the instance is stopped; the VM stays on its host.
    cli(site.daemon, "onevm", "suspend", str(vm_id))
    vm = reach(site, vm_id, (5, 0))
    assert int(history(vm)[-1].ACTION) == 10
    assert instance(site, deploy_id)["State"]["Name"] == "stopped"
    # resume (pyone): the same instance starts again.
    site.one.vm.action("resume", vm_id)
    vm = reach(site, vm_id, RUNNING)
    assert (vm.DEPLOY_ID, int(history(vm)[-1].ACTION)) == (deploy_id, 11)
    assert instance(site, deploy_id)["State"]["Name"] == "running"

    # stop (pyone): stopped instance, the stay on the host closes.
    site.one.vm.action("stop", vm_id)
    vm = reach(site, vm_id, (4, 0))
    assert len(history(vm)) == 1 and int(history(vm)[-1].ACTION) == 9
    assert int(history(vm)[-1].ETIME) > 0
    assert instance(site, deploy_id)["State"]["Name"] == "stopped"
    # resume (CLI): the scheduler places it again and the same instance starts.
    cli(site.daemon, "onevm", "resume", str(vm_id))
    vm = reach(site, vm_id, RUNNING)
    assert deploy_id == vm.DEPLOY_ID
    assert [record.HOSTNAME for record in history(vm)] == ["ec2", "ec2"]
    assert instance(site, deploy_id)["State"]["Name"] == "running"

    counts = site.proxy.counts
    assert (counts["StopInstances"], counts["StartInstances"], counts["RunInstances"]) == (
        2, 2, 0)
    assert "ACTIVE/SAVE_SUSPEND" in (site.daemon.home / "vms" / str(vm_id) / "vm.log"
                                     ).read_text()
    cli(site.daemon, "onevm", "terminate", "--hard", str(vm_id))
    reach(site, vm_id, (6, 0))
    assert instance(site, deploy_id)["State"]["Name"] == "terminated"


def test_resize_changes_the_instance_type_to_the_cheapest_that_fits(site: Site) -> None:
    vm_id, deploy_id = new_vm(site)
    cli(site.daemon, "onevm", "poweroff", str(vm_id))
    reach(site, vm_id, (8, 0))
    site.proxy.reset_counts()

    # CLI: 2 CPU, 3 GB -> t3.medium.
    cli(site.daemon, "onevm", "resize", str(vm_id), "--cpu", "2", "--memory", "3072")
    wait_for(lambda: instance(site, deploy_id)["InstanceType"] == "t3.medium", timeout=WAIT)
    vm = reach(site, vm_id, (8, 0))
    assert (vm.TEMPLATE["CPU"], vm.TEMPLATE["MEMORY"]) == ("2", "3072")
    assert int(history(vm)[-1].ACTION) == 35
    assert site.proxy.counts["ModifyInstanceAttribute"] == 1

    # pyone: 4 VCPU, 8 GB -> c5.xlarge.
    site.one.vm.resize(vm_id, "VCPU=4\nMEMORY=8192", False)
    wait_for(lambda: instance(site, deploy_id)["InstanceType"] == "c5.xlarge", timeout=WAIT)

    # Nothing fits 64 GB: refused by the driver, the VM keeps its capacity, one line.
    site.one.vm.resize(vm_id, "MEMORY=65536", False)
    vm = wait_for(lambda: (v := site.one.vm.info(vm_id)).USER_TEMPLATE.get("ERROR")
                  and v.TEMPLATE["MEMORY"] == "8192" and v, timeout=WAIT)
    error = vm.USER_TEMPLATE["ERROR"]
    assert error.startswith("Error resizing VM: VM ") and "no instance type offered at ec2 " \
        "fits 4 VCPU and 65536 MB" in error and "\n" not in error, error
    assert position(site, vm_id) == (8, 0)
    assert instance(site, deploy_id)["InstanceType"] == "c5.xlarge"

    # resume: the resized instance runs and its monitoring says so.
    cli(site.daemon, "onevm", "resume", str(vm_id))
    reach(site, vm_id, RUNNING)
    wait_for(lambda: re.search(r"AWS_INSTANCE_TYPE\W+c5\.xlarge", cli(
        site.daemon, "onevm", "show", str(vm_id)).stdout), timeout=WAIT)

    # undeployed: resized too (back down to t3.micro), then resumed in place.
    cli(site.daemon, "onevm", "undeploy", str(vm_id))
    reach(site, vm_id, (9, 0))
    assert instance(site, deploy_id)["State"]["Name"] == "stopped"
    cli(site.daemon, "onevm", "resize", str(vm_id), "--vcpu", "1", "--cpu", "1",
        "--memory", "1024")
    wait_for(lambda: instance(site, deploy_id)["InstanceType"] == "t3.micro", timeout=WAIT)
    cli(site.daemon, "onevm", "resume", str(vm_id))
    vm = reach(site, vm_id, RUNNING)
    assert deploy_id == vm.DEPLOY_ID
    assert instance(site, deploy_id)["State"]["Name"] == "running"
    assert site.proxy.counts["ModifyInstanceAttribute"] == 3
    assert site.proxy.counts["RunInstances"] == 0
    cli(site.daemon, "onevm", "terminate", "--hard", str(vm_id))
    reach(site, vm_id, (6, 0))


def test_migrate_is_refused_in_one_line_and_nothing_leaks(site: Site) -> None:
    vm_id, deploy_id = new_vm(site)
    other = second_host(site)
    refused = cli(site.daemon, "onevm", "migrate", str(vm_id), str(other), check=False)
    assert refused.returncode != 0
    line = 'Action "migrate" is not supported by driver vmm_ec2 of host ec2'
    assert line in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, \
        refused.stderr
    with pytest.raises(pyone.OneException, match=line.replace('"migrate"', '"migrate-live"')):
        site.one.vm.migrate(vm_id, other, True, False, -1, 0)  # live
    assert position(site, vm_id) == RUNNING
    assert instance(site, deploy_id)["State"]["Name"] == "running"
    cli(site.daemon, "onehost", "disable", "ec2b")

    # No duplicate, no leak: moto's live instances are exactly the live VMs' deploy ids.
    pool = {vm.ID: vm.DEPLOY_ID for vm in site.one.vmpool.info(-2, -1, -1, -1).VM}
    assert instances_by_vm(site.moto.client()) == {vm_id: [pool[vm_id]] for vm_id in pool}


def test_a_stopped_vm_held_and_deployed_on_the_other_host_keeps_its_instance(site: Site
                                                                             ) -> None:
    """A parked VM that was held after its resume comes back with its own instance
    (it used to be deployed afresh, its stopped instance left behind), on the other
    host of the driver; the instance is re-tagged with that host, so the sweep of its
    first host (orphans terminated after 2 s here) leaves it alone."""
    second_host(site)
    cli(site.daemon, "onehost", "disable", "ec2b")
    vm_id, deploy_id = new_vm(site)  # on ec2: ec2b is disabled
    hosts = {host.NAME: host.ID for host in site.one.hostpool.info().HOST}
    cli(site.daemon, "onevm", "stop", str(vm_id))
    reach(site, vm_id, (4, 0))
    cli(site.daemon, "onehost", "disable", "ec2")
    cli(site.daemon, "onevm", "resume", str(vm_id))
    reach(site, vm_id, (1, 0))  # PENDING: no enabled host
    cli(site.daemon, "onevm", "hold", str(vm_id))
    reach(site, vm_id, (2, 0))
    cli(site.daemon, "onehost", "enable", "ec2b")
    launched = site.proxy.counts["RunInstances"]
    cli(site.daemon, "onevm", "deploy", str(vm_id), "ec2b")
    vm = reach(site, vm_id, RUNNING)
    assert (deploy_id, "ec2b") == (vm.DEPLOY_ID, history(vm)[-1].HOSTNAME)
    assert site.proxy.counts["RunInstances"] == launched
    tags = {tag["Key"]: tag["Value"] for tag in instance(site, deploy_id)["Tags"]}
    assert (tags["cloudburst:host-id"], tags["cloudburst:host"]) == (str(hosts["ec2b"]), "ec2b")

    # A canary orphan of ec2's: once ec2's sweep has terminated it, the sweep has run
    # past the grace period, and the moved instance must still run.
    cli(site.daemon, "onehost", "enable", "ec2")
    canary = site.moto.client().run_instances(
        ImageId="ami-00bafcb5", MinCount=1, MaxCount=1, TagSpecifications=[{
            "ResourceType": "instance", "Tags": [
                {"Key": "cloudburst:installation", "Value": tags["cloudburst:installation"]},
                {"Key": "cloudburst:host-id", "Value": str(hosts["ec2"])},
                {"Key": "cloudburst:vm-id", "Value": "9999"}]}])["Instances"][0]["InstanceId"]
    wait_for(lambda: instance(site, canary)["State"]["Name"] == "terminated", timeout=WAIT)
    assert instance(site, deploy_id)["State"]["Name"] == "running"
    assert position(site, vm_id) == RUNNING
    pool = {vm.ID: vm.DEPLOY_ID for vm in site.one.vmpool.info(-2, -1, -1, -1).VM}
    assert instances_by_vm(site.moto.client()) == {vm_id: [pool[vm_id]] for vm_id in pool}

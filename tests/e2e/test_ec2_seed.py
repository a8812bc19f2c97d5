"""The seed "Amazon EC2 Driver 3.0", word for word, against the real daemon and moto.

The daemon runs as a subprocess (``python -m cloudburst.daemon.main -f``) with
the seed's ``oned.conf`` lines, ``im_ec2.conf``, ``vmm_ec2.conf`` and a
``vmm_ec2rc`` holding fake keys; EC2 is one or two real ``moto_server``
processes (``-u http://127.0.0.1:<port>``). The operator's commands are the
CLI modules with ``ONE_XMLRPC`` and ``ONE_AUTH`` set. There is no local host,
so the seed's VM (which has a local part too) goes to EC2.

Daemons get one-second timers through ``burst_helpers.conf_text`` (``oned.conf``
keeps the first value of a name, so timers cannot be appended).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyone
import pytest
from burst_helpers import conf_text, kill, running_daemon, start
from daemon_fixture import RunningDaemon, daemon_environment, stop, wait_for

from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, SEED_EC2_TEMPLATE, SEED_VMM_EC2_CONF, ec2_vm_mad

pytestmark = pytest.mark.e2e

#: The ``im_ec2.conf`` these tests count on: 4 small and 1 large instances (the
#: seed's own, ``seed_templates.SEED_IM_EC2_CONF``, allows 5 small ones).
SEED_IM_EC2_CONF = """# Max number of instances that can be launched into EC2

SMALL_INSTANCES=4
LARGE_INSTANCES=1
EXTRALARGE_INSTANCES=
"""


def cli(daemon: RunningDaemon, tool: str, *args: str) -> str:
    """``python -m cloudburst.cli.<tool> args`` with ``ONE_XMLRPC`` and ``ONE_AUTH``."""
    env = daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file)})
    result = subprocess.run([sys.executable, "-m", f"cloudburst.cli.{tool}", *args],
                            capture_output=True, text=True, env=env, timeout=60,
                            cwd=daemon.home.parent)
    if result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result.stdout


def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


def monitored(daemon: RunningDaemon, host_id: int) -> Any:
    server = one(daemon)
    return wait_for(lambda: (host := server.host.info(host_id)).STATE == 2 and host,
                    timeout=30)


def vm_info(daemon: RunningDaemon, vm_id: int) -> Any:
    return one(daemon).vm.info(vm_id)


def wait_running(daemon: RunningDaemon, vm_id: int, timeout: float = 40) -> Any:
    def check() -> Any:
        vm = vm_info(daemon, vm_id)
        if vm.STATE == 3 and vm.LCM_STATE == 3:
            return vm
        if vm.STATE in (7, 8):  # FAILED / POWEROFF: fail fast with the reason
            raise AssertionError(f"VM {vm_id} in {vm.STATE}/{vm.LCM_STATE}: "
                                 f"{vm.USER_TEMPLATE.get('ERROR')}")
        return None

    try:
        return wait_for(check, timeout=timeout)
    except TimeoutError as exc:
        raise AssertionError(f"VM {vm_id} did not reach RUNNING: "
                             f"{vm_info(daemon, vm_id).USER_TEMPLATE}\n"
                             f"{daemon.output()[-3000:]}") from exc


def list_row(daemon: RunningDaemon, vm_id: int) -> str:
    for line in cli(daemon, "onevm", "list").splitlines():
        if line.split() and line.split()[0] == str(vm_id):
            return line
    return ""


def submitted(output: str) -> list[int]:
    return [int(number) for number in re.findall(r"ID:\s*(\d+)", output)]


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MotoServer]]:
    with moto_servers(2, tmp_path_factory.mktemp("moto")) as servers:
        yield servers


@pytest.fixture
def fresh(sites: list[MotoServer]) -> list[MotoServer]:
    for server in sites:
        server.reset()
    return sites


def test_seed_walkthrough_and_capacity_limit(tmp_path: Path, fresh: list[MotoServer]) -> None:
    site = fresh[0]
    client = site.client()
    # The seed's elastic IP must belong to the account.
    client.allocate_address(Domain="vpc", Address="75.101.155.97")
    write_ec2_etc(tmp_path, im_conf=SEED_IM_EC2_CONF, vmm_conf=SEED_VMM_EC2_CONF)
    conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", site.url))
    with running_daemon(tmp_path, conf) as daemon:
        assert "ID: 0" in cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2",
                              "tm_dummy")
        host = monitored(daemon, 0)
        assert host.TEMPLATE["HYPERVISOR"] == "ec2"
        assert host.TEMPLATE["PUBLIC_CLOUD"] == "YES"
        assert host.HOST_SHARE.MAX_CPU == 4 * 100 + 400
        memory_kb = round(4 * 1.7 * 1048576) + round(7.5 * 1048576)  # 4 small + 1 large
        assert memory_kb == host.HOST_SHARE.MAX_MEM

        (tmp_path / "ec2template").write_text(SEED_EC2_TEMPLATE, encoding="utf-8")
        [vm_id] = submitted(cli(daemon, "onevm", "submit", "ec2template"))
        assert vm_id == 0
        vm = wait_running(daemon, vm_id)
        row = list_row(daemon, vm_id)
        assert row.split()[1:5] == ["oneadmin", "oneadmin", "one-0", "runn"], row
        assert row.split()[-3] == "ec2", row
        assert re.fullmatch(r"i-[0-9a-f]+", vm.DEPLOY_ID)

        # The poll that sees the instance running associates the elastic IP.
        show = wait_for(lambda: (text := cli(daemon, "onevm", "show", "0"))
                        and "IP=ec2-75-101-155-97.compute-1.amazonaws.com" in text and text,
                        timeout=20)
        assert re.search(r"DEPLOY ID\s*:\s*i-[0-9a-f]+", show), show
        assert "PRIVATE_IP=" in show
        [address] = client.describe_addresses(PublicIps=["75.101.155.97"])["Addresses"]
        assert address["InstanceId"] == vm.DEPLOY_ID
        instance = client.describe_instances(InstanceIds=[vm.DEPLOY_ID])[
            "Reservations"][0]["Instances"][0]
        assert [group["GroupName"] for group in instance["SecurityGroups"]] == [
            f"cloudburst-{tag(instance, 'cloudburst:installation')}-tcp-22"]
        assert (instance["ImageId"], instance["KeyName"], instance["InstanceType"]) == (
            "ami-00bafcb5", "gsg-keypair", "m1.small")

        # Capacity: SMALL_INSTANCES=4, so of five m1.small VMs one waits.
        small = tmp_path / "small"
        small.write_text('CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", '
                         'KEYPAIR="gsg-keypair", INSTANCETYPE=m1.small ]\n', encoding="utf-8")
        more = submitted(cli(daemon, "onevm", "submit", "-m", "4", str(small)))
        assert len(more) == 4
        for other in more[:3]:
            wait_running(daemon, other)
        waiting = more[3]
        time.sleep(3)  # several scheduler passes and polls
        vm = vm_info(daemon, waiting)
        assert vm.STATE == 1, "the fifth m1.small must stay PENDING"
        assert "capacity" in vm.USER_TEMPLATE.get("SCHED_MESSAGE", "").lower()
        assert " pend " in f" {list_row(daemon, waiting)} "
        assert len(instances_by_vm(client)) == 4

        cli(daemon, "onevm", "terminate", "0")
        wait_running(daemon, waiting)
        assert vm_info(daemon, 0).STATE == 6  # DONE
        assert client.describe_instances(InstanceIds=[instance["InstanceId"]])[
            "Reservations"][0]["Instances"][0]["State"]["Name"] == "terminated"
        [address] = client.describe_addresses(PublicIps=["75.101.155.97"])["Addresses"]
        assert not address.get("InstanceId")
        # The security group of AUTHORIZED_PORTS goes with its last VM.
        wait_for(lambda: not client.describe_security_groups(Filters=[
            {"Name": "tag:cloudburst:managed", "Values": ["security-group"]}])[
            "SecurityGroups"], timeout=20)
        assert sorted(instances_by_vm(client)) == sorted(more)


def tag(instance: dict[str, Any], key: str) -> str:
    return next(t["Value"] for t in instance.get("Tags", []) if t["Key"] == key)


def test_multi_site_cloud_sections(tmp_path: Path, fresh: list[MotoServer]) -> None:
    west, east = fresh
    write_ec2_etc(tmp_path, im_conf=SEED_IM_EC2_CONF, vmm_conf=(
        "<TEMPLATE>\n  <EC2>\n    <KEYPAIR>gsg-keypair</KEYPAIR>\n"
        "    <INSTANCETYPE>m1.small</INSTANCETYPE>\n  </EC2>\n</TEMPLATE>\n"))
    conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_amazon_eu_west", west.url)
                     + ec2_vm_mad("vmm_amazon_eu_east", east.url))
    template = ('CPU=0.5\nMEMORY=128\n'
                'EC2 = [ CLOUD="ec2_eu_west",\n        AMI="ami-0022c769",\n'
                '        AUTHORIZED_PORTS="22" ]\n'
                'EC2 = [ CLOUD="ec2_eu_east",\n        AMI="ami-03324cc9",\n'
                '        AUTHORIZED_PORTS="22" ]\n')
    with running_daemon(tmp_path, conf) as daemon:
        cli(daemon, "onehost", "create", "ec2_eu_west", "im_ec2", "vmm_amazon_eu_west",
            "tm_dummy")
        cli(daemon, "onehost", "create", "ec2_eu_east", "im_ec2", "vmm_amazon_eu_east",
            "tm_dummy")
        monitored(daemon, 0)
        monitored(daemon, 1)
        (tmp_path / "both").write_text(template, encoding="utf-8")
        (tmp_path / "east").write_text(
            'CPU=0.5\nMEMORY=128\nEC2 = [ CLOUD="ec2_eu_east", AMI="ami-03324cc9" ]\n',
            encoding="utf-8")
        (tmp_path / "nowhere").write_text(
            'CPU=0.5\nMEMORY=128\nEC2 = [ CLOUD="ec2_us_east", AMI="ami-1" ]\n'
            'EC2 = [ CLOUD="ec2_ap_south", AMI="ami-2" ]\n', encoding="utf-8")
        both = submitted(cli(daemon, "onevm", "submit", "-m", "4", "both"))
        [east_only] = submitted(cli(daemon, "onevm", "submit", "east"))
        [nowhere] = submitted(cli(daemon, "onevm", "submit", "nowhere"))
        images = {"ec2_eu_west": ("ami-0022c769", west), "ec2_eu_east": ("ami-03324cc9", east)}
        used = set()
        for vm_id in [*both, east_only]:
            vm = wait_running(daemon, vm_id)
            site_name = vm.HISTORY_RECORDS.HISTORY[-1].HOSTNAME
            used.add(site_name)
            image, server = images[site_name]
            instance = server.client().describe_instances(InstanceIds=[vm.DEPLOY_ID])[
                "Reservations"][0]["Instances"][0]
            assert instance["ImageId"] == image, (vm_id, site_name)
            assert instance["KeyName"] == "gsg-keypair"
        assert used == {"ec2_eu_west", "ec2_eu_east"}
        assert vm_info(daemon, east_only).HISTORY_RECORDS.HISTORY[-1].HOSTNAME == "ec2_eu_east"
        vm = vm_info(daemon, nowhere)
        assert vm.STATE == 1
        assert "No host accepts the VM" in vm.USER_TEMPLATE.get("SCHED_MESSAGE", "")


def test_sigkill_while_deploying_50_vms(tmp_path: Path, fresh: list[MotoServer]) -> None:
    site = fresh[0]
    client = site.client()
    write_ec2_etc(tmp_path, im_conf="SMALL_INSTANCES=60\n", vmm_conf=SEED_VMM_EC2_CONF,
                  rc_extra="EC2_RATE_SCALE=10\n")
    with FaultProxy(site.url) as proxy:
        proxy.set_delay("RunInstances", 0.3)
        conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url, flags="-t 5 "))
        daemon = start(tmp_path, conf)
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            monitored(daemon, 0)
            (tmp_path / "vm").write_text(
                'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair" ]\n',
                encoding="utf-8")
            vm_ids = submitted(cli(daemon, "onevm", "submit", "-m", "50", "vm"))
            assert len(vm_ids) == 50
            # The 50 go out in a few batched calls. Killed as the first one reaches the
            # proxy, which holds it 0.3 s and then forwards it: EC2 launches a batch
            # whose answer nobody receives, the case exactly-once is about.
            wait_for(lambda: proxy.counts["RunInstances"] >= 1, timeout=60, interval=0.01)
            kill(daemon)
        finally:
            stop(daemon.process)

        daemon = start(tmp_path, None, port=daemon.port)
        try:
            server = one(daemon)

            def all_running() -> bool:
                pool = server.vmpool.info(-2, -1, -1, -1).VM
                states = {vm.ID: (vm.STATE, vm.LCM_STATE) for vm in pool}
                return all(states.get(vm_id) == (3, 3) for vm_id in vm_ids)

            wait_for(all_running, timeout=90, interval=0.5)
            time.sleep(1.5)  # let any late launch land before counting
            by_vm = instances_by_vm(client)
            assert None not in by_vm, "an instance without a VM"
            assert sorted(by_vm) == sorted(vm_ids)
            duplicates = {vm_id: ids for vm_id, ids in by_vm.items() if len(ids) != 1}
            assert duplicates == {}
            for vm in server.vmpool.info(-2, -1, -1, -1).VM:
                assert by_vm[vm.ID] == [vm.DEPLOY_ID]
        finally:
            stop(daemon.process)

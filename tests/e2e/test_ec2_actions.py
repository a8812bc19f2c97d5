"""EC2 VM actions through the real daemon and CLI: poweroff stops the instance,
resume starts the same one (moto behind the counting proxy)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyone
import pytest
from burst_helpers import cli, conf_text, start
from daemon_fixture import RunningDaemon, stop, wait_for

from ec2_sites import FaultProxy, MotoServer, moto_servers, write_rc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as (server,):
        yield server


def state_of(daemon: RunningDaemon, vm_id: int) -> Any:
    return pyone.OneServer(daemon.url, session=daemon.session).vm.info(vm_id)


def test_poweroff_and_resume_stop_and_start_the_instance(tmp_path: Path,
                                                         site: MotoServer) -> None:
    etc = tmp_path / "home" / "etc"
    (etc / "im_ec2").mkdir(parents=True)
    (etc / "vmm_ec2").mkdir(parents=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text("SMALL_INSTANCES=2\n", encoding="utf-8")
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text("<TEMPLATE><EC2/></TEMPLATE>\n",
                                                  encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc")
    with FaultProxy(site.url) as proxy:
        daemon = start(tmp_path, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            (tmp_path / "vm").write_text(
                'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]\n',
                encoding="utf-8")
            vm_id = int(cli(daemon, "onevm", "create", "vm").stdout.split(":")[-1])
            running = wait_for(lambda: (vm := state_of(daemon, vm_id)).LCM_STATE == 3 and vm,
                               timeout=60, interval=0.2)
            deploy_id = running.DEPLOY_ID
            cli(daemon, "onevm", "poweroff", str(vm_id))
            wait_for(lambda: state_of(daemon, vm_id).STATE == 8, timeout=60, interval=0.2)
            instance = site.client().describe_instances(InstanceIds=[deploy_id])
            assert instance["Reservations"][0]["Instances"][0]["State"]["Name"] == "stopped"
            cli(daemon, "onevm", "resume", str(vm_id))
            resumed = wait_for(lambda: (vm := state_of(daemon, vm_id)).LCM_STATE == 3
                               and vm.STATE == 3 and vm, timeout=60, interval=0.2)
            assert resumed.DEPLOY_ID in (deploy_id,)  # the same instance
            instance = site.client().describe_instances(InstanceIds=[deploy_id])
            assert instance["Reservations"][0]["Instances"][0]["State"]["Name"] == "running"
            assert (proxy.counts["StopInstances"], proxy.counts["StartInstances"]) == (1, 1)
            assert proxy.counts["RunInstances"] == 1
        finally:
            stop(daemon.process)

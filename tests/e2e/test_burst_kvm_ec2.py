"""Bursting from a local kvm host to EC2, through the real daemon and CLI.

One local host, ``localhost`` with the kvm drivers on libvirt's in-memory
``test:///default`` hypervisor (inside the daemon's process), sized by
``RESERVED_CPU`` to room for exactly two of the seed's VMs (``CPU = 0.5``:
1600 - 1500 = 100), and one EC2 site on a ``moto_server`` (four
``m1.small`` slots). The template is the seed's: a local part (``OS``,
``DISK``, ``NIC``) and an ``EC2`` section (without its elastic IP, which one
instance only could hold). With the default ranking the first two VMs run
locally and the next three burst to EC2; when a local VM ends, the next VM
submitted runs locally again although EC2 still has room.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pyone
import pytest
from burst_helpers import cli, conf_text, running_daemon
from daemon_fixture import RunningDaemon, wait_for

from ec2_sites import instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = pytest.mark.e2e

TEMPLATE = """CPU      = 0.5
MEMORY   = 128

OS       = [kernel="/vmlinuz",initrd= "/initrd.img",root="sda1" ]
DISK     = [source="/imges/apache.img",target="sda",readonly="no"]
NIC      = [bridge="eth0"]

EC2 = [ AMI="ami-00bafcb5",
        KEYPAIR="gsg-keypair",
        AUTHORIZED_PORTS="22",
        INSTANCETYPE=m1.small]
"""


def submit(daemon: RunningDaemon, template: Path, count: int = 1) -> list[int]:
    output = cli(daemon, "onevm", "create", str(template), "-m", str(count)).stdout
    return [int(number) for number in re.findall(r"ID:\s*(\d+)", output)]


def placed(server: Any, vm_id: int) -> tuple[str, str] | None:
    """``(host name, deploy id)`` of a RUNNING VM; fails fast on FAILED/POWEROFF."""
    vm = server.vm.info(vm_id)
    if vm.STATE in (7, 8):
        raise AssertionError(f"VM {vm_id} in {vm.STATE}/{vm.LCM_STATE}: "
                             f"{vm.USER_TEMPLATE.get('ERROR')}")
    if (vm.STATE, vm.LCM_STATE) != (3, 3):
        return None
    records = vm.HISTORY_RECORDS.HISTORY
    return records[-1].HOSTNAME, vm.DEPLOY_ID


def wait_placed(daemon: RunningDaemon, server: Any, ids: list[int]) -> dict[int, tuple[str, str]]:
    def all_running() -> dict[int, tuple[str, str]] | None:
        where = {vm_id: placed(server, vm_id) for vm_id in ids}
        return {k: v for k, v in where.items() if v} if all(where.values()) else None

    try:
        return wait_for(all_running, timeout=60, interval=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"not all of {ids} ran:\n"
                             f"{cli(daemon, 'onevm', 'list').stdout}\n"
                             f"{daemon.output()[-3000:]}") from exc


def test_local_first_then_burst_then_local_again(tmp_path: Path) -> None:
    with moto_servers(1, tmp_path) as [site]:
        client = site.client()
        write_ec2_etc(tmp_path)
        conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", site.url))
        with running_daemon(tmp_path, conf) as daemon:
            server = pyone.OneServer(daemon.url, session=daemon.session)
            assert "ID: 0" in cli(daemon, "onehost", "create", "localhost", "kvm", "kvm").stdout
            cli(daemon, "onehost", "update", "localhost", "-", "--append",
                stdin='LIBVIRT_URI = "test:///default"\nRESERVED_CPU = "1500"\n')
            assert "ID: 1" in cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2",
                                  "tm_dummy").stdout
            local = wait_for(lambda: (host := server.host.info(0)).STATE == 2
                             and host.HOST_SHARE.MAX_CPU == 100 and host, timeout=120)
            assert local.TEMPLATE["HYPERVISOR"] == "kvm"
            wait_for(lambda: server.host.info(1).STATE == 2, timeout=120)

            template = tmp_path / "burst.tpl"
            template.write_text(TEMPLATE, encoding="utf-8")
            first = submit(daemon, template, 5)
            assert len(first) == 5
            where = wait_placed(daemon, server, first)
            on_local = sorted(vm_id for vm_id, (host, _) in where.items() if host == "localhost")
            on_ec2 = sorted(vm_id for vm_id, (host, _) in where.items() if host == "ec2")
            assert (len(on_local), len(on_ec2)) == (2, 3), where
            for vm_id in on_local:
                assert where[vm_id][1] == f"one-{vm_id}"
            for vm_id in on_ec2:
                assert re.fullmatch(r"i-[0-9a-f]+", where[vm_id][1]), where
            assert sorted(vm for vm in instances_by_vm(client) if vm is not None) == on_ec2
            host = server.host.info(0)
            assert host.HOST_SHARE.RUNNING_VMS == 2
            assert host.HOST_SHARE.CPU_USAGE == 100

            cli(daemon, "onevm", "terminate", str(on_local[0]))
            wait_for(lambda: server.vm.info(on_local[0]).STATE == 6, timeout=30)
            [later] = submit(daemon, template)
            [(host_name, deploy_id)] = wait_placed(daemon, server, [later]).values()
            assert (host_name, deploy_id) == ("localhost", f"one-{later}")
            assert sorted(vm for vm in instances_by_vm(client) if vm is not None) == on_ec2

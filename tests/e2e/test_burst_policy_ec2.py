"""The burst policy on real EC2 endpoints: two ``moto_server`` sites with different
prices and a script provider, behind a local dummy host (issue 14's check).

The local host takes two VMs; the VMs then go to the cheapest site that fits: the
script provider at 0.01 an hour, then the EC2 site whose ``m1.small`` costs 0.02
(``PRICE_M1_SMALL`` on the host), then the one at 0.09, whatever the host ids.
Each VM shows the price it was placed at, and the EC2 instances are where the
placements say.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyone
import pytest
from burst_helpers import cli, conf_text, running_daemon, wait_for, write_script
from test_burst_policy import create, running_on, show

from ec2_sites import instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SCRIPT_CONF = """
IM_MAD = [ name = "im_cheapest", executable = "one_im_sh", arguments = "cheapest" ]
VM_MAD = [ name = "vmm_cheapest", executable = "one_vmm_sh", arguments = "cheapest",
           type = "xml" ]
"""
#: A local part, an EC2 section for either site and a section for the script provider.
VM = """NAME="p" CPU=1 MEMORY=128
EC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair", INSTANCETYPE="m1.small" ]
PUBLIC_CLOUD = [ TYPE="cheapest" ]
"""


def script_provider(remotes: Path) -> None:
    """One slot at 0.01 an hour."""
    write_script(remotes / "im/cheapest.d/probe", """
        #!/usr/bin/env bash
        echo PUBLIC_CLOUD=YES HYPERVISOR=cheapest TOTALCPU=100 TOTALMEMORY=1048576
        echo PRICE_PER_HOUR=0.01
        """)
    write_script(remotes / "vmm/cheapest/deploy", """
        #!/usr/bin/env bash
        echo "cheapest-$CLOUDBURST_VM_ID"
        """)
    write_script(remotes / "vmm/cheapest/poll", "#!/usr/bin/env bash\necho STATE=a\n")
    for action in ("shutdown", "cancel"):
        write_script(remotes / f"vmm/cheapest/{action}", "#!/usr/bin/env bash\nexit 0\n")


def test_local_then_the_cheapest_site_then_dearer_ones(tmp_path: Path) -> None:
    with moto_servers(2, tmp_path) as [dear_site, cheap_site]:
        write_ec2_etc(tmp_path, small_instances=2)
        conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2_dear", dear_site.url)
                         + ec2_vm_mad("vmm_ec2_cheap", cheap_site.url) + SCRIPT_CONF)
        with running_daemon(tmp_path, conf) as daemon:
            script_provider(daemon.home / "remotes")
            one = pyone.OneServer(daemon.url, session=daemon.session)
            hosts = {}
            for name, im, vmm, attributes in (
                    ("local", "dummy", "dummy", "DUMMY_TOTALCPU=200\n"),
                    ("ec2_dear", "im_ec2", "vmm_ec2_dear", 'PRICE_M1_SMALL="0.09"\n'),
                    ("ec2_cheap", "im_ec2", "vmm_ec2_cheap", 'PRICE_M1_SMALL="0.02"\n'),
                    ("cheapest", "im_cheapest", "vmm_cheapest", "")):
                out = cli(daemon, "onehost", "create", name, "-i", im, "-v", vmm).stdout
                hosts[name] = int(out.split()[-1])
                if attributes:
                    cli(daemon, "onehost", "update", name, "-", "--append", stdin=attributes)
            for name, price in (("ec2_dear", "0.09"), ("ec2_cheap", "0.02")):
                try:
                    wait_for(lambda name=name, price=price: re.search(
                        rf"\bm1\.small:\d+:\d+:{price}\b",
                        str(one.host.info(hosts[name]).TEMPLATE.get("INSTANCE_TYPES"))),
                        timeout=60)
                except TimeoutError as exc:
                    raise AssertionError(cli(daemon, "onehost", "show", name).stdout) from exc
            wait_for(lambda: int(one.host.info(hosts["cheapest"]).HOST_SHARE.TOTAL_CPU) == 100
                     and int(one.host.info(hosts["local"]).HOST_SHARE.TOTAL_CPU) == 200,
                     timeout=60)

            template = tmp_path / "vm.tpl"
            template.write_text(VM)
            ids = [create(daemon, VM) for _ in range(7)]
            placed = [running_on(one, vm_id) for vm_id in ids]
            assert placed == [hosts["local"]] * 2 + [hosts["cheapest"]] + \
                [hosts["ec2_cheap"]] * 2 + [hosts["ec2_dear"]] * 2
            prices = [show(daemon, vm_id)["PLACEMENT"].get("PRICE") for vm_id in ids]
            assert prices == ["", "", 0.01, 0.02, 0.02, 0.09, 0.09]
            assert sorted(vm for vm in instances_by_vm(cheap_site.client()) if vm is not None) \
                == ids[3:5]
            assert sorted(vm for vm in instances_by_vm(dear_site.client()) if vm is not None) \
                == ids[5:7]
            cli(daemon, "onevm", "terminate", "--hard", ",".join(map(str, ids)))
            for vm_id in ids:
                wait_for(lambda vm_id=vm_id: one.vm.info(vm_id).STATE == 6, timeout=60)

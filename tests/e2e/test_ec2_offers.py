"""The cheapest instance type that fits, through the real daemon and a ``moto_server`` site.

The site's price table (``im_ec2.conf``) and its catalogue (moto's
``DescribeInstanceTypes``) reach the host's monitoring as ``INSTANCE_TYPES``;
a VM whose EC2 section names no type is scheduled and launched as the cheapest
type that fits it, and its monitoring carries the hourly price. Bad launch
options are refused at ``onevm create`` in one line. A ``CONTEXT`` with
``$VARIABLE`` references reaches the instance's user data expanded; a spot
VM is priced at its zone's spot price.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from burst_helpers import cli, conf_text, start
from daemon_fixture import stop, wait_for

from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_rc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

IM_CONF = ("SMALL_INSTANCES=4\nINSTANCES_T3_SMALL=2\nINSTANCES_T3_MEDIUM=2\n"
           "INSTANCES_M5_LARGE=2\nPRICE_T3_MEDIUM=0.04\n")
SECTION = 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]'


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as servers:
        yield servers[0]


def test_cheapest_type_price_and_launch_checks(tmp_path: Path,
                                                          site: MotoServer) -> None:
    etc = tmp_path / "home" / "etc"
    (etc / "im_ec2").mkdir(parents=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text(IM_CONF, encoding="utf-8")
    (etc / "vmm_ec2").mkdir(parents=True)
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(
        "<TEMPLATE><EC2><INSTANCETYPE>m1.small</INSTANCETYPE></EC2></TEMPLATE>\n",
        encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc", extra="EC2_RETRY_BASE_DELAY=0.1\n")
    with FaultProxy(site.url) as proxy:
        daemon = start(tmp_path, conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            server = pyone.OneServer(daemon.url, session=daemon.session)
            cli(daemon, "onehost", "create", "ec2", "im_ec2", "vmm_ec2", "tm_dummy")
            # the catalogue corrected the static sizes (m1.small: 1740 MiB at moto)
            wait_for(lambda: "m1.small:1:1740:0.044" in cli(daemon, "onehost", "show",
                                                            "ec2").stdout, timeout=60)
            shown = cli(daemon, "onehost", "show", "ec2").stdout
            assert "t3.medium:2:4096:0.04" in shown and "m5.large:2:8192:0.096" in shown

            created = []
            for name, text in (("mid", "CPU=1.5\nMEMORY=3000"), ("huge", "CPU=16\nMEMORY=512"),
                               ("tiny", "CPU=0.5\nMEMORY=256\n"
                                        'CONTEXT = [ SET_HOSTNAME = "$NAME", ID = "vm-$VMID" ]'),
                               ("spot", "CPU=0.5\nMEMORY=256\n"
                                        'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k", MARKET="spot" ]'
                                )):
                section = "" if "EC2" in text else SECTION
                (tmp_path / name).write_text(f"{text}\n{section}\n", encoding="utf-8")
                output = cli(daemon, "onevm", "create", str(tmp_path / name)).stdout
                created.append(int(output.split(":")[-1]))
            mid, huge, tiny, spot = created

            def priced(vm_id: int) -> str | None:
                info = server.vm.info(vm_id)
                if (info.STATE, info.LCM_STATE) != (3, 3):
                    return None
                shown = cli(daemon, "onevm", "show", str(vm_id)).stdout
                return shown if "PRICE_PER_HOUR" in shown else None

            shown_mid = wait_for(lambda: priced(mid), timeout=90, interval=0.5)
            shown_tiny = wait_for(lambda: priced(tiny), timeout=90, interval=0.5)
            assert "PRICE_PER_HOUR=0.04\n" in shown_mid
            assert "AWS_INSTANCE_TYPE=t3.medium\n" in shown_mid
            assert "AWS_INSTANCE_TYPE=t3.small\n" in shown_tiny  # 0.0208 < m1.small's 0.044
            assert "PRICE_PER_HOUR=0.0208\n" in shown_tiny
            live = instances_by_vm(site.client())
            kinds = {vm_id: site.client().describe_instances(InstanceIds=ids)[
                "Reservations"][0]["Instances"][0]["InstanceType"] for vm_id, ids in live.items()}
            assert kinds == {mid: "t3.medium", tiny: "t3.small", spot: "t3.small"}
            # a spot VM costs its zone's spot price (moto's: 0.00001), in its monitoring
            # and in its stay's recorded price (onevm show's cost, what budgets count)
            shown_spot = wait_for(lambda: (lambda shown: shown if shown and re.search(
                r"PRICE PER HOUR\s*: 0\.00001\n", shown) else None)(priced(spot)),
                timeout=90, interval=0.5)
            assert "PRICE_PER_HOUR=0.00001\n" in shown_spot and "AWS_MARKET=spot\n" in shown_spot
            assert re.search(r"PRICE PER HOUR\s*: 0\.0208\n", shown_tiny)  # on-demand
            # CONTEXT's $VARIABLEs were expanded at creation: the user data has the values
            user_data = base64.b64decode(site.client().describe_instance_attribute(
                InstanceId=live[tiny][0], Attribute="userData")["UserData"]["Value"]).decode()
            assert f'"hostname": "one-{tiny}"' in user_data
            assert f"ID='vm-{tiny}'" in user_data and "$" not in user_data
            # launch options are checked at creation: one line naming each problem
            (tmp_path / "bad").write_text(
                'CPU=1\nMEMORY=128\nEC2 = [ AMI="ami-1", KEYPAIR="k", METADATA_TOKENS="v1", '
                'BLOCKDEVICEMAPPING="/dev/xvda=:0" ]\n', encoding="utf-8")
            refused = cli(daemon, "onevm", "create", str(tmp_path / "bad"), check=False)
            assert refused.returncode != 0
            lines = (refused.stdout + refused.stderr).strip().splitlines()
            assert len(lines) == 1, lines
            assert "METADATA_TOKENS 'v1' must be required" in lines[0]
            assert "BLOCKDEVICEMAPPING: /dev/xvda: size '0' must be" in lines[0]
            # nothing the site may run has 16 vCPUs: the VM waits, saying so
            info = server.vm.info(huge)
            assert info.STATE == 1
            assert "No host with enough capacity" in cli(daemon, "onevm", "show",
                                                         str(huge)).stdout
        finally:
            stop(daemon.process)
    site.reset()

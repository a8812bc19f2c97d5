"""Two cloudburst daemons on loopback: the second is the first one's partner cloud.

The partner (``b``) has one local host whose VMs run through the shipped
``example_sh`` scripts (so they report an ``IP``). The first daemon (``a``) has
one small local dummy host and a host ``partner`` driven by the ``one`` drivers,
configured by an rc file holding ``b``'s endpoint and credentials.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pyone
import pytest
from burst_helpers import RunningDaemon, cli, conf_text, kill, start, wait_for
from daemon_fixture import stop

pytestmark = pytest.mark.e2e

PARTNER_CONF = """
VM_MAD = [ name = "vmm_example_sh", executable = "one_vmm_sh",
           arguments = "-t 15 example_sh", type = "xml" ]
"""

FIRST_CONF = """
IM_MAD = [ name = "im_one", executable = "one_im_one", arguments = "one/partnerrc" ]
VM_MAD = [ name = "vmm_one", executable = "one_vmm_one",
           arguments = "-t 15 -r 6 one/partnerrc", type = "xml" ]
"""

VM_TEMPLATE = """
NAME = "burst"
CPU = 1
MEMORY = 128
PUBLIC_CLOUD = [ TYPE = "one" ]
"""

ACTIVE, RUNNING, BOOT, DONE = 3, 3, 2, 6


def start_partner(root: Path) -> RunningDaemon:
    partner = start(root / "b", conf_text(PARTNER_CONF))
    cli(partner, "onehost", "create", "node1", "-i", "dummy", "-v", "vmm_example_sh")
    return partner


def start_first(root: Path, partner: RunningDaemon, *, local_cpu: int, quota_cpu: int,
                grace: str = "600") -> RunningDaemon:
    rc = root / "a" / "home" / "etc" / "one" / "partnerrc"
    rc.parent.mkdir(parents=True)
    rc.write_text(f"# the partner cloud\nONE_XMLRPC={partner.url}\nONE_AUTH={partner.session}\n"
                  f"TOTALCPU={quota_cpu}\nTOTALMEMORY=4194304\nBOOT_TIMEOUT=60\n"
                  "POLL_INTERVAL=0.5\n")
    rc.chmod(0o600)
    first = start(root / "a", conf_text(FIRST_CONF, ORPHAN_GRACE_PERIOD=grace))
    one = pyone.OneServer(first.url, session=first.session)
    cli(first, "onehost", "create", "local1", "dummy", "dummy", "tm_dummy")
    cli(first, "onehost", "update", "local1", "-", "--append",
        stdin=f"DUMMY_TOTALCPU={local_cpu}\nDUMMY_TOTALMEMORY=1048576\n")
    wait_for(lambda: local_cpu == one.host.info(0).HOST_SHARE.MAX_CPU, timeout=20)
    # The seed's positional form: NAME IM_MAD VMM_MAD TM_MAD VNM_MAD.
    cli(first, "onehost", "create", "partner", "im_one", "vmm_one", "tm_dummy", "dummy")
    wait_for(lambda: one.host.info(1).STATE == 2, timeout=20)
    return first


def vms_by_host(one: pyone.OneServer) -> dict[str, list[int]]:
    placed: dict[str, list[int]] = {}
    for vm in one.vmpool.info(-2, -1, -1, -1).VM:
        if vm.STATE == ACTIVE and vm.LCM_STATE == RUNNING:
            placed.setdefault(vm.HISTORY_RECORDS.HISTORY[-1].HOSTNAME, []).append(vm.ID)
    return placed


def tagged(partner: pyone.OneServer, *, with_done: bool = False) -> list[tuple[str, int, int]]:
    """``(CLOUDBURST_ORIGIN, partner VM id, STATE)`` of the partner's tagged VMs."""
    state = -2 if with_done else -1
    return [(vm.USER_TEMPLATE["CLOUDBURST_ORIGIN"], vm.ID, vm.STATE)
            for vm in partner.vmpool.infoextended(-2, -1, -1, state).VM
            if "CLOUDBURST_ORIGIN" in (vm.USER_TEMPLATE or {})]


def assert_no_secret(root: Path, secret: str) -> None:
    """The password appears nowhere under ``a`` but in its rc file."""
    for path in root.rglob("*"):
        if path.is_file() and path.name != "partnerrc":
            assert secret.encode() not in path.read_bytes(), f"credentials leaked into {path}"


def test_bursts_to_partner_and_terminates_there(tmp_path: Path) -> None:
    partner = start_partner(tmp_path)
    first = None
    try:
        first = start_first(tmp_path, partner, local_cpu=200, quota_cpu=400, grace="2")
        one = pyone.OneServer(first.url, session=first.session)
        remote = pyone.OneServer(partner.url, session=partner.session)

        listing = cli(first, "onehost", "list").stdout
        assert "0 / 400 (0%)" in listing and "0K / 4G (0%)" in listing, listing
        shown = cli(first, "onehost", "show", "partner").stdout
        assert "public cloud: PUBLIC_CLOUD=YES, HYPERVISOR=one" in shown
        assert 'CAPACITY_LIMIT="quota"' in shown and "PARTNER_HOSTS=\"1\"" in shown

        template = tmp_path / "burst.one"
        template.write_text(VM_TEMPLATE)
        created = cli(first, "onevm", "create", str(template), "-m", "5").stdout
        assert created.count("ID: ") == 5
        placed = wait_for(lambda: (p := vms_by_host(one)) and sum(map(len, p.values())) == 5
                          and p, timeout=40)
        assert len(placed["local1"]) == 2 and len(placed["partner"]) == 3, placed

        # The partner runs them, tagged with our installation and VM ids.
        remote_list = cli(partner, "onevm", "list").stdout
        assert remote_list.count(" runn ") == 3, remote_list
        origins = Counter(origin for origin, _, _ in tagged(remote))
        install_id = next(iter(origins)).rpartition(":")[0]
        assert origins == Counter(f"{install_id}:{vm_id}" for vm_id in placed["partner"])

        # The partner's IP shows in onevm show.
        vm_id = placed["partner"][0]
        show = wait_for(lambda: "IP=10.20." in (s := cli(first, "onevm", "show", str(vm_id))
                                                .stdout) and s, timeout=20)
        assert "DEPLOY ID           : one-" in show and "PARTNER_STATE=runn" in show

        # A remote template id: the partner's template plus our size and tags.
        template_id = int(cli(partner, "onetemplate", "create", "-", stdin=(
            'NAME = "partner-small"\nCPU = 2\nMEMORY = 64\nDESCRIPTION = "from b"\n'
        )).stdout.split()[-1])
        (tmp_path / "by_id.one").write_text(
            'CPU = 1\nMEMORY = 128\n'
            f'PUBLIC_CLOUD = [ TYPE = "one", TEMPLATE_ID = "{template_id}" ]\n')
        by_id = int(cli(first, "onevm", "create", str(tmp_path / "by_id.one")).stdout.split()[-1])
        wait_for(lambda: by_id in vms_by_host(one).get("partner", []), timeout=30)
        instantiated = [vm for vm in remote.vmpool.infoextended(-2, -1, -1, -1).VM
                        if (vm.USER_TEMPLATE or {}).get("CLOUDBURST_ORIGIN")
                        == f"{install_id}:{by_id}"]
        assert len(instantiated) == 1
        assert instantiated[0].TEMPLATE["TEMPLATE_ID"] == str(template_id)
        assert instantiated[0].TEMPLATE["MEMORY"] == "128"
        assert instantiated[0].USER_TEMPLATE["DESCRIPTION"] == "from b"

        # Terminating them here removes them there.
        bursted = [*placed["partner"], by_id]
        cli(first, "onevm", "terminate", ",".join(map(str, bursted)))
        wait_for(lambda: all(one.vm.info(i).STATE == DONE for i in bursted), timeout=30)
        assert tagged(remote) == []
        assert " runn " not in cli(partner, "onevm", "list").stdout

        # An instance carrying our tags that no VM owns is reported, then removed.
        orphan = remote.vm.allocate(
            f'NAME="stray"\nCPU=1\nMEMORY=64\nCLOUDBURST_ORIGIN="{install_id}:9999"\n'
            'CLOUDBURST_HOST="1"\n')
        wait_for(lambda: remote.vm.info(orphan).LCM_STATE == RUNNING, timeout=20)
        wait_for(lambda: remote.vm.info(orphan).STATE == DONE, timeout=30)
        log = (tmp_path / "a" / "oned.out").read_text()
        assert f"terminated orphaned instance one-{orphan}" in log

        assert_no_secret(tmp_path / "a", partner.session.partition(":")[2])
    finally:
        if first is not None:
            stop(first.process)
        stop(partner.process)


def test_partner_killed_mid_burst_recovers_without_duplicates(tmp_path: Path) -> None:
    partner = start_partner(tmp_path)
    first = None
    try:
        first = start_first(tmp_path, partner, local_cpu=100, quota_cpu=800)
        one = pyone.OneServer(first.url, session=first.session)
        template = tmp_path / "burst.one"
        template.write_text(VM_TEMPLATE)
        cli(first, "onevm", "create", str(template), "-m", "6")

        def booting_on_partner() -> bool:
            return any(vm.STATE == ACTIVE and vm.LCM_STATE == BOOT
                       and vm.HISTORY_RECORDS.HISTORY[-1].HOSTNAME == "partner"
                       for vm in one.vmpool.info(-2, -1, -1, -1).VM)

        wait_for(booting_on_partner, timeout=20, interval=0.02)
        kill(partner)

        # The host goes to ERROR; the daemon keeps serving.
        wait_for(lambda: one.host.info(1).STATE == 3, timeout=20)
        hosts = cli(first, "onehost", "list").stdout
        assert "partner" in hosts and " err" in hosts, hosts
        shown = cli(first, "onehost", "show", "partner").stdout
        assert "is unreachable" in shown, shown
        late = int(cli(first, "onevm", "create", str(template)).stdout.split()[-1])
        assert "pend" in cli(first, "onevm", "list").stdout
        time.sleep(2)  # the deploys in flight keep retrying meanwhile

        partner = start(tmp_path / "b", port=partner.port)
        remote = pyone.OneServer(partner.url, session=partner.session)
        wait_for(lambda: one.host.info(1).STATE == 2, timeout=30)
        placed = wait_for(lambda: (p := vms_by_host(one)) and sum(map(len, p.values())) == 7
                          and p, timeout=60)
        assert len(placed["local1"]) == 1 and len(placed["partner"]) == 6, placed
        assert late in placed["partner"]

        # Exactly one partner VM per bursted VM, none created twice (even DONE ones).
        every = tagged(remote, with_done=True)
        origins = Counter(origin for origin, _, _ in every)
        assert all(count == 1 for count in origins.values()), every
        assert sorted(int(origin.rpartition(":")[2]) for origin in origins) == sorted(
            placed["partner"])
        assert all(state == ACTIVE for _, _, state in every)
        assert_no_secret(tmp_path / "a", partner.session.partition(":")[2])
    finally:
        if first is not None:
            stop(first.process)
        stop(partner.process)

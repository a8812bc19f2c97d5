"""Spot VMs against the real daemon: interruption and fallback to the next site.

Two ``moto_server`` sites, each behind the fault proxy (``tests/ec2_sites.py``).
moto never interrupts a spot instance nor runs out of capacity, so the proxy
does: it answers ``DescribeInstances`` for a terminated instance with EC2's
spot interruption reason, and refuses ``RunInstances`` with
``InsufficientInstanceCapacity``.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyone
import pytest
from burst_helpers import cli, conf_text, start
from daemon_fixture import RunningDaemon, stop, wait_for

from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SPOT_VM = ('CPU=0.5\nMEMORY=128\nSCHED_RANK = "- ID"\n'
           'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k", MARKET="spot", MAX_PRICE="0.05" ]\n')


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MotoServer]]:
    with moto_servers(2, tmp_path_factory.mktemp("moto")) as servers:
        yield servers


def vm(daemon: RunningDaemon, vm_id: int) -> Any:
    return pyone.OneServer(daemon.url, session=daemon.session).vm.info(vm_id)


def history_reasons(root: Path, vm_id: int) -> list[tuple[str, str]]:
    """(host name, reason) of each stay of the VM, from the daemon's store."""
    with contextlib.closing(sqlite3.connect(root / "home" / "one.db")) as connection:
        rows = connection.execute("SELECT hostname, reason FROM history WHERE vm_id = ? "
                                  "ORDER BY seq", (vm_id,)).fetchall()
    return [(str(host), str(reason)) for host, reason in rows]


@contextlib.contextmanager
def two_site_daemon(root: Path, proxies: list[FaultProxy]) -> Iterator[RunningDaemon]:
    names = ["vmm_west", "vmm_east"]
    write_ec2_etc(root, small_instances=10, rc_names=tuple(names))
    conf = EC2_IM_MAD + "".join(ec2_vm_mad(name, proxy.url)
                                for name, proxy in zip(names, proxies, strict=True))
    daemon = start(root, conf_text(conf))
    try:
        server = pyone.OneServer(daemon.url, session=daemon.session)
        for host, name in (("ec2_west", "vmm_west"), ("ec2_east", "vmm_east")):
            cli(daemon, "onehost", "create", host, "im_ec2", name, "tm_dummy")
        wait_for(lambda: all(server.host.info(host_id).STATE == 2 for host_id in (0, 1)),
                 timeout=30)
        yield daemon
    finally:
        stop(daemon.process)


def create(daemon: RunningDaemon, root: Path) -> int:
    (root / "vm").write_text(SPOT_VM, encoding="utf-8")
    output = cli(daemon, "onevm", "create", "vm").stdout
    return int(output.split(":")[-1])


def running(daemon: RunningDaemon, vm_id: int, other_than: str = "") -> Any:
    def check() -> Any:
        info = vm(daemon, vm_id)
        deployed = (info.STATE, info.LCM_STATE) == (3, 3) and info.DEPLOY_ID
        return info if deployed and info.DEPLOY_ID not in (other_than,) else None

    return wait_for(check, timeout=60, interval=0.2)


def test_spot_interruption_redeploys_the_vm(tmp_path: Path, sites: list[MotoServer]) -> None:
    for server in sites:
        server.reset()
    with FaultProxy(sites[0].url) as west, FaultProxy(sites[1].url) as east, \
            two_site_daemon(tmp_path, [west, east]) as daemon:
        vm_id = create(daemon, tmp_path)
        first = running(daemon, vm_id).DEPLOY_ID
        assert instances_by_vm(sites[0].client()) == {vm_id: [first]}
        sites[0].client().terminate_instances(InstanceIds=[first])
        west.reclaim_spot([first])
        second = running(daemon, vm_id, other_than=first).DEPLOY_ID
        reasons = history_reasons(tmp_path, vm_id)
        assert len(reasons) == 2
        assert reasons[0] == ("ec2_west", "reclaimed by the provider: spot interruption "
                                          "(Server.SpotInstanceTermination)")
        assert reasons[1][1] == ""  # the new stay is under way
        live = {**instances_by_vm(sites[0].client()), **instances_by_vm(sites[1].client())}
        assert live == {vm_id: [second]}


def test_spot_refused_everywhere_on_a_site_goes_to_the_next_site(
        tmp_path: Path, sites: list[MotoServer]) -> None:
    for server in sites:
        server.reset()
    with FaultProxy(sites[0].url) as west, FaultProxy(sites[1].url) as east, \
            two_site_daemon(tmp_path, [west, east]) as daemon:
        west.add_fault("RunInstances", "capacity", times=None)  # neither spot nor on-demand
        started = time.monotonic()
        vm_id = create(daemon, tmp_path)
        info = running(daemon, vm_id)
        elapsed = time.monotonic() - started
        assert info.HISTORY_RECORDS.HISTORY[-1].HOSTNAME == "ec2_east"
        assert west.counts["RunInstances"] == 2  # spot, then on-demand, on the first site
        assert east.counts["RunInstances"] == 1  # spot accepted on the next one
        reasons = history_reasons(tmp_path, vm_id)
        assert [host for host, _ in reasons] == ["ec2_west", "ec2_east"]
        assert "InsufficientInstanceCapacity" in reasons[0][1]
        assert instances_by_vm(sites[1].client()) == {vm_id: [info.DEPLOY_ID]}
        print(f"first spot refusal to RUNNING on the next site: {elapsed:.1f} s")

        # The refusal is remembered for the site and instance type: the next VM
        # of that type goes straight to the other site, and onehost show says why.
        shown = cli(daemon, "onehost", "show", "ec2_west").stdout
        assert 'INSTANCE_TYPE="m1.small"' in shown
        assert "InsufficientInstanceCapacity" in shown
        assert "COOLOFF" not in cli(daemon, "onehost", "show", "ec2_east").stdout
        later = create(daemon, tmp_path)
        assert running(daemon, later).HISTORY_RECORDS.HISTORY[-1].HOSTNAME == "ec2_east"
        assert west.counts["RunInstances"] == 2
        assert [host for host, _ in history_reasons(tmp_path, later)] == ["ec2_east"]

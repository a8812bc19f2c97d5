"""How long after ``runn`` a VM's IP shows in ``onevm show`` (goal: under 2 s).

Starts the real daemon (temporary CLOUDBURST_HOME, the shipped ``oned.conf``
with its default ``VM_POLLING_INTERVAL`` of 30 s) with two cloud hosts: an EC2
site on a local ``moto_server`` (the seed's EC2 template; one VM also asks for
the seed's ``ELASTICIP``, associated by the first poll that sees it running)
and the seed's script provider (``poll`` prints ``STATE=a IP=...``). VMs are
created one at a time; for each, ``one.vm.info`` is read every 20 ms over
XML-RPC until the VM is RUNNING, then until ``MONITORING/IP`` is set (for the
Elastic IP VM: until it is the Elastic IP).

Prints each path's median and largest delay, and the machine's load. Usage:
``python bench/bench_ip_delay.py [--vms N]``; the last line is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import textwrap
import time
import xmlrpc.client
from pathlib import Path
from xml.etree import ElementTree

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from daemon_fixture import RunningDaemon, start_daemon  # noqa: E402

from ec2_sites import MotoServer, moto_servers, write_rc  # noqa: E402
from seed_templates import (  # noqa: E402
    EC2_IM_MAD,
    SEED_PROVIDER_IM_MAD,
    SEED_PROVIDER_TEMPLATE,
    SEED_PROVIDER_VM_MAD,
    SEED_VMM_EC2_CONF,
    ec2_vm_mad,
)

GOAL_SECONDS = 2.0
ELASTIC_IP = "75.101.155.97"
EC2_TEMPLATE = ('CPU = 0.5\nMEMORY = 128\n'
                'EC2 = [ AMI = "ami-00bafcb5", KEYPAIR = "gsg-keypair", INSTANCETYPE = m1.small'
                '{extra} ]\n')
PROVIDER_SCRIPTS = {
    "im/provider_name.d/probe": """\
        #!/bin/sh
        echo PUBLIC_CLOUD=YES HYPERVISOR=provider_name TOTALCPU=100000 TOTALMEMORY=104857600
        """,
    "vmm/provider_name/deploy": '#!/bin/sh\necho "prov-$3"\n',
    "vmm/provider_name/poll": '#!/bin/sh\necho "STATE=a IP=10.0.0.$3"\n',
    "vmm/provider_name/shutdown": "#!/bin/sh\nexit 0\n",
    "vmm/provider_name/cancel": "#!/bin/sh\nexit 0\n",
}
RUNNING = 3


def _setup(root: Path) -> None:
    home = root / "home"
    for relative, text in PROVIDER_SCRIPTS.items():
        path = home / "remotes" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        path.chmod(0o755)
    etc = home / "etc"
    for sub in ("im_ec2", "vmm_ec2"):
        (etc / sub).mkdir(parents=True, exist_ok=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text("SMALL_INSTANCES=1000\n")
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(SEED_VMM_EC2_CONF)
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc")


def _call(proxy: xmlrpc.client.ServerProxy, session: str, method: str, *args: object) -> object:
    reply = getattr(proxy, method)(session, *args)
    if not reply[0]:
        raise RuntimeError(f"{method}: {reply[1]}")
    return reply[1]


def _delay(daemon: RunningDaemon, template: str, wanted_ip: str | None = None,
           timeout: float = 60.0) -> float:
    """Seconds from the first read showing RUNNING to the first showing the IP."""
    proxy = xmlrpc.client.ServerProxy(daemon.url)
    vm_id = int(str(_call(proxy, daemon.session, "one.vm.allocate", template, False)))
    deadline = time.monotonic() + timeout
    running_at: float | None = None
    while time.monotonic() < deadline:
        vm = ElementTree.fromstring(str(_call(proxy, daemon.session, "one.vm.info", vm_id)))
        now = time.monotonic()
        if running_at is None and vm.findtext("LCM_STATE") == str(RUNNING):
            running_at = now
        ip = vm.findtext("MONITORING/IP") or ""
        if running_at is not None and ip and (wanted_ip is None or ip == wanted_ip):
            _call(proxy, daemon.session, "one.vm.action", "terminate-hard", vm_id)
            return now - running_at
        time.sleep(0.02)
    raise RuntimeError(f"VM {vm_id}: no IP within {timeout:g} s (running: {running_at})")


def _summary(name: str, delays: list[float]) -> str:
    return (f"{name}: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s "
            f"over {len(delays)} VMs")


def _measure(root: Path, site: MotoServer, count: int) -> None:
    site.client().allocate_address(Domain="vpc", Address=ELASTIC_IP)
    _setup(root)
    conf = "\n" + EC2_IM_MAD + ec2_vm_mad("vmm_ec2", site.url) + SEED_PROVIDER_IM_MAD \
        + SEED_PROVIDER_VM_MAD
    with start_daemon(root, oned_conf_extra=conf) as daemon:
        proxy = xmlrpc.client.ServerProxy(daemon.url)
        for name, im, vmm in (("ec2", "im_ec2", "vmm_ec2"),
                              ("remote_provider", "im_provider", "vmm_provider")):
            _call(proxy, daemon.session, "one.host.allocate", name, im, vmm, -1)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            pool = ElementTree.fromstring(str(_call(proxy, daemon.session,
                                                    "one.hostpool.info")))
            if all(host.findtext("STATE") == "2" for host in pool.findall("HOST")):
                break
            time.sleep(0.2)
        ec2 = [_delay(daemon, EC2_TEMPLATE.format(extra="")) for _ in range(count)]
        elastic = _delay(daemon, EC2_TEMPLATE.format(extra=f', ELASTICIP = "{ELASTIC_IP}"'),
                         wanted_ip=ELASTIC_IP)
        provider = [_delay(daemon, SEED_PROVIDER_TEMPLATE) for _ in range(count)]
    load = os.getloadavg()[0]
    print(_summary("EC2 (moto) runn -> IP", ec2))
    print(f"EC2 (moto) runn -> Elastic IP: {elastic:.2f} s")
    print(_summary("script provider runn -> IP", provider))
    print(f"VM_POLLING_INTERVAL 30 s (default); load average {load:.2f}")
    print(f"RESULT ec2_median_s={statistics.median(ec2):.2f} ec2_max_s={max(ec2):.2f} "
          f"elastic_ip_s={elastic:.2f} provider_median_s={statistics.median(provider):.2f} "
          f"provider_max_s={max(provider):.2f} goal_s={GOAL_SECONDS:g} vms={count} "
          f"load={load:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10, help="VMs per path (default 10)")
    count = parser.parse_args().vms
    with tempfile.TemporaryDirectory(prefix="cloudburst-bench-ip-") as directory:
        (Path(directory) / "moto").mkdir()
        with moto_servers(1, Path(directory) / "moto") as (site,):
            _measure(Path(directory), site, count)


if __name__ == "__main__":
    main()

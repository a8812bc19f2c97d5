"""EC2 driver: API calls per VM life and the time to deploy 200 VMs on two sites.

Two real ``moto_server`` processes are two EC2 sites; each sits behind the
counting proxy of ``tests/ec2_sites.py``, so every API call is counted by
``Action`` on the wire. The driver (``one_vmm_ec2``) is used directly, with the
dispatcher's default concurrency (``-t 15`` actions per site):

1. deploy ``--vms`` VMs (the seed's template, ``AUTHORIZED_PORTS`` included),
   split over the two sites, and time it; once with client-side rate limits
   off (what moto can do) and, unless ``--skip-aws-limits``, once with AWS's
   default buckets (RunInstances: burst 5, 2 per second per site), which is
   what a real account would allow;
2. ``--cycles`` monitor cycles per site: one bulk ``poll`` of all its VMs then
   the orphan ``sweep``, as the daemon's monitor does;
3. terminate every VM;
4. pagination: ``--page-instances`` instances on one site polled in one call.

Goals: one ``RunInstances`` and one ``TerminateInstances`` per VM, and polling
amortised to at most one ``DescribeInstances`` per 1,000 instances per site per
cycle (the sweep after a poll costs none). The deploy's find-first look-up
(one filtered ``DescribeInstances``) is reported separately.

Usage: ``python bench/bench_ec2.py [--vms 200] [--cycles 3] [--page-instances 1100]
[--skip-aws-limits]``. The last line is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests")]

from cloudburst.drivers.base import (  # noqa: E402
    DeploySpec,
    DriverContext,
    DriverOptions,
    HostRef,
    PollState,
    VmRef,
)
from cloudburst.drivers.ec2.vm import Ec2VmDriver  # noqa: E402
from cloudburst.template import parse  # noqa: E402
from ec2_sites import FaultProxy, MotoServer, moto_servers, write_rc  # noqa: E402

INSTALL = "cb-bench0000000000"
TEMPLATE = ('CPU = 0.5\nMEMORY = 128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair", '
            'AUTHORIZED_PORTS="22", INSTANCETYPE=m1.small ]\n')
THREADS = 15


def make_driver(root: Path, name: str, url: str, rate_limits: bool) -> Ec2VmDriver:
    etc = root / name / "etc"
    (etc / "vmm_ec2").mkdir(parents=True, exist_ok=True)
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(
        "<TEMPLATE><EC2><INSTANCETYPE>m1.small</INSTANCETYPE></EC2></TEMPLATE>\n",
        encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc",
             extra="" if rate_limits else "EC2_RATE_LIMITS=off\n")
    return Ec2VmDriver(DriverContext(
        name=name, executable="one_vmm_ec2", arguments=("-u", url, "vmm_ec2/vmm_ec2.conf"),
        options=DriverOptions(threads=THREADS), etc_dir=etc, remotes_dir=root,
        var_dir=root, install_id=INSTALL))


def deploy_spec(vm_id: int, host: HostRef) -> DeploySpec:
    template = parse(TEMPLATE)
    template.set("VMID", str(vm_id))
    return DeploySpec(vm_id=vm_id, host=host, deployment_file=Path("/nonexistent"),
                      template=template, token=f"{INSTALL}-vm{vm_id}-0")


async def deploy_all(drivers: list[Ec2VmDriver], hosts: list[HostRef],
                     vm_ids: list[int]) -> dict[int, tuple[int, str]]:
    """Deploy ``vm_ids`` round-robin over the sites, ``THREADS`` at a time per site."""
    gates = [asyncio.Semaphore(THREADS) for _ in drivers]

    async def one(vm_id: int) -> tuple[int, int, str]:
        index = vm_id % len(drivers)
        async with gates[index]:
            return vm_id, index, await drivers[index].deploy(deploy_spec(vm_id, hosts[index]))

    done = await asyncio.gather(*(one(vm_id) for vm_id in vm_ids))
    return {vm_id: (index, deploy_id) for vm_id, index, deploy_id in done}


def totals(proxies: list[FaultProxy]) -> Counter[str]:
    counts: Counter[str] = Counter()
    for proxy in proxies:
        counts.update(proxy.counts)
    return counts


def reset(proxies: list[FaultProxy], servers: list[MotoServer]) -> None:
    for proxy, server in zip(proxies, servers, strict=True):
        server.reset()
        proxy.reset_counts()


async def life(root: Path, servers: list[MotoServer], proxies: list[FaultProxy], vms: int,
               cycles: int, rate_limits: bool) -> dict[str, float]:
    """One whole VM life for ``vms`` VMs; returns figures."""
    tag = "aws" if rate_limits else "off"
    drivers = [make_driver(root / tag, f"vmm_site{index}", proxy.url, rate_limits)
               for index, proxy in enumerate(proxies)]
    hosts = [HostRef(id=index, name=f"ec2_site{index}") for index in range(len(drivers))]
    vm_ids = list(range(vms))
    # Build the boto3 clients first: a process start, not a deploy, pays for it.
    await asyncio.gather(*(driver.site.call("DescribeRegions") for driver in drivers))
    reset(proxies, servers)

    started = time.monotonic()
    deployed = await deploy_all(drivers, hosts, vm_ids)
    deploy_seconds = time.monotonic() - started
    after_deploy = totals(proxies)

    refs: list[list[VmRef]] = [[] for _ in drivers]
    for vm_id, (index, deploy_id) in deployed.items():
        refs[index].append(VmRef(vm_id, deploy_id, hosts[index]))
    before_poll = totals(proxies)
    poll_started = time.monotonic()
    active = 0
    for _ in range(cycles):
        for index, driver in enumerate(drivers):
            results = await driver.poll(refs[index])
            active += sum(result.state is PollState.ACTIVE for result in results.values())
            live = frozenset(ref.vm_id for ref in refs[index])
            await driver.sweep(hosts[index], live, 600)
    poll_seconds = (time.monotonic() - poll_started) / max(1, cycles * len(drivers))
    polling = totals(proxies) - before_poll

    await asyncio.gather(*(drivers[index].cancel(ref) for index, group in enumerate(refs)
                           for ref in group))
    everything = totals(proxies)
    for driver in drivers:
        await driver.close()
    site_cycles = cycles * len(drivers)
    return {
        f"deploy_{tag}_s": deploy_seconds,
        f"deploy_{tag}_vms_per_s": vms / deploy_seconds,
        f"run_per_vm_{tag}": after_deploy["RunInstances"] / vms,
        f"find_describe_per_vm_{tag}": after_deploy["DescribeInstances"] / vms,
        f"sg_calls_{tag}": sum(after_deploy[action] for action in (
            "DescribeSecurityGroups", "CreateSecurityGroup", "AuthorizeSecurityGroupIngress")),
        f"poll_describe_per_site_cycle_{tag}": polling["DescribeInstances"] / site_cycles,
        f"poll_s_per_site_cycle_{tag}": poll_seconds,
        f"active_ratio_{tag}": active / (vms * cycles),
        f"terminate_per_vm_{tag}": everything["TerminateInstances"] / vms,
        f"calls_per_vm_{tag}": sum(everything.values()) / vms,
    }


async def pagination(server: MotoServer, proxy: FaultProxy, root: Path,
                     instances: int) -> dict[str, float]:
    server.reset()
    client = server.client()
    tags = [{"ResourceType": "instance",
             "Tags": [{"Key": "cloudburst:installation", "Value": INSTALL}]}]

    def launch(_: int) -> str:
        # One reservation per instance, as the driver launches them (moto pages
        # by reservation).
        launched = client.run_instances(ImageId="ami-1", MinCount=1, MaxCount=1,
                                        TagSpecifications=tags)
        return str(launched["Instances"][0]["InstanceId"])

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(launch, range(instances)))
    driver = make_driver(root / "pages", "vmm_pages", proxy.url, rate_limits=False)
    host = HostRef(id=0, name="ec2")
    proxy.reset_counts()
    started = time.monotonic()
    results = await driver.poll([VmRef(index, instance_id, host)
                                 for index, instance_id in enumerate(ids)])
    seconds = time.monotonic() - started
    await driver.close()
    assert all(result.state is PollState.ACTIVE for result in results.values())
    calls = proxy.counts["DescribeInstances"]
    return {"page_instances": instances, "page_describe_calls": calls,
            "page_describe_expected": math.ceil(instances / 1000), "page_poll_s": seconds}


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {"vms": args.vms, "sites": 2, "cycles": args.cycles}
    with tempfile.TemporaryDirectory(prefix="bench-ec2-") as tmp, \
            moto_servers(2, Path(tmp)) as servers:
        proxies = [FaultProxy(server.url).start() for server in servers]
        try:
            figures.update(await life(Path(tmp), servers, proxies, args.vms, args.cycles,
                                      rate_limits=False))
            if not args.skip_aws_limits:
                reset(proxies, servers)
                figures.update(await life(Path(tmp), servers, proxies, args.vms, args.cycles,
                                          rate_limits=True))
            if args.page_instances:
                figures.update(await pagination(servers[0], proxies[0], Path(tmp),
                                                args.page_instances))
        finally:
            for proxy in proxies:
                proxy.stop()
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=200)
    parser.add_argument("--cycles", type=int, default=3)
    parser.add_argument("--page-instances", type=int, default=1100,
                        help="instances for the pagination check (0: skip)")
    parser.add_argument("--skip-aws-limits", action="store_true",
                        help="only deploy with client-side rate limits off")
    args = parser.parse_args()
    figures = asyncio.run(main_async(args))
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else
              f"{key:<{width}}  {value}")
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

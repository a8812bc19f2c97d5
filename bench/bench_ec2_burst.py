"""EC2 burst: 1,000 VMs of one template from PENDING to RUNNING on one site.

The real daemon core runs in-process (store on SQLite in a temporary
CLOUDBURST_HOME, scheduler, dispatcher and the EC2 driver ``one_vmm_ec2``; no
API server) against one ``moto_server`` behind the counting proxy of
``tests/ec2_sites.py``, with **AWS's default API limits enforced client-side**
(RunInstances: 5 calls at once then 2 per second; 1,000 instances at once then
2 per second). Without batching that is 1,000 calls, about 8 minutes.

Printed:

* the time from the first ``onevm create`` until every VM is RUNNING
  (goal: under 15 s) and until every VM is DONE after a hard terminate;
  ``first_launch_s`` (the first ``RunInstances`` leaves), ``last_answer_s``
  (the last one has answered) and ``after_last_answer_s`` (recording the
  answers until every VM is RUNNING) split it;
* API calls per VM by action, and the sizes of the ``RunInstances`` batches;
* moto's own floor (``--floor``): one bare ``RunInstances`` of as many
  instances and one ``DescribeInstances`` of them, straight through boto3 on a
  fresh server. moto builds and serialises every instance in Python, so on a
  busy machine the fake cloud, not the daemon, sets most of the time; the
  difference is the daemon's share;
* ``--sizes``: bare ``RunInstances`` times for several batch sizes (how
  ``EC2_BATCH_MAX`` was chosen).

Usage: ``python bench/bench_ec2_burst.py [--vms 1000] [--floor] [--sizes 100,250,500]``.
The last line is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "src"), str(REPO / "tests"), str(REPO / "tests" / "e2e")]

from burst_helpers import conf_text  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from cloudburst.daemon.app import Daemon  # noqa: E402
from cloudburst.daemon.main import load_settings, tune_interpreter  # noqa: E402
from cloudburst.drivers.ec2.vm import Ec2VmDriver  # noqa: E402
from cloudburst.model.lifecycle import Event  # noqa: E402
from cloudburst.model.states import HostState, LcmState, VmState  # noqa: E402
from cloudburst.store.schema import hosts, vms  # noqa: E402
from ec2_sites import FaultProxy, MotoServer, live_instances, moto_servers, write_rc  # noqa: E402
from seed_templates import EC2_IM_MAD, ec2_vm_mad  # noqa: E402

TEMPLATE = ('NAME = "burst"\nCPU = 0.5\nMEMORY = 128\n'
            'EC2 = [ AMI = "ami-00bafcb5", KEYPAIR = "gsg-keypair", INSTANCETYPE = "m1.small" ]\n')


async def count(daemon: Daemon, state: VmState, lcm_state: LcmState | None = None) -> int:
    query = select(func.count()).select_from(vms).where(vms.c.state == int(state))
    if lcm_state is not None:
        query = query.where(vms.c.lcm_state == int(lcm_state))
    return int(await daemon.db.read(lambda connection: connection.execute(query).scalar_one()))


async def host_monitored(daemon: Daemon) -> bool:
    query = select(func.count()).select_from(hosts).where(
        hosts.c.state == int(HostState.MONITORED))
    return bool(await daemon.db.read(lambda connection: connection.execute(query).scalar_one()))


def write_home(home: Path, url: str, vm_count: int) -> None:
    etc = home / "etc"
    for directory in (etc / "im_ec2", etc / "vmm_ec2"):
        directory.mkdir(parents=True, exist_ok=True)
    # The default polling interval: polling 1,000 instances every second would
    # keep moto busy listing them instead of launching.
    (etc / "oned.conf").write_text(conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", url),
                                             VM_POLLING_INTERVAL="30"), encoding="utf-8")
    (etc / "im_ec2" / "im_ec2.conf").write_text(f"SMALL_INSTANCES={vm_count}\n",
                                                encoding="utf-8")
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(
        "<TEMPLATE><EC2><INSTANCETYPE>m1.small</INSTANCETYPE></EC2></TEMPLATE>\n",
        encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc")  # AWS's default limits (no EC2_RATE_* keys)


async def wait_until(predicate: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the burst did not finish in time")
        await asyncio.sleep(0.05)


class Stages:
    """When the burst's VMs pass each stage (``--timeline``): created, placed by a
    scheduler pass, handed to the EC2 driver, launched (bench-side wrappers only)."""

    def __init__(self, daemon: Daemon, driver: Ec2VmDriver) -> None:
        self.created: list[float] = []
        self.passes: list[tuple[float, float, int]] = []
        self.arrived: list[float] = []
        self.sizes = driver.launcher.batches.sizes
        self.spans = driver.launcher.batches.spans
        scheduler, batches = daemon.scheduler, driver.launcher.batches
        pass_once, submit = scheduler.pass_once, batches.submit

        async def timed_pass(*, full: bool = True) -> int:
            started = time.monotonic()
            placed = await pass_once(full=full)
            self.passes.append((started, time.monotonic(), placed))
            return placed

        async def timed_submit(key: Any, item: Any) -> Any:
            self.arrived.append(time.monotonic())
            return await submit(key, item)

        scheduler.pass_once = timed_pass  # type: ignore[method-assign]
        batches.submit = timed_submit  # type: ignore[method-assign]

    def show(self, zero: float, calls: list[tuple[str, float, float]]) -> None:
        def at(moments: list[float], share: float) -> str:
            ordered = sorted(moments)
            return f"{ordered[min(len(ordered) - 1, int(share * len(ordered)))] - zero:7.3f}" \
                if ordered else "      -"

        for label, moments in (("created", self.created), ("reached the driver", self.arrived)):
            print(f"{label:<20} first {at(moments, 0)}  25% {at(moments, 0.25)}  "
                  f"half {at(moments, 0.5)}  last {at(moments, 1)}", file=sys.stderr)
        for started, ended, placed in self.passes:
            print(f"scheduler pass       {started - zero:7.3f} -> {ended - zero:7.3f}  "
                  f"placed {placed}", file=sys.stderr)
        for action, started, ended in calls:
            print(f"{action:<20} {started - zero:7.3f} -> {ended - zero:7.3f}", file=sys.stderr)
        print(f"batch sizes          {list(self.sizes)}", file=sys.stderr)


async def burst(proxy: FaultProxy, vm_count: int, *, show: bool = False
                ) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-ec2-")) / "home"
    write_home(home, proxy.url, vm_count)
    settings, _ = load_settings(home)
    daemon = Daemon(settings)
    await daemon.start(serve_api=False)
    try:
        await daemon.hosts.allocate("ec2", "im_ec2", "vmm_ec2")
        await wait_until(lambda: host_monitored(daemon), 60)
        driver = daemon.dispatcher.vm_driver("vmm_ec2")
        assert isinstance(driver, Ec2VmDriver)
        await driver.site.call("DescribeRegions")  # the boto3 client, built before timing
        proxy.reset_counts()
        stages = Stages(daemon, driver) if show else None

        first = time.perf_counter()
        first_monotonic = time.monotonic()

        async def create() -> int:
            vm_id = await daemon.vms.allocate(TEMPLATE)
            if stages is not None:
                stages.created.append(time.monotonic())
            return vm_id

        vm_ids = await asyncio.gather(*(create() for _ in range(vm_count)))
        created = time.perf_counter() - first

        async def all_running() -> bool:
            return await count(daemon, VmState.ACTIVE, LcmState.RUNNING) >= vm_count

        await wait_until(all_running, 900)
        running = time.perf_counter() - first
        deploy_calls = proxy.counts
        timeline = proxy.timeline
        batches = list(driver.launcher.batches.sizes)
        spans = list(driver.launcher.batches.spans)

        if stages is not None:
            stages.show(first_monotonic, timeline)
        stop_started = time.perf_counter()
        await asyncio.gather(*(daemon.lifecycle.act(vm_id, Event.TERMINATE_HARD)
                               for vm_id in vm_ids))

        async def all_done() -> bool:
            return await count(daemon, VmState.DONE) >= vm_count

        await wait_until(all_done, 900)
        done = time.perf_counter() - stop_started
        calls = proxy.counts
    finally:
        await daemon.stop()
    return {
        "vms": vm_count,
        "create_s": created,
        "all_running_s": running,
        "all_done_s": done,
        "run_instances_calls": deploy_calls["RunInstances"],
        "batches": len(batches),
        "largest_batch": max(batches, default=0),
        "deploy_calls_per_vm": sum(deploy_calls.values()) / vm_count,
        "run_per_vm": deploy_calls["RunInstances"] / vm_count,
        "describe_per_vm_during_burst": deploy_calls["DescribeInstances"] / vm_count,
        "terminate_calls": calls["TerminateInstances"] - deploy_calls["TerminateInstances"],
        "calls_per_vm": sum(calls.values()) / vm_count,
        # Where the time goes: until the first RunInstances left, until the last
        # one answered (the site's share), and recording the answers after it.
        "first_launch_s": min(start for start, _ in spans) - first_monotonic,
        "last_answer_s": max(end for _, end in spans) - first_monotonic,
        "after_last_answer_s": running - (max(end for _, end in spans) - first_monotonic),
        # Other calls moto answered during the burst compete with the launches for it.
        "describe_busy_during_burst_s": sum(
            end - start for action, start, end in timeline if action == "DescribeInstances"),
    }


def floor(server: MotoServer, sizes: list[int]) -> dict[str, float]:
    """Bare boto3 calls straight to moto: what the fake cloud costs by itself."""
    client = server.client()
    figures: dict[str, float] = {}
    for size in sizes:
        server.reset()
        started = time.perf_counter()
        client.run_instances(ImageId="ami-1", MinCount=size, MaxCount=size, TagSpecifications=[{
            "ResourceType": "instance", "Tags": [{"Key": "cloudburst:batch", "Value": "b"}]}])
        figures[f"moto_run_{size}_s"] = time.perf_counter() - started
        started = time.perf_counter()
        listed = len(live_instances(client))
        figures[f"moto_describe_{size}_s"] = time.perf_counter() - started
        assert listed == size
    server.reset()
    return figures


async def main_async(args: argparse.Namespace) -> dict[str, float]:
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ec2-burst-") as tmp, \
            moto_servers(1, Path(tmp)) as (server,), FaultProxy(server.url) as proxy:
        sizes = sorted({int(size) for size in args.sizes.split(",") if size.strip()})
        if args.floor:
            sizes = sorted({*sizes, args.vms})
        if sizes:
            figures.update(floor(server, sizes))
        figures.update(await burst(proxy, args.vms, show=args.timeline))
        if args.floor:
            figures["moto_floor_s"] = (figures[f"moto_run_{args.vms}_s"]
                                       + figures[f"moto_describe_{args.vms}_s"])
            figures["daemon_share_s"] = figures["all_running_s"] - figures[f"moto_run_{args.vms}_s"]
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--floor", action="store_true",
                        help="also time one bare RunInstances of --vms instances on moto")
    parser.add_argument("--sizes", default="",
                        help="comma list of batch sizes to time as bare RunInstances calls")
    parser.add_argument("--timeline", action="store_true",
                        help="print each call moto answered during the burst (stderr)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    tune_interpreter()  # as the daemon does
    figures = asyncio.run(main_async(args))
    width = max(len(key) for key in figures)
    for key, value in figures.items():
        print(f"{key:<{width}}  {value:.3f}" if isinstance(value, float) else
              f"{key:<{width}}  {value}")
    print(f"goal: all RUNNING in < 15 s; got {figures['all_running_s']:.1f} s "
          f"with {figures['run_instances_calls']} RunInstances calls "
          f"({figures['run_per_vm']:.4f} per VM)")
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

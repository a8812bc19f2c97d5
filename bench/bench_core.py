"""Core throughput: 2,500 dummy hosts, 10,000 VMs, time until all are RUNNING.

Runs the real daemon core in-process (store on SQLite in a temporary
CLOUDBURST_HOME, scheduler, dispatcher, dummy drivers; no API) and prints:

* the time from the first VM creation until every VM is ``RUNNING``;
* VMs per second over that span;
* the daemon's CPU seconds (user + system) over that span, steadier than the
  time on a busy machine, and each thread's (``cpu_mainthread_s`` is the loop's);
* the median (and p95) delay from a VM's creation returning to the driver's
  ``deploy`` being called for it (goal: median under 50 ms);
* the ratio to OpenNebula's default scheduler, which dispatches about 2 VMs/s
  (MAX_DISPATCH=30 every SCHED_INTERVAL=15 s).

Usage: ``python bench/bench_core.py [--hosts N] [--vms N] [--rate VMS_PER_S] [--postgresql]``.
``--postgresql`` runs the store on a throw-away PostgreSQL server
(``tests/pg_server.py``, as ``bench_scale.py`` does).
The temporary home is made in ``TMPDIR`` (``/tmp`` by default; ``home_in`` in the
RESULT line): each VM makes a directory and two files there, so the disk under it
matters (see ``bench_scale.py``).
The last line is ``RESULT key=value ...``. With ``--rate`` VMs are created at
that pace (open loop), which measures the creation-to-deploy delay under a
steady arrival rate instead of one burst.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from sqlalchemy import func, select

from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings, tune_interpreter
from cloudburst.drivers.base import DeploySpec
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.store.schema import hosts, vms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import store_url
from thread_cpu import thread_cpu

OPENNEBULA_VMS_PER_SECOND = 2.0
TEMPLATE = 'NAME = "bench"\nCPU = 1\nMEMORY = 512\n'


async def count_running(daemon: Daemon) -> int:
    query = select(func.count()).select_from(vms).where(
        vms.c.state == int(VmState.ACTIVE), vms.c.lcm_state == int(LcmState.RUNNING))
    return int(await daemon.db.read(lambda connection: connection.execute(query).scalar_one()))


async def count_monitored(daemon: Daemon) -> int:
    query = select(func.count()).select_from(hosts).where(
        hosts.c.state == int(HostState.MONITORED))
    return int(await daemon.db.read(lambda connection: connection.execute(query).scalar_one()))


async def run(host_count: int, vm_count: int, rate: float, url: str = ""
              ) -> dict[str, float | str]:
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-"))
    settings, _ = load_settings(home)
    if url:
        settings = dataclasses.replace(settings, db_url=url)
    daemon = Daemon(settings)
    deploy_called: dict[int, float] = {}
    driver = daemon.dispatcher.vm_driver("dummy")
    original_deploy = driver.deploy

    async def timed_deploy(spec: DeploySpec) -> str:
        deploy_called.setdefault(spec.vm_id, time.perf_counter())
        return await original_deploy(spec)

    driver.deploy = timed_deploy  # type: ignore[method-assign]
    await daemon.start(serve_api=False)
    try:
        started = time.perf_counter()
        await asyncio.gather(*(daemon.hosts.allocate(f"host{i:05d}", "dummy", "dummy")
                               for i in range(host_count)))
        while await count_monitored(daemon) < host_count:
            await asyncio.sleep(0.05)
        hosts_ready = time.perf_counter() - started

        created: dict[int, float] = {}

        async def create_one() -> None:
            vm_id = await daemon.vms.allocate(TEMPLATE)
            created[vm_id] = time.perf_counter()

        first = time.perf_counter()
        cpu_first, threads_first = os.times(), thread_cpu()
        if rate > 0:
            tasks = []
            for index in range(vm_count):
                delay = first + index / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.create_task(create_one()))
            await asyncio.gather(*tasks)
        else:
            await asyncio.gather(*(create_one() for _ in range(vm_count)))
        created_all = time.perf_counter() - first
        while await count_running(daemon) < vm_count:
            await asyncio.sleep(0.05)
        all_running = time.perf_counter() - first
        cpu_last, threads_last = os.times(), thread_cpu()
    finally:
        await daemon.stop()
        shutil.rmtree(home, ignore_errors=True)  # ~10,000 VM directories and the store
    delays = sorted((deploy_called[vm_id] - created[vm_id]) * 1000 for vm_id in created)
    return {
        "store": "postgresql" if url else "sqlite",
        "home_in": str(home.parent),
        "hosts": host_count,
        "vms": vm_count,
        "hosts_ready_s": hosts_ready,
        "create_s": created_all,
        "all_running_s": all_running,
        "vms_per_s": vm_count / all_running,
        "cpu_s": (cpu_last.user + cpu_last.system) - (cpu_first.user + cpu_first.system),
        **{f"cpu_{name.replace('-', '_').lower()}_s": seconds - threads_first.get(name, 0.0)
           for name, seconds in sorted(threads_last.items())},
        "median_create_to_deploy_ms": statistics.median(delays),
        "p95_create_to_deploy_ms": delays[int(len(delays) * 0.95) - 1],
        "ratio_vs_opennebula": vm_count / all_running / OPENNEBULA_VMS_PER_SECOND,
        "load": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=2500)
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--rate", type=float, default=0.0,
                        help="create VMs at this many per second (0: all at once)")
    parser.add_argument("--postgresql", action="store_true",
                        help="store on a throw-away PostgreSQL server (default SQLite)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with store_url(args.postgresql) as url:
        tune_interpreter()  # as the daemon does
        result = asyncio.run(run(args.hosts, args.vms, args.rate, url))
    print(f"hosts monitored after  {result['hosts_ready_s']:.2f} s")
    print(f"{args.vms} VMs created in  {result['create_s']:.2f} s")
    print(f"all RUNNING after      {result['all_running_s']:.2f} s  (goal < 30 s)")
    print(f"throughput             {result['vms_per_s']:.0f} VMs/s "
          f"({result['ratio_vs_opennebula']:.0f}x OpenNebula's ~2 VMs/s)")
    print(f"create -> deploy call  median {result['median_create_to_deploy_ms']:.1f} ms, "
          f"p95 {result['p95_create_to_deploy_ms']:.1f} ms  (goal median < 50 ms)")
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

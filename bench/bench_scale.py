"""Scale: 100,000 VMs on 10,000 dummy hosts, on SQLite or PostgreSQL.

Runs the real daemon in this process (scheduler, dispatcher, dummy drivers and
the XML-RPC API on a free port) with a temporary ``CLOUDBURST_HOME``; the
store is SQLite there, or with ``--postgresql`` a throw-away PostgreSQL server
(``tests/pg_server.py``). Each dummy host reports 8 CPUs and 16 GiB; a VM asks
for 0.5 CPU and 512 MiB, so ten VMs per host fit. It prints:

* hosts monitored, VMs created (through the services, in batches of 1,000
  concurrent creations), and the time from the first creation until every VM
  is ``RUNNING`` (goal: under 120 s), with VMs/s;
* the daemon's resident memory (peak and at the end; goal: under 2 GiB);
* phases while VMs are created and deployed, every ``--every`` seconds:
  VMs created and RUNNING (and the rate since the last line), scheduler
  passes, their seconds and how many built their placer from the store, the
  SQLite WAL's size, the daemon's RSS;
* each thread's CPU seconds from the first creation until every VM runs
  (``cpu_<thread>_s``: the event loop is ``MainThread``, the store's writer
  ``db_write``, the VM file threads ``vm_files`` and ``vm_logs``);
* from a separate client process over HTTP: a page of 2,000 VMs of
  ``one.vmpool.info(-2, offset, -2000, -1)`` (median of 10 random pages; goal:
  under 100 ms), both until the reply is received and with the client's XML-RPC
  parsing (Python's ``xmlrpc.client`` alone takes over 100 ms for 2,000 VMs,
  whatever the server), first listed and listed again; ``one.vm.info`` on random
  VMs (median of 500; goal: under 2 ms).

With ``--steady S`` (after the reads, when every VM runs) it also measures the
steady state for S seconds, nothing changing: the daemon's CPU seconds per
minute (user + sys; 60 is one core busy), host monitorings and VM polls per
minute, store commits per minute and the monitoring samples written
(regular polls of every host every ``VM_POLLING_INTERVAL``, each host monitored
every ``MONITORING_INTERVAL``): what competes with every burst and read.

With ``--step-down-at N`` the daemon loses its lease when N VMs run and is
elected again one lease time later (PostgreSQL only); what that costs is
printed (``bench/takeover.py``) and added to the RESULT line.

The temporary home is made in the system's temporary directory (``TMPDIR``,
``/tmp`` by default; ``home_in`` in the RESULT line): the disk under it matters,
as each VM makes a directory and two files there. On the 2-core machine of
issue 17, creating a file or directory on ext4 cost 15-40 us of CPU in one
directory and 250-460 us in another, and the same directory changed from one to
the other within minutes (after a run's 300,000 files were removed, say), which
moved a run's time by tens of seconds whatever the code. To compare code, put
the home on tmpfs (``TMPDIR=/dev/shm``); ``cpu_vm_files_s`` and ``cpu_vm_logs_s``
show what the files cost in a run.

With ``--give-up S`` a run that has not got every VM RUNNING S seconds after
the first creation stops there (creations too) and reports how many ran and
the rate reached (``all_running_s=nan``), the reads on the VMs made so far.

Usage: ``python bench/bench_scale.py [--hosts N] [--vms N] [--postgresql] [--give-up S]
[--steady S] [--step-down-at N]``.
Run it under ``flock /work/suite.lock`` on a shared machine. The last line is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from sqlalchemy import func, select

from cloudburst import metrics
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings, tune_interpreter
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.store.schema import hosts, vms

sys.path.insert(0, str(Path(__file__).resolve().parent))
from takeover import step_down_at as step_down
from thread_cpu import thread_cpu

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = 'NAME = "scale"\nCPU = 0.5\nMEMORY = 512\n'
BATCH = 1000

#: The client: page and single-VM read timings over real HTTP, printed as JSON.
CLIENT = r"""
import http.client, json, random, statistics, sys, time, urllib.parse, xmlrpc.client
url, session, vm_count = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = xmlrpc.client.ServerProxy(url)
parts = urllib.parse.urlsplit(url)
raw = http.client.HTTPConnection(parts.hostname, parts.port)
def page(offset):
    # One page over a kept connection: seconds until the whole reply is received,
    # then seconds the client spends parsing it (the same for any server).
    body = xmlrpc.client.dumps((session, -2, offset, -2000, -1), "one.vmpool.info")
    started = time.perf_counter()
    raw.request("POST", parts.path, body.encode(), {"Content-Type": "text/xml"})
    data = raw.getresponse().read()
    received = time.perf_counter() - started
    result = xmlrpc.client.loads(data)[0][0]
    assert result[0], result
    assert result[1].count("<VM>") == min(2000, vm_count), result[1][:200]
    return received, time.perf_counter() - started
cold, warm = [], []
for _ in range(10):
    offset = random.randrange(0, max(1, vm_count - 2000))
    cold.append(page(offset))  # rendered now: these VMs were not listed before
    warm.append(page(offset))  # the same page again: entries rendered, VMs unchanged
infos = []
for _ in range(500):
    vm_id = random.randrange(vm_count)
    started = time.perf_counter()
    result = server.one.vm.info(session, vm_id)
    infos.append(time.perf_counter() - started)
    assert result[0], result
def median(values, index):
    return statistics.median(value[index] for value in values) * 1000
print(json.dumps({"page_ms": median(cold, 1), "page_received_ms": median(cold, 0),
                  "page_warm_ms": median(warm, 1),
                  "page_warm_received_ms": median(warm, 0),
                  "vm_info_ms": statistics.median(infos) * 1000,
                  "vm_info_p95_ms": sorted(infos)[int(len(infos) * 0.95)] * 1000}))
"""


def rss_mib() -> tuple[float, float]:
    """(peak, current) resident memory of this process, MiB."""
    values: dict[str, float] = {}
    with open("/proc/self/status", encoding="utf-8") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmHWM", "VmRSS"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmHWM"], values["VmRSS"]


@contextlib.contextmanager
def store_url(postgresql: bool) -> Iterator[str]:
    if not postgresql:
        yield ""
        return
    sys.path.insert(0, str(REPO / "tests"))
    import pg_server  # the tests' throw-away server

    with pg_server.postgres_server() as server:
        yield server.create_database("scale")


async def count(daemon: Daemon, query: object) -> int:
    return int(await daemon.db.read(lambda connection: connection.execute(query).scalar_one()))


def _metric_sum(name: str, **labels: str) -> float:
    """Sum of a metric's samples over the series matching ``labels``."""
    total = 0.0
    for family in metrics.REGISTRY.collect():
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(key) == value
                                           for key, value in labels.items()):
                total += sample.value
    return total


async def steady_state(daemon: Daemon, seconds: float) -> dict[str, float]:
    """What the daemon spends per minute while nothing changes (see the doc)."""
    def counters() -> tuple[float, ...]:
        cpu = os.times()
        return (time.perf_counter(), cpu.user + cpu.system,
                _metric_sum("cloudburst_driver_calls_total", action="monitor"),
                _metric_sum("cloudburst_driver_calls_total", action="poll"),
                _metric_sum("cloudburst_store_commit_seconds_count"))

    print(f"  steady state: measuring for {seconds:.0f} s", flush=True)
    samples = select(func.sum(vms.c.version))
    first, versions = counters(), await count(daemon, samples)
    await asyncio.sleep(seconds)
    last, written = counters(), await count(daemon, samples)
    per_minute = 60.0 / (last[0] - first[0])
    return {"steady_cpu_s_per_min": (last[1] - first[1]) * per_minute,
            "steady_monitors_per_min": (last[2] - first[2]) * per_minute,
            "steady_polls_per_min": (last[3] - first[3]) * per_minute,
            "steady_commits_per_min": (last[4] - first[4]) * per_minute,
            "steady_vm_writes_per_min": (written - versions) * per_minute}


def _pass_seconds() -> float:
    """Seconds spent in scheduler passes so far (the pass-time histogram's sum)."""
    return float(metrics.REGISTRY.get_sample_value("cloudburst_scheduler_pass_seconds_sum") or 0)


async def report_phases(daemon: Daemon, home: Path, every: float, created: list[int],
                        running_query: object) -> None:
    """Print one line of progress every ``every`` seconds until cancelled (see the doc)."""
    wal = home / "one.db-wal"
    started = time.perf_counter()
    last = (started, 0, 0)
    while True:
        await asyncio.sleep(every)
        now = time.perf_counter()
        running = await count(daemon, running_query)
        rate = (running - last[2]) / (now - last[0])
        made = (created[0] - last[1]) / (now - last[0])
        wal_mib = wal.stat().st_size / 2**20 if wal.exists() else 0.0
        print(f"  {now - started:6.1f} s  created {created[0]:6d} ({made:5.0f}/s)  running "
              f"{running:6d} ({rate:5.0f}/s)  passes {daemon.scheduler.passes:4d} "
              f"({_pass_seconds():6.1f} s, {daemon.scheduler.rebuilds} placer builds)  "
              f"WAL {wal_mib:6.1f} MiB  RSS {rss_mib()[1]:5.0f} MiB  "
              f"load {os.getloadavg()[0]:.1f}", flush=True)
        last = (now, created[0], running)


async def run(host_count: int, vm_count: int, url: str, every: float,
              give_up: float, steady: float, step_down_at: int = 0
              ) -> dict[str, float | int | str]:
    home = Path(tempfile.mkdtemp(prefix="cloudburst-scale-"))
    settings, _ = load_settings(home)
    settings = dataclasses.replace(settings, port=0, db_url=url)
    daemon = Daemon(settings)
    running_query = select(func.count()).select_from(vms).where(
        vms.c.state == int(VmState.ACTIVE), vms.c.lcm_state == int(LcmState.RUNNING))
    monitored_query = select(func.count()).select_from(hosts).where(
        hosts.c.state == int(HostState.MONITORED))
    await daemon.start(serve_api=True)
    try:
        started = time.perf_counter()
        for first in range(0, host_count, BATCH):
            await asyncio.gather(*(daemon.hosts.allocate(f"host{i:05d}", "dummy", "dummy")
                                   for i in range(first, min(host_count, first + BATCH))))
        while await count(daemon, monitored_query) < host_count:
            await asyncio.sleep(0.2)
        hosts_ready = time.perf_counter() - started
        first_created = time.perf_counter()
        threads_first = thread_cpu()
        made = [0]
        phases = asyncio.create_task(report_phases(daemon, home, every, made, running_query))
        takeover = asyncio.create_task(step_down(daemon, running_query, step_down_at,
                                                 vm_count)) if step_down_at else None
        deadline = first_created + give_up if give_up else float("inf")
        try:
            for first in range(0, vm_count, BATCH):
                if time.perf_counter() > deadline:
                    break
                await asyncio.gather(*(daemon.vms.allocate(TEMPLATE)
                                       for _ in range(min(BATCH, vm_count - first))))
                made[0] = min(vm_count, first + BATCH)
            created = time.perf_counter() - first_created
            while (running := await count(daemon, running_query)) < vm_count:
                if time.perf_counter() > deadline:
                    break
                await asyncio.sleep(0.25)
            stopped = time.perf_counter() - first_created
            threads_last = thread_cpu()
            all_running = stopped if running >= vm_count else float("nan")
            takeover_figures = await takeover if takeover is not None else {}
        finally:
            phases.cancel()
        session = settings.auth_file.read_text(encoding="utf-8").split()[0]
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"http://127.0.0.1:{daemon.api.port}/RPC2", session,
            str(made[0]), stdout=subprocess.PIPE)
        output, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError("the read client failed")
        reads = json.loads(output)
        quiet = await steady_state(daemon, steady) if steady and running >= vm_count else {}
        peak, current = rss_mib()
    finally:
        await daemon.stop()
        shutil.rmtree(home, ignore_errors=True)  # hundreds of MB at 100,000 VMs
    return {
        "store": "postgresql" if url else "sqlite",
        "home_in": str(home.parent),
        "hosts": host_count,
        "vms": vm_count,
        "hosts_ready_s": hosts_ready,
        "create_s": created,
        "created": made[0],
        "running": running,
        "all_running_s": all_running,
        "vms_per_s": running / stopped,
        "rss_peak_mib": peak,
        "rss_end_mib": current,
        "page_2000_ms": reads["page_ms"],
        "page_2000_received_ms": reads["page_received_ms"],
        "page_2000_warm_ms": reads["page_warm_ms"],
        "page_2000_warm_received_ms": reads["page_warm_received_ms"],
        "vm_info_median_ms": reads["vm_info_ms"],
        "vm_info_p95_ms": reads["vm_info_p95_ms"],
        **{f"cpu_{name.replace('-', '_')}_s": used - threads_first.get(name, 0.0)
           for name, used in sorted(threads_last.items())},
        **quiet,
        **takeover_figures,
        "load_1min": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hosts", type=int, default=10_000)
    parser.add_argument("--vms", type=int, default=100_000)
    parser.add_argument("--every", type=float, default=10.0,
                        help="seconds between progress lines while VMs are deployed")
    parser.add_argument("--give-up", type=float, default=0.0,
                        help="stop after this many seconds of creating and deploying VMs")
    parser.add_argument("--steady", type=float, default=0.0,
                        help="then measure the steady state for this many seconds")
    parser.add_argument("--step-down-at", type=int, default=0,
                        help="end the lease when this many VMs run (with --postgresql)")
    parser.add_argument("--postgresql", action="store_true",
                        help="run on a throw-away PostgreSQL server instead of SQLite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with store_url(args.postgresql) as url:
        tune_interpreter()  # as the daemon does
        result = asyncio.run(run(args.hosts, args.vms, url, args.every, args.give_up,
                                   args.steady, args.step_down_at))
    print(f"store                  {result['store']} (load {result['load_1min']:.1f})")
    print(f"{args.hosts} hosts monitored after {result['hosts_ready_s']:.1f} s")
    print(f"{result['created']} VMs created in {result['create_s']:.1f} s")
    if result["running"] == args.vms:
        print(f"all RUNNING after      {result['all_running_s']:.1f} s  "
              f"({result['vms_per_s']:.0f} VMs/s; goal < 120 s)")
    else:
        print(f"given up after {args.give_up:.0f} s: {result['running']} of {args.vms} RUNNING "
              f"({result['vms_per_s']:.0f} VMs/s)")
    print(f"daemon RSS             peak {result['rss_peak_mib']:.0f} MiB, end "
          f"{result['rss_end_mib']:.0f} MiB  (goal < 2048 MiB)")
    print(f"vmpool.info page 2000  {result['page_2000_ms']:.1f} ms median, reply received after "
          f"{result['page_2000_received_ms']:.1f} ms (the rest is the client's parsing; "
          "goal < 100 ms)")
    print(f"  same page again      {result['page_2000_warm_ms']:.1f} ms, received after "
          f"{result['page_2000_warm_received_ms']:.1f} ms (entries already rendered)")
    print(f"vm.info                {result['vm_info_median_ms']:.2f} ms median, "
          f"p95 {result['vm_info_p95_ms']:.2f} ms  (goal median < 2 ms)")
    if "steady_cpu_s_per_min" in result:
        print(f"steady state           {result['steady_cpu_s_per_min']:.1f} CPU s/min, "
              f"{result['steady_monitors_per_min']:.0f} host monitorings/min, "
              f"{result['steady_polls_per_min']:.0f} host polls/min, "
              f"{result['steady_commits_per_min']:.0f} commits/min, "
              f"{result['steady_vm_writes_per_min']:.0f} VM writes/min")
    if "takeover_elected_s" in result:
        print("takeover (s after the lease ended)  " + "  ".join(
            f"{key.removeprefix('takeover_').removesuffix('_s')} {result[key]:.1f}"
            for key in result if key.startswith("takeover_") and key.endswith("_s")))
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

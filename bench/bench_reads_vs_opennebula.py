"""Reads side by side: cloudburst and OpenNebula 6.10.5 with the same pools, same client.

Starts both servers on this machine: the cloudburst daemon as a separate process
(temporary ``CLOUDBURST_HOME``, SQLite, dummy drivers) and the prebuilt
OpenNebula peer of ``shared/opennebula-peer`` (``tests/one_peer.py``: oned,
its scheduler with ``SCHED_INTERVAL=1``, dummy drivers). Each gets the same
workload through plain XML-RPC: ``--hosts`` dummy hosts, then ``--vms`` VMs
allocated by ``--clients`` concurrent clients, waited for until RUNNING (or
``--wait`` seconds). Then, one server at a time and with the other idle, one
client measures:

* ``one.vm.info`` on random VMs: median and p95 of ``--calls`` calls;
* ``one.vmpool.info(-2, -1, -1, -1)`` (the whole pool, full documents):
  median and p95 of ``--pool-calls`` calls;
* the same client's ``one.vmpool.info(-2, 0, -2000, -1)`` page.

Both answer over HTTP/1.1 keep-alive connections of the same Python client,
so the client's cost is the same on both sides. Ratios are OpenNebula's time
over cloudburst's (above 1: cloudburst is faster).

Usage: ``python bench/bench_reads_vs_opennebula.py [--vms 1000] [--hosts 100]``.
Run it under ``flock /work/suite.lock`` on a shared machine. The last line is
``RESULT key=value ...`` with the machine's 1-minute load average.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_api import call, free_port, start_daemon, wait_session  # noqa: E402

from one_peer import start_peer  # noqa: E402

TEMPLATE = 'NAME = "bench"\nCPU = 0.1\nMEMORY = 64\n'
#: Tries of one allocation (a loaded server may time out or refuse a call).
ALLOCATE_TRIES = 5


class Server:
    """One XML-RPC endpoint and its session."""

    def __init__(self, name: str, url: str, session: str) -> None:
        self.name = name
        self.url = url
        self.session = session

    def proxy(self) -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(self.url)


def populate(server: Server, hosts: int, vms: int, clients: int, wait: float) -> dict[str, float]:
    """Dummy hosts, then VMs from ``clients`` threads; waits for them to run."""
    proxy = server.proxy()
    host_ids = [call(proxy, "one.host.allocate", server.session, f"bench{index}", "dummy",
                     "dummy", -1) for index in range(hosts)]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        pool = str(call(proxy, "one.hostpool.info", server.session))
        if pool.count("<STATE>2</STATE>") >= len(host_ids):
            break
        time.sleep(0.5)
    started = time.monotonic()

    failures: list[str] = []

    def allocate(count: int) -> None:
        own = server.proxy()
        for _ in range(count):
            for _ in range(ALLOCATE_TRIES):
                try:
                    call(own, "one.vm.allocate", server.session, TEMPLATE, False)
                    break
                except (OSError, RuntimeError) as exc:  # a loaded server may refuse one
                    failures.append(f"{type(exc).__name__}: {exc}")
                    own = server.proxy()
                    time.sleep(0.5)

    threads = [threading.Thread(target=allocate, args=(vms // clients,), daemon=True)
               for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    allocated = time.monotonic() - started
    if failures:
        print(f"{server.name}: {len(failures)} allocate calls failed and were retried, "
              f"first: {failures[0]}", flush=True)
    running = 0
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        pool = str(call(proxy, "one.vmpool.info", server.session, -2, -1, -1, 3))
        running = pool.count("<LCM_STATE>3</LCM_STATE>")
        if running >= vms:
            break
        time.sleep(1.0)
    return {"allocate_s": allocated, "running": running, "failed_calls": len(failures),
            "all_running_s": time.monotonic() - started}


def latencies(calls: int, one: Callable[[], object]) -> tuple[float, float]:
    """Median and p95, in milliseconds, of ``calls`` runs of ``one`` (after 20 warm-ups)."""
    for _ in range(20):
        one()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        one()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.95) - 1]


def measure(server: Server, vms: int, calls: int, pool_calls: int) -> dict[str, float]:
    proxy = server.proxy()
    ids = [int(found) for found in re.findall(
        r"<VM>\s*<ID>(\d+)</ID>", str(call(proxy, "one.vmpool.info", server.session,
                                            -2, -1, -1, -1)))]
    if len(ids) < vms:
        print(f"{server.name}: only {len(ids)} of {vms} VMs in the pool", flush=True)
    info = latencies(calls, lambda: call(proxy, "one.vm.info", server.session,
                                         random.choice(ids)))
    pool = latencies(pool_calls, lambda: call(proxy, "one.vmpool.info", server.session,
                                              -2, -1, -1, -1))
    page = latencies(pool_calls, lambda: call(proxy, "one.vmpool.info", server.session,
                                              -2, 0, -2000, -1))
    return {"vm_info_ms": info[0], "vm_info_p95_ms": info[1], "pool_ms": pool[0],
            "pool_p95_ms": pool[1], "page_ms": page[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--pool-calls", type=int, default=30)
    parser.add_argument("--wait", type=float, default=300.0,
                        help="seconds to wait for every VM to run on each server")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-reads-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/RPC2"
    daemon = start_daemon(home, port)
    figures: dict[str, dict[str, float]] = {}
    try:
        ours = Server("cloudburst", url, wait_session(home, url))
        with start_peer() as peer:
            theirs = Server("opennebula", peer.url, peer.session)
            for server in (ours, theirs):
                figures[server.name] = populate(server, args.hosts, args.vms, args.clients,
                                                args.wait)
                print(f"{server.name}: {figures[server.name]['running']:.0f}/{args.vms} "
                      f"RUNNING {figures[server.name]['all_running_s']:.1f} s after the "
                      "first allocate", flush=True)
            for server in (ours, theirs):
                figures[server.name].update(measure(server, args.vms, args.calls,
                                                    args.pool_calls))
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    cb, one = figures["cloudburst"], figures["opennebula"]
    print(f"{'':24}{'cloudburst':>12}{'OpenNebula':>12}{'ratio':>8}")
    for key, label in (("vm_info_ms", "one.vm.info median ms"),
                       ("vm_info_p95_ms", "one.vm.info p95 ms"),
                       ("pool_ms", f"vmpool.info({args.vms}) ms"),
                       ("pool_p95_ms", "vmpool.info p95 ms"),
                       ("page_ms", "vmpool page 2000 ms"),
                       ("all_running_s", "all RUNNING s")):
        print(f"{label:24}{cb[key]:12.2f}{one[key]:12.2f}{one[key] / cb[key]:8.2f}")
    load = os.getloadavg()[0]
    print(f"RESULT vms={args.vms} hosts={args.hosts} "
          f"cb_vm_info_ms={cb['vm_info_ms']:.2f} one_vm_info_ms={one['vm_info_ms']:.2f} "
          f"vm_info_ratio={one['vm_info_ms'] / cb['vm_info_ms']:.2f} "
          f"cb_pool_ms={cb['pool_ms']:.1f} one_pool_ms={one['pool_ms']:.1f} "
          f"pool_ratio={one['pool_ms'] / cb['pool_ms']:.2f} "
          f"cb_running={cb['running']:.0f} one_running={one['running']:.0f} "
          f"one_failed_calls={one['failed_calls']:.0f} load={load:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""XML-RPC API speed with the daemon holding 10,000 VMs.

Starts the real daemon as a separate process (temporary CLOUDBURST_HOME, SQLite,
dummy hosts), then measures over real HTTP connections:

* ``one.vm.allocate`` calls per second from 8 concurrent client processes
  (goal: at least 500/s) while the scheduler places the VMs on dummy hosts;
* ``one.vm.info`` latency, median and p95 over 1,000 calls on random VMs
  (goal: median under 5 ms);
* ``one.vmpool.info(-2, -1, -1, -1)`` time for the whole pool, median of 5
  (goal: under 1 s; OpenNebula 6.10 publishes 0.78-1.27 s for its own),
  and ``one.vmpool.infoextended`` for comparison.

Usage: ``python bench/bench_api.py [--vms N] [--clients N] [--hosts N]``.
The last line is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = 'NAME = "bench"\nCPU = 0.1\nMEMORY = 64\n'
OPENNEBULA_POOL_SECONDS = (0.78, 1.27)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def call(proxy: xmlrpc.client.ServerProxy, method: str, *args: object) -> object:
    reply = getattr(proxy, method)(*args)
    if not reply[0]:
        raise RuntimeError(f"{method}: {reply[1]}")
    return reply[1]


def allocate_worker(url: str, session: str, count: int) -> int:
    proxy = xmlrpc.client.ServerProxy(url)
    for _ in range(count):
        call(proxy, "one.vm.allocate", session, TEMPLATE, False)
    return count


def start_daemon(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CLOUDBURST_HOME": str(home), "CLOUDBURST_PORT": str(port),
           "PYTHONPATH": str(REPO / "src")}
    (home / "etc").mkdir(parents=True)
    conf = (REPO / "share" / "etc" / "oned.conf").read_text()
    (home / "etc" / "oned.conf").write_text(conf + '\nLOG = [ LEVEL = "WARNING" ]\n'
                                            "MONITORING_INTERVAL = 600\n")
    return subprocess.Popen([sys.executable, "-m", "cloudburst.daemon.main", "-f"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(home / "oned.err", "wb"))


def wait_session(home: Path, url: str) -> str:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            session = (home / "one_auth").read_text().strip()
            call(xmlrpc.client.ServerProxy(url), "one.system.version", session)
            return session
        except (OSError, RuntimeError):
            time.sleep(0.1)
    raise RuntimeError("the daemon did not start")


def count_running(proxy: xmlrpc.client.ServerProxy, session: str) -> int:
    pool = str(call(proxy, "one.vmpool.info", session, -2, -1, -1, 3))
    return pool.count("<LCM_STATE>3</LCM_STATE>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--hosts", type=int, default=200)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-api-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/RPC2"
    daemon = start_daemon(home, port)
    try:
        session = wait_session(home, url)
        proxy = xmlrpc.client.ServerProxy(url)
        for index in range(args.hosts):
            call(proxy, "one.host.allocate", session, f"host{index:04d}", "dummy", "dummy", -1)

        per_client = args.vms // args.clients
        started = time.perf_counter()
        with multiprocessing.Pool(args.clients) as pool:
            done = sum(pool.starmap(allocate_worker,
                                    [(url, session, per_client)] * args.clients))
        allocate_seconds = time.perf_counter() - started
        allocations_per_second = done / allocate_seconds

        deadline = time.monotonic() + 300
        while count_running(proxy, session) < done and time.monotonic() < deadline:
            time.sleep(0.5)

        latencies = []
        for _ in range(1000):
            vm_id = random.randrange(done)
            began = time.perf_counter()
            call(proxy, "one.vm.info", session, vm_id)
            latencies.append((time.perf_counter() - began) * 1000)
        latencies.sort()

        def timed(method: str) -> float:
            runs = []
            for _ in range(5):
                began = time.perf_counter()
                document = str(call(proxy, method, session, -2, -1, -1, -1))
                runs.append(time.perf_counter() - began)
                assert document.count("<VM>") == done, "pool is incomplete"
            return statistics.median(runs)

        pool_seconds = timed("one.vmpool.info")
        extended_seconds = timed("one.vmpool.infoextended")
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    result = {
        "vms": done,
        "clients": args.clients,
        "allocate_per_s": allocations_per_second,
        "vm_info_median_ms": statistics.median(latencies),
        "vm_info_p95_ms": latencies[int(len(latencies) * 0.95) - 1],
        "vmpool_info_s": pool_seconds,
        "vmpool_infoextended_s": extended_seconds,
        "pool_ratio_vs_opennebula_best": OPENNEBULA_POOL_SECONDS[0] / pool_seconds,
    }
    print(f"one.vm.allocate       {allocations_per_second:.0f} calls/s from {args.clients} "
          "clients (goal >= 500)")
    print(f"one.vm.info           median {result['vm_info_median_ms']:.2f} ms, "
          f"p95 {result['vm_info_p95_ms']:.2f} ms (goal median < 5 ms)")
    print(f"one.vmpool.info       {pool_seconds:.3f} s for {done} VMs (goal < 1 s; "
          f"OpenNebula 6.10: 0.78-1.27 s)")
    print(f"one.vmpool.infoextended {extended_seconds:.3f} s")
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

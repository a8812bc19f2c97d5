"""Reads side by side: cloudburst and OpenNebula 6.10.5 with the same pools, same client.

Starts both servers on this machine: the cloudburst daemon as a separate process
(temporary ``CLOUDBURST_HOME``, SQLite, dummy drivers) and the prebuilt
OpenNebula peer of ``shared/opennebula-peer`` (``tests/one_peer.py``: oned,
its scheduler with ``SCHED_INTERVAL=1``, dummy drivers). Each gets the same
workload through plain XML-RPC: ``--hosts`` dummy hosts, then ``--vms`` VMs
allocated by ``--clients`` concurrent clients, waited for until RUNNING (or
``--wait`` seconds). Then one client per server, each on a kept HTTP/1.1
connection, times the same calls **alternating between the servers call by
call** (and which one goes first, round by round), so a burst of other load on
the machine lands on both alike:

* ``one.vm.info`` on random VMs (``--calls`` calls per server);
* ``one.vmpool.info(-2, -1, -1, -1)``, the whole pool of short documents;
* the page ``one.vmpool.info(-2, 0, -2000, -1)``;
* ``one.vmpool.infoextended(-2, -1, -1, -1)``, the whole pool of full documents;
* ``one.hostpool.info`` (``--pool-calls`` calls per server for the pools).

Each call is timed until its reply is received (the server's work and the
transfer) and until the client has parsed it with ``xmlrpc.client`` (what a
pyone user waits for; the parsing costs the same for documents of the same
size). It prints the medians and the ratio OpenNebula / cloudburst of both
(above 1: cloudburst is faster). ``--probe-period`` slows the peer's
monitoring probes (stock: VM states every 5 s per host), which at 100 dummy
hosts otherwise keep the machine's two cores busy.

Usage: ``python bench/bench_reads_vs_opennebula.py [--vms 1000] [--hosts 100]``.
Run it under ``flock /work/suite.lock`` on a shared machine. The last line is
``RESULT key=value ...`` (medians until received, ms) with the machine's
1-minute load average.
"""

from __future__ import annotations

import argparse
import http.client
import os
import random
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
import xmlrpc.client
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "bench"))

from bench_api import call, free_port, start_daemon, wait_session  # noqa: E402

from one_peer import start_peer  # noqa: E402

TEMPLATE = 'NAME = "bench"\nCPU = 0.1\nMEMORY = 64\n'
#: Tries of one call (a loaded server may time out or refuse one).
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


class Client:
    """One kept HTTP/1.1 connection to a server: a call is timed until its reply is
    received, then until the same Python client has parsed it (as pyone does)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        parts = urllib.parse.urlsplit(server.url)
        self._path = parts.path or "/"
        self._connection = http.client.HTTPConnection(parts.hostname or "127.0.0.1",
                                                      parts.port or 80, timeout=120)

    def timed(self, method: str, *args: object) -> tuple[float, float]:
        """Milliseconds until ``method``'s reply is received, and until it is parsed.

        Raises:
            RuntimeError: the call failed.
        """
        body = xmlrpc.client.dumps((self.server.session, *args), method).encode()
        started = time.perf_counter()
        self._connection.request("POST", self._path, body, {"Content-Type": "text/xml"})
        data = self._connection.getresponse().read()
        received = time.perf_counter()
        reply = xmlrpc.client.loads(data)[0][0]
        parsed = time.perf_counter()
        if not reply[0]:
            raise RuntimeError(f"{self.server.name} {method}: {reply[1]}")
        return (received - started) * 1000, (parsed - started) * 1000

    def close(self) -> None:
        self._connection.close()


#: A measured call: its label and, for a client, the arguments of the next call.
Workload = tuple[str, str, Callable[[Client], tuple[object, ...]]]


def interleaved(clients: list[Client], workload: Workload, calls: int
                ) -> dict[str, dict[str, float]]:
    """Median and p95 (ms, received and parsed) of ``calls`` calls on each server,
    the servers alternating call by call (and which goes first, round by round), so
    a burst of other load on the machine lands on both alike. 10 warm-up rounds."""
    _, method, arguments = workload
    times: dict[str, list[tuple[float, float]]] = {client.server.name: [] for client in clients}
    failed: dict[str, int] = {client.server.name: 0 for client in clients}
    for round_number in range(calls + 10):
        order = clients if round_number % 2 == 0 else clients[::-1]
        for client in order:
            for _ in range(ALLOCATE_TRIES):
                try:
                    figures = client.timed(method, *arguments(client))
                    break
                except RuntimeError as exc:  # a loaded oned may refuse one (auth timeout)
                    failed[client.server.name] += 1
                    if failed[client.server.name] == 1:
                        print(f"{client.server.name} {method} failed (retried): {exc}",
                              flush=True)
            else:
                raise RuntimeError(f"{client.server.name} {method} failed {ALLOCATE_TRIES} "
                                   "times in a row")
            if round_number >= 10:
                times[client.server.name].append(figures)
    summary: dict[str, dict[str, float]] = {}
    for name, measured in times.items():
        received = sorted(figure[0] for figure in measured)
        parsed = sorted(figure[1] for figure in measured)
        summary[name] = {"received": statistics.median(received),
                         "parsed": statistics.median(parsed), "failed": failed[name],
                         "received_p95": received[max(0, int(len(received) * 0.95) - 1)]}
    return summary


def vm_ids(server: Server) -> list[int]:
    pool = str(call(server.proxy(), "one.vmpool.info", server.session, -2, -1, -1, -1))
    return [int(found) for found in re.findall(r"<VM>\s*<ID>(\d+)</ID>", pool)]


def slow_probes(directory: Path, seconds: int) -> None:
    """Make the peer in ``directory`` (unpacked by an earlier start) run its host and VM
    monitoring probes every ``seconds`` at most, from its next start on.

    Every dummy host's probes are Ruby processes: at 100 hosts the stock periods
    (VM states every 5 s) keep both cores busy and slow everything else.
    """
    conf = directory / ".etc-dist" / "monitord.conf"
    text = conf.read_text(encoding="utf-8")
    for probe in ("BEACON_HOST", "SYSTEM_HOST", "MONITOR_HOST", "STATE_VM", "MONITOR_VM",
                  "SYNC_STATE_VM"):
        text, found = re.subn(rf"(\b{probe}\s*=\s*)\d+", rf"\g<1>{seconds}", text, count=1)
        if not found:
            raise RuntimeError(f"{conf}: no {probe} period to change")
    conf.write_text(text, encoding="utf-8")


def workloads(ids: dict[str, list[int]], vms: int) -> list[Workload]:
    """The calls compared: one VM, the whole pool (short and extended), a page."""
    return [
        ("one.vm.info", "one.vm.info", lambda client: (random.choice(ids[client.server.name]),)),
        (f"vmpool.info ({vms})", "one.vmpool.info", lambda client: (-2, -1, -1, -1)),
        ("vmpool page -2000", "one.vmpool.info", lambda client: (-2, 0, -2000, -1)),
        (f"vmpool.infoextended ({vms})", "one.vmpool.infoextended",
         lambda client: (-2, -1, -1, -1)),
        ("hostpool.info", "one.hostpool.info", lambda client: ()),
    ]


#: Short keys of the workloads, for the RESULT line.
KEYS = ("vm_info", "pool", "page", "pool_ext", "hostpool")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=100)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--pool-calls", type=int, default=30)
    parser.add_argument("--wait", type=float, default=300.0,
                        help="seconds to wait for every VM to run on each server")
    parser.add_argument("--probe-period", type=int, default=0,
                        help="the peer's monitoring probe periods, seconds (0: stock)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-reads-"))
    peer_home = home / "peer"
    port = free_port()
    url = f"http://127.0.0.1:{port}/RPC2"
    daemon = start_daemon(home / "cloudburst", port)
    figures: dict[str, dict[str, float]] = {}
    results: list[tuple[str, dict[str, dict[str, float]]]] = []
    load_start = os.getloadavg()[0]
    try:
        ours = Server("cloudburst", url, wait_session(home / "cloudburst", url))
        if args.probe_period:
            with start_peer(peer_home):  # unpacks the tree, whose config is then changed
                pass
            slow_probes(peer_home, args.probe_period)
        with start_peer(peer_home) as peer:
            theirs = Server("opennebula", peer.url, peer.session)
            for server in (ours, theirs):
                figures[server.name] = populate(server, args.hosts, args.vms, args.clients,
                                                args.wait)
                print(f"{server.name}: {figures[server.name]['running']:.0f}/{args.vms} "
                      f"RUNNING {figures[server.name]['all_running_s']:.1f} s after the "
                      "first allocate", flush=True)
            ids = {server.name: vm_ids(server) for server in (ours, theirs)}
            for name, found in ids.items():
                if len(found) < args.vms:
                    print(f"{name}: only {len(found)} of {args.vms} VMs in the pool", flush=True)
            load_start = os.getloadavg()[0]
            clients = [Client(ours), Client(theirs)]
            try:
                for workload in workloads(ids, args.vms):
                    calls = args.calls if workload[1] == "one.vm.info" else args.pool_calls
                    results.append((workload[0], interleaved(clients, workload, calls)))
            finally:
                for client in clients:
                    client.close()
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)
    load = os.getloadavg()[0]
    cb, one = figures["cloudburst"], figures["opennebula"]
    print(f"load {load_start:.1f} -> {load:.1f}; ratio = OpenNebula / cloudburst "
          "(above 1: cloudburst is faster)")
    print(f"{'median ms':28}{'received: cb':>13}{'ONE':>9}{'ratio':>7}"
          f"{'parsed: cb':>12}{'ONE':>9}{'ratio':>7}")
    fields = [f"vms={args.vms}", f"hosts={args.hosts}"]
    for key, (label, summary) in zip(KEYS, results, strict=True):
        ours_, theirs_ = summary["cloudburst"], summary["opennebula"]
        ratio = theirs_["received"] / ours_["received"]
        print(f"{label:28}{ours_['received']:13.2f}{theirs_['received']:9.2f}{ratio:7.2f}"
              f"{ours_['parsed']:12.2f}{theirs_['parsed']:9.2f}"
              f"{theirs_['parsed'] / ours_['parsed']:7.2f}")
        fields += [f"cb_{key}_ms={ours_['received']:.2f}",
                   f"one_{key}_ms={theirs_['received']:.2f}", f"{key}_ratio={ratio:.2f}"]
    print(f"{'all RUNNING s':28}{cb['all_running_s']:13.1f}{one['all_running_s']:9.1f}"
          f"{one['all_running_s'] / cb['all_running_s']:7.2f}")
    for name, key in (("cloudburst", "cb"), ("opennebula", "one")):
        failed = sum(summary[name]["failed"] for _, summary in results)
        fields.append(f"{key}_failed_reads={failed:.0f}")
    fields += [f"cb_running={cb['running']:.0f}", f"one_running={one['running']:.0f}",
               f"one_failed_calls={one['failed_calls']:.0f}", f"load={load:.1f}"]
    print("RESULT " + " ".join(fields))
    return 0


if __name__ == "__main__":
    sys.exit(main())

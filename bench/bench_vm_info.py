"""``one.vm.info`` latency on SQLite and PostgreSQL, in-process and over HTTP.

Runs the real daemon in this process (temporary ``CLOUDBURST_HOME``, the API on a
free port; ``--postgresql``: a throw-away server from ``tests/pg_server.py``),
creates ``--vms`` held VMs (nothing deploys them: the daemon is quiet, so the
figures are the call's own cost; ``bench_scale.py`` measures it after a burst),
waits ``--settle`` seconds and reads random VMs as oneadmin:

* in-process: :func:`cloudburst.api.xmlrpc.dispatch` on the daemon's loop (the
  access check, the store's reads and the document, no HTTP);
* over HTTP from a separate client process on one kept connection (goal of
  issue 17: median under 2 ms at 100,000 VMs).

Usage: ``python bench/bench_vm_info.py [--vms N] [--calls N] [--postgresql]``.
Run it under ``flock /work/suite.lock`` on a shared machine. The last line is
``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cloudburst.api import xmlrpc
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings, tune_interpreter

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_scale import store_url

TEMPLATE = 'NAME = "info"\nCPU = 0.5\nMEMORY = 512\n'
BATCH = 1000

#: The client: ``one.vm.info`` on random VMs over one kept HTTP connection, as JSON.
CLIENT = r"""
import json, random, statistics, sys, time, xmlrpc.client
url, session, vms, calls = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
server = xmlrpc.client.ServerProxy(url)
times = []
for _ in range(calls):
    vm_id = random.randrange(vms)
    started = time.perf_counter()
    result = server.one.vm.info(session, vm_id)
    times.append(time.perf_counter() - started)
    assert result[0], result
times.sort()
print(json.dumps({"median_ms": statistics.median(times) * 1000,
                  "p95_ms": times[int(len(times) * 0.95)] * 1000}))
"""


async def run(vm_count: int, calls: int, settle: float, url: str) -> dict[str, float | int | str]:
    home = Path(tempfile.mkdtemp(prefix="cloudburst-info-"))
    settings, _ = load_settings(home)
    daemon = Daemon(dataclasses.replace(settings, port=0, db_url=url))
    await daemon.start(serve_api=True)
    try:
        for first in range(0, vm_count, BATCH):
            await asyncio.gather(*(daemon.vms.allocate(TEMPLATE, hold=True)
                                   for _ in range(min(BATCH, vm_count - first))))
        session = settings.auth_file.read_text(encoding="utf-8").split()[0]
        # The creations' log lines, files and events are written after they return.
        await asyncio.sleep(settle)
        times = []
        for _ in range(calls):
            vm_id = random.randrange(vm_count)
            started = time.perf_counter()
            reply = await xmlrpc.dispatch(daemon, "one.vm.info", [session, vm_id])
            times.append(time.perf_counter() - started)
            assert reply[0], reply
        times.sort()
        client = await asyncio.create_subprocess_exec(
            sys.executable, "-c", CLIENT, f"http://127.0.0.1:{daemon.api.port}/RPC2", session,
            str(vm_count), str(calls), stdout=subprocess.PIPE)
        output, _ = await client.communicate()
        if client.returncode != 0:
            raise RuntimeError("the HTTP client failed")
        http = json.loads(output)
    finally:
        await daemon.stop()
        shutil.rmtree(home, ignore_errors=True)
    return {"store": "postgresql" if url else "sqlite", "vms": vm_count, "calls": calls,
            "in_process_median_ms": statistics.median(times) * 1000,
            "in_process_p95_ms": times[int(len(times) * 0.95)] * 1000,
            "http_median_ms": http["median_ms"], "http_p95_ms": http["p95_ms"],
            "load_1min": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--calls", type=int, default=2_000)
    parser.add_argument("--settle", type=float, default=5.0,
                        help="seconds to wait after the creations before reading")
    parser.add_argument("--postgresql", action="store_true",
                        help="run on a throw-away PostgreSQL server instead of SQLite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with store_url(args.postgresql) as url:
        tune_interpreter()  # as the daemon does
        result = asyncio.run(run(args.vms, args.calls, args.settle, url))
    print(f"store        {result['store']}, {args.vms} held VMs (load {result['load_1min']:.1f})")
    for label, key in (("in-process", "in_process"), ("over HTTP", "http")):
        print(f"{label:<12} {result[f'{key}_median_ms']:.3f} ms median, "
              f"p95 {result[f'{key}_p95_ms']:.3f} ms")
    print("goal         median < 2 ms at 100,000 VMs (issue 17)")
    fields = [f"{key}={value:.3f}" if isinstance(value, float) else f"{key}={value}"
              for key, value in result.items()]
    print("RESULT", *fields)
    return 0


if __name__ == "__main__":
    sys.exit(main())

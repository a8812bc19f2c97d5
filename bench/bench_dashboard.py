"""Dashboard speed with the daemon holding 10,000 VMs.

Starts the real daemon as a separate process (temporary CLOUDBURST_HOME, SQLite,
dummy hosts), fills it with VMs over XML-RPC, then measures over real HTTP:

* ``GET /api/v1/overview`` (what the overview page reads), median of 20;
* ``GET /api/v1/vms`` pages: the first page by id, a page sorted by name
  descending deep in the pool, and a name search; medians of 20;
* ``GET /api/v1/vms/{id}`` (a VM's page), median of 50;
* the push delay: from ``one.vm.allocate`` returning to the change arriving on
  an open ``/api/v1/events`` stream, median of 20 (batched every 0.25 s);
* in Debian's chromium (headless, through Playwright): from navigation to the
  overview showing its numbers for the whole pool, median of 5 loads (goal:
  under 1 s).

Usage: ``python bench/bench_dashboard.py [--vms N] [--hosts N] [--clients N]``.
The last line is ``RESULT key=value ...``.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_api import allocate_worker, call, free_port, wait_session

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def start_daemon(home: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CLOUDBURST_HOME": str(home), "CLOUDBURST_PORT": str(port),
           "PYTHONPATH": str(REPO / "src")}
    (home / "etc").mkdir(parents=True)
    conf = (REPO / "share" / "etc" / "oned.conf").read_text()
    (home / "etc" / "oned.conf").write_text(conf + '\nLOG = [ LEVEL = "WARNING" ]\n'
                                            "MONITORING_INTERVAL = 600\n")
    return subprocess.Popen([sys.executable, "-m", "cloudburst.daemon.main", "-f"], env=env,
                            stdout=subprocess.DEVNULL, stderr=open(home / "oned.err", "wb"))


class Http:
    """GETs with Basic credentials on one kept-alive connection."""

    def __init__(self, port: int, session: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Authorization": "Basic " + base64.b64encode(session.encode()).decode()}

    def get(self, path: str) -> dict[str, object]:
        self.connection.request("GET", path, headers=self.headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.status != 200:
            raise RuntimeError(f"GET {path}: {response.status} {body[:200]!r}")
        value = json.loads(body)
        assert isinstance(value, dict)
        return value

    def median_ms(self, path: str, runs: int) -> float:
        times = []
        for _ in range(runs):
            began = time.perf_counter()
            self.get(path)
            times.append((time.perf_counter() - began) * 1000)
        return statistics.median(times)


def push_delay_ms(port: int, session: str, url: str, runs: int) -> float:
    """Median delay from an allocation's reply to its change on the event stream."""
    auth = "Basic " + base64.b64encode(session.encode()).decode()
    stream = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    stream.request("GET", "/api/v1/events", headers={"Authorization": auth})
    response = stream.getresponse()
    proxy = xmlrpc.client.ServerProxy(url)
    delays = []
    try:
        while b"hello" not in response.readline():
            pass
        for run in range(runs):
            name = f"pushed-{run}"
            call(proxy, "one.vm.allocate", session, f'NAME="{name}" CPU=0.1 MEMORY=8', True)
            sent = time.perf_counter()
            while True:
                line = response.readline()
                if line.startswith(b"data: ") and f'"{name}"'.encode() in line:
                    break
            delays.append((time.perf_counter() - sent) * 1000)
    finally:
        stream.close()
    return statistics.median(delays)


def browser_overview_ms(port: int, session: str, total: int, runs: int) -> float:
    """Median time from navigation to the overview showing the whole pool's numbers."""
    from playwright.sync_api import sync_playwright

    user, password = session.split(":", 1)
    shown = f"VMs: {total:,}"
    times = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1366, "height": 860})
            page.goto(f"http://127.0.0.1:{port}/")
            page.get_by_label("User").fill(user)
            page.get_by_label("Password").fill(password)
            page.get_by_role("button", name="Log in").click()
            page.get_by_text(shown).wait_for(timeout=30000)
            for _ in range(runs):
                began = time.perf_counter()
                page.goto(f"http://127.0.0.1:{port}/#/overview")
                page.reload()
                page.get_by_text(shown).wait_for(timeout=30000)
                times.append((time.perf_counter() - began) * 1000)
        finally:
            browser.close()
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vms", type=int, default=10000)
    parser.add_argument("--hosts", type=int, default=200)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="cloudburst-bench-web-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}/RPC2"
    daemon = start_daemon(home, port)
    try:
        session = wait_session(home, url)
        proxy = xmlrpc.client.ServerProxy(url)
        for index in range(args.hosts):
            call(proxy, "one.host.allocate", session, f"host{index:04d}", "dummy", "dummy", -1)
        per_client = args.vms // args.clients
        with multiprocessing.Pool(args.clients) as pool:
            done = sum(pool.starmap(allocate_worker,
                                    [(url, session, per_client)] * args.clients))
        client = Http(port, session)
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            overview = client.get("/api/v1/overview")
            by_state = overview["vms_by_state"]
            assert isinstance(by_state, dict)
            if by_state.get("runn", 0) >= done:
                break
            time.sleep(1)
        total = int(str(client.get("/api/v1/overview")["vms_total"]))
        overview_ms = client.median_ms("/api/v1/overview", 20)
        first_page_ms = client.median_ms("/api/v1/vms?limit=50", 20)
        deep_page_ms = client.median_ms(
            f"/api/v1/vms?sort=name&order=desc&limit=50&offset={done // 2}", 20)
        search_ms = client.median_ms("/api/v1/vms?q=bench&sort=state&limit=50&offset=5000", 20)
        vm_ms = client.median_ms(f"/api/v1/vms/{done // 3}", 50)
        push_ms = push_delay_ms(port, session, url, 20)
        total = int(str(client.get("/api/v1/overview")["vms_total"]))
        browser_ms = browser_overview_ms(port, session, total, 5)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
        shutil.rmtree(home, ignore_errors=True)

    result = {
        "vms": total,
        "overview_api_ms": overview_ms,
        "vms_first_page_ms": first_page_ms,
        "vms_deep_sorted_page_ms": deep_page_ms,
        "vms_search_page_ms": search_ms,
        "vm_page_api_ms": vm_ms,
        "push_delay_ms": push_ms,
        "browser_overview_ms": browser_ms,
    }
    print(f"GET /api/v1/overview         median {overview_ms:.1f} ms for {total} VMs")
    print(f"GET /api/v1/vms (page 1)     median {first_page_ms:.1f} ms")
    print(f"GET /api/v1/vms (sorted, deep) median {deep_page_ms:.1f} ms")
    print(f"GET /api/v1/vms (search)     median {search_ms:.1f} ms")
    print(f"GET /api/v1/vms/ID           median {vm_ms:.1f} ms")
    print(f"event stream push delay      median {push_ms:.1f} ms (batches every 250 ms)")
    print(f"overview in chromium         median {browser_ms:.0f} ms (goal < 1000 ms)")
    print("RESULT " + " ".join(f"{key}={value:.1f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in result.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``/metrics`` of a real daemon, scraped over HTTP during a burst of VMs."""

from __future__ import annotations

import contextlib
import json
import re
import threading
import urllib.error
import urllib.request
from base64 import b64encode
from collections import Counter
from pathlib import Path

import pyone
import pytest
from burst_helpers import conf_text, ec2_etc, start
from daemon_fixture import REPO, RunningDaemon, start_daemon, stop, wait_for
from prometheus_client.parser import text_string_to_metric_families

from ec2_sites import FaultProxy, moto_servers
from seed_templates import EC2_IM_MAD, ec2_vm_mad

pytestmark = pytest.mark.e2e

BURST = 300
DASHBOARD = REPO / "share" / "grafana" / "cloudburst-dashboard.json"


#: Metric samples by (name, sorted labels).
Samples = dict[tuple[str, tuple], float]


def scrape(daemon: RunningDaemon, session: str | None = None) -> Samples:
    """Every sample of ``/metrics``, keyed by (name, sorted labels)."""
    text = scrape_text(daemon, session)
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape_text(daemon: RunningDaemon, session: str | None = None) -> str:
    request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/metrics")
    credentials = daemon.session if session is None else session
    request.add_header("Authorization", "Basic " + b64encode(credentials.encode()).decode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return response.read().decode()


def total(samples: Samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(value for (sample, key), value in samples.items()
               if sample == name and wanted <= set(key))


def test_metrics_move_with_a_burst(tmp_path: Path) -> None:
    with start_daemon(tmp_path, oned_conf_extra="SCHED_INTERVAL = 1\n") as daemon:
        request = urllib.request.Request(f"http://127.0.0.1:{daemon.port}/metrics")
        with pytest.raises(urllib.error.HTTPError) as anonymous:
            urllib.request.urlopen(request, timeout=10)
        assert anonymous.value.code == 401
        assert anonymous.value.read() == b"metrics need HTTP Basic credentials\n"
        with pytest.raises(urllib.error.HTTPError) as wrong:
            scrape(daemon, "oneadmin:not-the-password")
        assert wrong.value.code == 401

        one = pyone.OneServer(daemon.url, session=daemon.session)
        hosts = [one.host.allocate(f"node{i}", "dummy", "dummy", -1) for i in range(3)]
        wait_for(lambda: all(one.host.info(h).STATE == 2 for h in hosts), timeout=30)
        before = scrape(daemon)
        assert total(before, "cloudburst_leader") == 1
        assert total(before, "opennebula_host_total") == 3
        assert total(before, "opennebula_vm_total") == 0
        assert total(before, "cloudburst_driver_calls_total", action="deploy") == 0

        def allocate(count: int) -> None:
            server = pyone.OneServer(daemon.url, session=daemon.session)
            for _ in range(count):
                server.vm.allocate("CPU=0.01 MEMORY=1", False)

        clients = [threading.Thread(target=allocate, args=(BURST // 3,)) for _ in range(3)]
        for client in clients:
            client.start()
        during = wait_for(lambda: (s := scrape(daemon)) and total(
            s, "cloudburst_driver_calls_total", driver="dummy", action="deploy") > 0 and s,
            timeout=60, interval=0.05)
        for client in clients:
            client.join(timeout=60)

        def all_running() -> dict[tuple[str, tuple], float] | None:
            samples = scrape(daemon)
            running = total(samples, "cloudburst_vms", state="ACTIVE", lcm_state="RUNNING")
            return samples if running == BURST else None

        after = wait_for(all_running, timeout=120, interval=0.5)
        deploys = total(after, "cloudburst_driver_calls_total", driver="dummy", action="deploy")
        assert deploys >= BURST > total(during, "cloudburst_driver_calls_total",
                                        driver="dummy", action="deploy") - 1
        assert total(after, "cloudburst_driver_call_seconds_count", action="deploy") == deploys
        assert total(after, "opennebula_vm_total") == BURST
        assert sum(total(after, "opennebula_host_vms", one_host_id=str(h)) for h in hosts) == BURST
        assert total(after, "cloudburst_scheduler_placed_vms_total") >= BURST
        for name in ("cloudburst_scheduler_pass_seconds_count",
                     "cloudburst_store_commit_seconds_count",
                     "cloudburst_store_commit_writes_sum"):
            assert total(after, name) > total(before, name), name
        assert total(after, "cloudburst_driver_errors_total") == 0
        assert total(after, "opennebula_host_state", one_host_id=str(hosts[0])) == 2
        # Every series the sample Grafana dashboard asks for is exposed.
        declared = set(re.findall(r"^# TYPE (\S+) ", scrape_text(daemon), re.MULTILINE))
        exposed = {name for base in declared
                   for name in (base, *(f"{base}_{suffix}" for suffix in ("bucket", "count",
                                                                          "sum", "total")))}
        panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
        wanted = {name for panel in panels for target in panel["targets"]
                  for name in re.findall(r"\b(?:cloudburst|opennebula)_[a-z_]+", target["expr"])}
        assert wanted and wanted <= exposed, wanted - exposed


EC2_VM = 'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair" ]\n'


def test_cloud_api_calls_throttles_and_retries_by_site_and_action(
        tmp_path: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    """The counters say what the provider saw: a real moto_server behind a proxy that
    counts every request and throttles the first two RunInstances."""
    ec2_etc(tmp_path / "d" / "home" / "etc", small_instances=50,
            rc_extra="EC2_RETRY_BASE_DELAY=0.1\nEC2_RETRY_MAX_DELAY=0.5\n")
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as sites, \
            FaultProxy(sites[0].url) as proxy:
        proxy.add_fault("RunInstances", "throttle", times=2)
        daemon = start(tmp_path / "d", conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url)))
        try:
            one = pyone.OneServer(daemon.url, session=daemon.session)
            host = one.host.allocate("ec2", "im_ec2", "vmm_ec2", -1)
            wait_for(lambda: one.host.info(host).STATE == 2, timeout=60)
            vm_ids = [one.vm.allocate(EC2_VM, False) for _ in range(6)]
            wait_for(lambda: all(one.vm.info(vm_id).LCM_STATE == 3 for vm_id in vm_ids),
                     timeout=120, interval=0.5)
            # The proxy counts a request when it arrives, the daemon when its answer does,
            # and polls go on: compare a scrape with the proxy's counts taken on both sides
            # of it, once no call is in flight (a miscount never settles; the checks below
            # then name it).
            snapshot: list[tuple[Samples, Counter[str]]] = []

            def settled() -> bool:
                before = proxy.counts
                snapshot[:] = [(scrape(daemon), proxy.counts)]
                samples, seen = snapshot[0]
                # A call's counter and its latency are two samples: a scrape may fall
                # between them.
                return before == seen and all(
                    total(samples, name, action=action) == count
                    for action, count in seen.items()
                    for name in ("cloudburst_cloud_api_calls_total",
                                 "cloudburst_cloud_api_seconds_count"))

            with contextlib.suppress(TimeoutError):
                wait_for(settled, timeout=15, interval=0.2)
            assert snapshot, "/metrics never answered"
            samples, seen = snapshot[0]
        finally:
            stop(daemon.process)
    runs = seen["RunInstances"]
    assert runs >= 3  # two throttled, then at least one that launched
    assert total(samples, "cloudburst_cloud_api_calls_total", site="vmm_ec2",
                 action="RunInstances") == runs
    assert total(samples, "cloudburst_cloud_api_throttles_total", site="vmm_ec2",
                 action="RunInstances") == 2
    assert total(samples, "cloudburst_cloud_api_retries_total", site="vmm_ec2",
                 action="RunInstances") == 2
    assert total(samples, "cloudburst_cloud_api_errors_total") == 0
    # Every request the provider saw was counted, under its action, and nothing else.
    for action, count in seen.items():
        assert total(samples, "cloudburst_cloud_api_calls_total", action=action) == count, action
        assert total(samples, "cloudburst_cloud_api_seconds_count", action=action) == count
    assert total(samples, "cloudburst_cloud_api_calls_total") == sum(seen.values())

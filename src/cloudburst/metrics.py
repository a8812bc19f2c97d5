"""Prometheus metrics: what the daemon counts, and the pool gauges read at scrape time.

Counters and histograms are updated at the seams, one call each: the driver
dispatcher (calls, errors, latency by driver and action), the scheduler loop
(pass time, VMs waiting by reason), the store writer (commit latency and
batch size) and the leadership (leader status, lease changes). They live in
:data:`REGISTRY`, this process's own registry.

Pool gauges (VMs by state, by host; hosts by state and capacity) are read
from the store when ``/metrics`` is scraped (:func:`pool_snapshot`), so every
daemon of a shared store reports the same numbers. Names follow OpenNebula's
exporter where it has one (``opennebula_host_*``, ``opennebula_vm_total``);
the rest are ``cloudburst_*``. OpenNebula's per-VM series
(``opennebula_vm_state{one_vm_id=...}``) are left out: at 100,000 VMs they
would dwarf everything else; ``cloudburst_vms`` counts VMs by state instead.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import Connection, func, select

from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.store.schema import hosts, vms

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

DRIVER_CALLS = Counter(
    "cloudburst_driver_calls", "Driver actions run (each retry counts)",
    ["driver", "action"], registry=REGISTRY)
DRIVER_ERRORS = Counter(
    "cloudburst_driver_errors", "Driver action attempts that failed",
    ["driver", "action", "kind"], registry=REGISTRY)
DRIVER_SECONDS = Histogram(
    "cloudburst_driver_call_seconds", "Time of one driver action attempt",
    ["driver", "action"], buckets=_LATENCY, registry=REGISTRY)
DRIVER_RETRIES = Counter(
    "cloudburst_driver_retries", "Driver actions retried after a retryable failure",
    ["driver", "action"], registry=REGISTRY)

CLOUD_API_CALLS = Counter(
    "cloudburst_cloud_api_calls", "Calls sent to a cloud provider's API (each attempt counts)",
    ["site", "action"], registry=REGISTRY)
CLOUD_API_THROTTLES = Counter(
    "cloudburst_cloud_api_throttles", "Cloud API calls the provider throttled",
    ["site", "action"], registry=REGISTRY)
CLOUD_API_RETRIES = Counter(
    "cloudburst_cloud_api_retries", "Cloud API calls tried again after a retryable failure",
    ["site", "action"], registry=REGISTRY)
CLOUD_API_ERRORS = Counter(
    "cloudburst_cloud_api_errors", "Cloud API calls that failed for good",
    ["site", "action"], registry=REGISTRY)
CLOUD_API_SECONDS = Histogram(
    "cloudburst_cloud_api_seconds", "Time of one cloud API call attempt (answered or failed)",
    ["site", "action"], buckets=_LATENCY, registry=REGISTRY)

SCHEDULER_PASS_SECONDS = Histogram(
    "cloudburst_scheduler_pass_seconds", "Time of one placement pass",
    buckets=_LATENCY, registry=REGISTRY)
SCHEDULER_PLACED = Counter(
    "cloudburst_scheduler_placed_vms", "VMs the scheduler dispatched to a host",
    registry=REGISTRY)
SCHEDULER_WAITING = Gauge(
    "cloudburst_scheduler_pending_vms", "Pending VMs the last pass could not place, by reason",
    ["reason"], registry=REGISTRY)

STORE_COMMIT_SECONDS = Histogram(
    "cloudburst_store_commit_seconds", "Time of one group commit of the store writer",
    buckets=_LATENCY, registry=REGISTRY)
STORE_COMMIT_WRITES = Histogram(
    "cloudburst_store_commit_writes", "Writes in one group commit",
    buckets=(1, 2, 5, 10, 50, 100, 500, 1000), registry=REGISTRY)

LEADER = Gauge("cloudburst_leader", "1 while this daemon leads (holds the lease)",
               registry=REGISTRY)
LEASE_EPOCH = Gauge("cloudburst_lease_epoch", "Epoch of the lease this daemon last held",
                    registry=REGISTRY)
LEASE_CHANGES = Counter("cloudburst_lease_changes", "Times this daemon took or lost the lease",
                        registry=REGISTRY)
LEASE_RENEW_SECONDS = Histogram(
    "cloudburst_lease_renew_seconds", "Seconds a lease renewal took, sent to answered",
    buckets=_LATENCY, registry=REGISTRY)
LEASE_RENEW_LATE_SECONDS = Histogram(
    "cloudburst_lease_renew_late_seconds",
    "Seconds the renewing thread started a renewal after it was due (the process starved)",
    buckets=_LATENCY, registry=REGISTRY)


@functools.lru_cache(maxsize=1024)
def _driver_series(driver: str, action: str) -> tuple[Counter, Histogram]:
    # A driver action's series, found once (``labels()`` locks and looks up on each
    # call: every deploy, poll and monitoring makes one). They are never removed.
    return DRIVER_CALLS.labels(driver, action), DRIVER_SECONDS.labels(driver, action)


class driver_attempt:
    """Count and time one attempt of a driver action; failures count by exception class.

    A class, not a generator: every deploy, poll and monitoring call makes one.
    """

    __slots__ = ("_action", "_calls", "_driver", "_seconds", "_started")

    def __init__(self, driver: str, action: str) -> None:
        self._driver, self._action = driver, action
        self._calls, self._seconds = _driver_series(driver, action)
        self._started = 0.0

    def __enter__(self) -> None:
        self._calls.inc()
        self._started = time.perf_counter()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self._seconds.observe(time.perf_counter() - self._started)
        if isinstance(error, Exception):
            DRIVER_ERRORS.labels(self._driver, self._action, type(error).__name__).inc()


class _CloudApiCounters:
    """The :class:`~cloudburst.drivers.base.CloudApiObserver` every driver is given."""

    _COUNTERS: Mapping[str, Counter] = {
        "call": CLOUD_API_CALLS, "throttle": CLOUD_API_THROTTLES,
        "retry": CLOUD_API_RETRIES, "error": CLOUD_API_ERRORS}

    def cloud_api(self, site: str, action: str, event: str) -> None:
        self._COUNTERS[event].labels(site, action).inc()

    def cloud_api_seconds(self, site: str, action: str, seconds: float) -> None:
        CLOUD_API_SECONDS.labels(site, action).observe(seconds)


#: Counts cloud API calls, throttles, retries, errors and latency by site (driver section)
#: and action.
CLOUD_API = _CloudApiCounters()


def leadership_changed(epoch: int | None, last_epoch: int) -> None:
    """This daemon took (``epoch``) or lost (None) the lease."""
    LEADER.set(0 if epoch is None else 1)
    LEASE_EPOCH.set(last_epoch)
    LEASE_CHANGES.inc()


def waiting_reason(message: str) -> str:
    """A low-cardinality label for a scheduler message (ids and names cut off)."""
    return message.split(":", 1)[0].split("(", 1)[0].strip()[:60] or "unknown"


def scheduler_pass(assignments: Sequence[object], waiting: Mapping[int, str], *,
                   full: bool) -> None:
    """Count a pass's placements; a full pass also replaces the waiting-by-reason gauge."""
    SCHEDULER_PLACED.inc(len(assignments))
    if not full:
        return  # it saw only the new VMs: the older ones' reasons still stand
    counts: dict[str, int] = {}
    for message in waiting.values():
        reason = waiting_reason(message)
        counts[reason] = counts.get(reason, 0) + 1
    SCHEDULER_WAITING.clear()
    for reason, count in counts.items():
        SCHEDULER_WAITING.labels(reason).set(count)


@dataclass(frozen=True, slots=True)
class HostRow:
    """One host as ``/metrics`` reports it; CPU in percent, memory in bytes."""

    id: int
    name: str
    state: int
    vm_mad: str
    cpu_total: int
    mem_total: int
    vms: int = 0
    cpu_usage: int = 0
    mem_usage: int = 0


@dataclass
class PoolSnapshot:
    """The pool counts ``/metrics`` reports, read in one transaction."""

    vms_by_state: dict[tuple[int, int], int] = field(default_factory=dict)
    hosts: list[HostRow] = field(default_factory=list)


def pool_snapshot(connection: Connection) -> PoolSnapshot:
    """Count VMs by state and by host, and read each host's share."""
    snapshot = PoolSnapshot()
    for state, lcm_state, count in connection.execute(
            select(vms.c.state, vms.c.lcm_state, func.count())
            .group_by(vms.c.state, vms.c.lcm_state)):
        snapshot.vms_by_state[(int(state), int(lcm_state))] = int(count)
    usage = {
        int(host_id): (int(count), round(float(cpu or 0) * 100), int(memory or 0) * 1024 ** 2)
        for host_id, count, cpu, memory in connection.execute(
            select(vms.c.host_id, func.count(), func.sum(vms.c.cpu), func.sum(vms.c.memory))
            .where(vms.c.host_id.is_not(None), vms.c.state != int(VmState.DONE))
            .group_by(vms.c.host_id))}
    for row in connection.execute(select(hosts.c.id, hosts.c.name, hosts.c.state,
                                         hosts.c.vm_mad, hosts.c.max_cpu, hosts.c.max_mem)):
        count, cpu, memory = usage.get(int(row.id), (0, 0, 0))
        snapshot.hosts.append(HostRow(
            id=int(row.id), name=str(row.name), state=int(row.state), vm_mad=str(row.vm_mad),
            cpu_total=int(row.max_cpu), mem_total=int(row.max_mem) * 1024, vms=count,
            cpu_usage=cpu, mem_usage=memory))
    return snapshot


class _PoolCollector(Collector):
    def __init__(self, snapshot: PoolSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        snapshot = self.snapshot
        total = GaugeMetricFamily("opennebula_vm_total", "VMs defined (DONE ones excluded)")
        total.add_metric([], sum(count for (state, _), count in snapshot.vms_by_state.items()
                                 if state != VmState.DONE))
        yield total
        by_state = GaugeMetricFamily("cloudburst_vms", "VMs by state and LCM state",
                                     labels=["state", "lcm_state"])
        for (state, lcm_state), count in sorted(snapshot.vms_by_state.items()):
            by_state.add_metric([_name(VmState, state), _name(LcmState, lcm_state)], count)
        yield by_state
        host_total = GaugeMetricFamily("opennebula_host_total", "Hosts defined")
        host_total.add_metric([], len(snapshot.hosts))
        yield host_total
        labels = ["one_host_id"]
        families = {
            "state": GaugeMetricFamily(
                "opennebula_host_state",
                "Host state 0:init 2:monitored 3:error 4:disabled 8:offline", labels=labels),
            "vms": GaugeMetricFamily("opennebula_host_vms", "VMs allocated to the host",
                                     labels=labels),
            "cpu_total": GaugeMetricFamily("opennebula_host_cpu_total_ratio",
                                           "Total CPU capacity (100 = one CPU)", labels=labels),
            "cpu_usage": GaugeMetricFamily("opennebula_host_cpu_usage_ratio",
                                           "CPU capacity allocated to VMs", labels=labels),
            "mem_total": GaugeMetricFamily("opennebula_host_mem_total_bytes",
                                           "Total memory capacity", labels=labels),
            "mem_usage": GaugeMetricFamily("opennebula_host_mem_usage_bytes",
                                           "Memory allocated to VMs", labels=labels),
        }
        info = GaugeMetricFamily("cloudburst_host_info", "A host's name and driver (always 1)",
                                 labels=["one_host_id", "name", "vm_mad"])
        for host in snapshot.hosts:
            key = [str(host.id)]
            families["state"].add_metric(key, host.state)
            families["vms"].add_metric(key, host.vms)
            families["cpu_total"].add_metric(key, host.cpu_total)
            families["cpu_usage"].add_metric(key, host.cpu_usage)
            families["mem_total"].add_metric(key, host.mem_total)
            families["mem_usage"].add_metric(key, host.mem_usage)
            info.add_metric([key[0], host.name, host.vm_mad], 1)
        yield from families.values()
        yield info


def _name(enum: type[VmState] | type[LcmState] | type[HostState], value: int) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def render(snapshot: PoolSnapshot) -> bytes:
    """The whole exposition: this process's counters plus the pool gauges."""
    pools = CollectorRegistry(auto_describe=False)
    pools.register(_PoolCollector(snapshot))
    return generate_latest(REGISTRY) + generate_latest(pools)

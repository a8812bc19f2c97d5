"""The burst policy's cost in a scheduler pass: 10,000 VMs over 2,500 hosts.

Compares one placement pass (:func:`cloudburst.scheduler.placement.place`, what
the scheduler loop runs) with the rules on -- cost tiers (each cloud site priced
per instance type), a reason for every VM, budget refusals named -- against the
pass as it was before the burst policy (the placement module of commit
``e78cf0d``, read from git and loaded beside today's). Both get the same hosts
and VMs:

* 2,000 local hosts of 8 CPUs and 16 GiB (the VMs fill them first), and 500
  cloud sites of one type with 40 CPUs each and a price per hour that varies
  by site, so about 8,000 VMs stay local and the rest burst, cheapest first;
* 10,000 VMs in 8 kinds (CPU 1 or 2, four REQUIREMENTS variants that refuse
  some hosts), all with a cloud section; a fifth of the VMs carries two
  budget-refused sites, as the scheduler names them after a budget refusal.

It prints the median of ``--runs`` passes of each, and the time to serialise
every reason as the deploy transaction stores it. The last line is
``RESULT key=value ...``. Run it under ``flock /work/suite.lock`` on a shared
machine.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

from cloudburst.model import reasons
from cloudburst.model.cloud_sections import cloud_sections
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HostState
from cloudburst.scheduler import placement
from cloudburst.scheduler.demand import host_candidate, rank_of, requirements_of
from cloudburst.template import parse, parse_rank

REPO = Path(__file__).resolve().parents[1]
BEFORE = "e78cf0d"
GB = 1024 * 1024
KINDS = [f'CPU={cpu} MEMORY=512 PUBLIC_CLOUD=[ TYPE="burst" ] {requirement}'
         for cpu in (1, 2)
         for requirement in ("", 'REQUIREMENTS="ID != 3"', 'REQUIREMENTS="NAME != \\"x\\""',
                             'REQUIREMENTS="FREE_CPU > 0"')]


def old_placement() -> types.ModuleType:
    """The placement module as it was before the burst policy."""
    source = subprocess.run(["git", "-C", str(REPO), "show",
                             f"{BEFORE}:src/cloudburst/scheduler/placement.py"],
                            check=True, capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("placement_before", loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["placement_before"] = module
    exec(compile(source, "placement_before.py", "exec"), module.__dict__)
    return module


def host_records(local: int, cloud: int) -> list[HostRecord]:
    found = []
    for host_id in range(local + cloud):
        is_cloud = host_id >= local
        text = (f'PUBLIC_CLOUD=YES HYPERVISOR=burst PRICE_PER_HOUR="{0.01 + (host_id % 37) / 100}"'
                if is_cloud else "HYPERVISOR=kvm")
        cpu = 4000 if is_cloud else 600
        found.append(HostRecord(
            id=host_id, name=f"host{host_id}", state=HostState.MONITORED,
            prev_state=HostState.MONITORED, im_mad="dummy", vm_mad="dummy", tm_mad="dummy",
            vn_mad="dummy", cluster_id=0, template=parse(text), last_mon_time=1, version=1,
            max_cpu=cpu, max_mem=16 * GB * (5 if is_cloud else 1), free_cpu=cpu,
            free_mem=16 * GB))
    return found


def demands(count: int, budgeted: frozenset[int]) -> list[placement.VmDemand]:
    found = []
    for vm_id in range(count):
        template = parse(KINDS[vm_id % len(KINDS)])
        excluded: frozenset[int] = frozenset()
        kinds: tuple[tuple[int, str], ...] = ()
        if vm_id % 5 == 0:
            excluded = budgeted
            kinds = tuple((host, reasons.BUDGET) for host in sorted(budgeted))
        found.append(placement.VmDemand(
            id=vm_id, cpu=round(float(template.get("CPU") or 0) * 100), memory=512 * 1024,
            requirements=requirements_of(template), rank=rank_of(template),
            clouds=cloud_sections(template), excluded_hosts=excluded, excluded_kinds=kinds))
    return found


def old_hosts(module: types.ModuleType, records: list[HostRecord]) -> list[Any]:
    fields = set(module.HostCandidate.__dataclass_fields__)
    return [module.HostCandidate(**{name: getattr(candidate, name) for name in fields
                                    if name not in ("assigned_this_pass", "overrides")})
            for candidate in map(host_candidate, records)]


def old_demands(module: types.ModuleType, new: list[placement.VmDemand]) -> list[Any]:
    fields = set(module.VmDemand.__dataclass_fields__)
    return [module.VmDemand(**{name: getattr(demand, name) for name in fields})
            for demand in new]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--local", type=int, default=2000)
    parser.add_argument("--cloud", type=int, default=500)
    parser.add_argument("--vms", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    records = host_records(args.local, args.cloud)
    budgeted = frozenset({args.local, args.local + 1})
    rank = parse_rank("- RUNNING_VMS")
    before = old_placement()
    new_times, old_times, json_times = [], [], []
    result = None
    for _ in range(args.runs):
        hosts = [host_candidate(record) for record in records]
        vms = demands(args.vms, budgeted)
        started = time.perf_counter()
        result = placement.place(vms, hosts, default_rank=rank)
        new_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        for why in result.reasons.values():
            why.to_json()
        json_times.append(time.perf_counter() - started)
        hosts_then = old_hosts(before, records)
        vms_then = old_demands(before, demands(args.vms, budgeted))
        started = time.perf_counter()
        before.place(vms_then, hosts_then, default_rank=rank)
        old_times.append(time.perf_counter() - started)
    assert result is not None
    cloud = sum(1 for _, host_id in result.assignments if host_id >= args.local)
    figures = {
        "hosts": args.local + args.cloud, "vms": args.vms, "placed": len(result.assignments),
        "burst": cloud, "reasons": len(result.reasons),
        "pass_s": statistics.median(new_times), "pass_before_s": statistics.median(old_times),
        "ratio": statistics.median(new_times) / statistics.median(old_times),
        "reasons_json_s": statistics.median(json_times),
        "load1": os.getloadavg()[0],
    }
    print(f"pass with the burst policy: {figures['pass_s']:.3f} s (median of {args.runs}); "
          f"before it: {figures['pass_before_s']:.3f} s; ratio {figures['ratio']:.2f}")
    print(f"placed {figures['placed']} of {args.vms} ({cloud} on cloud sites); serialising "
          f"{len(result.reasons)} reasons: {figures['reasons_json_s']:.3f} s")
    print("RESULT " + " ".join(f"{key}={value:.3f}" if isinstance(value, float) else
                               f"{key}={value}" for key, value in figures.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pure placement (scheduler.placement.place) on hosts and VMs built from real templates."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudburst.model.cloud_sections import cloud_sections
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HostState
from cloudburst.scheduler.demand import host_candidate, rank_of, requirements_of
from cloudburst.scheduler.placement import (
    HostCandidate,
    PassResult,
    Placer,
    VmDemand,
    cloud_accepts,
    place,
)
from cloudburst.template import Template, parse, parse_rank
from seed_templates import PROVIDER_VM

GB = 1024 * 1024  # KB
STRIPING = parse_rank("- RUNNING_VMS")


# -- building hosts and VMs ----------------------------------------------------------


def host(host_id: int, name: str | None = None, *, cpu: int = 800, mem: int = 16 * GB,
         cloud: str | None = None, cpu_usage: int = 0, mem_usage: int = 0,
         running_vms: int = 0, attributes: str = "") -> HostCandidate:
    """A monitored host as the scheduler builds it; ``cloud`` is its HYPERVISOR type."""
    template = parse(attributes)
    if cloud is not None:
        template.set("PUBLIC_CLOUD", "YES")
        template.set("HYPERVISOR", cloud)
    elif "HYPERVISOR" not in template:
        template.set("HYPERVISOR", "kvm")
    record = HostRecord(
        id=host_id, name=name or f"host{host_id}", state=HostState.MONITORED,
        prev_state=HostState.MONITORED, im_mad="dummy", vm_mad="dummy", tm_mad="dummy",
        vn_mad="dummy", cluster_id=0, template=template, last_mon_time=1, version=1,
        max_cpu=cpu, max_mem=mem, free_cpu=cpu, free_mem=mem, cpu_usage=cpu_usage,
        mem_usage=mem_usage, running_vms=running_vms,
    )
    return host_candidate(record)


def vm(vm_id: int, text: str = "CPU=1 MEMORY=128",
       excluded: frozenset[int] = frozenset()) -> VmDemand:
    """A pending VM from template text, read the way the scheduler reads it."""
    template = parse(text)
    return VmDemand(
        id=vm_id,
        cpu=round(float(template.get("CPU") or 0) * 100),
        memory=int(template.get("MEMORY") or 0) * 1024,
        requirements=requirements_of(template),
        rank=rank_of(template),
        clouds=cloud_sections(template),
        excluded_hosts=excluded,
    )


def run(vms: list[VmDemand], hosts: list[HostCandidate], **limits: int) -> PassResult:
    return place(vms, hosts, default_rank=STRIPING, **limits)


def placed_on(result: PassResult) -> dict[int, int]:
    return dict(result.assignments)


EC2_VM = 'CPU=1 MEMORY=128 EC2=[ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair" ]'


# -- local first, then the cloud ----------------------------------------------------


def test_local_hosts_come_before_cloud_hosts_whatever_the_rank() -> None:
    hosts = [host(0, "ec2", cloud="ec2", cpu=100_000, attributes="PRIORITY=100"),
             host(1, "local")]
    result = place([vm(0, EC2_VM + ' RANK="PRIORITY"')], hosts, default_rank=STRIPING)
    assert result.assignments == [(0, 1)]


def test_bursts_to_the_cloud_only_when_local_capacity_runs_out() -> None:
    hosts = [host(0, "local", cpu=200), host(1, "ec2", cloud="ec2", cpu=500)]
    result = run([vm(i, EC2_VM) for i in range(5)], hosts)
    assert Counter(placed_on(result).values()) == {0: 2, 1: 3}
    assert [host_id for _, host_id in result.assignments] == [0, 0, 1, 1, 1]
    assert result.waiting == {}


def test_a_vm_without_cloud_section_never_lands_on_a_cloud_host() -> None:
    hosts = [host(0, "local", cpu=100), host(1, "ec2", cloud="ec2", cpu=10_000)]
    result = run([vm(0), vm(1)], hosts)
    assert result.assignments == [(0, 0)]
    assert "capacity" in result.waiting[1]


def test_only_cloud_hosts_and_a_local_vm_waits_with_a_reason() -> None:
    result = run([vm(0)], [host(0, "ec2", cloud="ec2")])
    assert result.assignments == []
    assert result.waiting[0] == "No local host is available and the VM has no cloud section"


def test_public_cloud_type_must_equal_the_host_hypervisor() -> None:
    hosts = [host(0, "remote_provider", cloud="provider_name")]
    right = vm(0, PROVIDER_VM)
    wrong = vm(1, "CPU=1 MEMORY=256 PUBLIC_CLOUD=[TYPE=other_provider, IMAGE=x]")
    legacy_ec2 = vm(2, EC2_VM)
    result = run([right, wrong, legacy_ec2], hosts)
    assert result.assignments == [(0, 0)]
    assert "other_provider" in result.waiting[1]
    assert "ec2" in result.waiting[2]


def test_a_host_without_public_cloud_yes_is_local_even_with_a_hypervisor() -> None:
    local_looking = host(0, "kvm-1", attributes='HYPERVISOR="provider_name"')
    assert not local_looking.is_cloud
    result = run([vm(0)], [local_looking])
    assert result.assignments == [(0, 0)]


MULTI_SITE_VM = ('CPU=1 MEMORY=128 '
                 'EC2=[CLOUD="ec2_eu_west", AMI="ami-0022c769"] '
                 'EC2=[CLOUD="ec2_eu_east", AMI="ami-03324cc9"]')


def test_cloud_names_the_site_when_several_sites_of_a_type_exist() -> None:
    west = host(0, "ec2_eu_west", cloud="ec2", attributes="PRIORITY=10")
    east = host(1, "ec2_eu_east", cloud="ec2", attributes="PRIORITY=1")
    only_east = vm(0, 'CPU=1 MEMORY=128 EC2=[CLOUD="ec2_eu_east", AMI="ami-03324cc9"] '
                      'RANK="PRIORITY"')
    result = run([only_east], [west, east])
    assert result.assignments == [(0, 1)]


def test_a_vm_with_a_section_per_site_may_use_either_site() -> None:
    west = host(0, "ec2_eu_west", cloud="ec2", cpu=100)
    east = host(1, "ec2_eu_east", cloud="ec2", cpu=100)
    result = run([vm(0, MULTI_SITE_VM), vm(1, MULTI_SITE_VM), vm(2, MULTI_SITE_VM)],
                 [west, east])
    assert sorted(placed_on(result).values()) == [0, 1]
    assert 2 in result.waiting


def test_a_section_for_another_site_is_refused_when_several_sites_exist() -> None:
    west = host(0, "ec2_eu_west", cloud="ec2")
    east = host(1, "ec2_eu_east", cloud="ec2")
    elsewhere = vm(0, 'CPU=1 MEMORY=128 EC2=[CLOUD="ec2_us_east", AMI="ami-1"]')
    result = run([elsewhere], [west, east])
    assert result.assignments == []
    assert "ec2" in result.waiting[0]


def test_cloud_is_ignored_when_only_one_site_of_the_type_exists() -> None:
    """The seed: 'If only one EC2 site is defined, ... not paying attention to CLOUD'."""
    only = host(0, "ec2", cloud="ec2")
    elsewhere = vm(0, 'CPU=1 MEMORY=128 EC2=[CLOUD="ec2_eu_west", AMI="ami-1"]')
    assert cloud_accepts(elsewhere, only, {"ec2": 1})
    assert run([elsewhere], [only]).assignments == [(0, 0)]


def test_a_section_without_cloud_fits_any_site() -> None:
    west = host(0, "ec2_eu_west", cloud="ec2", cpu=100)
    east = host(1, "ec2_eu_east", cloud="ec2", cpu=100)
    result = run([vm(0, EC2_VM), vm(1, EC2_VM)], [west, east])
    assert sorted(placed_on(result).values()) == [0, 1]


# -- REQUIREMENTS and RANK -------------------------------------------------------------


def test_requirements_name_ec2_sends_the_vm_to_the_cloud() -> None:
    """The seed's 'Add this if you want to use only EC2 cloud'."""
    hosts = [host(0, "local"), host(1, "ec2", cloud="ec2")]
    result = run([vm(0, EC2_VM + ' REQUIREMENTS = "NAME = \\"ec2\\""')], hosts)
    assert result.assignments == [(0, 1)]


def test_requirements_glob_on_host_names() -> None:
    hosts = [host(0, "aquila01"), host(1, "bravo01"), host(2, "aquila02")]
    vms = [vm(i, 'CPU=1 MEMORY=128 REQUIREMENTS="NAME = \\"aquila*\\""') for i in range(4)]
    result = run(vms, hosts)
    assert set(placed_on(result).values()) == {0, 2}


def test_requirements_on_a_missing_attribute_exclude_the_host() -> None:
    hosts = [host(0, "plain"), host(1, "gpu", attributes="GPU=2")]
    result = run([vm(0, 'CPU=1 MEMORY=128 REQUIREMENTS="GPU > 0"'),
                  vm(1, 'CPU=1 MEMORY=128 REQUIREMENTS="GPU != 7"')], hosts)
    assert placed_on(result) == {0: 1, 1: 1}


def test_unmet_requirements_wait_with_the_expression_in_the_reason() -> None:
    result = run([vm(0, 'CPU=1 MEMORY=128 REQUIREMENTS="FREECPU > 100000"')], [host(0)])
    assert result.assignments == []
    assert result.waiting[0] == "No host meets REQUIREMENTS: FREECPU > 100000"


def test_rank_picks_the_highest_scoring_host() -> None:
    hosts = [host(0, attributes="PRIORITY=1"), host(1, attributes="PRIORITY=5"),
             host(2, attributes="PRIORITY=3")]
    result = run([vm(0, 'CPU=1 MEMORY=128 RANK="PRIORITY"'),
                  vm(1, 'CPU=1 MEMORY=128 RANK="- PRIORITY"')], hosts)
    assert placed_on(result) == {0: 1, 1: 0}


def test_equal_rank_ties_go_to_the_lowest_host_id() -> None:
    hosts = [host(7), host(3), host(5)]
    assert run([vm(0, 'CPU=1 MEMORY=128 RANK="1"')], hosts).assignments == [(0, 3)]


def test_default_striping_spreads_vms_across_hosts() -> None:
    hosts = [host(0), host(1), host(2)]
    result = run([vm(i) for i in range(6)], hosts)
    assert Counter(placed_on(result).values()) == {0: 2, 1: 2, 2: 2}


def test_packing_policy_fills_one_host_first() -> None:
    hosts = [host(0, cpu=300), host(1, cpu=300)]
    result = place([vm(i) for i in range(4)], hosts, default_rank=parse_rank("RUNNING_VMS"))
    assert [h for _, h in result.assignments] == [0, 0, 0, 1]


def test_rank_sees_vms_already_running_on_the_host() -> None:
    hosts = [host(0, running_vms=3, cpu_usage=300), host(1, running_vms=0)]
    assert run([vm(0)], hosts).assignments == [(0, 1)]


# -- capacity and limits ----------------------------------------------------------------


def test_capacity_is_counted_within_one_pass() -> None:
    result = run([vm(i) for i in range(4)], [host(0, cpu=300)])
    assert [vm_id for vm_id, _ in result.assignments] == [0, 1, 2]
    assert result.waiting == {3: "No host with enough capacity to deploy the VM"}


def test_memory_is_a_limit_too() -> None:
    result = run([vm(i, "CPU=0.1 MEMORY=1024") for i in range(3)], [host(0, mem=2 * GB)])
    assert len(result.assignments) == 2


def test_capacity_already_allocated_on_the_host_counts() -> None:
    result = run([vm(0), vm(1)], [host(0, cpu=300, cpu_usage=200, running_vms=2)])
    assert result.assignments == [(0, 0)]


def test_fractional_cpu_is_in_percent_of_a_core() -> None:
    result = run([vm(i, "CPU=0.5 MEMORY=64") for i in range(5)], [host(0, cpu=200)])
    assert len(result.assignments) == 4


def test_max_dispatch_limits_one_pass() -> None:
    result = run([vm(i) for i in range(5)], [host(0), host(1)], max_dispatch=2)
    assert len(result.assignments) == 2
    assert set(result.waiting) == {2, 3, 4}
    assert all("MAX_DISPATCH" in reason for reason in result.waiting.values())


def test_max_host_limits_vms_per_host_per_pass() -> None:
    result = run([vm(i) for i in range(3)], [host(0), host(1)], max_host=1)
    assert sorted(placed_on(result).values()) == [0, 1]
    # Both hosts have plenty of room: the VM waits for MAX_HOST, and says so.
    assert "MAX_HOST" in result.waiting[2], result.waiting[2]


def test_max_host_lets_local_hosts_fill_before_bursting() -> None:
    hosts = [host(0, "local"), host(1, "ec2", cloud="ec2")]
    result = run([vm(i, EC2_VM) for i in range(3)], hosts, max_host=2)
    assert [h for _, h in result.assignments] == [0, 0, 1]


def test_slot_limits_cap_instances_of_a_type_on_a_cloud_site() -> None:
    """im_ec2.conf's SMALL_INSTANCES=4: a fifth m1.small waits."""
    site = host(0, "ec2", cloud="ec2", cpu=100_000, mem=100 * GB)
    site.slot_limits = {"M1_SMALL": 4}
    small = 'CPU=1 MEMORY=128 EC2=[AMI="ami-1", INSTANCETYPE="m1.small"]'
    result = run([vm(i, small) for i in range(5)], [site])
    assert len(result.assignments) == 4
    assert result.waiting[4] == "No host with enough capacity to deploy the VM"


def test_a_capacity_cool_off_skips_the_site_for_that_instance_type_only() -> None:
    """A site that just refused m1.small takes no m1.small VM (the next site does) but
    still takes m1.large; a cool-off of the whole site ('') takes nothing."""
    def sites(cooled: frozenset[str]) -> list[HostCandidate]:
        first = host(0, "ec2_west", cloud="ec2", cpu=100_000, mem=100 * GB)
        second = host(1, "ec2_east", cloud="ec2", cpu=100_000, mem=100 * GB)
        for site in (first, second):
            site.slot_limits = {"M1_SMALL": 10, "M1_LARGE": 10}
        first.cooled_types = cooled
        return [first, second]

    small = 'CPU=1 MEMORY=128 RANK="- ID" EC2=[AMI="ami-1", INSTANCETYPE="m1.small"]'
    large = small.replace("m1.small", "m1.large")
    result = run([vm(0, small), vm(1, large)], sites(frozenset({"m1.small"})))
    assert placed_on(result) == {0: 1, 1: 0}
    result = run([vm(0, small), vm(1, large)], sites(frozenset({""})))
    assert placed_on(result) == {0: 1, 1: 1}
    result = run([vm(0, small)], sites(frozenset({"m1.small"}))[:1])
    assert "recently refused" in result.waiting[0]


def test_slot_limits_count_instances_already_on_the_site() -> None:
    site = host(0, "ec2", cloud="ec2", cpu=100_000, mem=100 * GB)
    site.slot_limits = {"M1_SMALL": 4, "M1_LARGE": 1}
    site.slot_usage = {"M1_SMALL": 3}
    small = 'CPU=1 MEMORY=128 EC2=[AMI="ami-1", INSTANCETYPE="m1.small"]'
    large = 'CPU=1 MEMORY=128 EC2=[AMI="ami-1", INSTANCETYPE="m1.large"]'
    result = run([vm(0, small), vm(1, small), vm(2, large), vm(3, large)], [site])
    assert placed_on(result) == {0: 0, 2: 0}


def test_excluded_hosts_are_skipped() -> None:
    hosts = [host(0), host(1)]
    result = run([vm(0, excluded=frozenset({0}))], hosts)
    assert result.assignments == [(0, 1)]
    result = run([vm(0, excluded=frozenset({0, 1}))], [host(0), host(1)])
    assert result.waiting[0] == "Waiting: every usable host recently refused the VM"


def test_no_hosts_at_all_is_reported() -> None:
    assert run([vm(0)], []).waiting == {0: "No hosts enabled to run VMs"}


def test_every_vm_is_either_assigned_or_given_a_reason() -> None:
    hosts = [host(0, cpu=200), host(1, "ec2", cloud="ec2", cpu=100)]
    vms = [vm(0), vm(1, EC2_VM), vm(2, EC2_VM), vm(3), vm(4, 'CPU=1 MEMORY=1 '
                                                           'REQUIREMENTS="ID = 42"')]
    result = run(vms, hosts)
    assigned = {vm_id for vm_id, _ in result.assignments}
    assert assigned.isdisjoint(result.waiting)
    assert assigned | set(result.waiting) == {0, 1, 2, 3, 4}
    assert all(reason.strip() for reason in result.waiting.values())


# -- property: never over-commit, never break a rule -----------------------------------------


@dataclass(frozen=True)
class _Snapshot:
    free_cpu: int
    free_mem: int
    variables: dict[str, list[str]]
    slot_room: dict[str, int]


REQUIREMENT_CHOICES = [None, 'NAME = "h1*"', "ID > 1", "!(ID = 2)", "GPU = 1",
                       'HYPERVISOR = "ec2"', "(ID = 0) | (ID = 3)", "FREECPU > 300"]
#: The host variables REQUIREMENT_CHOICES read, captured before each pass.
SNAPSHOT_NAMES = ("NAME", "ID", "GPU", "HYPERVISOR", "FREECPU")


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[HostCandidate], list[VmDemand], int, int]:
    count = draw(st.integers(1, 6))
    hosts = []
    for host_id in range(count):
        kind = draw(st.sampled_from([None, None, "ec2", "prov"]))
        cpu = draw(st.integers(0, 8)) * 100
        used = draw(st.integers(0, 4)) * 50
        attributes = "GPU=1" if draw(st.booleans()) else ""
        candidate = host(host_id, f"h{host_id}{kind or ''}", cpu=cpu,
                         mem=draw(st.integers(0, 8)) * GB // 2, cloud=kind,
                         cpu_usage=min(used, cpu), running_vms=used // 50,
                         attributes=attributes)
        if kind == "ec2" and draw(st.booleans()):
            candidate.slot_limits = {"M1_SMALL": draw(st.integers(0, 3))}
        hosts.append(candidate)
    vms = []
    for vm_id in range(draw(st.integers(0, 25))):
        cpu = draw(st.sampled_from(["0.25", "0.5", "1", "2"]))
        mem = draw(st.sampled_from([64, 512, 2048]))
        parts = [f"CPU={cpu}", f"MEMORY={mem}"]
        if draw(st.booleans()):
            parts.append('EC2=[AMI="ami-1", INSTANCETYPE="m1.small"]')
        if draw(st.booleans()):
            parts.append("PUBLIC_CLOUD=[TYPE=prov, IMAGE=x]")
        requirement = draw(st.sampled_from(REQUIREMENT_CHOICES))
        if requirement is not None:
            escaped = requirement.replace('"', '\\"')
            parts.append(f'REQUIREMENTS="{escaped}"')
        if draw(st.booleans()):
            parts.append("RANK=\"FREECPU\"")
        vms.append(vm(vm_id, " ".join(parts)))
    return hosts, vms, draw(st.integers(0, 4)), draw(st.integers(0, 3))


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_placement_never_overcommits_and_respects_every_rule(
        scenario: tuple[list[HostCandidate], list[VmDemand], int, int]) -> None:
    hosts, vms, max_dispatch, max_host = scenario
    before = {h.id: _Snapshot(h.max_cpu - h.cpu_usage, h.max_mem - h.mem_usage,
                              {name: list(h.lookup(name)) for name in SNAPSHOT_NAMES},
                              {slot: limit - h.slot_usage.get(slot, 0)
                               for slot, limit in h.slot_limits.items()})
              for h in hosts}
    sites = Counter(h.hypervisor.lower() for h in hosts if h.is_cloud)
    by_vm = {v.id: v for v in vms}
    by_host = {h.id: h for h in hosts}

    result = place(vms, hosts, default_rank=STRIPING, max_dispatch=max_dispatch,
                   max_host=max_host)

    assigned = [vm_id for vm_id, _ in result.assignments]
    assert len(assigned) == len(set(assigned)), "a VM was placed twice"
    assert set(assigned).isdisjoint(result.waiting)
    assert set(assigned) | set(result.waiting) == set(by_vm)
    if max_dispatch:
        assert len(assigned) <= max_dispatch
    per_host = Counter(host_id for _, host_id in result.assignments)
    if max_host:
        assert max(per_host.values(), default=0) <= max_host
    for host_id, snapshot in before.items():
        on_host = [by_vm[vm_id] for vm_id, h in result.assignments if h == host_id]
        if by_host[host_id].slot_limits:
            assert len(on_host) <= max(0, sum(snapshot.slot_room.values()))
            assert all(v.clouds for v in on_host)
        else:
            assert sum(v.cpu for v in on_host) <= snapshot.free_cpu, host_id
            assert sum(v.memory for v in on_host) <= snapshot.free_mem, host_id
    for vm_id, host_id in result.assignments:
        demand, target = by_vm[vm_id], by_host[host_id]
        snapshot = before[host_id]
        if target.is_cloud:
            assert demand.clouds, f"VM {vm_id} without a cloud section on cloud host {host_id}"
            assert cloud_accepts(demand, target, sites)
        if demand.requirements is not None:
            assert demand.requirements.evaluate(lambda name, s=snapshot: s.variables.get(
                name.upper(), ())), (vm_id, host_id, demand.requirements.source)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 6), st.integers(1, 12))
def test_property_local_capacity_is_used_before_any_burst(local_slots: int,
                                                          count: int) -> None:
    hosts = [host(0, "local", cpu=local_slots * 100), host(1, "ec2", cloud="ec2",
                                                            cpu=100_000)]
    result = run([vm(i, EC2_VM) for i in range(count)], hosts)
    targets = [h for _, h in result.assignments]
    assert targets == [0] * min(local_slots, count) + [1] * max(0, count - local_slots)


# -- scale --------------------------------------------------------------------------------


def test_performance_ten_thousand_vms_over_2500_hosts(capsys: pytest.CaptureFixture[str],
                                                      ) -> None:
    hosts = [host(i, f"node{i:04d}", cpu=800, mem=16 * GB) for i in range(2_400)]
    hosts += [host(2_400 + i, f"ec2-{i}", cloud="ec2", cpu=100_000, mem=1000 * GB)
              for i in range(100)]
    kinds = ["CPU=1 MEMORY=512", "CPU=0.5 MEMORY=256", EC2_VM,
             'CPU=2 MEMORY=2048 REQUIREMENTS="ID > 100"', 'CPU=1 MEMORY=1024 RANK="FREECPU"']
    vms = [vm(i, kinds[i % len(kinds)]) for i in range(10_000)]
    started = time.perf_counter()
    result = run(vms, hosts)
    elapsed = time.perf_counter() - started
    with capsys.disabled():
        print(f"\n[placement] 10,000 VMs over 2,500 hosts: {elapsed:.3f} s, "
              f"{len(result.assignments)} placed, {len(result.waiting)} waiting")
    assert len(result.assignments) + len(result.waiting) == 10_000


def test_templates_with_several_ec2_sections_keep_every_section() -> None:
    sections = cloud_sections(parse(MULTI_SITE_VM))
    assert [(s.type, s.cloud) for s in sections] == [("ec2", "ec2_eu_west"),
                                                     ("ec2", "ec2_eu_east")]
    assert cloud_sections(Template()) == ()


# -- a placer kept between passes ----------------------------------------------------


@pytest.mark.parametrize("cuts", [(1,), (5, 6), (3, 9, 10), (11,)])
def test_a_kept_placer_places_pass_by_pass_as_one_pass_over_all(cuts: tuple[int, ...]) -> None:
    """Passes over new VMs on a kept placer place exactly as one pass over them all:
    capacity taken by earlier passes counts, hosts dropped as full stay dropped,
    and the groups of other demands are built when first met."""
    def hosts() -> list[HostCandidate]:
        return [host(1, cpu=300), host(2, cpu=400, mem=GB), host(3, cloud="ec2", cpu=200)]

    vms = [vm(i, EC2_VM if i % 4 == 0 else "CPU=1 MEMORY=262144" if i % 5 == 0
              else "CPU=1 MEMORY=128") for i in range(12)]
    together = hosts()
    whole = run(vms, together)
    placer = Placer(hosts(), default_rank=STRIPING)
    assignments: list[tuple[int, int]] = []
    waiting: dict[int, str] = {}
    for start, end in zip((0, *cuts), (*cuts, len(vms)), strict=True):
        result = placer.place(vms[start:end])
        assignments += result.assignments
        waiting |= result.waiting
    assert assignments == whole.assignments
    assert waiting == whole.waiting
    assert waiting  # the hosts filled up: some VMs wait
    assert [(h.cpu_usage, h.mem_usage) for h in placer.hosts] == [
        (h.cpu_usage, h.mem_usage) for h in together]
    assert [h.cpu_usage for h in placer.hosts][:2] == [300, 400]  # the local hosts are full


def test_max_host_counts_per_pass_on_a_kept_placer() -> None:
    placer = Placer([host(1), host(2)], default_rank=STRIPING)
    first = placer.place([vm(i) for i in range(3)], max_host=1)
    second = placer.place([vm(i) for i in range(3, 5)], max_host=1)
    assert len(first.assignments) == 2 and len(second.assignments) == 2
    assert first.waiting == {2: "Waiting: hosts with room already received MAX_HOST VMs "
                                "in this pass"}

"""The cheapest instance type that fits: the rule (model.offers) and how placement uses it."""

from __future__ import annotations

from cloudburst.model.cloud_sections import cloud_sections
from cloudburst.model.offers import (
    Offer,
    cheapest_fit,
    format_offers,
    instance_type_for,
    needed_vcpus,
    offers_of,
    parse_offers,
    price_of,
)
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HostState
from cloudburst.scheduler.demand import host_candidate
from cloudburst.scheduler.placement import (
    HostCandidate,
    VmDemand,
    hourly_price,
    instance_type_of,
    place,
)
from cloudburst.template import parse, parse_rank

OFFERS = ("t3.small:2:2048:0.0208 m5.large:2:8192:0.096 t3.medium:2:4096:0.0416 "
          "c5.xlarge:4:8192:0.17 m1.small:1:1740:0.044 x9.odd:0:0:0.001")


def site(host_id: int, name: str, *, offers: str = OFFERS, capacity: str = "",
         default: str = "m1.small") -> HostCandidate:
    """An EC2 site as the scheduler reads it from the host's stored template."""
    template = parse(f'PUBLIC_CLOUD="YES" HYPERVISOR="ec2" DEFAULT_INSTANCE_TYPE="{default}" '
                     f'INSTANCE_TYPES="{offers}" {capacity}')
    record = HostRecord(
        id=host_id, name=name, state=HostState.MONITORED, prev_state=HostState.MONITORED,
        im_mad="im_ec2", vm_mad="vmm_ec2", tm_mad="dummy", vn_mad="dummy", cluster_id=0,
        template=template, last_mon_time=1, version=1, max_cpu=0, max_mem=0, free_cpu=0,
        free_mem=0, cpu_usage=0, mem_usage=0, running_vms=0)
    return host_candidate(record)


def vm(vm_id: int, text: str) -> VmDemand:
    template = parse(text)
    cpu = float(template.get("CPU") or 0)
    return VmDemand(id=vm_id, cpu=round(cpu * 100), memory=int(template.get("MEMORY") or 0) * 1024,
                    requirements=None, rank=None, clouds=cloud_sections(template),
                    vcpu=needed_vcpus(cpu, int(template.get("VCPU") or 0)))


def test_offers_parse_format_and_price() -> None:
    offers = parse_offers(OFFERS + " broken m5.large:x:1:1 neg:1:1:-1")
    assert [offer.name for offer in offers] == ["t3.small", "m5.large", "t3.medium",
                                               "c5.xlarge", "m1.small", "x9.odd"]
    assert format_offers(offers).split()[:2] == ["x9.odd:0:0:0.001", "t3.small:2:2048:0.0208"]
    assert parse_offers(format_offers(offers)) == tuple(sorted(offers, key=lambda o: o.price))
    assert price_of(offers, "M5.LARGE") == 0.096
    assert price_of(offers, "m7.huge") is None and price_of(offers, None) is None
    assert offers_of({"INSTANCE_TYPES": "a.b:1:2:3"}) == (Offer("a.b", 1, 2, 3.0),)
    assert offers_of(parse('NAME="x"')) == ()


def test_cheapest_fit_and_the_rule() -> None:
    offers = parse_offers(OFFERS)
    assert needed_vcpus(0.5) == 1 and needed_vcpus(2.0) == 2 and needed_vcpus(2.1) == 3
    assert needed_vcpus(0.5, vcpu=4) == 4
    fit = cheapest_fit(offers, 2, 3000)
    assert fit is not None and fit.name == "t3.medium"  # cheaper than m5.large
    fit = cheapest_fit(offers, 1, 512)
    assert fit is not None and fit.name == "t3.small"  # a type of unknown size is never chosen
    assert cheapest_fit(offers, 8, 1024) is None
    assert instance_type_for("M5.Large", offers, vcpu=8, memory_mb=1, default=None) == "m5.large"
    assert instance_type_for(None, offers, vcpu=4, memory_mb=8000, default="m1.small") == \
        "c5.xlarge"
    assert instance_type_for(None, offers, vcpu=64, memory_mb=1, default="m1.small") is None
    assert instance_type_for(None, (), vcpu=64, memory_mb=1, default="M1.small") == "m1.small"


def test_placement_counts_the_cheapest_fit_against_the_site_limits() -> None:
    """A VM naming no type takes a slot of the type it will run as; when that type is
    full on one site the VM goes to the next site, and the price is that type's."""
    limits = 'CAPACITY=[ T3_MEDIUM="1", M5_LARGE="5", M1_SMALL="5" ]'
    west, east = site(0, "west", capacity=limits), site(1, "east", capacity=limits)
    section = 'EC2=[ AMI="ami-1", KEYPAIR="k" ]'
    mid = [vm(i, f"CPU=2 MEMORY=3000 {section}") for i in range(3)]
    named = vm(10, 'CPU=2 MEMORY=3000 EC2=[ AMI="ami-1", KEYPAIR="k", INSTANCETYPE="m5.large" ]')
    sites = {"ec2": 2}
    assert instance_type_of(mid[0], west, sites) == "t3.medium"
    assert hourly_price(mid[0], west, sites) == 0.0416
    assert hourly_price(named, west, sites) == 0.096
    result = place([*mid, named], [west, east], default_rank=parse_rank("- ID"))
    on = dict(result.assignments)
    # one t3.medium per site; the third waits although m5.large slots are free
    assert sorted(on[i] for i in range(3) if i in on) == [0, 1]
    assert 2 in result.waiting
    assert on[10] == 0
    assert west.slot_usage == {"T3_MEDIUM": 1, "M5_LARGE": 1}


def test_no_fitting_type_means_no_room_and_cooloffs_follow_the_chosen_type() -> None:
    big = vm(1, 'CPU=16 MEMORY=1024 EC2=[ AMI="ami-1", KEYPAIR="k" ]')
    small = vm(2, 'CPU=1 MEMORY=1024 EC2=[ AMI="ami-1", KEYPAIR="k" ]')
    limits = 'CAPACITY=[ T3_SMALL="5", C5_XLARGE="5" ]'
    only = site(0, "only", capacity=limits)
    result = place([big, small], [only], default_rank=parse_rank("- ID"))
    assert dict(result.assignments) == {2: 0}
    assert result.waiting[1] == "No host with enough capacity to deploy the VM"
    cooled, other = site(0, "cooled", capacity=limits), site(1, "other", capacity=limits)
    cooled.cooled_types = frozenset({"t3.small"})
    result = place([small], [cooled, other], default_rank=parse_rank("ID"))
    assert dict(result.assignments) == {2: 1}
    # a site without offers keeps the old rule: the default type
    bare = site(0, "bare", offers="", capacity='CAPACITY=[ M1_SMALL="5" ]')
    assert instance_type_of(big, bare, {"ec2": 1}) == "m1.small"
    assert hourly_price(big, bare, {"ec2": 1}) is None

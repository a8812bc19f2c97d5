"""The burst policy in pure placement: tiers by cost, RANK overriding, and the reason
kept for every placed or waiting VM (issue 14)."""

from __future__ import annotations

from test_placement import EC2_VM, GB, STRIPING, host, vm

from cloudburst.model import reasons
from cloudburst.model.cost import accrued, month_start, site_price
from cloudburst.model.reasons import PlacementReason
from cloudburst.model.records import VmRecord
from cloudburst.model.states import LcmState, VmState
from cloudburst.scheduler.placement import place
from cloudburst.template import parse, parse_rank
from cloudburst.web.shapes import placement_reason

#: Two sites of the same type: a VM section naming no site fits both.
TWO_SITES_VM = 'CPU=1 MEMORY=128 PUBLIC_CLOUD=[ TYPE="burst" ]'


def sites(dear_price: str = "0.10", cheap_price: str = "0.02", cpu: int = 200) -> list:
    """A local host for 2 VMs, then a dear site (lower id) and a cheap one."""
    return [host(0, "local", cpu=200),
            host(1, "dear", cloud="burst", cpu=cpu, attributes=f"PRICE_PER_HOUR={dear_price}"),
            host(2, "cheap", cloud="burst", cpu=cpu, attributes=f"PRICE_PER_HOUR={cheap_price}")]


def test_local_first_then_the_cheaper_site_then_the_dearer() -> None:
    result = place([vm(i, TWO_SITES_VM) for i in range(7)], sites(), default_rank=STRIPING)
    assert [host_id for _, host_id in result.assignments] == [0, 0, 2, 2, 1, 1]
    assert result.waiting == {6: "No host with enough capacity to deploy the VM"}
    local, cheap, dear = result.reasons[0], result.reasons[2], result.reasons[4]
    assert (local.tier, local.price, local.host) == ("local", None, "local")
    assert (cheap.tier, cheap.price, cheap.host) == ("cloud", 0.02, "cheap")
    assert (dear.tier, dear.price) == ("cloud", 0.10)
    assert dear.order == "tier, price, RANK"
    # The dear site's VMs were refused by the full local host and cheap site first.
    assert dear.refused == (reasons.Refused(reasons.CAPACITY, 2, ("local", "cheap")),)
    assert "Placed on dear (cloud tier, 0.1/h" in dear.summary()
    waiting = result.reasons[6]
    assert waiting.host_id is None and waiting.considered == 3
    assert waiting.refused == (reasons.Refused(reasons.CAPACITY, 3, ("local", "cheap", "dear")),)


def test_a_site_of_unknown_price_comes_after_priced_ones() -> None:
    hosts = [host(1, "unpriced", cloud="burst"),
             host(2, "priced", cloud="burst", attributes="PRICE_PER_HOUR=5")]
    result = place([vm(0, TWO_SITES_VM)], hosts, default_rank=STRIPING)
    assert result.assignments == [(0, 2)]


def test_prices_per_instance_type() -> None:
    template = parse('PRICE_PER_HOUR=[ M1_SMALL="0.02", M1_LARGE="0.2", DEFAULT="1" ]')
    assert site_price(template, "m1.small") == 0.02
    assert site_price(template, "m1.large") == 0.2
    assert site_price(template, "t3.nano") == 1.0
    assert site_price(parse("PRICE_PER_HOUR=0.5"), "anything") == 0.5
    assert site_price(parse('PRICE_PER_HOUR="-1"'), None) is None
    assert site_price(parse("A=1"), None) is None
    small = 'CPU=1 MEMORY=128 PUBLIC_CLOUD=[ TYPE="burst", INSTANCETYPE="m1.small" ]'
    large = small.replace("m1.small", "m1.large")
    hosts = [host(1, "a", cloud="burst", attributes='PRICE_PER_HOUR=[ M1_SMALL="0.5", '
                                                     'M1_LARGE="0.1" ]'),
             host(2, "b", cloud="burst", attributes='PRICE_PER_HOUR=[ M1_SMALL="0.1", '
                                                     'M1_LARGE="0.5" ]')]
    result = place([vm(0, small), vm(1, large)], hosts, default_rank=STRIPING)
    assert result.assignments == [(0, 2), (1, 1)]


def test_a_vm_rank_and_the_cost_order_setting_override_the_price() -> None:
    hosts = [host(1, "dear", cloud="burst", attributes="PRICE_PER_HOUR=0.1 PRIORITY=9"),
             host(2, "cheap", cloud="burst", attributes="PRICE_PER_HOUR=0.02 PRIORITY=1")]
    ranked = place([vm(0, TWO_SITES_VM + ' RANK="PRIORITY"')], hosts, default_rank=STRIPING)
    assert ranked.assignments == [(0, 1)]
    assert ranked.reasons[0].order == "tier, RANK, price"
    assert ranked.reasons[0].rank == 9.0
    by_rank = place([vm(0, TWO_SITES_VM)], hosts, default_rank=parse_rank("PRIORITY"),
                    cost_order=False)
    assert by_rank.assignments == [(0, 1)]
    by_price = place([vm(0, TWO_SITES_VM)], hosts, default_rank=parse_rank("PRIORITY"))
    assert by_price.assignments == [(0, 2)]


def test_refusals_are_counted_per_kind_with_a_few_names() -> None:
    hosts = [host(i, f"small{i}", cpu=50) for i in range(5)]
    hosts += [host(10, "ec2", cloud="ec2"), host(11, "cooling", cloud="burst"),
              host(12, "tagged", attributes="ZONE=b")]
    hosts[-2].cooled_types = frozenset({""})
    demand = vm(0, TWO_SITES_VM + ' REQUIREMENTS="NAME != \\"tagged\\""',
                excluded=frozenset({3}))
    result = place([demand], hosts, default_rank=STRIPING)
    why = result.reasons[0]
    assert why.considered == 8
    counts = {refused.kind: refused.count for refused in why.refused}
    assert counts == {reasons.EXCLUDED: 1, reasons.COOLOFF: 1, reasons.CLOUD_RULE: 1,
                      reasons.REQUIREMENTS: 1, reasons.CAPACITY: 4}
    capacity = next(r for r in why.refused if r.kind == reasons.CAPACITY)
    assert len(capacity.examples) == reasons.EXAMPLES
    assert "4 for capacity (small0, small1, small2, ...)" in why.refusals_text()
    assert PlacementReason.from_json(why.to_json()) == why


def test_reasons_of_a_group_are_shared_not_copied_per_vm() -> None:
    result = place([vm(i) for i in range(1000)], [host(0, cpu=100_000, mem=200 * GB)],
                   default_rank=STRIPING)
    assert len({id(result.reasons[i].refused) for i in range(1000)}) == 1
    full = place([vm(i) for i in range(1000)], [host(0, cpu=100)], default_rank=STRIPING)
    assert len(full.assignments) == 1
    assert len({id(full.reasons[i]) for i in range(1, 1000)}) == 1


def test_instance_type_limits_are_their_own_refusal_kind() -> None:
    limited = host(1, "ec2", cloud="ec2", attributes="CAPACITY=[ M1_SMALL=1 ] "
                                                     'DEFAULT_INSTANCE_TYPE="m1.small"')
    result = place([vm(0, EC2_VM), vm(1, EC2_VM)], [limited], default_rank=STRIPING)
    assert result.assignments == [(0, 1)]
    assert result.reasons[1].refused == (reasons.Refused(reasons.INSTANCE_TYPE, 1, ("ec2",)),)


def test_accrued_cost_and_the_month() -> None:
    assert accrued([(0.5, 1000, 1000 + 7200), (None, 0, 0)], now=10_000) == 1.0
    assert accrued([(1.0, 1000, 0)], now=1000 + 1800) == 0.5
    assert accrued([(1.0, 1, 3600)], now=3600, since=1800) == 0.5
    assert month_start(1_767_225_600 + 86_400 * 3.5) == 1_767_225_600  # 2026-01-01


def test_the_dashboard_line_carries_the_reason() -> None:
    placed = place([vm(i, TWO_SITES_VM) for i in range(7)], sites(), default_rank=STRIPING)
    record = VmRecord(id=6, name="v", uid=0, gid=0, state=VmState.PENDING,
                      lcm_state=LcmState.LCM_INIT, prev_state=VmState.PENDING,
                      prev_lcm_state=LcmState.LCM_INIT, stime=1, etime=0, deploy_id="",
                      host_id=None, template=parse(""), user_template=parse(""), cpu=1,
                      memory=128, version=1, sched_message=placed.waiting[6],
                      placement=placed.reasons[6].to_json())
    assert placement_reason(record, None) == (
        "No host with enough capacity to deploy the VM (3 hosts considered: "
        "3 for capacity (local, cheap, dear))")

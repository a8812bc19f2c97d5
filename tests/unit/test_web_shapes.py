"""What the dashboard's forms offer: migration targets, recover choices, quota rows."""

from __future__ import annotations

from dataclasses import replace

from test_documents import make_host, make_vm

from cloudburst.daemon.lifecycle import migration_refusal
from cloudburst.model.states import HostState, LcmState
from cloudburst.web import shapes


def test_a_vm_migrates_only_to_another_enabled_host_of_its_driver() -> None:
    vm = make_vm()  # RUNNING on host 4 (ec2)
    source = make_host()
    other = replace(source, id=5, name="aws-us")
    assert migration_refusal(vm, source, other) is None
    assert migration_refusal(vm, source, source) == "VM 7 is already on host aws-eu"
    disabled = replace(other, state=HostState.DISABLED)
    assert migration_refusal(vm, source, disabled) == "Host 5 (aws-us) is DISABLED"
    kvm = replace(other, vm_mad="kvm", name="kvm-1")
    assert migration_refusal(vm, source, kvm) == (
        "Cannot migrate VM 7 from driver ec2 (host aws-eu) to driver kvm (host kvm-1)")


def test_recover_choices_follow_the_transition_table() -> None:
    running = shapes.vm_detail(make_vm(), make_host(), str, log=[], cost=None)
    assert running["migrate"] == {"cold": True, "live": True}
    assert running["recover"] == ["delete", "recreate", "delete-db"]
    failed = make_vm(lcm_state=LcmState.BOOT_FAILURE)
    assert shapes.recover_choices(failed) == ["success", "retry", "delete", "recreate",
                                              "delete-db"]
    assert shapes.RECOVER_OPERATIONS == {"failure": 0, "success": 1, "retry": 2, "delete": 3,
                                         "recreate": 4, "delete-db": 5}


def test_a_quota_row_shows_the_limit_set_the_one_that_applies_and_the_use() -> None:
    owner = shapes.quota_owner(
        3, "alice", {-1: {"VMS": 2, "HOURLY_COST": 0.5}, 100: {"VMS": 1}},
        {-1: {"VMS": 1, "MEMORY": 64, "HOURLY_COST": 0.25}}, {-1: {"MEMORY": 1024}})
    assert owner["exempt"] is False
    quotas = owner["quotas"]
    assert [quota["cluster_id"] for quota in quotas] == [-1, 100]  # type: ignore[index,union-attr]
    total = {m["metric"]: (m["limit"], m["effective"], m["used"])  # type: ignore[index]
             for m in quotas[0]["metrics"]}  # type: ignore[index]
    assert total["VMS"] == (2, 2, 1)
    assert total["MEMORY"] == (-1, 1024, 64)  # the default applies
    assert total["CPU"] == (-1, -2, 0.0)  # no default: unlimited
    assert total["HOURLY_COST"] == (0.5, 0.5, 0.25)
    assert shapes.quota_owner(0, "oneadmin", {}, {}, {})["exempt"] is True
    assert shapes.quota_owner(4, "bob", {}, {}, {})["quotas"] == []

"""The VM life cycle table (model.lifecycle) and the state numbers and short names."""

from __future__ import annotations

import itertools
from collections import deque

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from cloudburst.errors import IllegalActionError, StateRefusedError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import (
    ACTION_EVENTS,
    IN_FLIGHT,
    TRANSITIONS,
    USER_EVENTS,
    Event,
    Move,
    StateKey,
    Work,
    allowed_actions,
    apply,
    is_legal,
    move,
)
from cloudburst.model.states import (
    HOST_STATE_SHORT,
    LCM_STATE_SHORT,
    VM_STATE_SHORT,
    HostState,
    LcmState,
    VmState,
    vm_short_state,
    vm_state_label,
)


def valid_positions() -> list[StateKey]:
    """Every (STATE, LCM_STATE) a VM may be in: LCM_INIT unless ACTIVE, never ACTIVE/LCM_INIT."""
    positions: list[StateKey] = [(state, LcmState.LCM_INIT) for state in VmState
                                 if state is not VmState.ACTIVE]
    positions += [(VmState.ACTIVE, lcm) for lcm in LcmState if lcm is not LcmState.LCM_INIT]
    return positions


def is_valid(position: StateKey) -> bool:
    state, lcm = position
    if state is VmState.ACTIVE:
        return lcm is not LcmState.LCM_INIT
    return lcm is LcmState.LCM_INIT


def reachable_from(start: StateKey) -> set[StateKey]:
    seen = {start}
    queue = deque([start])
    while queue:
        here = queue.popleft()
        for (source, _event), moved in TRANSITIONS.items():
            if source == here and moved.to not in seen:
                seen.add(moved.to)
                queue.append(moved.to)
    return seen


REACHABLE = reachable_from(lifecycle.PENDING) | reachable_from(lifecycle.HOLD)


# -- the table ---------------------------------------------------------------------


@pytest.mark.parametrize("position", valid_positions(), ids=lambda p: vm_state_label(*p))
def test_every_state_and_event_is_either_a_transition_or_refused_naming_the_state(
        position: StateKey) -> None:
    label = vm_state_label(*position)
    for event in Event:
        if (position, event) in TRANSITIONS:
            assert apply(position, event) == TRANSITIONS[(position, event)].to
            assert is_legal(position, event)
        else:
            assert not is_legal(position, event)
            with pytest.raises(IllegalActionError) as refused:
                apply(position, event)
            assert label in str(refused.value), (position, event)
            assert event.value in str(refused.value)


def test_refusal_message_names_active_sub_state() -> None:
    with pytest.raises(IllegalActionError, match=r"ACTIVE/RUNNING") as refused:
        apply(lifecycle.RUNNING, Event.RELEASE)
    assert '"release"' in str(refused.value)
    with pytest.raises(IllegalActionError, match=r"\bPENDING\b"):
        apply(lifecycle.PENDING, Event.REBOOT)
    with pytest.raises(IllegalActionError, match=r"ACTIVE/BOOT_FAILURE"):
        apply(lifecycle.BOOT_FAILURE, Event.HOLD)


def test_refusal_carries_the_action_and_the_state_as_oned_names_it() -> None:
    """The API words a refusal as oned: the LCM state of an ACTIVE VM, else the VM state."""
    with pytest.raises(StateRefusedError) as refused:
        apply(lifecycle.RUNNING, Event.RELEASE)
    assert (refused.value.action, refused.value.state) == ("release", "RUNNING")
    with pytest.raises(StateRefusedError) as refused:
        apply(lifecycle.HOLD, Event.POWEROFF)
    assert (refused.value.action, refused.value.state) == ("poweroff", "HOLD")


def test_every_transition_starts_and_ends_in_a_valid_position() -> None:
    for (source, event), moved in TRANSITIONS.items():
        assert is_valid(source), (source, event)
        assert is_valid(moved.to), (source, event, moved)


def test_key_forces_lcm_init_outside_active() -> None:
    assert lifecycle.key(VmState.PENDING, LcmState.RUNNING) == (VmState.PENDING,
                                                                 LcmState.LCM_INIT)
    assert lifecycle.key(VmState.ACTIVE, LcmState.BOOT) == lifecycle.BOOT


def test_done_is_absorbing() -> None:
    for event in Event:
        assert not is_legal(lifecycle.DONE, event)
    assert allowed_actions(lifecycle.DONE) == []


def test_every_reachable_position_can_still_end_in_done() -> None:
    for position in REACHABLE:
        assert lifecycle.DONE in reachable_from(position), vm_state_label(*position)


def test_a_user_can_always_terminate_a_vm_that_waits_on_nobody() -> None:
    """Outside the in-flight states no VM is stuck: terminate-hard is always offered."""
    for position in REACHABLE - IN_FLIGHT - {lifecycle.DONE}:
        assert "terminate-hard" in allowed_actions(position), vm_state_label(*position)


def test_in_flight_states_move_on_without_a_user() -> None:
    driver_events = set(Event) - USER_EVENTS
    for position in IN_FLIGHT:
        assert any((position, event) in TRANSITIONS for event in driver_events), position


def test_the_deploy_path_and_its_failures() -> None:
    assert move(lifecycle.PENDING, Event.DEPLOY) == Move(lifecycle.PROLOG, Work.PROLOG)
    assert move(lifecycle.PROLOG, Event.SUCCESS) == Move(lifecycle.BOOT, Work.DEPLOY)
    assert apply(lifecycle.BOOT, Event.SUCCESS) == lifecycle.RUNNING
    assert apply(lifecycle.BOOT, Event.FAILURE) == lifecycle.BOOT_FAILURE
    assert apply(lifecycle.BOOT, Event.NO_CAPACITY) == lifecycle.PENDING
    assert apply(lifecycle.BOOT, Event.RETRY) == lifecycle.PENDING
    assert move(lifecycle.BOOT_FAILURE, Event.TERMINATE) == Move(lifecycle.CLEANUP_DELETE,
                                                                 Work.CLEANUP)
    assert apply(lifecycle.CLEANUP_DELETE, Event.SUCCESS) == lifecycle.DONE
    assert move(lifecycle.RUNNING, Event.TERMINATE) == Move(lifecycle.SHUTDOWN, Work.SHUTDOWN)
    assert move(lifecycle.RUNNING, Event.TERMINATE_HARD) == Move(lifecycle.SHUTDOWN,
                                                                 Work.CANCEL)
    assert move(lifecycle.SHUTDOWN, Event.SUCCESS) == Move(lifecycle.EPILOG, Work.EPILOG)
    assert apply(lifecycle.SHUTDOWN, Event.FAILURE) == lifecycle.RUNNING
    assert apply(lifecycle.EPILOG, Event.SUCCESS) == lifecycle.DONE


@pytest.mark.parametrize(("start", "action", "through", "work", "end"), [
    (lifecycle.RUNNING, Event.POWEROFF, lifecycle.SHUTDOWN_POWEROFF, Work.POWEROFF,
     lifecycle.POWEROFF),
    (lifecycle.RUNNING, Event.POWEROFF_HARD, lifecycle.SHUTDOWN_POWEROFF, Work.POWEROFF_HARD,
     lifecycle.POWEROFF),
    (lifecycle.POWEROFF, Event.RESUME, lifecycle.BOOT_POWEROFF, Work.POWERON,
     lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.SUSPEND, lifecycle.SAVE_SUSPEND, Work.SAVE, lifecycle.SUSPENDED),
    (lifecycle.SUSPENDED, Event.RESUME, lifecycle.BOOT_SUSPENDED, Work.RESTORE,
     lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.STOP, lifecycle.SAVE_STOP, Work.SAVE, lifecycle.EPILOG_STOP),
    (lifecycle.RUNNING, Event.UNDEPLOY, lifecycle.SHUTDOWN_UNDEPLOY, Work.POWEROFF,
     lifecycle.EPILOG_UNDEPLOY),
    (lifecycle.RUNNING, Event.MIGRATE, lifecycle.SAVE_MIGRATE, Work.MIGRATE, lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.MIGRATE_LIVE, lifecycle.MIGRATE, Work.MIGRATE_LIVE,
     lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.SNAPSHOT_CREATE, lifecycle.HOTPLUG_SNAPSHOT,
     Work.SNAPSHOT_CREATE, lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.DISK_ATTACH, lifecycle.HOTPLUG, Work.ATTACH_DISK,
     lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.NIC_DETACH, lifecycle.HOTPLUG_NIC, Work.DETACH_NIC,
     lifecycle.RUNNING),
    (lifecycle.BOOT_FAILURE, Event.RECOVER_RETRY, lifecycle.BOOT, Work.DEPLOY,
     lifecycle.RUNNING),
    (lifecycle.RUNNING, Event.RECOVER_RECREATE, lifecycle.CLEANUP_RESUBMIT, Work.CLEANUP,
     lifecycle.PENDING),
])
def test_each_action_enters_a_state_whose_work_leads_on(
        start: StateKey, action: Event, through: StateKey, work: Work, end: StateKey) -> None:
    assert move(start, action) == Move(through, work)
    assert apply(through, Event.SUCCESS) == end


def test_every_failure_state_has_a_way_out() -> None:
    assert lifecycle.FAILURES
    for position in lifecycle.FAILURES:
        for event in (Event.TERMINATE, Event.RECOVER_DELETE, Event.RECOVER_RETRY,
                      Event.RECOVER_SUCCESS):
            assert is_legal(position, event), (position, event)


def test_parked_vms_come_back_through_their_own_boot() -> None:
    assert apply(lifecycle.STOPPED, Event.RESUME) == lifecycle.PENDING
    assert move(lifecycle.PENDING, Event.DEPLOY_RESTORE).to == lifecycle.PROLOG_RESUME
    assert move(lifecycle.PROLOG_RESUME, Event.SUCCESS) == Move(lifecycle.BOOT_STOPPED,
                                                                Work.RESTORE)
    assert move(lifecycle.PENDING, Event.DEPLOY_POWERON).to == lifecycle.PROLOG_UNDEPLOY
    assert move(lifecycle.PROLOG_UNDEPLOY, Event.SUCCESS) == Move(lifecycle.BOOT_UNDEPLOY,
                                                                  Work.POWERON)


def test_the_diagram_shows_actions_and_work() -> None:
    diagram = lifecycle.mermaid()
    assert diagram.startswith("stateDiagram-v2")
    assert "RUNNING --> SHUTDOWN_POWEROFF: poweroff / poweroff" in diagram


def test_user_actions_are_refused_while_driver_work_is_in_flight() -> None:
    """A second terminate, a hold or a release cannot interrupt BOOT or SHUTDOWN."""
    for position in IN_FLIGHT:
        for event in (Event.HOLD, Event.RELEASE, Event.DEPLOY, Event.REBOOT, Event.POWEROFF,
                      Event.RESUME, Event.MIGRATE):
            assert not is_legal(position, event), (position, event)


# -- allowed_actions ------------------------------------------------------------------


def test_allowed_actions_per_state() -> None:
    terminate_names = ["delete", "shutdown", "shutdown-hard", "terminate", "terminate-hard"]
    assert allowed_actions(lifecycle.PENDING) == sorted(["hold", *terminate_names])
    assert allowed_actions(lifecycle.HOLD) == sorted(["release", *terminate_names])
    assert allowed_actions(lifecycle.RUNNING) == sorted(
        ["reboot", "reboot-hard", "reset", "poweroff", "poweroff-hard", "suspend", "stop",
         "undeploy", "undeploy-hard", "resched", "unresched", *terminate_names])
    assert allowed_actions(lifecycle.POWEROFF) == sorted(
        ["resume", "undeploy", "undeploy-hard", *terminate_names])
    assert allowed_actions(lifecycle.BOOT) == sorted(terminate_names)
    assert allowed_actions(lifecycle.SHUTDOWN) == []
    assert allowed_actions(lifecycle.BOOT_FAILURE) == terminate_names


def test_action_names_map_to_events_and_5x_aliases() -> None:
    assert ACTION_EVENTS["shutdown"] is Event.TERMINATE
    assert ACTION_EVENTS["shutdown-hard"] is Event.TERMINATE_HARD
    assert ACTION_EVENTS["delete"] is Event.TERMINATE_HARD
    assert ACTION_EVENTS["hold"] is Event.HOLD
    assert ACTION_EVENTS["release"] is Event.RELEASE
    assert set(ACTION_EVENTS.values()) <= USER_EVENTS


# -- random walks -------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list(Event)), max_size=60),
       st.sampled_from([lifecycle.PENDING, lifecycle.HOLD]))
def test_random_event_sequences_stay_on_valid_positions(events: list[Event],
                                                        start: StateKey) -> None:
    position = start
    for event in events:
        before = position
        try:
            position = apply(position, event)
        except IllegalActionError:
            assert position == before
            assert (before, event) not in TRANSITIONS
            continue
        assert is_valid(position), (before, event, position)
        if before == lifecycle.DONE:
            pytest.fail(f"{event} moved a VM out of DONE")


class LifecycleWalk(RuleBasedStateMachine):
    """A VM driven by arbitrary events: legal ones move it, illegal ones do nothing."""

    def __init__(self) -> None:
        super().__init__()
        self.position: StateKey = lifecycle.PENDING
        self.seen_done = False

    @rule(event=st.sampled_from(list(Event)))
    def send(self, event: Event) -> None:
        legal = is_legal(self.position, event)
        try:
            moved = apply(self.position, event)
        except IllegalActionError as exc:
            assert not legal
            assert vm_state_label(*self.position) in str(exc)
            return
        assert legal
        self.position = moved

    @rule(action=st.sampled_from(sorted(ACTION_EVENTS)))
    def user_action(self, action: str) -> None:
        event = ACTION_EVENTS[action]
        offered = action in allowed_actions(self.position)
        assert offered == is_legal(self.position, event)
        if offered:
            self.position = apply(self.position, event)

    @invariant()
    def position_is_valid(self) -> None:
        assert is_valid(self.position)
        assert self.position in REACHABLE

    @invariant()
    def done_is_final(self) -> None:
        if self.seen_done:
            assert self.position == lifecycle.DONE
        self.seen_done = self.position == lifecycle.DONE


LifecycleWalk.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                           deadline=None)
test_lifecycle_state_machine = LifecycleWalk.TestCase


# -- numbers and short names (spec/opennebula.md sections 2 and 3) --------------------------


@pytest.mark.parametrize(("member", "number"), [
    (VmState.INIT, 0), (VmState.PENDING, 1), (VmState.HOLD, 2), (VmState.ACTIVE, 3),
    (VmState.STOPPED, 4), (VmState.SUSPENDED, 5), (VmState.DONE, 6), (VmState.POWEROFF, 8),
    (VmState.UNDEPLOYED, 9), (VmState.CLONING, 10), (VmState.CLONING_FAILURE, 11),
    (LcmState.LCM_INIT, 0), (LcmState.PROLOG, 1), (LcmState.BOOT, 2), (LcmState.RUNNING, 3),
    (LcmState.MIGRATE, 4), (LcmState.EPILOG, 11), (LcmState.SHUTDOWN, 12),
    (LcmState.CLEANUP_RESUBMIT, 15), (LcmState.UNKNOWN, 16), (LcmState.SHUTDOWN_POWEROFF, 18),
    (LcmState.CLEANUP_DELETE, 23), (LcmState.SHUTDOWN_UNDEPLOY, 29),
    (LcmState.BOOT_FAILURE, 36), (LcmState.PROLOG_FAILURE, 39), (LcmState.EPILOG_FAILURE, 40),
    (LcmState.PROLOG_UNDEPLOY_FAILURE, 50),
    (HostState.INIT, 0), (HostState.MONITORING_MONITORED, 1), (HostState.MONITORED, 2),
    (HostState.ERROR, 3), (HostState.DISABLED, 4), (HostState.MONITORING_ERROR, 5),
    (HostState.OFFLINE, 8),
])
def test_state_numbers_match_opennebula(member: VmState | LcmState | HostState,
                                        number: int) -> None:
    assert int(member) == number


def test_retired_lcm_numbers_are_not_used() -> None:
    """5.x retired 13 (CANCEL) and 14 (FAILURE): a client must never see them."""
    assert {13, 14}.isdisjoint(int(state) for state in LcmState)


# Short names from the spec tables; LCM entries are all of section 2.2 that exist in 5.x.
SPEC_VM_SHORT = {
    VmState.INIT: "init", VmState.PENDING: "pend", VmState.HOLD: "hold",
    VmState.STOPPED: "stop", VmState.SUSPENDED: "susp", VmState.DONE: "done",
    VmState.POWEROFF: "poff", VmState.UNDEPLOYED: "unde", VmState.CLONING: "clon",
    VmState.CLONING_FAILURE: "fail",
}
SPEC_LCM_SHORT = {
    "PROLOG": "prol", "BOOT": "boot", "RUNNING": "runn", "MIGRATE": "migr",
    "SAVE_STOP": "save", "SAVE_SUSPEND": "save", "SAVE_MIGRATE": "save",
    "PROLOG_MIGRATE": "migr", "PROLOG_RESUME": "prol", "EPILOG_STOP": "epil",
    "EPILOG": "epil", "SHUTDOWN": "shut", "CLEANUP_RESUBMIT": "clea", "UNKNOWN": "unkn",
    "HOTPLUG": "hotp", "SHUTDOWN_POWEROFF": "shut", "BOOT_UNKNOWN": "boot",
    "BOOT_POWEROFF": "boot", "BOOT_SUSPENDED": "boot", "BOOT_STOPPED": "boot",
    "CLEANUP_DELETE": "clea", "HOTPLUG_SNAPSHOT": "snap", "HOTPLUG_NIC": "hotp",
    "SHUTDOWN_UNDEPLOY": "shut", "EPILOG_UNDEPLOY": "epil",
    "PROLOG_UNDEPLOY": "prol", "BOOT_UNDEPLOY": "boot", "BOOT_MIGRATE": "boot",
}


def test_vm_short_names_match_onevm_list() -> None:
    for state, short in SPEC_VM_SHORT.items():
        assert VM_STATE_SHORT[state] == short
        assert vm_short_state(state, LcmState.LCM_INIT) == short


def test_lcm_short_names_match_onevm_list() -> None:
    for lcm in LcmState:
        if lcm is LcmState.LCM_INIT:
            continue
        expected = "fail" if lcm.name.endswith("_FAILURE") else SPEC_LCM_SHORT[lcm.name]
        assert LCM_STATE_SHORT[lcm] == expected, lcm.name
        assert vm_short_state(VmState.ACTIVE, lcm) == expected


def test_seed_list_shows_running_vm_as_runn() -> None:
    """The EC2 seed's `onevm list` prints STAT `runn` for ACTIVE/RUNNING."""
    assert vm_short_state(VmState.ACTIVE, LcmState.RUNNING) == "runn"
    assert vm_short_state(*lifecycle.SHUTDOWN) == "shut"
    assert vm_short_state(*lifecycle.UNKNOWN) == "unkn"
    assert vm_short_state(*lifecycle.BOOT_FAILURE) == "fail"
    assert vm_short_state(*lifecycle.DONE) == "done"


def test_host_short_names() -> None:
    assert HOST_STATE_SHORT[HostState.INIT] == "init"
    assert HOST_STATE_SHORT[HostState.MONITORED] == "on"
    assert HOST_STATE_SHORT[HostState.ERROR] == "err"
    assert HOST_STATE_SHORT[HostState.DISABLED] == "dsbl"
    assert HOST_STATE_SHORT[HostState.OFFLINE] == "off"
    assert HOST_STATE_SHORT[HostState.MONITORING_ERROR] == "retry"
    assert set(HOST_STATE_SHORT) == set(HostState)


def test_every_short_name_is_at_most_four_letters() -> None:
    names = itertools.chain(VM_STATE_SHORT.values(), LCM_STATE_SHORT.values())
    assert all(1 <= len(name) <= 4 and name.islower() for name in names)


def test_state_labels_for_messages() -> None:
    assert vm_state_label(*lifecycle.RUNNING) == "ACTIVE/RUNNING"
    assert vm_state_label(*lifecycle.PENDING) == "PENDING"
    assert vm_state_label(*lifecycle.BOOT_FAILURE) == "ACTIVE/BOOT_FAILURE"

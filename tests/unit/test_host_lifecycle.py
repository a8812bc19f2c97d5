"""The host life cycle table (model.host_lifecycle), checked against what an
OpenNebula 6.10 peer does (``onehost enable/disable/offline`` in every state)."""

from __future__ import annotations

import pytest

from cloudburst.errors import IllegalActionError, StateRefusedError
from cloudburst.model.host_lifecycle import (
    HOST_TRANSITIONS,
    MONITORED,
    STATUS_EVENTS,
    HostEvent,
    HostMove,
    HostWork,
    host_move,
    is_legal,
)
from cloudburst.model.states import SCHEDULABLE_HOST_STATES, HostState

S = HostState
E = HostEvent
ENTERED = (S.INIT, S.MONITORED, S.ERROR, S.DISABLED, S.OFFLINE)


def test_numbers_are_opennebula_6_10s() -> None:
    assert {state.name: int(state) for state in HostState} == {
        "INIT": 0, "MONITORING_MONITORED": 1, "MONITORED": 2, "ERROR": 3, "DISABLED": 4,
        "MONITORING_ERROR": 5, "MONITORING_INIT": 6, "MONITORING_DISABLED": 7, "OFFLINE": 8}


def test_a_new_host_is_init_and_monitored_at_once() -> None:
    assert host_move(None, E.CREATE) == HostMove(S.INIT, frozenset({HostWork.MONITOR}))
    with pytest.raises(StateRefusedError):
        host_move(S.MONITORED, E.CREATE)


@pytest.mark.parametrize("state", ENTERED)
def test_operators_may_act_in_every_state_as_the_peer_allows(state: HostState) -> None:
    # The peer: enable starts over from INIT (also a MONITORED host), disable
    # and offline are accepted from ERROR, OFFLINE, DISABLED alike.
    assert host_move(state, E.ENABLE) == HostMove(S.INIT, frozenset({HostWork.MONITOR}))
    assert host_move(state, E.DISABLE).to is S.DISABLED
    assert host_move(state, E.OFFLINE).to is S.OFFLINE
    assert host_move(state, E.DELETE).to is None
    flush = host_move(state, E.FLUSH)
    assert flush.to is S.DISABLED and HostWork.RESCHEDULE in flush.work


@pytest.mark.parametrize(("state", "success", "failure"), [
    (S.INIT, S.MONITORED, S.ERROR),
    (S.MONITORED, S.MONITORED, S.ERROR),
    (S.ERROR, S.MONITORED, S.ERROR),
    (S.DISABLED, S.DISABLED, S.DISABLED),
])
def test_a_monitoring_outcome_decides_unless_the_host_is_disabled(
        state: HostState, success: HostState, failure: HostState) -> None:
    assert host_move(state, E.MONITOR_SUCCESS).to is success
    assert host_move(state, E.MONITOR_FAILURE).to is failure
    assert host_move(state, E.MONITOR_TIMEOUT).to is failure


def test_an_offline_host_takes_no_monitoring_outcome_in_one_line() -> None:
    for event in (E.MONITOR_SUCCESS, E.MONITOR_FAILURE, E.MONITOR_TIMEOUT):
        assert not is_legal(S.OFFLINE, event)
        with pytest.raises(IllegalActionError) as refused:
            host_move(S.OFFLINE, event)
        message = refused.value.message
        assert message == f'Action "{event.value}" is not available for host state OFFLINE'
        assert "\n" not in message


def test_entering_a_state_that_changes_placement_wakes_the_scheduler() -> None:
    for (source, _event), moved in HOST_TRANSITIONS.items():
        if moved.to in SCHEDULABLE_HOST_STATES and source not in SCHEDULABLE_HOST_STATES:
            assert HostWork.SCHEDULE in moved.work
        if source in SCHEDULABLE_HOST_STATES and moved.to not in SCHEDULABLE_HOST_STATES \
                and moved.to is not S.INIT:
            assert HostWork.SCHEDULE in moved.work
        if moved.to is S.INIT:
            assert HostWork.MONITOR in moved.work
        if moved.to is S.ERROR and source is S.ERROR:
            # A repeated failure only sets UNKNOWN the VMs that started there since.
            assert moved.work == {HostWork.UNOBSERVED}


def test_a_failed_monitoring_leaves_the_hosts_vms_unobserved_whatever_its_state() -> None:
    for (_source, event), moved in HOST_TRANSITIONS.items():
        failed = event in (E.MONITOR_FAILURE, E.MONITOR_TIMEOUT)
        assert (HostWork.UNOBSERVED in moved.work) == failed


def test_monitored_hosts_are_all_but_offline_ones() -> None:
    assert S.OFFLINE not in MONITORED
    assert {S.INIT, S.MONITORED, S.ERROR, S.DISABLED} <= MONITORED
    assert {S.MONITORING_INIT, S.MONITORING_MONITORED, S.MONITORING_ERROR,
            S.MONITORING_DISABLED} <= MONITORED


def test_the_monitoring_states_move_as_the_state_they_name() -> None:
    assert host_move(S.MONITORING_MONITORED, E.MONITOR_FAILURE).to is S.ERROR
    assert host_move(S.MONITORING_DISABLED, E.MONITOR_FAILURE).to is S.DISABLED
    assert host_move(S.MONITORING_INIT, E.MONITOR_SUCCESS).to is S.MONITORED


def test_one_host_status_numbers() -> None:
    assert STATUS_EVENTS == {0: E.ENABLE, 1: E.DISABLE, 2: E.OFFLINE}


def test_only_entered_states_are_targets() -> None:
    targets = {moved.to for moved in HOST_TRANSITIONS.values()}
    assert targets == {*ENTERED, None}

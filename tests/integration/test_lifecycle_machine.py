"""A Hypothesis state machine drives random VM actions and injected driver failures
through the real core (in-process daemon, dummy driver) and checks after each step,
once the drivers have answered: no VM is left in a transient state, no instance is
left without a VM, no VM that should have an instance lacks it."""

from __future__ import annotations

import asyncio
import contextlib
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule
from test_daemon import LOCAL_VM, add_dummy_host, make_home

from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.errors import CloudburstError
from cloudburst.model import lifecycle
from cloudburst.model.states import VmState, vm_state_label

pytestmark = pytest.mark.slow

#: User actions the machine tries (operator overrides such as recover --success or
#: --delete-db, which take the operator's word over the driver's, are left out).
ACTIONS = ["terminate", "terminate-hard", "poweroff", "poweroff-hard", "suspend", "stop",
           "undeploy", "resume", "reboot", "hold", "release", "resched"]
RECOVERIES = [2, 3, 4]  # retry, delete, recreate
#: Driver methods whose failures are injected, and how they fail.
INJECTED = ["deploy", "cancel", "shutdown", "poweroff", "poweron", "save", "restore"]
OUTCOMES = ["failure: injected", "transient: injected outage"]
#: Positions in which the VM's instance exists at the dummy driver.
HOLDING = {lifecycle.RUNNING, lifecycle.POWEROFF, lifecycle.SUSPENDED, lifecycle.STOPPED,
           lifecycle.UNDEPLOYED}


class LifecycleMachine(RuleBasedStateMachine):
    """One daemon per example; VMs are created, acted on and failed at random."""

    home: Path
    #: One event loop for the whole run; each example's daemon starts and stops on it.
    loop: asyncio.AbstractEventLoop

    def __init__(self) -> None:
        super().__init__()
        self.daemon: Daemon | None = None
        self.vm_ids: list[int] = []

    def run(self, coroutine: Any) -> Any:
        return self.loop.run_until_complete(coroutine)

    @initialize()
    def start(self) -> None:
        LifecycleMachine.count += 1
        home = make_home(self.home / str(LifecycleMachine.count)).home
        conf = home / "etc" / "oned.conf"
        conf.write_text(re.sub(r"(?m)^DRIVER_RETRY_DELAY = .*$", "DRIVER_RETRY_DELAY = 0.05",
                               conf.read_text()))
        settings_, _ = load_settings(home)
        daemon = Daemon(settings_)
        self.run(daemon.start(serve_api=False))
        self.daemon = daemon
        self.run(add_dummy_host(daemon, "kvm-1"))
        self.run(add_dummy_host(daemon, "kvm-2"))

    count = 0

    @property
    def inject_dir(self) -> Path:
        assert self.daemon is not None
        return self.daemon.settings.var_dir / "dummy"

    @rule()
    def create(self) -> None:
        assert self.daemon is not None
        self.vm_ids.append(self.run(self.daemon.vms.allocate(LOCAL_VM)))
        self.settle()

    @rule(which=st.integers(0, 20), action=st.sampled_from(ACTIONS),
          failing=st.none() | st.tuples(st.sampled_from(INJECTED), st.sampled_from(OUTCOMES)))
    def act(self, which: int, action: str, failing: tuple[str, str] | None) -> None:
        if not self.vm_ids:
            return
        vm_id = self.vm_ids[which % len(self.vm_ids)]
        self.with_failure(failing, lambda: self.daemon.vms.action(action, vm_id))  # type: ignore[union-attr]

    @rule(which=st.integers(0, 20), operation=st.sampled_from(RECOVERIES))
    def recover(self, which: int, operation: int) -> None:
        if not self.vm_ids:
            return
        vm_id = self.vm_ids[which % len(self.vm_ids)]
        self.with_failure(None, lambda: self.daemon.vms.recover(vm_id, operation))  # type: ignore[union-attr]

    def with_failure(self, failing: tuple[str, str] | None, call: Any) -> None:
        if failing is not None:
            self.inject_dir.mkdir(parents=True, exist_ok=True)
            (self.inject_dir / failing[0]).write_text(failing[1])
        with contextlib.suppress(CloudburstError):  # illegal in that state: refused cleanly
            self.run(call())
        self.run(asyncio.sleep(0.1))  # let the driver meet the injected failure
        if failing is not None:
            (self.inject_dir / failing[0]).unlink()
        self.settle()

    def settle(self) -> list[tuple[int, str]]:
        """Wait until the drivers have answered (outages retried after the fault ended)
        and the scheduler's deploys have reported back; returns what is still in flight
        after 15 s (a scheduler pass may start a deploy while the pool is read, so only
        a VM in flight at every look for 15 s counts as stuck)."""
        assert self.daemon is not None
        still: list[tuple[int, str]] = []
        for _ in range(150):
            self.run(self.daemon.lifecycle.drain(timeout=20))
            still = self.in_flight()
            if not still:
                return []
            self.run(asyncio.sleep(0.1))
        return still

    def in_flight(self) -> list[tuple[int, str]]:
        assert self.daemon is not None
        vms = self.run(self.daemon.vms.pool(state=-2, with_history=False))
        return [(vm.id, vm_state_label(*vm.position)) for vm in vms
                if vm.position in lifecycle.IN_FLIGHT]

    @invariant()
    def nothing_transient_nothing_leaked(self) -> None:
        if self.daemon is None:
            return
        stuck = self.settle()
        logs = {vm_id: self.daemon.files.log_path(vm_id).read_text()[-1500:]
                for vm_id, _ in stuck}
        assert not stuck, f"VMs left in transient states: {stuck}; logs: {logs}"
        # A scheduler pass may start a deploy between the pool read and the driver's
        # list, so an instance counts as leaked only if no VM owns it at three looks a
        # second apart.
        leaked: set[str] = set()
        for look in range(3):
            vms = self.run(self.daemon.vms.pool(state=-2, with_history=False))
            driver = self.daemon.dispatcher.vm_driver("dummy")
            instances = set(driver.instances())  # type: ignore[attr-defined]
            owned = {vm.deploy_id for vm in vms
                     if vm.state is not VmState.DONE and vm.deploy_id}
            leaked = instances - owned if look == 0 else leaked & (instances - owned)
            if not leaked:
                break
            self.run(asyncio.sleep(1))
            self.settle()
        assert not leaked, f"instances without a VM: {leaked}"
        missing = [vm.id for vm in vms if vm.position in HOLDING
                   and vm.deploy_id not in instances]
        assert not missing, f"VMs without their instance: {missing}"

    def teardown(self) -> None:
        if self.daemon is not None:
            self.run(self.daemon.stop())


def test_random_actions_and_failures_leave_nothing_stuck_or_leaked(tmp_path: Path) -> None:
    LifecycleMachine.home = tmp_path
    LifecycleMachine.loop = asyncio.new_event_loop()
    LifecycleMachine.TestCase.settings = settings(
        max_examples=6, stateful_step_count=16, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    try:
        LifecycleMachine.TestCase().runTest()
    finally:
        LifecycleMachine.loop.close()

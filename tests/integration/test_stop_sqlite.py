"""A SQLite daemon stops cleanly: work that appears after it gave up leading is not
"handed" to a leader that cannot exist; it waits in the store for the next start."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_daemon import LOCAL_VM, add_dummy_host, make_home, run, running, wait_vm

from cloudburst.daemon.app import Daemon
from cloudburst.model import lifecycle
from cloudburst.model.states import VmState


def test_work_created_while_stopping_logs_no_warning_and_runs_at_the_next_start(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = make_home(tmp_path)
    caplog.set_level(logging.INFO)

    async def scenario() -> int:
        daemon = Daemon(settings)
        try:
            await daemon.start(serve_api=False)
            await add_dummy_host(daemon, "kvm-1")
            await wait_vm(daemon, await daemon.vms.allocate(LOCAL_VM), lifecycle.RUNNING)
            # A stop gives the lease up first; a VM created from then on (a request
            # still being answered, a deploy failing back to PENDING) is work for
            # "the leader": on SQLite there is none to notify.
            await daemon.leadership.stop()
            assert not daemon.leadership.is_leader
            vm_id = await daemon.vms.allocate(LOCAL_VM)
        finally:
            await daemon.stop()
        return vm_id

    vm_id = run(scenario)
    noisy = [record.getMessage() for record in caplog.records
             if record.levelno >= logging.WARNING]
    assert noisy == []

    async def restarted() -> None:
        async with running(settings) as daemon:
            vm = await daemon.vms.info(vm_id)
            assert vm.state in (VmState.PENDING, VmState.ACTIVE)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)

    run(restarted)

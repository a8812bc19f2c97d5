"""No VM is trapped: retried actions, outages before a deploy created anything,
outages during terminate (the real core in-process, dummy driver with injection)."""

from __future__ import annotations

import re
from pathlib import Path

from test_daemon import LOCAL_VM, add_dummy_host, make_home, run, running, wait_until, wait_vm

from cloudburst.daemon.app import Daemon
from cloudburst.model import lifecycle
from cloudburst.store import journal


def quick_retries(settings_dir: Path) -> None:
    conf = settings_dir / "etc" / "oned.conf"
    text = re.sub(r"(?m)^DRIVER_RETRY_DELAY = .*$", "DRIVER_RETRY_DELAY = 0.2", conf.read_text())
    conf.write_text(text)


def inject(daemon: Daemon, action: str, value: str | None) -> None:
    path = daemon.settings.var_dir / "dummy" / action
    path.parent.mkdir(parents=True, exist_ok=True)
    if value is None:
        path.unlink(missing_ok=True)
    else:
        path.write_text(value)


async def running_vm(daemon: Daemon) -> int:
    """A VM RUNNING on a new dummy host ``kvm-1``."""
    await add_dummy_host(daemon, "kvm-1")
    vm_id = await daemon.vms.allocate(LOCAL_VM)
    await wait_vm(daemon, vm_id, lifecycle.RUNNING)
    return vm_id


def test_a_terminate_retried_after_a_failure_is_a_new_attempt(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)
            inject(daemon, "cancel", "failure: partner cloud refused")
            await daemon.vms.action("terminate-hard", vm_id)
            vm = await wait_until(
                lambda: _vm_with_error(daemon, vm_id), what="the failed terminate")
            assert vm.position == lifecycle.RUNNING
            assert vm.error == "Error shutting down VM: partner cloud refused"
            inject(daemon, "cancel", None)
            await daemon.vms.action("terminate-hard", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.DONE)
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            stops = [(e.action, e.token.rsplit("-", 1)[-1], e.status) for e in entries
                     if e.action == "cancel"]
            assert stops == [("cancel", "cancel", "failed"), ("cancel", "cancel.2", "done")]

    run(scenario)


async def _vm_with_error(daemon: Daemon, vm_id: int) -> object:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.error and vm.position == lifecycle.RUNNING else None


def test_an_outage_before_anything_was_created_sends_the_vm_back_to_pending(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    quick_retries(settings.home)
    from cloudburst.daemon.main import load_settings
    settings, _ = load_settings(settings.home)
    assert settings.driver_retry_delay == 0.2

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_dummy_host(daemon, "kvm-1")
            inject(daemon, "deploy", "transient: DescribeInstances throttled")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_until(lambda: _pending_again(daemon, vm_id),
                                  what="the VM back in PENDING")
            assert vm.history[0].reason == "nothing created: DescribeInstances throttled"
            assert not vm.error
            inject(daemon, "deploy", None)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            assert vm.history[0].reason.startswith("nothing created: ")
            assert len(vm.history) >= 2
            assert not vm.error

    run(scenario)


async def _pending_again(daemon: Daemon, vm_id: int) -> object:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.position == lifecycle.PENDING and vm.history else None


def test_an_outage_during_terminate_is_retried_until_the_instance_is_gone(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    quick_retries(settings.home)
    from cloudburst.daemon.main import load_settings
    settings, _ = load_settings(settings.home)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            driver = daemon.dispatcher.vm_driver("dummy")
            assert vm.deploy_id in driver.instances()  # type: ignore[attr-defined]
            inject(daemon, "cancel", "transient: partner cloud unreachable")
            await daemon.vms.action("terminate-hard", vm_id)
            log = daemon.files.log_path(vm_id)
            await wait_until(lambda: log.read_text().count("trying again") >= 2,
                             what="two retries")
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.SHUTDOWN
            assert "partner cloud unreachable" in vm.error
            inject(daemon, "cancel", None)
            await wait_vm(daemon, vm_id, lifecycle.DONE)
            assert vm.deploy_id not in driver.instances()  # type: ignore[attr-defined]

    run(scenario)

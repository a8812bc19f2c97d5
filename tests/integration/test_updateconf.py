"""``one.vm.updateconf`` of RUNNING and POWEROFF VMs through the real core (in-process
daemon, dummy host), as an OpenNebula 6.10 peer does it: a new CONTEXT passes the running
VM through HOTPLUG while the driver reconfigures it, other sections only change the
template, a failure leaves the VM running with the error, a powered-off VM boots from
the changed template, and the states oned refuses are refused with its message."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_daemon import LOCAL_VM, add_dummy_host, make_home, run, running, wait_until, wait_vm

from cloudburst.daemon.app import Daemon
from cloudburst.errors import StateRefusedError
from cloudburst.model import lifecycle
from cloudburst.store import journal


def _calls(daemon: Daemon, vm_id: int) -> list[str]:
    driver = daemon.dispatcher.vm_driver("dummy")
    return [name for name, vm in driver.calls if vm == vm_id]  # type: ignore[attr-defined]


def test_updateconf_of_running_and_powered_off_vms(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def context_of(daemon: Daemon, vm_id: int) -> dict[str, str]:
        return dict((await daemon.vms.info(vm_id)).template.get_vector("CONTEXT") or {})

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM + ' CONTEXT = [ KEY = "k1" ]')
            await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)

            # A new CONTEXT: HOTPLUG while the driver reconfigures, then RUNNING.
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k2", ID = "$VMID" ]',
                                         merge=False)
            await wait_until(lambda: "reconfigure" in _calls(daemon, vm_id),
                             what="the driver's reconfigure")
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)
            assert {k: v for k, v in (await context_of(daemon, vm_id)).items()
                    if k in ("KEY", "ID")} == {"KEY": "k2", "ID": str(vm_id)}
            # (the log line of a move is written once its transaction committed)
            await wait_until(lambda: _logged_in_order(daemon, vm_id, (
                "New state is ACTIVE/HOTPLUG", "VM configuration updated in the running guest",
                "New state is ACTIVE/RUNNING")), what="the log lines")
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            assert [e.status for e in entries if e.action == "reconfigure"] == ["done"]

            # Other sections only change the template: no HOTPLUG, no driver call.
            await daemon.vms.update_conf(vm_id, 'GRAPHICS = [ TYPE = "VNC" ]', merge=True)
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.RUNNING and vm.template.get_vector("GRAPHICS")
            assert _calls(daemon, vm_id).count("reconfigure") == 1

            # While the driver works (it hangs here), another updateconf is refused.
            await daemon.hosts.update(host.id, "DUMMY_RECONFIGURE = hang", merge=True)
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k3" ]', merge=True)
            with pytest.raises(StateRefusedError,
                               match=r"^configuration cannot be updated in state HOTPLUG$"):
                await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k4" ]', merge=True)
            await daemon.vms.recover(vm_id, 0)  # the operator gives up on it
            await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)

            # A failed reconfigure: back to RUNNING with the error, the template kept.
            await daemon.hosts.update(host.id, 'DUMMY_RECONFIGURE = "failure: no agent"',
                                      merge=True)
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k5" ]', merge=True)
            vm = await wait_until(lambda: _failed(daemon, vm_id), what="the failure")
            assert vm.error == ("Error updating the configuration of the running VM: "
                                "no agent")
            assert (await context_of(daemon, vm_id))["KEY"] == "k5"

            # POWEROFF: stored; resume boots from a deployment of the new template.
            await daemon.vms.action("poweroff", vm_id)
            vm = await wait_vm(daemon, vm_id, lifecycle.POWEROFF, timeout=60)
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k6" ]', merge=True)
            assert (await daemon.vms.info(vm_id)).position == lifecycle.POWEROFF
            await daemon.vms.action("resume", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)
            deployment = daemon.files.deployment_path(vm_id, vm.history[-1].seq).read_text()
            assert "k6" in deployment and "k5" not in deployment
            assert _calls(daemon, vm_id)[-2:] == ["poweroff", "poweron"]

            # SUSPENDED (like STOPPED) takes no configuration change.
            await daemon.vms.action("suspend", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.SUSPENDED, timeout=60)
            with pytest.raises(StateRefusedError, match=r"in state SUSPENDED$"):
                await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k7" ]', merge=True)

    run(scenario)


def _logged_in_order(daemon: Daemon, vm_id: int, lines: tuple[str, ...]) -> bool:
    log, start = daemon.files.log_path(vm_id).read_text(), 0
    for line in lines:
        start = log.find(line, start)
        if start < 0:
            return False
    return True


async def _failed(daemon: Daemon, vm_id: int) -> object:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.error and vm.position == lifecycle.RUNNING else None


def test_a_reconfigure_interrupted_by_a_restart_runs_again(tmp_path: Path) -> None:
    """A crash (here a stop) in HOTPLUG: the restarted daemon reads the journal and runs
    the reconfigure again from the stored template (it only rebuilds the context)."""
    settings = make_home(tmp_path)
    injected = settings.var_dir / "dummy" / "reconfigure"

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM + ' CONTEXT = [ KEY = "k1" ]')
            await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)
            injected.parent.mkdir(parents=True, exist_ok=True)
            injected.write_text("hang\n")
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k2" ]', merge=False)
            assert (await daemon.vms.info(vm_id)).position == lifecycle.HOTPLUG
        injected.unlink()
        async with running(settings) as daemon:
            await wait_until(lambda: "reconfigure" in _calls(daemon, vm_id),
                             what="the reconfigure run again")
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)
            assert not vm.error and (vm.template.get_vector("CONTEXT") or {})["KEY"] == "k2"
            await wait_until(lambda: _logged_in_order(daemon, vm_id, (
                "Daemon restarted during HOTPLUG", "VM configuration updated in the running "
                "guest", "New state is ACTIVE/RUNNING")), what="the log lines")
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            assert [e.status for e in entries if e.action == "reconfigure"] == ["done"]

    run(scenario)

"""Every VM action through the real core (in-process daemon) on dummy and script hosts:
resulting state, history record and the driver calls that were made."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from test_daemon import (
    LOCAL_VM,
    RECORD_ACTION,
    actions,
    add_dummy_host,
    add_provider_host,
    install,
    make_home,
    run,
    running,
    wait_until,
    wait_vm,
)
from test_lifecycle_faults import running_vm

from cloudburst.daemon.app import Daemon
from cloudburst.daemon.lifecycle.observing import LAST_POLL_REFRESH
from cloudburst.drivers.base import PollResult, PollState
from cloudburst.errors import IllegalActionError, LockedError, UnsupportedActionError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import HISTORY_ACTIONS as CODES
from cloudburst.model.lifecycle import Event
from cloudburst.model.states import HostState
from cloudburst.store import journal
from seed_templates import PROVIDER_VM


def calls(daemon: Daemon) -> list[tuple[str, int]]:
    return list(daemon.dispatcher.vm_driver("dummy").calls)  # type: ignore[attr-defined]


async def act(daemon: Daemon, vm_id: int, action: str, target: Any) -> Any:
    await daemon.vms.action(action, vm_id)
    return await wait_vm(daemon, vm_id, target)


def test_power_suspend_stop_undeploy_and_resume_on_a_dummy_host(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM + ' CONTEXT = [ A = "" ]')
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            deploy_id = vm.deploy_id

            vm = await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            assert vm.history[-1].action == CODES[Event.POWEROFF] == 19
            assert (await daemon.hosts.info(host.id)).running_vms == 1  # keeps its capacity
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            assert vm.deploy_id == deploy_id
            vm = await act(daemon, vm_id, "suspend", lifecycle.SUSPENDED)
            assert vm.history[-1].action == 10
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            vm = await act(daemon, vm_id, "poweroff-hard", lifecycle.POWEROFF)
            assert vm.history[-1].action == 20
            vm = await act(daemon, vm_id, "undeploy", lifecycle.UNDEPLOYED)
            assert (await daemon.hosts.info(host.id)).running_vms == 0  # capacity released
            assert vm.history[-1].action == 5 and vm.history[-1].etime > 0
            # Off its host, the VM takes a new configuration for its next deploy.
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ A = "$VMID" ]', merge=False)
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            assert len(vm.history) == 2 and vm.deploy_id == deploy_id
            assert (vm.template.get_vector("CONTEXT") or {})["A"] == str(vm_id)
            # A new CONTEXT with NETWORK = YES gets the NICs' ETH* variables, as at allocate.
            held = await daemon.vms.allocate(
                'CPU=1 MEMORY=8 NIC = [ MAC = "02:00:00:00:00:07" ] CONTEXT = [ A = "1" ]',
                hold=True)
            await daemon.vms.update_conf(held, 'CONTEXT = [ NETWORK = "YES" ]', merge=False)
            context = (await daemon.vms.info(held)).template.get_vector("CONTEXT") or {}
            assert context["ETH0_MAC"] == "02:00:00:00:00:07" and context["ETH0_IP"] == ""
            vm = await act(daemon, vm_id, "stop", lifecycle.STOPPED)
            assert vm.history[-1].action == 9
            assert (await daemon.hosts.info(host.id)).running_vms == 0
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            assert len(vm.history) == 3 and vm.deploy_id == deploy_id
            log = daemon.files.log_path(vm_id).read_text()
            for state in ("SHUTDOWN_POWEROFF", "BOOT_POWEROFF", "SAVE_SUSPEND",
                          "BOOT_SUSPENDED", "EPILOG_UNDEPLOY",
                          "PROLOG_UNDEPLOY", "BOOT_UNDEPLOY", "SAVE_STOP", "EPILOG_STOP",
                          "PROLOG_RESUME", "BOOT_STOPPED"):
                assert f"New state is ACTIVE/{state}" in log, state
            # poweroff-hard, then undeploy of the powered-off VM: a second poweroff
            # that tells the driver the VM leaves its host.
            assert [name for name, vm in calls(daemon) if vm == vm_id] == [
                "deploy", "poweroff", "poweron", "save", "restore", "poweroff", "poweroff",
                "poweron", "save", "restore"]
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            assert all(entry.status == "done" for entry in entries)

    run(scenario)


def test_reboot_snapshots_hotplug_and_resize(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)
            for action in ("reboot", "reboot-hard"):
                await daemon.vms.action(action, vm_id)
            # Both actions are accepted while RUNNING and their driver calls run
            # concurrently: either may reach the driver first.
            await wait_until(lambda: sorted([c for c, v in calls(daemon) if v == vm_id][-2:])
                             == ["reboot", "reset"], what="reboot and reset")

            assert await daemon.vms.snapshot_create(vm_id, "before") == 0
            vm = await wait_until(lambda: _with_section(daemon, vm_id, "SNAPSHOT"))
            snapshot = vm.template.vectors("SNAPSHOT")[0]
            assert (snapshot["NAME"], snapshot["HYPERVISOR_ID"]) == (
                "before", f"{vm.deploy_id}-snap0")
            assert vm.history[-1].action == 37
            await daemon.vms.snapshot_revert(vm_id, 0)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            await daemon.vms.snapshot_delete(vm_id, 0)
            await wait_until(lambda: _without_section(daemon, vm_id, "SNAPSHOT"))

            await daemon.vms.attach(vm_id, "DISK", 'DISK = [ SOURCE="/img/data", TARGET=vdb ]')
            vm = await wait_until(lambda: _with_section(daemon, vm_id, "DISK"))
            assert vm.template.vectors("DISK")[-1]["DISK_ID"] == "0"
            await daemon.vms.detach(vm_id, "DISK", 0)
            await wait_until(lambda: _without_section(daemon, vm_id, "DISK"))
            await daemon.vms.attach(vm_id, "NIC", "NIC = [ BRIDGE=br0 ]")
            await wait_until(lambda: _with_section(daemon, vm_id, "NIC"))
            await daemon.vms.detach(vm_id, "NIC", 0)
            vm = await wait_until(lambda: _without_section(daemon, vm_id, "NIC"))
            assert vm.history[-1].action == 24

            with pytest.raises(IllegalActionError, match='"resize" is not available for '
                                                         "state ACTIVE/RUNNING"):
                await daemon.vms.resize(vm_id, "CPU=2 MEMORY=256")
            await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            await daemon.vms.resize(vm_id, "CPU=2 VCPU=4 MEMORY=256")
            vm = await wait_until(lambda: _resized(daemon, vm_id))
            assert (vm.template.get("VCPU"), vm.history[-1].action) == ("4", 35)
            await wait_until(lambda: ("resize", vm_id) in calls(daemon), what="driver resize")
            assert [c for c, v in calls(daemon) if v == vm_id][-9:] == [
                "snapshot_create", "snapshot_revert", "snapshot_delete", "attach_disk",
                "detach_disk", "attach_nic", "detach_nic", "poweroff", "resize"]

    run(scenario)


async def _with_section(daemon: Daemon, vm_id: int, section: str) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.template.vectors(section) and vm.position == lifecycle.RUNNING else None


async def _without_section(daemon: Daemon, vm_id: int, section: str) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if not vm.template.vectors(section) and vm.position == lifecycle.RUNNING \
        else None


async def _resized(daemon: Daemon, vm_id: int) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if (vm.cpu, vm.memory) == (2.0, 256) else None


def test_migrate_cold_and_live_and_resched_off_a_flushed_host(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            first = await add_dummy_host(daemon, "kvm-1")
            second = await add_dummy_host(daemon, "kvm-2")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            origin, other = (first, second) if vm.host_id == first.id else (second, first)
            await daemon.vms.migrate(vm_id, other.id)
            vm = await wait_until(lambda: _on(daemon, vm_id, other.id))
            assert [(h.host_id, h.action) for h in vm.history] == [(origin.id, 1),
                                                                   (other.id, 0)]
            assert (await daemon.hosts.info(other.id)).running_vms == 1
            await daemon.vms.migrate(vm_id, origin.id, live=True)
            vm = await wait_until(lambda: _on(daemon, vm_id, origin.id))
            assert vm.history[-2].action == 2
            with pytest.raises(IllegalActionError, match="already on host"):
                await daemon.vms.migrate(vm_id, origin.id)

            # onehost flush: disable the host, reschedule its VMs.
            await daemon.hosts.flush(origin.id)
            vm = await wait_until(lambda: _on(daemon, vm_id, other.id), 20)
            assert vm.resched == 0 and vm.history[-2].action == 2
            assert (await daemon.hosts.info(origin.id)).state is HostState.DISABLED

    run(scenario)


async def _on(daemon: Daemon, vm_id: int, host_id: int) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.host_id == host_id and vm.position == lifecycle.RUNNING else None


def test_recover_gets_every_failure_out(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_dummy_host(daemon, "kvm-1")
            failing = daemon.settings.var_dir / "dummy" / "deploy"
            failing.parent.mkdir(parents=True, exist_ok=True)
            failing.write_text("failure: image not found")
            vm_ids = [await daemon.vms.allocate(LOCAL_VM) for _ in range(4)]
            for vm_id in vm_ids:
                await wait_vm(daemon, vm_id, lifecycle.BOOT_FAILURE)
            failing.unlink()
            retried, succeeded, deleted, recreated = vm_ids
            await daemon.vms.recover(retried, 2)
            vm = await wait_vm(daemon, retried, lifecycle.RUNNING)
            assert vm.deploy_id and vm.history[-1].action == 43
            tokens = [e.token for e in await daemon.db.read(
                lambda c: journal.entries_for(c, retried)) if e.action == "deploy"]
            assert tokens[1] == tokens[0] + ".2"
            await daemon.vms.recover(succeeded, 1)
            await wait_vm(daemon, succeeded, lifecycle.RUNNING)
            await daemon.vms.recover(deleted, 3)
            await wait_vm(daemon, deleted, lifecycle.DONE)
            await daemon.vms.recover(recreated, 4)
            vm = await wait_vm(daemon, recreated, lifecycle.RUNNING)
            assert len(vm.history) == 2
            with pytest.raises(Exception, match="Unknown recover operation 9"):
                await daemon.vms.recover(retried, 9)

    run(scenario)


def test_locked_vms_refuse_actions_until_unlocked(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)
            await daemon.vms.lock(vm_id, 1, owner=0)
            with pytest.raises(LockedError, match=f"VM {vm_id} is locked"):
                await daemon.vms.action("poweroff", vm_id)
            with pytest.raises(IllegalActionError, match=f"VM {vm_id} is already locked"):
                await daemon.vms.lock(vm_id, 2, owner=0, test=True)
            await daemon.vms.unlock(vm_id)
            await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            await daemon.vms.lock(vm_id, 3, owner=0)  # admin only: manage actions pass
            await act(daemon, vm_id, "resume", lifecycle.RUNNING)

    run(scenario)


SCRIPTED = ("save", "restore", "migrate", "snapshot_create", "snapshot_revert",
            "snapshot_delete", "attach_disk", "detach_disk", "attach_nic", "detach_nic",
            "reconfigure")


def test_script_hosts_run_opennebulas_action_scripts(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    vmm = settings.remotes_dir / "vmm" / "provider_name"

    ids: list[str] = []

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM + ' CONTEXT = [ KEY = "k0" ]')
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            # No save script yet: suspend is refused naming the action and the driver.
            with pytest.raises(UnsupportedActionError) as refused:
                await daemon.vms.action("suspend", vm_id)
            assert str(refused.value) == ('Action "save" is not supported by driver '
                                          f"vmm_provider of host {host.name}")
            assert (await daemon.vms.info(vm_id)).position == lifecycle.RUNNING
            # No reconfigure script: a new CONTEXT is stored for the next deploy.
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k1" ]', merge=False)
            await wait_until(lambda: "applies at the next deploy" in daemon.files.log_path(
                vm_id).read_text(), what="the reconfigure's answer")
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            for script in SCRIPTED:
                install(vmm / script, RECORD_ACTION)
            other = await add_provider_host(daemon, "remote_provider_2")
            await act(daemon, vm_id, "suspend", lifecycle.SUSPENDED)
            await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            ids.append((await act(daemon, vm_id, "resume", lifecycle.RUNNING)).deploy_id)
            await daemon.vms.migrate(vm_id, other.id, live=True)
            await wait_until(lambda: _on(daemon, vm_id, other.id))
            await daemon.vms.snapshot_create(vm_id, "s")
            await wait_until(lambda: _with_section(daemon, vm_id, "SNAPSHOT"))
            await daemon.vms.attach(vm_id, "DISK", 'DISK = [ SOURCE="/img/d", TARGET=vdc ]')
            await wait_until(lambda: _with_section(daemon, vm_id, "DISK"))
            await daemon.vms.update_conf(vm_id, 'CONTEXT = [ KEY = "k2" ]', merge=False)
            await wait_until(lambda: any(line.startswith("reconfigure") for line in actions(
                settings)), what="the reconfigure script")
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)

    run(scenario)
    checkpoint = str(settings.vms_dir / "0" / "checkpoint")
    seen = [line.split() for line in actions(settings) if not line.startswith("poll")]
    deploy_id, booted = "prov-0-0", ids[0]
    assert booted == "prov-0-poweron"  # power-on runs the deploy script again
    assert seen[0] == ["save", deploy_id, checkpoint, "remote_provider", "0", "remote_provider"]
    assert seen[1] == ["restore", checkpoint, "remote_provider", deploy_id, "0",
                       "remote_provider"]
    assert seen[2] == ["shutdown", deploy_id, "remote_provider", "0", "remote_provider"]
    assert seen[3] == ["migrate", booted, "remote_provider_2", "remote_provider", "0",
                       "remote_provider"]
    assert seen[4] == ["snapshot_create", booted, "0", "remote_provider_2", "0",
                       "remote_provider_2"]
    assert seen[5] == ["attach_disk", booted, "/img/d", "vdc", "0", "remote_provider_2",
                       "0", "remote_provider_2"]
    deployment = settings.vms_dir / "0" / "deployment.1"  # the stay after the migration
    assert seen[6] == ["reconfigure", booted, str(deployment), "remote_provider_2", "0",
                       "remote_provider_2"]
    assert "<KEY>k2</KEY></CONTEXT>" in deployment.read_text()


def test_every_action_name_is_known_and_others_are_refused(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await daemon.vms.allocate(LOCAL_VM, hold=True)
            with pytest.raises(IllegalActionError, match='Action "fly" is not supported'):
                await daemon.vms.action("fly", vm_id)
            with pytest.raises(IllegalActionError, match='"poweroff" is not available for '
                                                         "state HOLD"):
                await daemon.vms.action("poweroff", vm_id)
            await asyncio.sleep(0)

    run(scenario)


def test_a_poll_sampled_before_an_action_does_not_undo_it(tmp_path: Path) -> None:
    """A sample asked for while the VM was suspended (its instance gone) that lands
    after the resume must not power the VM off; a sample asked for since does."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)
            asked = (await daemon.vms.info(vm_id)).version
            await act(daemon, vm_id, "suspend", lifecycle.SUSPENDED)
            await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            gone = {vm_id: PollResult(PollState.GONE)}
            await daemon.lifecycle.apply_poll(gone, {vm_id: asked})
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.RUNNING and vm.error == ""
            for _attempt in range(5):  # a monitoring write in between makes it stale again
                current = (await daemon.vms.info(vm_id)).version
                await daemon.lifecycle.apply_poll(gone, {vm_id: current})
                vm = await daemon.vms.info(vm_id)
                if vm.position != lifecycle.RUNNING:
                    break
            assert vm.position == lifecycle.POWEROFF

    run(scenario)


def test_a_poll_that_changes_nothing_is_not_written(tmp_path: Path) -> None:
    """A sample equal to what the VM shows writes nothing (steady polling of 100,000
    VMs must not cost a write each); an old LAST_POLL is refreshed, unless the VM
    changed since its read; a different sample is stored."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)
            same = {vm_id: PollResult(PollState.ACTIVE, {"NETTX": "12345"})}
            vm = await daemon.vms.info(vm_id)
            await daemon.lifecycle.apply_poll(same, {vm_id: vm.version}, {vm_id: vm})
            vm = await daemon.vms.info(vm_id)
            assert vm.monitoring["NETTX"] == "12345" and vm.last_poll > 0
            await daemon.lifecycle.apply_poll(same, {vm_id: vm.version}, {vm_id: vm})
            assert (await daemon.vms.info(vm_id)).version == vm.version

            old = dataclasses.replace(vm, last_poll=vm.last_poll - LAST_POLL_REFRESH)
            await daemon.lifecycle.apply_poll(same, {vm_id: vm.version}, {vm_id: old})
            refreshed = await daemon.vms.info(vm_id)
            assert refreshed.version == vm.version + 1
            assert refreshed.last_poll >= vm.last_poll
            assert refreshed.monitoring == vm.monitoring

            stale = dataclasses.replace(old, last_poll=0)  # read before the refresh
            await daemon.lifecycle.apply_poll(same, {vm_id: vm.version}, {vm_id: stale})
            assert (await daemon.vms.info(vm_id)).version == refreshed.version

            other = {vm_id: PollResult(PollState.ACTIVE, {"NETTX": "99999"})}
            await daemon.lifecycle.apply_poll(other, {vm_id: refreshed.version},
                                              {vm_id: refreshed})
            assert (await daemon.vms.info(vm_id)).monitoring["NETTX"] == "99999"

    run(scenario)


def _snapshots(vm: Any) -> list[str]:
    return [section["SNAPSHOT_ID"] for section in vm.template.vectors("SNAPSHOT")]


def test_undeploy_tells_the_driver_the_vm_leaves_and_drops_its_snapshots(
        tmp_path: Path) -> None:
    """From RUNNING and from POWEROFF (OpenNebula 6.10 drops a VM's snapshots on undeploy)."""
    settings = make_home(tmp_path)
    failing = settings.var_dir / "dummy" / "poweroff"

    async def scenario() -> None:
        async with running(settings) as daemon:
            driver: Any = daemon.dispatcher.vm_driver("dummy")
            host = await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM + ' CONTEXT = [ A = "" ]')
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            deploy_id = vm.deploy_id
            await daemon.vms.snapshot_create(vm_id, "before")
            await wait_until(lambda: _with_section(daemon, vm_id, "SNAPSHOT"))

            vm = await act(daemon, vm_id, "undeploy", lifecycle.UNDEPLOYED)
            assert deploy_id in driver.left and _snapshots(vm) == []
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            assert deploy_id not in driver.left
            await daemon.vms.snapshot_create(vm_id, "again")
            vm = await wait_until(lambda: _with_section(daemon, vm_id, "SNAPSHOT"))
            assert _snapshots(vm) == ["0"]

            # A powered-off VM keeps its snapshots; undeploying it releases the host.
            vm = await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            assert _snapshots(vm) == ["0"] and deploy_id not in driver.left
            failing.parent.mkdir(parents=True, exist_ok=True)
            failing.write_text("failure")
            calls_before = calls(daemon).count(("poweroff", vm_id))
            await daemon.vms.action("undeploy", vm_id)
            vm = await wait_until(lambda: _errored(daemon, vm_id))
            assert vm.position == lifecycle.POWEROFF and _snapshots(vm) == ["0"]
            assert "Error powering off VM" in vm.error
            assert (await daemon.hosts.info(host.id)).running_vms == 1
            failing.unlink()
            vm = await act(daemon, vm_id, "undeploy-hard", lifecycle.UNDEPLOYED)
            assert calls(daemon).count(("poweroff", vm_id)) == calls_before + 1
            assert deploy_id in driver.left and _snapshots(vm) == []
            assert vm.history[-1].action == CODES[Event.UNDEPLOY_HARD] == 6
            assert vm.history[-1].etime > 0 and vm.history[-1].eetime > 0
            assert (await daemon.hosts.info(host.id)).running_vms == 0
            vm = await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            assert vm.deploy_id == deploy_id and deploy_id not in driver.left

    run(scenario)


async def _errored(daemon: Daemon, vm_id: int) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.error and vm.position not in lifecycle.IN_FLIGHT else None


LEAVING_LOG = """\
#!/bin/bash
echo "$(basename "$0") $* leaving=$CLOUDBURST_LEAVING" >> "$CLOUDBURST_HOME/control/actions.log"
touch "$CLOUDBURST_HOME/control/off_$1"
"""
#: A poll that says a VM the scripts above stopped is off (else a poll landing between
#: POWEROFF and the resume would bring it back to RUNNING, as oned does too).
POLL_OFF = """\
#!/bin/bash
[ -e "$CLOUDBURST_HOME/control/off_$1" ] && echo "STATE=d" || echo "STATE=a IP=10.1.2.3"
"""


def test_script_poweroff_and_undeploy_get_opennebulas_argv_and_say_whether_it_leaves(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    vmm = settings.remotes_dir / "vmm" / "provider_name"
    for script in ("shutdown", "cancel"):
        install(vmm / script, LEAVING_LOG)
    install(vmm / "poll", POLL_OFF)

    async def scenario() -> str:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            deploy_id = (await wait_vm(daemon, vm_id, lifecycle.RUNNING)).deploy_id
            await act(daemon, vm_id, "poweroff", lifecycle.POWEROFF)
            await act(daemon, vm_id, "resume", lifecycle.RUNNING)
            booted = (await daemon.vms.info(vm_id)).deploy_id
            await act(daemon, vm_id, "undeploy-hard", lifecycle.UNDEPLOYED)
            return f"{deploy_id} {booted}"

    deploy_id, booted = run(scenario).split()
    seen = [line for line in actions(settings) if not line.startswith("poll")]
    host = "remote_provider"
    assert seen == [f"shutdown {deploy_id} {host} 0 {host} leaving=no",
                    f"cancel {booted} {host} 0 {host} leaving=yes"]


def test_snapshot_ids_follow_opennebulas_numbering(tmp_path: Path) -> None:
    """The sequence an OpenNebula 6.10 peer gives (onevm snapshot-create/-delete):
    one more than the highest id left, so a deleted highest id comes back."""
    settings = make_home(tmp_path)

    async def scenario() -> list[str]:
        async with running(settings) as daemon:
            vm_id = await running_vm(daemon)

            async def create() -> int:
                count = len((await daemon.vms.info(vm_id)).template.vectors("SNAPSHOT"))
                snapshot_id = await daemon.vms.snapshot_create(vm_id, "")
                await wait_until(lambda: _snapshot_count(daemon, vm_id, count + 1))
                return snapshot_id

            async def delete(snapshot_id: int) -> None:
                count = len((await daemon.vms.info(vm_id)).template.vectors("SNAPSHOT"))
                await daemon.vms.snapshot_delete(vm_id, snapshot_id)
                await wait_until(lambda: _snapshot_count(daemon, vm_id, count - 1))

            assert [await create() for _ in range(3)] == [0, 1, 2]
            await delete(2)
            assert await create() == 2
            await delete(1)
            assert await create() == 3
            await delete(2)
            await delete(3)
            assert await create() == 1
            return _snapshots(await daemon.vms.info(vm_id))

    assert run(scenario) == ["0", "1"]


async def _snapshot_count(daemon: Daemon, vm_id: int, count: int) -> Any:
    vm = await daemon.vms.info(vm_id)
    return vm if len(vm.template.vectors("SNAPSHOT")) == count \
        and vm.position == lifecycle.RUNNING else None

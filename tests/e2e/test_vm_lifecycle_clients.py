"""Every VM action through pyone and through our onevm/onehost commands, against the
real daemon (a separate process) with dummy hosts: state, history action code and the
daemon's own record of the driver work (the VM log)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from daemon_fixture import RunningDaemon, daemon_environment, start_daemon, wait_for

from cloudburst.model.states import LcmState, VmState

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VM = "CPU=0.5\nMEMORY=64\n"
RUNNING = (3, 3)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("actions")) as running:
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon) -> pyone.OneServer:
    server = pyone.OneServer(daemon.url, session=daemon.session)
    for name in ("a1", "a2"):
        host_id = server.host.allocate(name, "dummy", "dummy", -1)
        wait_for(lambda host_id=host_id: server.host.info(host_id).STATE == 2, timeout=20)
    return server


def position(one: pyone.OneServer, vm_id: int) -> tuple[int, int]:
    vm = one.vm.info(vm_id)
    return vm.STATE, vm.LCM_STATE


def reach(one: pyone.OneServer, vm_id: int, state: tuple[int, int]) -> pyone.bindings.VM:
    wait_for(lambda: position(one, vm_id) == state, timeout=20)
    return one.vm.info(vm_id)


def last_action(vm: pyone.bindings.VM) -> int:
    records = vm.HISTORY_RECORDS.HISTORY
    return int(records[-1].ACTION)


def test_every_action_through_pyone(one: pyone.OneServer, daemon: RunningDaemon) -> None:
    vm_id = one.vm.allocate(VM, False)
    reach(one, vm_id, RUNNING)
    for action, state, code in (("poweroff", (8, 0), 19), ("resume", RUNNING, None),
                                ("suspend", (5, 0), 10), ("resume", RUNNING, None),
                                ("stop", (4, 0), 9), ("resume", RUNNING, None),
                                ("undeploy-hard", (9, 0), 6), ("resume", RUNNING, None),
                                ("reboot", RUNNING, 15), ("reboot-hard", RUNNING, 16)):
        one.vm.action(action, vm_id)
        vm = reach(one, vm_id, state)
        if code is not None:
            assert last_action(vm) == code, action
    one.vm.action("poweroff-hard", vm_id)
    reach(one, vm_id, (8, 0))
    one.vm.resize(vm_id, "CPU=1\nVCPU=2\nMEMORY=96", False)
    vm = wait_for(lambda: (v := one.vm.info(vm_id)).TEMPLATE["MEMORY"] == "96" and v, 20)
    assert (vm.TEMPLATE["CPU"], vm.TEMPLATE["VCPU"]) == ("1", "2")
    one.vm.action("resume", vm_id)
    vm = reach(one, vm_id, RUNNING)
    host_now = vm.HISTORY_RECORDS.HISTORY[-1].HID
    other = next(h.ID for h in one.hostpool.info().HOST if host_now != h.ID)
    one.vm.migrate(vm_id, other, True, False, -1, 0)
    vm = wait_for(lambda: other == (v := one.vm.info(vm_id)).HISTORY_RECORDS.HISTORY[-1].HID
                  and position(one, vm_id) == RUNNING and v, 20)
    assert int(vm.HISTORY_RECORDS.HISTORY[-2].ACTION) == 2
    assert one.vm.snapshotcreate(vm_id, "snap") == 0
    wait_for(lambda: "SNAPSHOT" in one.vm.info(vm_id).TEMPLATE, 20)
    reach(one, vm_id, RUNNING)
    one.vm.snapshotrevert(vm_id, 0)
    reach(one, vm_id, RUNNING)
    one.vm.snapshotdelete(vm_id, 0)
    wait_for(lambda: "SNAPSHOT" not in one.vm.info(vm_id).TEMPLATE, 20)
    one.vm.attach(vm_id, 'DISK = [ SOURCE = "/img/x", TARGET = "vdb" ]')
    wait_for(lambda: "DISK" in one.vm.info(vm_id).TEMPLATE, 20)
    reach(one, vm_id, RUNNING)
    one.vm.detach(vm_id, 0)
    wait_for(lambda: "DISK" not in one.vm.info(vm_id).TEMPLATE, 20)
    reach(one, vm_id, RUNNING)
    one.vm.attachnic(vm_id, "NIC = [ BRIDGE = br0 ]")
    wait_for(lambda: "NIC" in one.vm.info(vm_id).TEMPLATE, 20)
    reach(one, vm_id, RUNNING)
    one.vm.detachnic(vm_id, 0)
    wait_for(lambda: "NIC" not in one.vm.info(vm_id).TEMPLATE, 20)
    one.vm.lock(vm_id, 1, False)
    with pytest.raises(pyone.OneException, match="locked"):
        one.vm.action("poweroff", vm_id)
    one.vm.unlock(vm_id)
    one.vm.action("terminate-hard", vm_id)
    reach(one, vm_id, (6, 0))
    log = (daemon.home / "vms" / str(vm_id) / "vm.log").read_text()
    for state in ("SHUTDOWN_POWEROFF", "SAVE_SUSPEND", "SAVE_STOP", "BOOT_UNDEPLOY",
                  "MIGRATE", "HOTPLUG_SNAPSHOT", "HOTPLUG", "HOTPLUG_NIC"):
        assert f"ACTIVE/{state}" in log, state


def test_recover_and_refusals_through_pyone(one: pyone.OneServer, daemon: RunningDaemon
                                            ) -> None:
    injected = daemon.home / "var" / "dummy" / "deploy"
    injected.parent.mkdir(parents=True, exist_ok=True)
    injected.write_text("failure: no such image")
    try:
        vm_id = one.vm.allocate(VM, False)
        reach(one, vm_id, (3, 36))
    finally:
        injected.unlink()
    with pytest.raises(pyone.OneActionException,
                       match=r'Error performing action "poweroff": .*BOOT_FAILURE'):
        one.vm.action("poweroff", vm_id)
    one.vm.recover(vm_id, 2)
    reach(one, vm_id, RUNNING)
    with pytest.raises(pyone.OneException, match="Unknown recover operation 7"):
        one.vm.recover(vm_id, 7)
    one.vm.recover(vm_id, 3)
    reach(one, vm_id, (6, 0))


def test_every_onevm_subcommand(one: pyone.OneServer, daemon: RunningDaemon,
                                tmp_path: Path) -> None:
    env = daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file), "HOME": str(tmp_path)})

    def cli(command: str, *args: str, status: int = 0) -> str:
        done = subprocess.run([sys.executable, "-m", f"cloudburst.cli.{command}", *args],
                              env=env, capture_output=True, text=True, timeout=60,
                              check=False)
        assert done.returncode == status, (args, done.stderr)
        return done.stdout + done.stderr

    def state(vm_id: str) -> tuple[int, int]:
        shown = json.loads(cli("onevm", "show", vm_id, "--json"))
        return int(VmState[shown["STATE"]]), int(LcmState[shown["LCM_STATE"]])

    def reach_cli(vm_id: str, wanted: tuple[int, int]) -> None:
        wait_for(lambda: state(vm_id) == wanted, timeout=20)

    created = subprocess.run([sys.executable, "-m", "cloudburst.cli.onevm", "create", "-"],
                             env=env, input=VM, capture_output=True, text=True, timeout=60,
                             check=True)
    vm_id = created.stdout.split()[-1]
    reach_cli(vm_id, RUNNING)
    for args, wanted in ((("poweroff", "--hard"), (8, 0)), (("resume",), RUNNING),
                         (("suspend",), (5, 0)), (("resume",), RUNNING),
                         (("stop",), (4, 0)), (("resume",), RUNNING),
                         (("undeploy",), (9, 0)), (("resume",), RUNNING),
                         (("reboot", "--hard"), RUNNING), (("resched",), RUNNING),
                         (("unresched",), RUNNING)):
        cli("onevm", args[0], vm_id, *args[1:])
        reach_cli(vm_id, wanted)
    cli("onevm", "poweroff", vm_id)
    reach_cli(vm_id, (8, 0))
    cli("onevm", "resize", vm_id, "--cpu", "1", "--memory", "80")
    wait_for(lambda: json.loads(cli("onevm", "show", vm_id, "--json"))["TEMPLATE"]
             .get("MEMORY") == "80", 20)
    cli("onevm", "resume", vm_id)
    reach_cli(vm_id, RUNNING)
    here = one.vm.info(int(vm_id)).HISTORY_RECORDS.HISTORY[-1].HOSTNAME
    there = "a2" if here == "a1" else "a1"
    cli("onevm", "migrate", vm_id, there, "--live")
    wait_for(lambda: there == one.vm.info(int(vm_id)).HISTORY_RECORDS.HISTORY[-1].HOSTNAME, 20)
    cli("onevm", "snapshot-create", vm_id, "s1")
    wait_for(lambda: "SNAPSHOT" in cli("onevm", "show", vm_id), 20)
    reach_cli(vm_id, RUNNING)
    cli("onevm", "snapshot-delete", vm_id, "0")
    reach_cli(vm_id, RUNNING)
    cli("onevm", "disk-attach", vm_id, "--image", "/img/y")
    wait_for(lambda: 'SOURCE="/img/y"' in cli("onevm", "show", vm_id).replace(" ", ""), 20)
    reach_cli(vm_id, RUNNING)
    cli("onevm", "disk-detach", vm_id, "0")
    reach_cli(vm_id, RUNNING)
    cli("onevm", "nic-attach", vm_id, "--network", "private")
    reach_cli(vm_id, RUNNING)
    cli("onevm", "nic-detach", vm_id, "0")
    reach_cli(vm_id, RUNNING)
    assert "LOCK                : None" in cli("onevm", "show", vm_id)
    cli("onevm", "lock", vm_id, "--manage")
    assert "LOCK                : Manage" in cli("onevm", "show", vm_id)
    assert "locked" in cli("onevm", "poweroff", vm_id, status=1)
    cli("onevm", "unlock", vm_id)
    assert "exactly one of" in cli("onevm", "recover", vm_id, status=1)
    cli("onevm", "recover", vm_id, "--delete")
    reach_cli(vm_id, (6, 0))


def test_onehost_flush_moves_every_vm(one: pyone.OneServer, daemon: RunningDaemon,
                                      tmp_path: Path) -> None:
    env = daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file), "HOME": str(tmp_path)})
    vm_ids = [one.vm.allocate(VM, False) for _ in range(3)]
    for vm_id in vm_ids:
        reach(one, vm_id, RUNNING)
    source = one.vm.info(vm_ids[0]).HISTORY_RECORDS.HISTORY[-1].HOSTNAME
    subprocess.run([sys.executable, "-m", "cloudburst.cli.onehost", "flush", source],
                   env=env, check=True, timeout=60)
    assert one.host.info(0 if source == "a1" else 1).STATE == 4  # disabled
    wait_for(lambda: all(position(one, vm_id) == RUNNING and source != one.vm.info(
        vm_id).HISTORY_RECORDS.HISTORY[-1].HOSTNAME for vm_id in vm_ids), 30)
    for vm_id in vm_ids:
        one.vm.action("terminate-hard", vm_id)
    one.host.status(0 if source == "a1" else 1, 0)

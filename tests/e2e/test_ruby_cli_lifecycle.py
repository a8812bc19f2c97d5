"""OpenNebula's own Ruby CLI (from the 6.10.5 peer) runs an operator's VM life
against cloudburst (issue 10): every ``onevm`` action and ``onehost flush``
exits 0 and lands the VM where OpenNebula would put it.

The peer is only the source of the Ruby CLI here; every command talks to a
cloudburst daemon with dummy hosts. States are read back with pyone.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

from one_peer import OnePeer, peer_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

one_peer = peer_fixture()

#: Generous for a loaded 2-core machine.
TIMEOUT = 120.0
RUNNING = (3, 3)
POWEROFF, SUSPENDED, STOPPED, UNDEPLOYED, DONE = (8, 0), (5, 0), (4, 0), (9, 0), (6, 0)
BOOT_FAILURE, SHUTDOWN = (3, 36), (3, 12)
HOST_MONITORED, HOST_DISABLED = 2, 4


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("ruby-cli-life")) as running:
        yield running


class Operator:
    """The Ruby CLI against cloudburst, and pyone to check what it did."""

    def __init__(self, one_peer: OnePeer, daemon: RunningDaemon, home: Path) -> None:
        self.env = one_peer.cli_env(daemon.session, xmlrpc=daemon.url)
        self.env["HOME"] = str(home)
        self.bin = one_peer.dir / "bin"
        self.one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)

    def run(self, *argv: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(self.bin / argv[0]), *argv[1:]], env=self.env,
                                capture_output=True, text=True, timeout=TIMEOUT, check=False,
                                stdin=subprocess.DEVNULL)
        assert (result.returncode == 0) == ok, (argv, result.stdout, result.stderr)
        return result

    def position(self, vm_id: int) -> tuple[int, int]:
        vm = self.one.vm.info(vm_id)
        return int(vm.STATE), int(vm.LCM_STATE)

    def reach(self, vm_id: int, position: tuple[int, int]) -> pyone.bindings.VM:
        wait_for(lambda: self.position(vm_id) == position, timeout=TIMEOUT, interval=0.2)
        return self.one.vm.info(vm_id)

    def host_of(self, vm_id: int) -> str:
        return str(self.one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-1].HOSTNAME)

    def act(self, vm_id: int, *argv: str, lands: tuple[int, int]) -> pyone.bindings.VM:
        """``onevm ACTION VM [options]``; it must succeed and the VM reach ``lands``."""
        self.run("onevm", argv[0], str(vm_id), *argv[1:])
        return self.reach(vm_id, lands)


def test_opennebulas_ruby_cli_drives_every_vm_action_on_cloudburst(
        one_peer: OnePeer, daemon: RunningDaemon, tmp_path: Path) -> None:
    cli = Operator(one_peer, daemon, tmp_path)
    for name in ("life-a", "life-b"):
        cli.run("onehost", "create", name, "-i", "dummy", "-v", "dummy")
    for host in cli.one.hostpool.info().HOST:
        wait_for(lambda host_id=host.ID: cli.one.host.info(host_id).STATE == HOST_MONITORED,
                 timeout=TIMEOUT)
    created = cli.run("onevm", "create", "--name", "life", "--cpu", "0.1", "--memory", "64")
    vm = int(created.stdout.split(":")[1])
    cli.reach(vm, RUNNING)

    # Power, suspend, stop and undeploy, each undone by resume.
    for action in (("poweroff",), ("poweroff", "--hard"), ("suspend",), ("stop",),
                   ("undeploy",), ("undeploy", "--hard")):
        parked = {"poweroff": POWEROFF, "suspend": SUSPENDED, "stop": STOPPED,
                  "undeploy": UNDEPLOYED}[action[0]]
        cli.act(vm, *action, lands=parked)
        cli.act(vm, "resume", lands=RUNNING)

    # Migrate (cold, then live) to the other host and back.
    for live in ((), ("--live",)):
        target = "life-b" if cli.host_of(vm) == "life-a" else "life-a"
        cli.act(vm, "migrate", target, *live, lands=RUNNING)
        wait_for(lambda target=target: cli.host_of(vm) == target, timeout=TIMEOUT)

    # Resize while powered off.
    cli.act(vm, "poweroff", lands=POWEROFF)
    cli.run("onevm", "resize", str(vm), "--cpu", "0.2", "--memory", "128")
    resized = cli.one.vm.info(vm)
    assert (resized.TEMPLATE["CPU"], resized.TEMPLATE["MEMORY"]) == ("0.2", "128")
    cli.act(vm, "resume", lands=RUNNING)

    # Lock: actions are refused until unlock.
    cli.run("onevm", "lock", str(vm))
    assert int(cli.one.vm.info(vm).LOCK.LOCKED) == 1
    assert "Use" in cli.run("onevm", "show", str(vm)).stdout.split("LOCK")[1].splitlines()[0]
    cli.run("onevm", "poweroff", str(vm), ok=False)
    assert cli.position(vm) == RUNNING
    cli.run("onevm", "unlock", str(vm))
    assert cli.one.vm.info(vm).LOCK is None

    # Resched, unresched (the scheduler may move it meanwhile: either way it runs).
    cli.run("onevm", "resched", str(vm))
    cli.run("onevm", "unresched", str(vm))
    wait_for(lambda: cli.position(vm) == RUNNING and int(cli.one.vm.info(vm).RESCHED) == 0,
             timeout=TIMEOUT)

    # Recover: retry a failed boot, settle a stuck shutdown by hand.
    held = int(cli.run("onevm", "create", "--name", "stuck", "--cpu", "0.1", "--memory", "64",
                       "--hold").stdout.split(":")[1])
    target = cli.host_of(vm)
    target_id = next(int(host.ID) for host in cli.one.hostpool.info().HOST
                     if target == host.NAME)
    cli.one.host.update(target_id, 'DUMMY_DEPLOY = "failure"', 1)
    cli.run("onevm", "deploy", str(held), target)
    cli.reach(held, BOOT_FAILURE)
    cli.one.host.update(target_id, 'DUMMY_DEPLOY = "success"\nDUMMY_SHUTDOWN = "hang"', 1)
    cli.act(held, "recover", "--retry", lands=RUNNING)
    cli.act(held, "terminate", lands=SHUTDOWN)  # the graceful shutdown never answers
    cli.act(held, "recover", "--success", lands=DONE)
    cli.one.host.update(target_id, 'DUMMY_SHUTDOWN = "success"', 1)

    # Flush the VM's host: it is disabled and the VM moves to the other one.
    source = cli.host_of(vm)
    cli.run("onehost", "flush", source)
    wait_for(lambda: cli.host_of(vm) != source and cli.position(vm) == RUNNING,
             timeout=TIMEOUT)
    assert any(source == host.NAME and int(host.STATE) == HOST_DISABLED
               for host in cli.one.hostpool.info().HOST)

    cli.act(vm, "terminate", "--hard", lands=DONE)

"""VM actions on a script-driver host (the shipped ``example_sh`` provider) through our
``onevm`` CLI and pyone, against the real daemon: the VM's state, the history ACTION
code and the provider's own record (its resource files) after each."""

from __future__ import annotations

from collections.abc import Iterator

import pyone
import pytest
from burst_helpers import cli
from daemon_fixture import RunningDaemon, start_daemon, wait_for

from cloudburst.model.states import LcmState

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

DRIVERS = """
IM_MAD = [ name = "im_sh", executable = "one_im_sh", arguments = "-t 2 -r 0 example_sh" ]
VM_MAD = [ name = "vmm_sh", executable = "one_vmm_sh",
           arguments = "-t 15 -r 0 -w 60 example_sh", type = "xml" ]
"""
RUNNING, POWEROFF, SUSPENDED, STOPPED, UNDEPLOYED, DONE = (
    (3, 3), (8, 0), (5, 0), (4, 0), (9, 0), (6, 0))
WAIT = 90.0


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("script-actions"),
                      oned_conf_extra=DRIVERS) as running:
        yield running


def resources(daemon: RunningDaemon) -> dict[str, str]:
    """The provider's resources: deploy id -> its STATE line (as example_sh keeps them)."""
    folder = daemon.home / "var" / "example_sh" / "instances"
    found = {}
    for path in folder.glob("sh-*"):
        lines = dict(line.split("=", 1) for line in path.read_text().splitlines()
                     if "=" in line)
        found[path.name] = lines.get("STATE", "")
    return found


def test_script_host_actions_through_the_cli_and_pyone(daemon: RunningDaemon) -> None:
    one = pyone.OneServer(daemon.url, session=daemon.session)
    cli(daemon, "onehost", "create", "site1", "-i", "im_sh", "-v", "vmm_sh")
    wait_for(lambda: one.hostpool.info().HOST[0].STATE == 2, timeout=WAIT)
    vm_id = one.vm.allocate('NAME="s" CPU=0.1 MEMORY=64 PUBLIC_CLOUD=[ TYPE="example_sh" ]',
                            False)

    def reach(state: tuple[int, int]) -> object:
        def arrived() -> object:
            vm = one.vm.info(vm_id)
            assert not LcmState(vm.LCM_STATE).name.endswith("FAILURE"), vm.USER_TEMPLATE
            return vm if state == (vm.STATE, vm.LCM_STATE) else None

        return wait_for(arrived, timeout=WAIT, interval=0.2)

    def last_action() -> int:
        return int(list(one.vm.info(vm_id).HISTORY_RECORDS.HISTORY)[-1].ACTION)

    reach(RUNNING)
    deploy_id = one.vm.info(vm_id).DEPLOY_ID
    assert deploy_id in resources(daemon)

    cli(daemon, "onevm", "poweroff", str(vm_id))  # the shutdown script removes it
    reach(POWEROFF)
    assert last_action() == 19 and deploy_id not in resources(daemon)
    one.vm.action("resume", vm_id)  # power-on runs deploy again
    reach(RUNNING)
    deploy_id = one.vm.info(vm_id).DEPLOY_ID
    assert deploy_id in resources(daemon)

    one.vm.action("suspend", vm_id)  # save: the resource stays, paused
    reach(SUSPENDED)
    assert last_action() == 10 and resources(daemon)[deploy_id] == "p"
    cli(daemon, "onevm", "resume", str(vm_id))
    reach(RUNNING)
    assert resources(daemon)[deploy_id] == "a"

    cli(daemon, "onevm", "reboot", str(vm_id))
    wait_for(lambda: last_action() == 15, timeout=WAIT)
    one.vm.action("reboot-hard", vm_id)
    wait_for(lambda: last_action() == 16, timeout=WAIT)
    reach(RUNNING)

    cli(daemon, "onevm", "stop", str(vm_id))
    reach(STOPPED)
    assert last_action() == 9 and resources(daemon)[deploy_id] == "p"  # saved
    one.vm.action("resume", vm_id)
    reach(RUNNING)

    one.vm.action("undeploy-hard", vm_id)
    reach(UNDEPLOYED)
    assert last_action() == 6
    cli(daemon, "onevm", "resume", str(vm_id))
    reach(RUNNING)
    deploy_id = one.vm.info(vm_id).DEPLOY_ID
    assert deploy_id in resources(daemon)

    cli(daemon, "onevm", "terminate", "--hard", str(vm_id))
    reach(DONE)
    assert resources(daemon) == {}
    error = one.vm.info(vm_id).USER_TEMPLATE.get("ERROR")
    assert error is None, error

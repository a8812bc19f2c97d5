"""The real core, in-process: Daemon + scheduler + monitor + dummy and script drivers.

Script drivers run real bash and Python files written into the home's
``remotes/`` tree, following the seed "Cloud Bursting Driver": probes in
``remotes/im/provider_name.d/``, one script per action in
``remotes/vmm/provider_name/``. Scripts keep what they saw under
``<home>/control/`` and read their injected behaviour from files there.

``SCHED_INTERVAL`` is 30 s in every test, so a VM placed within a second or two
was placed because of an event, not by the periodic pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import inspect
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
import xml.etree.ElementTree as ElementTree
import xmlrpc.client
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from cloudburst import metrics
from cloudburst.config.settings import Settings
from cloudburst.daemon import monitor
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.errors import (
    IllegalActionError,
    NotFoundError,
    QuotaError,
    TemplateError,
    ValidationError,
)
from cloudburst.model import lifecycle
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import HostState, VmState, vm_state_label
from cloudburst.store import journal, vm_pool
from cloudburst.store.database import make_engine
from seed_templates import PROVIDER_VM, SEED_PROVIDER_IM_MAD, SEED_PROVIDER_VM_MAD

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
PYTHON = f"#!{sys.executable}"

LOCAL_VM = "CPU=1 MEMORY=128"

# -- the provider's scripts (seed: "Cloud Bursting Driver") ------------------------------------

CAPACITY_PROBE = """\
#!/bin/bash
# Host capacity of the remote provider; must say it is a public cloud.
control="$CLOUDBURST_HOME/control"
echo "$*" > "$control/probe_args"
if [ -e "$control/probe_broken" ]; then
    echo "ERROR MESSAGE --8<------" >&2
    echo "cannot reach the provider API" >&2
    echo "ERROR MESSAGE ------>8--" >&2
    exit 2
fi
[ -e "$control/probe_sleep" ] && sleep "$(cat "$control/probe_sleep")"
cpu=500
[ -e "$control/totalcpu" ] && cpu=$(cat "$control/totalcpu")
echo 'PUBLIC_CLOUD="YES"'
echo 'HYPERVISOR="provider_name"'
echo "TOTALCPU=$cpu"
echo "TOTALMEMORY=8912896"
"""

PRIORITY_PROBE = PYTHON + """
print("PRIORITY=-1")
print('PROBED_BY="python"')
"""

DEPLOY = PYTHON + """
import json, os, pathlib, sys, time
control = pathlib.Path(os.environ["CLOUDBURST_HOME"]) / "control"
token = os.environ.get("CLOUDBURST_ACTION_TOKEN", "")
deployment = pathlib.Path(sys.argv[1])
record = {
    "argv": sys.argv[1:], "token": token, "pid": os.getpid(),
    "vm_id_env": os.environ.get("CLOUDBURST_VM_ID"),
    "deployment": deployment.read_text() if deployment.exists() else None,
}
with open(control / "deploy.log", "a") as log:
    log.write(json.dumps(record) + "\\n")
if (control / "deploy_silent").exists():
    sys.exit(0)
if (control / "deploy_fail").exists():
    sys.stderr.write("some noise before the error\\n"
                     "ERROR MESSAGE --8<------\\n"
                     "provider refused the request: quota exceeded\\n"
                     "for image id-141234\\n"
                     "ERROR MESSAGE ------>8--\\n")
    sys.exit(1)
# Idempotent on the token: a replayed deploy returns the instance created first.
instances = control / "instances"
instances.mkdir(exist_ok=True)
existing = instances / token
if existing.exists():
    print(existing.read_text().strip())
    sys.exit(0)
instance = "prov-%s-%s" % (sys.argv[3], token.rsplit("-", 1)[-1])
# Whole or absent: a replay reading it while this script is stalled (it outlives a
# killed daemon) must never see it empty.
partial = instances / (".%s.%d" % (token, os.getpid()))
partial.write_text(instance)
os.replace(partial, existing)
delay = control / "deploy_sleep"
if delay.exists():
    time.sleep(float(delay.read_text()))
print(instance)
"""

POLL = """\
#!/bin/bash
# poll <deploy id> <host> <vm id> <host>
control="$CLOUDBURST_HOME/control"
if [ -e "$control/poll_garbage_$3" ]; then
    echo "this is not a poll reply ]]"
    exit 0
fi
echo "STATE=a IP=10.1.2.3 USEDCPU=5"
"""

RECORD_ACTION = """\
#!/bin/bash
action="$(basename "$0")"
control="$CLOUDBURST_HOME/control"
echo "$action $*" >> "$control/actions.log"
[ -e "$control/${action}_sleep" ] && sleep "$(cat "$control/${action}_sleep")"
exit 0
"""

HANGING_DEPLOY = """\
#!/bin/bash
control="$CLOUDBURST_HOME/control"
echo $$ > "$control/hang.pid"
sleep 60 &
echo $! > "$control/hang_child.pid"
wait
"""

DRIVERS = "\n" + SEED_PROVIDER_IM_MAD + "\n" + SEED_PROVIDER_VM_MAD + """
VM_MAD = [
    name       = "vmm_hang",
    executable = "one_vmm_sh",
    arguments  = "-t 15 -r 0 -w 1 hang_provider",
    type       = "xml" ]
"""


def install(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


def make_home(root: Path, *, monitoring: float = 60, polling: float = 30,
              sched_interval: float = 30) -> Settings:
    """A CLOUDBURST_HOME with the default oned.conf, the provider drivers and their scripts."""
    home = root / "home"
    load_settings(home)  # writes the default oned.conf and remotes/
    conf = home / "etc" / "oned.conf"
    text = conf.read_text()
    for name, value in (("SCHED_INTERVAL", sched_interval), ("MONITORING_INTERVAL", monitoring),
                        ("VM_POLLING_INTERVAL", polling)):
        text, count = re.subn(rf"(?m)^{name} = .*$", f"{name} = {value}", text)
        assert count == 1, name
    conf.write_text(text + DRIVERS)
    remotes = home / "remotes"
    install(remotes / "im" / "provider_name.d" / "10-capacity", CAPACITY_PROBE)
    install(remotes / "im" / "provider_name.d" / "20-priority.py", PRIORITY_PROBE)
    vmm = remotes / "vmm" / "provider_name"
    install(vmm / "deploy", DEPLOY)
    install(vmm / "poll", POLL)
    for action in ("shutdown", "cancel", "reboot", "reset"):
        install(vmm / action, RECORD_ACTION)
    install(remotes / "vmm" / "hang_provider" / "deploy", HANGING_DEPLOY)
    (home / "control").mkdir()
    settings, warnings = load_settings(home)
    assert warnings == []
    return settings


def control(settings: Settings) -> Path:
    return settings.home / "control"


def deploy_calls(settings: Settings) -> list[dict[str, Any]]:
    log = control(settings) / "deploy.log"
    if not log.exists():
        return []
    return [json.loads(line) for line in log.read_text().splitlines() if line.strip()]


def actions(settings: Settings) -> list[str]:
    log = control(settings) / "actions.log"
    return log.read_text().splitlines() if log.exists() else []


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Daemon]:
    daemon = Daemon(settings)
    try:
        await daemon.start(serve_api=False)
        yield daemon
    finally:
        await daemon.stop()


async def wait_until(predicate: Callable[[], Any], timeout: float = 60.0,
                     what: str = "the condition") -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(0.03)


async def wait_vm(daemon: Daemon, vm_id: int, target: tuple[VmState, Any] | VmState,
                  timeout: float = 15.0) -> VmRecord:
    """Wait until VM ``vm_id`` is in ``target`` (a position or a bare VmState)."""
    last: list[VmRecord] = []

    async def reached() -> VmRecord | None:
        vm = await daemon.vms.info(vm_id)
        last[:] = [vm]
        hit = vm.state is target if isinstance(target, VmState) else vm.position == target
        return vm if hit else None

    try:
        return await wait_until(reached, timeout)  # type: ignore[no-any-return]
    except AssertionError:
        vm = last[0]
        wanted = target.name if isinstance(target, VmState) else vm_state_label(*target)
        raise AssertionError(
            f"VM {vm_id} did not reach {wanted} in {timeout:g} s: it is "
            f"{vm_state_label(*vm.position)}, error {vm.error!r}, "
            f"waiting because {vm.sched_message!r}") from None


async def wait_host(daemon: Daemon, host_id: int, predicate: Callable[[HostRecord], bool],
                    timeout: float = 15.0, what: str = "the host") -> HostRecord:
    async def check() -> HostRecord | None:
        host = await daemon.hosts.info(host_id)
        return host if predicate(host) else None

    return await wait_until(check, timeout, what)  # type: ignore[no-any-return]


async def add_provider_host(daemon: Daemon, name: str = "remote_provider") -> HostRecord:
    host_id = await daemon.hosts.allocate(name, "im_provider", "vmm_provider")
    return await wait_host(daemon, host_id, lambda h: h.state is HostState.MONITORED,
                           what=f"{name} to be monitored")


async def add_dummy_host(daemon: Daemon, name: str, attributes: str = "",
                         total_cpu: int | None = None) -> HostRecord:
    """A local dummy host; ``attributes`` (e.g. ``DUMMY_DEPLOY=capacity``) set before use."""
    host_id = await daemon.hosts.allocate(name, "dummy", "dummy")
    extra = attributes + (f" DUMMY_TOTALCPU={total_cpu}" if total_cpu is not None else "")
    if extra.strip():
        await daemon.hosts.update(host_id, extra, merge=True)
    expected = 800 if total_cpu is None else total_cpu
    host = await wait_host(
        daemon, host_id,
        lambda h: h.state is HostState.MONITORED and h.max_cpu == expected
        and all(h.template.get(k) is not None for k in _names(extra)),
        what=f"{name} to be monitored with its attributes")
    return host


def _names(attributes: str) -> list[str]:
    return re.findall(r"([A-Z_]+)\s*=", attributes)


def run(coroutine: Callable[[], Awaitable[T]]) -> T:
    return asyncio.run(coroutine())  # type: ignore[arg-type]


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


# -- the seed's provider example ---------------------------------------------------------------


def test_seed_provider_example_end_to_end(tmp_path: Path) -> None:
    settings = make_home(tmp_path, polling=0.2)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            assert host.is_public_cloud and host.hypervisor == "provider_name"
            assert (host.max_cpu, host.max_mem) == (500, 8912896)
            assert host.template.get("PRIORITY") == "-1"
            assert host.template.get("PROBED_BY") == "python"
            assert (control(settings) / "probe_args").read_text().split() == [
                "provider_name", str(settings.var_dir / "datastores"), "4124", "20",
                str(host.id), "remote_provider"]

            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)

            (call,) = deploy_calls(settings)
            deployment_path = Path(call["argv"][0])
            assert call["argv"] == [str(deployment_path), "remote_provider", str(vm_id),
                                    "remote_provider"]
            assert deployment_path == settings.vms_dir / str(vm_id) / "deployment.0"
            assert call["vm_id_env"] == str(vm_id)
            assert call["token"]
            document = ElementTree.fromstring(call["deployment"])
            assert document.findtext("CPU") == "1"
            assert document.findtext("MEMORY") == "256"
            assert document.findtext("PUBLIC_CLOUD/TYPE") == "provider_name"
            assert document.findtext("PUBLIC_CLOUD/PROVIDER_IMAGE_ID") == "id-141234"
            assert document.findtext("PUBLIC_CLOUD/PROVIDER_INSTANCE_TYPE") == "small_256mb"
            assert document.findtext("VMID") == str(vm_id)

            assert vm.deploy_id == f"prov-{vm_id}-0"
            assert vm.host_id == host.id
            vm = await wait_until(
                lambda: _monitored(daemon, vm_id, "IP", "10.1.2.3"), 5,
                "the poll's IP in the VM's monitoring")
            assert vm.state is VmState.ACTIVE and vm.error == ""

            host = await daemon.hosts.info(host.id)
            assert (host.cpu_usage, host.mem_usage, host.running_vms) == (100, 256 * 1024, 1)
            assert host.vm_ids == (vm_id,)

    run(scenario)


async def _monitored(daemon: Daemon, vm_id: int, key: str, value: str) -> VmRecord | None:
    vm = await daemon.vms.info(vm_id)
    return vm if vm.monitoring.get(key) == value else None


def test_seed_template_with_a_missing_comma_is_reported_not_misread(tmp_path: Path) -> None:
    """The seed's template lacks the comma after TYPE=provider_name."""
    settings = make_home(tmp_path)
    seed_text = textwrap.dedent("""\
        CPU=1
        MEMORY=256
        PUBLIC_CLOUD=[
          TYPE=provider_name
          PROVIDER_IMAGE_ID=id-141234,
          PROVIDER_INSTANCE_TYPE=small_256mb
        ]
        """)

    async def scenario() -> None:
        async with running(settings) as daemon:
            try:
                vm_id = await daemon.vms.allocate(seed_text)
            except TemplateError as exc:
                assert "line 5" in str(exc) or "line 4" in str(exc), str(exc)
                return
            vm = await daemon.vms.info(vm_id)
            section = vm.user_template.get_vector("PUBLIC_CLOUD")
            assert section is not None
            assert section.get("TYPE") == "provider_name"
            assert section.get("PROVIDER_IMAGE_ID") == "id-141234"

    run(scenario)


# -- the life of a VM --------------------------------------------------------------------------


def test_pending_prolog_boot_running_with_history(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            before = int(time.time())
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            log = daemon.files.log_path(vm_id)
            await wait_until(lambda: "ACTIVE/RUNNING" in (log.read_text() if log.exists()
                                                         else ""), 3, "the VM log")
            states = re.findall(r"New state is (\S+)", log.read_text())
            assert states == ["PENDING", "ACTIVE/PROLOG", "ACTIVE/BOOT", "ACTIVE/RUNNING"]
            assert vm.deploy_id.startswith(f"dummy-{vm_id}-")
            assert (vm.prev_state, vm.prev_lcm_state) == lifecycle.BOOT
            (stay,) = vm.history
            assert (stay.seq, stay.host_id, stay.hostname, stay.vm_mad, stay.tm_mad) == (
                0, host.id, "kvm-1", "dummy", "dummy")
            assert before <= stay.stime <= stay.pstime <= stay.petime <= stay.rstime
            assert stay.etime == stay.retime == stay.eetime == 0
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            assert [(e.action, e.status, e.result) for e in entries] == [
                ("deploy", "done", vm.deploy_id)]
            # What the next batch of the VM starts from without decoding it again is
            # the VM as stored (deploy, the driver's answer, the first poll's sample).
            async def kept_as_stored() -> bool:
                stored = await daemon.lifecycle.current(vm_id)
                return (stored is not None and stored.monitoring.get("NETTX") == "12345"
                        and daemon.lifecycle.kept_vm(vm_id) == stored)

            await wait_until(kept_as_stored, 30, "the first poll's sample, kept as stored")

            await daemon.vms.action("terminate", vm_id)
            vm = await wait_vm(daemon, vm_id, lifecycle.DONE)
            stay = vm.history[0]
            assert stay.etime >= stay.rstime and stay.eetime >= stay.estime > 0
            assert stay.action == lifecycle.HISTORY_ACTIONS[lifecycle.Event.TERMINATE] == 27
            assert stay.reason == "terminate requested"
            assert vm.etime >= vm.stime
            assert daemon.lifecycle.kept_vm(vm_id) is None

    run(scenario)


def test_host_rows_are_the_pool_without_what_its_vms_add(tmp_path: Path) -> None:
    """What the dashboard's timeline reloads after a resync (names, kinds): the hosts'
    rows alone, without reading the VMs placed on them."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            full, rows = await daemon.hosts.pool(), await daemon.hosts.pool_rows()
            assert [(host.id, host.name, host.is_public_cloud, host.template)
                    for host in rows] == [(host.id, host.name, host.is_public_cloud,
                                           host.template) for host in full]
            assert full[0].vm_ids == (vm_id,) and full[0].running_vms == 1
            assert rows[0].vm_ids == () and rows[0].running_vms == 0

    asyncio.run(scenario())


def test_terminate_frees_capacity_and_the_waiting_vm_is_placed_at_once(tmp_path: Path) -> None:
    """Graceful terminate calls shutdown, terminate-hard calls cancel; both free the host,
    and the VM waiting for room is placed by the event, not the 30 s periodic pass."""
    settings = make_home(tmp_path)
    (control(settings) / "totalcpu").write_text("100")  # room for one CPU=1 VM

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            first = await daemon.vms.allocate(PROVIDER_VM)
            first_vm = await wait_vm(daemon, first, lifecycle.RUNNING)
            second = await daemon.vms.allocate(PROVIDER_VM)
            waiting = await wait_until(
                lambda: _sched_message(daemon, second), 15, "a waiting reason")
            assert "capacity" in waiting
            assert (await daemon.vms.info(second)).position == lifecycle.PENDING

            await daemon.vms.action("terminate", first)
            done_at = (await wait_vm(daemon, first, lifecycle.DONE), time.monotonic())[1]
            second_vm = await wait_vm(daemon, second, lifecycle.RUNNING, timeout=10)
            assert time.monotonic() - done_at < 5
            assert f"shutdown {first_vm.deploy_id} remote_provider {first} remote_provider" \
                in actions(settings)

            third = await daemon.vms.allocate(PROVIDER_VM)
            await wait_until(lambda: _sched_message(daemon, third), 15, "a waiting reason")
            await daemon.vms.action("terminate-hard", second)
            await wait_vm(daemon, second, lifecycle.DONE)
            started = time.monotonic()
            await wait_vm(daemon, third, lifecycle.RUNNING, timeout=10)
            assert time.monotonic() - started < 5
            assert f"cancel {second_vm.deploy_id} remote_provider {second} remote_provider" \
                in actions(settings)
            assert not any(line.startswith(f"shutdown {second_vm.deploy_id}")
                           for line in actions(settings))
            host = await daemon.hosts.info(host.id)
            assert (host.running_vms, host.cpu_usage, host.vm_ids) == (1, 100, (third,))
            assert (await daemon.vms.info(second)).history[0].action == 28  # terminate-hard

    run(scenario)


async def _sched_message(daemon: Daemon, vm_id: int) -> str:
    return (await daemon.vms.info(vm_id)).sched_message


def test_hold_and_release(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            pending = await daemon.vms.allocate(LOCAL_VM)  # no host yet: stays pending
            await daemon.scheduler.pass_once()
            assert (await daemon.vms.info(pending)).position == lifecycle.PENDING
            await daemon.vms.action("hold", pending)
            held = await daemon.vms.allocate(LOCAL_VM, hold=True)
            await add_dummy_host(daemon, "kvm-1")
            await daemon.scheduler.pass_once()
            assert (await daemon.vms.info(pending)).position == lifecycle.HOLD
            assert (await daemon.vms.info(held)).position == lifecycle.HOLD

            await daemon.vms.action("release", held)
            await wait_vm(daemon, held, lifecycle.RUNNING)
            assert (await daemon.vms.info(pending)).position == lifecycle.HOLD
            await daemon.vms.action("release", pending)
            await wait_vm(daemon, pending, lifecycle.RUNNING)

    run(scenario)


def test_a_held_vm_can_be_deployed_by_hand_and_terminated_before(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            held = await daemon.vms.allocate(LOCAL_VM, hold=True)
            await daemon.vms.deploy(held, host.id)
            await wait_vm(daemon, held, lifecycle.RUNNING)
            dropped = await daemon.vms.allocate(LOCAL_VM, hold=True)
            await daemon.vms.action("terminate", dropped)
            vm = await daemon.vms.info(dropped)
            assert vm.position == lifecycle.DONE and vm.history == ()

    run(scenario)


def test_reboot_and_reset_run_the_driver_and_keep_the_vm_running(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            await daemon.vms.action("reboot", vm_id)
            await daemon.vms.action("reboot-hard", vm_id)
            expected = {f"reboot {vm.deploy_id} remote_provider {vm_id} remote_provider",
                        f"reset {vm.deploy_id} remote_provider {vm_id} remote_provider"}
            await wait_until(lambda: expected <= set(actions(settings)), 5,
                             "reboot and reset scripts")
            await daemon.lifecycle.drain(5)
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.RUNNING and vm.error == ""

    run(scenario)


def test_illegal_actions_are_refused_naming_the_state(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            for action in ("release", "hold"):
                with pytest.raises(IllegalActionError, match="ACTIVE/RUNNING"):
                    await daemon.vms.action(action, vm_id)
            with pytest.raises(IllegalActionError, match="ACTIVE/RUNNING"):
                await daemon.vms.deploy(vm_id, host.id)
            with pytest.raises(IllegalActionError, match=r"not supported.*terminate"):
                await daemon.vms.action("explode", vm_id)

            held = await daemon.vms.allocate(LOCAL_VM, hold=True)
            for action in ("reboot", "reboot-hard", "hold"):
                with pytest.raises(IllegalActionError, match=r"\bHOLD\b"):
                    await daemon.vms.action(action, held)
            await daemon.vms.action("terminate", held)
            with pytest.raises(IllegalActionError, match="DONE"):
                await daemon.vms.action("release", held)
            # Terminating a finished VM again is a harmless no-op.
            await daemon.vms.action("terminate", held)
            assert (await daemon.vms.info(vm_id)).position == lifecycle.RUNNING

    run(scenario)


# -- failures ----------------------------------------------------------------------------------


def test_dummy_deploy_failure_gives_boot_failure_then_terminate_ends_it(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1", 'DUMMY_DEPLOY="failure: boom"')
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.BOOT_FAILURE)
            assert vm.error == "Error deploying virtual machine: boom"
            assert (await daemon.hosts.info(host.id)).running_vms == 1
            entries = await daemon.db.read(lambda c: journal.entries_for(c, vm_id))
            assert [(e.status, e.result) for e in entries] == [("failed", "boom")]

            await daemon.vms.action("terminate", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.DONE)
            assert (await daemon.hosts.info(host.id)).running_vms == 0

    run(scenario)


def test_failing_deploy_script_reports_its_error_block_on_one_line(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    (control(settings) / "deploy_fail").touch()

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.BOOT_FAILURE)
            assert "\n" not in vm.error
            assert vm.error.startswith("Error deploying virtual machine: ")
            assert ("provider refused the request: quota exceeded for image id-141234"
                    in vm.error), vm.error
            assert "ERROR MESSAGE" not in vm.error and "noise" not in vm.error
            await daemon.vms.action("terminate-hard", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.DONE)

    run(scenario)


def test_deploy_that_hangs_past_its_timeout_fails_and_is_killed(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host_id = await daemon.hosts.allocate("slow-1", "dummy", "vmm_hang")
            await wait_host(daemon, host_id, lambda h: h.state is HostState.MONITORED)
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            pid_file = control(settings) / "hang_child.pid"
            await wait_until(pid_file.exists, 5, "the deploy script to start")
            started = time.monotonic()
            vm = await wait_vm(daemon, vm_id, lifecycle.BOOT_FAILURE, timeout=6)
            assert time.monotonic() - started < 5
            assert "Timeout" in vm.error and "\n" not in vm.error, vm.error
            script = int((control(settings) / "hang.pid").read_text())
            child = int(pid_file.read_text())
            await wait_until(lambda: not process_alive(script) and not process_alive(child),
                             5, "the hanging script and its child to be gone")

    run(scenario)


def test_no_capacity_at_a_host_sends_the_vm_back_to_pending_and_elsewhere(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            full = await add_dummy_host(daemon, "full", "DUMMY_DEPLOY=capacity")
            spare = await add_dummy_host(daemon, "spare")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            assert vm.host_id == spare.id
            assert [(h.seq, h.host_id) for h in vm.history] == [(0, full.id), (1, spare.id)]
            assert vm.history[0].reason.startswith("no capacity")
            assert vm.history[0].etime > 0
            log = daemon.files.log_path(vm_id)
            await wait_until(lambda: log.exists() and "ACTIVE/RUNNING" in log.read_text(), 15)
            assert "PENDING" in re.findall(r"New state is (\S+)", log.read_text())[1:]
            assert (await daemon.hosts.info(full.id)).running_vms == 0

    run(scenario)


def test_poll_garbage_marks_only_that_vm(tmp_path: Path) -> None:
    settings = make_home(tmp_path, polling=0.2)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            bad = await daemon.vms.allocate(PROVIDER_VM)
            good = await daemon.vms.allocate(PROVIDER_VM)
            (control(settings) / f"poll_garbage_{bad}").touch()
            await wait_vm(daemon, bad, lifecycle.RUNNING)
            await wait_vm(daemon, good, lifecycle.RUNNING)

            async def bad_marked() -> VmRecord | None:
                vm = await daemon.vms.info(bad)
                return vm if vm.error else None

            vm = await wait_until(bad_marked, 5, "the poll error on the bad VM")
            assert vm.error.startswith("Error monitoring VM: ") and "\n" not in vm.error
            assert vm.position == lifecycle.RUNNING
            await wait_until(lambda: _monitored(daemon, good, "IP", "10.1.2.3"), 15)
            good_vm = await daemon.vms.info(good)
            assert good_vm.error == "" and good_vm.position == lifecycle.RUNNING

            (control(settings) / f"poll_garbage_{bad}").unlink()
            await wait_until(lambda: _monitored(daemon, bad, "IP", "10.1.2.3"), 15)

    run(scenario)


async def _failed_provider_host(daemon: Daemon, broken: Path) -> HostRecord:
    """A provider host, monitored, then in ERROR once its probe is ``broken``."""
    host = await add_provider_host(daemon)
    broken.touch()
    host = await wait_host(daemon, host.id, lambda h: h.state is HostState.ERROR,
                           what="the host to fail")
    assert "cannot reach the provider API" in host.error
    return host


def test_failing_probe_puts_the_host_in_error_and_it_recovers(tmp_path: Path) -> None:
    settings = make_home(tmp_path, monitoring=0.3)
    broken = control(settings) / "probe_broken"

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await _failed_provider_host(daemon, broken)
            assert "10-capacity" in host.error and "\n" not in host.error
            assert host.template.get("ERROR") == (
                f"Error monitoring host {host.id} : {host.error}")

            # The daemon goes on serving: a local host and its VMs work meanwhile.
            await add_dummy_host(daemon, "kvm-1")
            local = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, local, lifecycle.RUNNING)
            cloud_vm = await daemon.vms.allocate(PROVIDER_VM + ' REQUIREMENTS="PUBLIC_CLOUD = YES"')
            await daemon.scheduler.pass_once()
            assert (await daemon.vms.info(cloud_vm)).position == lifecycle.PENDING

            broken.unlink()
            host = await wait_host(daemon, host.id, lambda h: h.state is HostState.MONITORED,
                                   what="the host to recover")
            assert host.error == "" and host.template.get("ERROR") is None
            await wait_vm(daemon, cloud_vm, lifecycle.RUNNING)

    run(scenario)


def test_an_unchanged_host_report_moves_only_its_monitoring_time(tmp_path: Path) -> None:
    """At 10,000 hosts a report per host per minute must not write a new host record
    each: a report equal to the last one moves LAST_MON_TIME and keeps the version;
    a report that changes the host is written as before."""
    settings = make_home(tmp_path, monitoring=0.3)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "quiet-1")
            later = await wait_host(daemon, host.id,
                                    lambda h: h.last_mon_time > host.last_mon_time,
                                    timeout=60, what="a later monitoring")
            assert later.version == host.version
            assert (later.template, later.max_cpu) == (host.template, host.max_cpu)
            # The same report again (known quiet: not compared again) moves the time too.
            again = await wait_host(daemon, host.id,
                                    lambda h: h.last_mon_time > later.last_mon_time,
                                    timeout=60, what="another monitoring")
            assert again.version == host.version

            await daemon.hosts.update(host.id, "DUMMY_TOTALCPU=400", merge=True)
            changed = await wait_host(daemon, host.id, lambda h: h.max_cpu == 400,
                                      timeout=60, what="the new figures")
            assert changed.version > later.version

    run(scenario)


def test_host_states_follow_the_host_table_through_monitoring_and_operators(
        tmp_path: Path) -> None:
    """As an OpenNebula 6.10 peer does: a host in ERROR may be disabled; a disabled
    host is still monitored and keeps its state either way; offline stops the
    monitoring; enable starts over from INIT whatever the state."""
    settings = make_home(tmp_path, monitoring=0.3)
    broken = control(settings) / "probe_broken"

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await _failed_provider_host(daemon, broken)
            await daemon.hosts.status(host.id, 1)
            stamp = (await daemon.hosts.info(host.id)).last_mon_time
            host = await wait_host(daemon, host.id, lambda h: h.last_mon_time > stamp + 1,
                                   what="the disabled host to be monitored again")
            assert host.state is HostState.DISABLED and host.prev_state is HostState.DISABLED
            assert "cannot reach the provider API" in host.error
            broken.unlink()
            host = await wait_host(daemon, host.id, lambda h: h.error == "",
                                   what="a good monitoring of the disabled host")
            assert host.state is HostState.DISABLED and host.max_cpu == 500

            await daemon.hosts.status(host.id, 2)
            assert (await daemon.hosts.info(host.id)).state is HostState.OFFLINE
            await daemon.hosts.status(host.id, 0)
            host = await daemon.hosts.info(host.id)
            assert host.state in (HostState.INIT, HostState.MONITORED)
            host = await wait_host(daemon, host.id, lambda h: h.state is HostState.MONITORED,
                                   what="the enabled host to be monitored")
            assert host.prev_state is not HostState.OFFLINE  # it went through INIT

            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            with pytest.raises(IllegalActionError, match="still holds"):
                await daemon.hosts.delete(host.id)

    run(scenario)


def test_a_hung_probe_puts_the_new_host_in_error_then_it_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A monitoring without -w is bounded by MONITOR_TIMEOUT: the host does not stay in INIT."""
    monkeypatch.setattr(monitor, "MONITOR_TIMEOUT", 4.0)  # 60 s in production
    settings = make_home(tmp_path, monitoring=0.5)
    hang = control(settings) / "probe_sleep"
    hang.write_text("120")

    async def scenario() -> None:
        async with running(settings) as daemon:
            host_id = await daemon.hosts.allocate("remote_provider", "im_provider",
                                                  "vmm_provider")
            host = await wait_host(daemon, host_id, lambda h: h.state is HostState.ERROR,
                                   what="the hung monitoring to time out")
            assert host.error == "Timeout executing monitor after 4 s"
            assert host.template.get("ERROR") == (
                f"Error monitoring host {host_id} : Timeout executing monitor after 4 s")

            hang.unlink()
            host = await wait_host(daemon, host_id, lambda h: h.state is HostState.MONITORED,
                                   what="the host to recover")
            assert host.error == "" and host.max_cpu == 500

    run(scenario)


def test_broken_templates_are_refused_with_clear_errors(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            with pytest.raises(TemplateError, match=r"line 2, column \d+"):
                await daemon.vms.allocate('CPU = 1\nMEMORY = "128\n')
            with pytest.raises(ValidationError, match="MEMORY attribute is missing"):
                await daemon.vms.allocate("CPU = 1")
            with pytest.raises(ValidationError, match="CPU attribute must be a positive"):
                await daemon.vms.allocate("CPU = -1 MEMORY = 128")
            with pytest.raises(ValidationError, match="MEMORY attribute must be a whole"):
                await daemon.vms.allocate("CPU = 1 MEMORY = 1.5")
            with pytest.raises(ValidationError, match=r"^REQUIREMENTS: .*column"):
                await daemon.vms.allocate('CPU=1 MEMORY=128 REQUIREMENTS="FREECPU >"')
            with pytest.raises(ValidationError, match=r"^RANK: "):
                await daemon.vms.allocate('CPU=1 MEMORY=128 RANK="FREECPU * * 2"')
            assert await daemon.vms.pool(state=-2) == []

    run(scenario)


def test_unknown_hosts_drivers_and_vms_are_refused_clearly(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            with pytest.raises(ValidationError, match=r"IM_MAD 'im_nope' is not defined.*"
                                                      r"dummy, im_provider"):
                await daemon.hosts.allocate("h", "im_nope", "dummy")
            with pytest.raises(ValidationError, match=r"VM_MAD 'vmm_nope' is not defined"):
                await daemon.hosts.allocate("h", "dummy", "vmm_nope")
            host = await add_dummy_host(daemon, "kvm-1")
            with pytest.raises(ValidationError, match="NAME is already taken by HOST"):
                await daemon.hosts.allocate("kvm-1", "dummy", "dummy")
            held = await daemon.vms.allocate(LOCAL_VM, hold=True)
            with pytest.raises(NotFoundError, match="HOST 99 does not exist"):
                await daemon.vms.deploy(held, 99)
            with pytest.raises(NotFoundError, match="VM 99 does not exist"):
                await daemon.vms.info(99)
            with pytest.raises(NotFoundError, match="VM 99 does not exist"):
                await daemon.vms.action("terminate", 99)
            with pytest.raises(NotFoundError, match="HOST named nowhere does not exist"):
                await daemon.hosts.find("nowhere")
            assert (await daemon.vms.info(held)).position == lifecycle.HOLD
            assert (await daemon.hosts.info(host.id)).running_vms == 0

    run(scenario)


def test_a_vm_without_a_section_for_a_cloud_host_cannot_be_deployed_there(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            held = await daemon.vms.allocate(LOCAL_VM, hold=True)
            with pytest.raises(ValidationError, match=r"no PUBLIC_CLOUD.*provider_name"):
                await daemon.vms.deploy(held, host.id)
            assert (await daemon.vms.info(held)).position == lifecycle.HOLD

    run(scenario)


def test_deploy_script_that_prints_no_id_fails_the_boot(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    (control(settings) / "deploy_silent").touch()

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            vm = await wait_vm(daemon, vm_id, lifecycle.BOOT_FAILURE)
            assert "no deploy id" in vm.error and vm.deploy_id == ""

    run(scenario)


def test_an_instance_gone_at_the_provider_is_poweroff_and_can_be_terminated(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path, polling=0.2)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1", "DUMMY_POLL=gone")
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            vm = await wait_vm(daemon, vm_id, VmState.POWEROFF)
            assert "gone" in vm.error
            assert (await daemon.hosts.info(host.id)).running_vms == 1  # it keeps its host
            await daemon.vms.action("terminate", vm_id)
            await wait_vm(daemon, vm_id, lifecycle.DONE)
            assert (await daemon.hosts.info(host.id)).running_vms == 0

    run(scenario)


def test_a_driver_polling_across_hosts_gets_one_call_and_each_host_again_on_failure(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The dummy driver takes the VMs of several hosts in one poll call; when that call
    fails (one host's polls do), each host is asked alone: the failing one is named,
    the others are polled all the same."""
    settings = make_home(tmp_path, polling=3600)  # no regular poll meanwhile

    def poll_calls() -> float:
        return metrics.REGISTRY.get_sample_value(
            "cloudburst_driver_calls_total", {"driver": "dummy", "action": "poll"}) or 0.0

    async def scenario() -> None:
        async with running(settings) as daemon:
            hosts = [await add_dummy_host(daemon, f"kvm-{i}", total_cpu=100) for i in range(3)]
            vm_ids = [await daemon.vms.allocate(LOCAL_VM) for _ in range(3)]
            for vm_id in vm_ids:  # RUNNING and its (only) fresh poll done
                await wait_until(lambda vm_id=vm_id: _first_sample(daemon, vm_id), 30,
                                 "the first poll's sample")
            on_hosts = await daemon.db.read(
                lambda c: vm_pool.on_hosts(c, [host.id for host in hosts]))
            assert sorted(on_hosts) == [host.id for host in hosts]  # one VM on each
            group = [(host, on_hosts[host.id]) for host in hosts]
            before = poll_calls()
            await daemon.monitor.poll_hosts(group)
            assert poll_calls() == before + 1

            await daemon.hosts.update(hosts[0].id, "DUMMY_POLL=failure", merge=True)
            group[0] = (await daemon.hosts.info(hosts[0].id), group[0][1])
            before = poll_calls()
            with caplog.at_level(logging.WARNING, logger="cloudburst.daemon.monitor"):
                await daemon.monitor.poll_hosts(group)
            assert poll_calls() == before + 1 + 3
            assert "polling VMs of host kvm-0 failed" in caplog.text
            assert "kvm-1" not in caplog.text and "kvm-2" not in caplog.text

    run(scenario)


async def _first_sample(daemon: Daemon, vm_id: int) -> bool:
    vm = await daemon.vms.info(vm_id)
    return vm.position == lifecycle.RUNNING and vm.monitoring.get("NETTX") == "12345"


def test_disabled_hosts_get_no_vms_until_enabled(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1")
            await daemon.hosts.status(host.id, 1)
            vm_id = await daemon.vms.allocate(LOCAL_VM)
            message = await wait_until(lambda: _sched_message(daemon, vm_id), 15)
            assert message == "No hosts enabled to run VMs"
            assert (await daemon.vms.info(vm_id)).position == lifecycle.PENDING
            started = time.monotonic()
            await daemon.hosts.status(host.id, 0)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=10)
            assert time.monotonic() - started < 5
            with pytest.raises(IllegalActionError, match=rf"holds 1 VM\(s\) \({vm_id}\)"):
                await daemon.hosts.delete(host.id)

    run(scenario)


def test_the_kept_placer_counts_capacity_taken_outside_the_scheduler(tmp_path: Path) -> None:
    """Passes over new VMs reuse the scheduler's placer (no store read of hosts and
    usage), yet a VM deployed by hand on the host is counted before the next
    placement there, and the capacity a terminate frees is used at once."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_dummy_host(daemon, "kvm-1", total_cpu=300)  # three CPU=1 VMs
            first = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, first, VmState.ACTIVE)
            rebuilds = daemon.scheduler.rebuilds
            second = await daemon.vms.allocate(LOCAL_VM)
            await wait_vm(daemon, second, VmState.ACTIVE)
            assert daemon.scheduler.rebuilds == rebuilds  # the placer of the pass before

            by_hand = await daemon.vms.allocate(LOCAL_VM, hold=True)
            await daemon.vms.deploy(by_hand, host.id)  # the host is now full
            await wait_vm(daemon, by_hand, lifecycle.RUNNING)
            late = await daemon.vms.allocate(LOCAL_VM)
            message = await wait_until(lambda: _sched_message(daemon, late), 15,
                                       "a waiting reason")
            assert message == "No host with enough capacity to deploy the VM"
            assert (await daemon.vms.info(late)).position == lifecycle.PENDING
            assert (await daemon.hosts.info(host.id)).cpu_usage == 300

            await daemon.vms.action("terminate-hard", first)
            await wait_vm(daemon, late, lifecycle.RUNNING)
            assert (await daemon.hosts.info(host.id)).cpu_usage == 300

    run(scenario)


def test_a_pass_stopped_by_max_vm_is_followed_by_one_over_the_rest(tmp_path: Path) -> None:
    """MAX_VM bounds the pending VMs a pass reads; the VMs after them are placed by
    the next pass at once, not by the periodic one (SCHED_INTERVAL is 30 s here)."""
    settings = make_home(tmp_path)
    settings = dataclasses.replace(
        settings, scheduler=dataclasses.replace(settings.scheduler, max_vm=2))

    async def scenario() -> None:
        async with running(settings) as daemon:
            vm_ids = [await daemon.vms.allocate(LOCAL_VM) for _ in range(5)]  # no host yet
            for vm_id in vm_ids:
                await wait_until(lambda vm_id=vm_id: _sched_message(daemon, vm_id), 15,
                                 f"VM {vm_id} to be seen waiting")
            await add_dummy_host(daemon, "kvm-1")  # one full pass, then the rest
            for vm_id in vm_ids:
                await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=10)

    run(scenario)


def test_unmet_requirements_are_shown_on_the_waiting_vm(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await add_dummy_host(daemon, "kvm-1")
            vm_id = await daemon.vms.allocate('CPU=1 MEMORY=128 REQUIREMENTS="NAME = \\"ec2\\""')
            message = await wait_until(lambda: _sched_message(daemon, vm_id), 15)
            assert message == 'No host meets REQUIREMENTS: NAME = "ec2"'
            await add_dummy_host(daemon, "ec2")
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            assert (await daemon.vms.info(vm_id)).sched_message == ""

    run(scenario)


def test_updating_a_cloud_host_does_not_make_it_take_local_vms(tmp_path: Path) -> None:
    """`onehost update` (replace mode) drops the monitored PUBLIC_CLOUD/HYPERVISOR until
    the next monitoring; a pass in between must not send a local-only VM to the cloud."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            host = await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(LOCAL_VM)  # no local host: it waits
            await wait_until(lambda: _sched_message(daemon, vm_id), 15)
            (control(settings) / "probe_sleep").write_text("2")  # slow re-monitoring
            await daemon.hosts.update(host.id, 'NOTE="maintenance on friday"', merge=False)
            await daemon.scheduler.pass_once()
            await daemon.lifecycle.drain(5)
            vm = await daemon.vms.info(vm_id)
            assert vm.position == lifecycle.PENDING, (
                f"a VM without a cloud section went to cloud host {host.name}: "
                f"{vm_state_label(*vm.position)} on host {vm.host_id}")
            assert deploy_calls(settings) == []

    run(scenario)


# -- bursting ----------------------------------------------------------------------------------


def test_the_scheduler_fills_the_local_host_then_bursts_to_the_cloud(tmp_path: Path) -> None:
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            local = await add_dummy_host(daemon, "kvm-1", total_cpu=200)
            cloud = await add_provider_host(daemon)
            vm_ids = [await daemon.vms.allocate(PROVIDER_VM) for _ in range(5)]
            vms = [await wait_vm(daemon, vm_id, lifecycle.RUNNING) for vm_id in vm_ids]
            where = [vm.host_id for vm in vms]
            assert where.count(local.id) == 2 and where.count(cloud.id) == 3, where
            assert where[:2] == [local.id, local.id]
            on_cloud = {vm.id for vm in vms if vm.host_id == cloud.id}
            assert {int(call["argv"][2]) for call in deploy_calls(settings)} == on_cloud
            local = await daemon.hosts.info(local.id)
            assert (local.cpu_usage, local.max_cpu) == (200, 200)

            # A VM with no cloud section waits instead of bursting.
            stays = await daemon.vms.allocate(LOCAL_VM)
            message = await wait_until(lambda: _sched_message(daemon, stays), 15)
            assert "capacity" in message
            assert (await daemon.vms.info(stays)).position == lifecycle.PENDING

    run(scenario)


# -- restart recovery --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def prepare_pending_vm(settings: Settings) -> int:
    """Create the provider host and a VM with a daemon whose loops never run."""
    daemon = Daemon(settings)
    try:
        daemon.db.start()
        await daemon.hosts.allocate("remote_provider", "im_provider", "vmm_provider")
        return await daemon.vms.allocate(PROVIDER_VM)
    finally:
        await daemon.stop()


def read_store(settings: Settings, function: Callable[[Any], T]) -> T:
    """Read the store from outside any daemon (another process may be writing)."""
    engine = make_engine(settings.database_url, writer=False)
    try:
        with engine.connect() as connection, connection.begin():
            return function(connection)
    finally:
        engine.dispose()


def daemon_process(settings: Settings, output: Path, port: int) -> subprocess.Popen[bytes]:
    """The daemon in its own process (so it can be SIGKILLed), writing to ``output``."""
    environment = {**os.environ, "CLOUDBURST_HOME": str(settings.home),
                   "CLOUDBURST_PORT": str(port),
                   "PYTHONPATH": os.pathsep.join(filter(None, [
                       str(REPO / "src"), os.environ.get("PYTHONPATH")]))}
    with open(output, "wb") as sink:
        return subprocess.Popen([sys.executable, "-m", "cloudburst.daemon.main", "-f"],
                                env=environment, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=sink)


def test_restart_after_a_crash_replays_the_deploy_with_the_same_token(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    (control(settings) / "deploy_sleep").write_text("5")
    vm_id = asyncio.run(prepare_pending_vm(settings))
    output = tmp_path / "oned.out"
    orphans: list[int] = []
    process = daemon_process(settings, output, free_port())
    try:
        deadline = time.monotonic() + 20
        while not (deploy_calls(settings) and read_store(
                settings, lambda c: vm_pool.get_vm(c, vm_id).position) == lifecycle.BOOT):
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the daemon never started the deploy\n" + \
                output.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        orphans.append(deploy_calls(settings)[0]["pid"])
        unfinished = read_store(settings, journal.unfinished)
        assert [(e.vm_id, e.action) for e in unfinished] == [(vm_id, "deploy")]

        async def restart() -> VmRecord:
            async with running(settings) as daemon:
                return await wait_vm(daemon, vm_id, lifecycle.RUNNING, timeout=60)

        vm = asyncio.run(restart())
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        for pid in orphans:  # the first deploy script outlived its daemon
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

    first, second = deploy_calls(settings)
    assert first["token"] == second["token"] == unfinished[0].token
    assert first["argv"] == second["argv"]
    assert vm.deploy_id == f"prov-{vm_id}-0"
    assert [p.name for p in (control(settings) / "instances").iterdir()] == [first["token"]]
    assert read_store(settings, journal.unfinished) == []
    entries = read_store(settings, lambda c: journal.entries_for(c, vm_id))
    assert [(e.action, e.status, e.result) for e in entries] == [
        ("deploy", "done", vm.deploy_id)]


HANGING_REBOOT = """\
#!/bin/bash
control="$CLOUDBURST_HOME/control"
echo "$(basename "$0") $*" >> "$control/actions.log"
echo "$$" > "$control/reboot.pid"
[ -e "$control/reboot_sleep" ] && sleep "$(cat "$control/reboot_sleep")"
exit 0
"""


def test_a_reboot_killed_with_the_daemon_is_done_again_and_its_entry_closed(
        tmp_path: Path) -> None:
    """In-place work leaves no in-flight state behind: only its journal entry says a
    reboot was under way. A restart reboots the VM again (it is still RUNNING on the
    same stay) and closes the entry, instead of leaving it ``started`` for ever."""
    settings = make_home(tmp_path)
    install(settings.remotes_dir / "vmm" / "provider_name" / "reboot", HANGING_REBOOT)
    vm_id = asyncio.run(prepare_pending_vm(settings))
    output, port = tmp_path / "oned.out", free_port()
    pid_file = control(settings) / "reboot.pid"
    process = daemon_process(settings, output, port)
    try:
        deadline = time.monotonic() + 60
        while read_store(settings, lambda c: vm_pool.get_vm(c, vm_id).position) \
                != lifecycle.RUNNING:
            assert process.poll() is None, output.read_text()
            assert time.monotonic() < deadline, "the VM never ran\n" + output.read_text()
            time.sleep(0.1)
        (control(settings) / "reboot_sleep").write_text("60")
        session = settings.auth_file.read_text().strip()
        api = xmlrpc.client.ServerProxy(f"http://127.0.0.1:{port}/RPC2")
        assert api.one.vm.action(session, "reboot", vm_id)[0] is True
        while not pid_file.exists():
            assert time.monotonic() < deadline + 60, "no reboot\n" + output.read_text()
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        unfinished = read_store(settings, journal.unfinished)
        assert [(e.vm_id, e.action) for e in unfinished] == [(vm_id, "reboot")]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
        if pid_file.exists():  # the reboot script outlived its daemon: its whole session
            with contextlib.suppress(ProcessLookupError):
                os.killpg(int(pid_file.read_text()), signal.SIGKILL)
    (control(settings) / "reboot_sleep").unlink()

    async def restart() -> VmRecord:
        async with running(settings) as daemon:
            await wait_until(lambda: _no_unfinished(settings), 30, "the reboot entry to close")
            return await daemon.vms.info(vm_id)

    vm = asyncio.run(restart())
    assert vm.position == lifecycle.RUNNING and vm.error == ""
    assert [a.split()[0] for a in actions(settings) if not a.startswith("poll")] == [
        "reboot", "reboot"]
    entries = read_store(settings, lambda c: journal.entries_for(c, vm_id))
    assert [(e.action, e.status) for e in entries] == [("deploy", "done"), ("reboot", "done")]


async def _no_unfinished(settings: Settings) -> bool:
    return read_store(settings, journal.unfinished) == []


def test_stopping_the_daemon_during_a_deploy_kills_it_and_a_restart_finishes_it(
        tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    (control(settings) / "deploy_sleep").write_text("5")

    async def scenario() -> tuple[int, VmRecord]:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            await wait_vm(daemon, vm_id, lifecycle.BOOT)
            await wait_until(lambda: deploy_calls(settings), 5, "the deploy script to start")
            stop_started = time.monotonic()
        assert time.monotonic() - stop_started < 5, "stop waited for the deploy"
        script = deploy_calls(settings)[0]["pid"]
        await wait_until(lambda: not process_alive(script), 5, "the deploy script to die")
        stopped = read_store(settings, lambda c: vm_pool.get_vm(c, vm_id))
        assert stopped.position == lifecycle.BOOT
        async with running(settings) as daemon:
            return vm_id, await wait_vm(daemon, vm_id, lifecycle.RUNNING)

    vm_id, vm = asyncio.run(scenario())
    first, second = deploy_calls(settings)
    assert first["token"] == second["token"]
    assert vm.deploy_id == f"prov-{vm_id}-0"
    assert read_store(settings, journal.unfinished) == []


def test_a_shutdown_interrupted_by_a_restart_is_finished_with_cancel(tmp_path: Path) -> None:
    settings = make_home(tmp_path)
    # Long enough to still run when the daemon stops, however loaded the machine.
    (control(settings) / "shutdown_sleep").write_text("12")

    async def scenario() -> VmRecord:
        async with running(settings) as daemon:
            await add_provider_host(daemon)
            vm_id = await daemon.vms.allocate(PROVIDER_VM)
            await wait_vm(daemon, vm_id, lifecycle.RUNNING)
            await daemon.vms.action("terminate", vm_id)
            await wait_until(lambda: any(a.startswith("shutdown") for a in actions(settings)),
                             10, "the shutdown script to start")
            assert (await daemon.vms.info(vm_id)).position == lifecycle.SHUTDOWN
        async with running(settings) as daemon:
            return await wait_vm(daemon, vm_id, lifecycle.DONE)

    vm = asyncio.run(scenario())
    assert [a.split()[0] for a in actions(settings) if not a.startswith("poll")] == [
        "shutdown", "cancel"]
    assert read_store(settings, journal.unfinished) == []
    assert (vm.history[0].etime, vm.etime) > (0, 0)


def test_settings_of_the_test_home_are_what_the_tests_rely_on(tmp_path: Path) -> None:
    settings = make_home(tmp_path, monitoring=0.3, polling=0.2)
    assert settings.scheduler.interval == 30
    assert (settings.monitoring_interval, settings.vm_polling_interval) == (0.3, 0.2)
    assert settings.driver("VM_MAD", "vmm_provider") is not None
    assert settings.home == tmp_path / "home"


def test_a_burst_of_creations_keeps_quotas_and_consecutive_ids(tmp_path: Path) -> None:
    """Creations asked in one turn are written together: a user's VMS quota still
    counts the burst's earlier VMs, and the ids of the VMs it refused are given back
    (ids stay consecutive, as when each creation was its own write)."""
    settings = make_home(tmp_path)

    async def scenario() -> None:
        async with running(settings) as daemon:
            await daemon.quotas.set("user", 5, "VM = [ VMS = 2 ]")
            outcomes = await asyncio.gather(*(
                daemon.vms.allocate(LOCAL_VM, uid=uid, gid=1, hold=True)
                for uid in (5, 0, 5, 5, 0, 5)), return_exceptions=True)
            refused = [outcome for outcome in outcomes if isinstance(outcome, Exception)]
            assert len(refused) == 2 and all(isinstance(error, QuotaError) for error in refused)
            assert "limit of 2 reached for VMS quota" in str(refused[0])
            created = sorted(outcome for outcome in outcomes if isinstance(outcome, int))
            assert created == [0, 1, 2, 3]
            assert await daemon.vms.allocate(LOCAL_VM, hold=True) == 4
            owners = {vm.id: vm.uid for vm in await daemon.vms.pool(state=-2)}
            assert sorted(owners.values()) == [0, 0, 0, 5, 5]

    run(scenario)

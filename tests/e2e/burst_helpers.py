"""Helpers for the bursting end-to-end tests: fast daemons, restarts, the CLI, scripts.

A plain module (no conftest). Unlike ``daemon_fixture.start_daemon`` these
daemons get short timers (monitoring, polling and scheduling every second:
``oned.conf`` keeps the first value of a name, so they must replace the
defaults rather than be appended), and can be killed and started again on the
same home and port.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

from daemon_fixture import (
    DEFAULT_CONF,
    START_TIMEOUT,
    RunningDaemon,
    daemon_environment,
    free_port,
    stop,
    wait_for,
)

from cloudburst.drivers.base import DeploySpec, DriverContext, DriverOptions, HostRef
from cloudburst.drivers.one.vm import OneVmDriver
from cloudburst.template import Template
from ec2_sites import write_rc
from seed_templates import SEED_VMM_EC2_CONF

__all__ = ["PARTNER_HOST", "RunningDaemon", "cli", "conf_text", "kill", "partner_driver",
           "partner_spec", "running_daemon", "start", "wait_for", "write_script"]

#: The timers every bursting test daemon runs with, in seconds.
FAST_TIMERS = {
    "MONITORING_INTERVAL": "1",
    "VM_POLLING_INTERVAL": "1",
    "SCHED_INTERVAL": "1",
    "DEFAULT_ACTION_TIMEOUT": "60",
}


def conf_text(extra: str = "", **values: str) -> str:
    """The shipped ``oned.conf`` with fast timers, ``values`` replaced, ``extra`` appended."""
    text = DEFAULT_CONF.read_text(encoding="utf-8")
    for name, value in {**FAST_TIMERS, **values}.items():
        pattern = re.compile(rf"^{name}\s*=.*$", re.MULTILINE)
        if pattern.search(text):
            text = pattern.sub(f"{name} = {value}", text)
        else:
            text += f"\n{name} = {value}\n"
    return f"{text}\n{textwrap.dedent(extra)}\n"


def ec2_etc(etc: Path, *, small_instances: int, rc_extra: str) -> None:
    """The seed's EC2 driver files in ``etc``: ``im_ec2.conf`` allowing
    ``small_instances``, ``vmm_ec2.conf`` and a ``vmm_ec2rc`` with ``rc_extra``."""
    for name, text in (("im_ec2/im_ec2.conf", f"SMALL_INSTANCES={small_instances}\n"),
                       ("vmm_ec2/vmm_ec2.conf", SEED_VMM_EC2_CONF)):
        (etc / name).parent.mkdir(parents=True, exist_ok=True)
        (etc / name).write_text(text, encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc", extra=rc_extra)


def _answers(port: int) -> bool:
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def start(root: Path, conf: str | None = None, port: int | None = None) -> RunningDaemon:
    """Start a daemon with home ``root/home``; its output is appended to ``root/oned.out``.

    ``conf`` (when given) is written as the home's ``oned.conf``; restarting
    with ``conf=None`` and the same ``port`` resumes the same installation.
    """
    home = root / "home"
    (home / "etc").mkdir(parents=True, exist_ok=True)
    if conf is not None:
        (home / "etc" / "oned.conf").write_text(conf, encoding="utf-8")
    port = port or free_port()
    with open(root / "oned.out", "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudburst.daemon.main", "-f"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=daemon_environment(home, port), cwd=root)
    deadline = time.monotonic() + START_TIMEOUT
    auth = home / "one_auth"
    try:
        # Ours once its session is written (before it binds) and the port answers:
        # another process may hold a port that was free when it was chosen.
        while not (_answers(port) and auth.is_file() and auth.read_text(encoding="utf-8")):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the daemon did not start (exit status {process.poll()}):\n"
                    + (root / "oned.out").read_text(errors="replace")[-4000:])
            time.sleep(0.05)
        session = auth.read_text(encoding="utf-8").splitlines()[0].strip()
    except BaseException:
        stop(process)  # never leave a daemon behind
        raise
    return RunningDaemon(home=home, port=port, session=session,
                         url=f"http://127.0.0.1:{port}/RPC2", process=process)


def kill(daemon: RunningDaemon) -> None:
    """SIGKILL the daemon (no clean-up on its side) and reap it."""
    with contextlib.suppress(ProcessLookupError):
        daemon.process.send_signal(signal.SIGKILL)
    daemon.process.wait(timeout=10)


@contextlib.contextmanager
def running_daemon(root: Path, conf: str) -> Iterator[RunningDaemon]:
    """:func:`start` for the duration of a block; always stopped afterwards."""
    daemon = start(root, conf)
    try:
        yield daemon
    finally:
        stop(daemon.process)


def cli(daemon: RunningDaemon, tool: str, *args: str, check: bool = True,
        stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m cloudburst.cli.<tool> args...`` against ``daemon``."""
    env = daemon_environment(daemon.home, daemon.port, {"ONE_AUTH": str(daemon.auth_file)})
    result = subprocess.run(
        [sys.executable, "-m", f"cloudburst.cli.{tool}", *args], input=stdin,
        capture_output=True, text=True, env=env, timeout=60, cwd=daemon.home.parent)
    if check and result.returncode != 0:
        raise AssertionError(f"{tool} {' '.join(args)} exited {result.returncode}:\n"
                             f"{result.stdout}{result.stderr}")
    return result


def write_script(path: Path, text: str) -> Path:
    """Write an executable script; the body may be indented apart from the ``#!`` line."""
    shebang, _, body = textwrap.dedent(text).lstrip().partition("\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{shebang}\n{textwrap.dedent(body)}", encoding="utf-8")
    path.chmod(0o755)
    return path


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True
    return state != "Z"


#: The host of ours that stands for the partner, in partner-driver tests.
PARTNER_HOST = HostRef(id=7, name="partner")


def partner_driver(tmp_path: Path, rc: str, install_id: str = "cb-test0001") -> OneVmDriver:
    """A ``one`` VM driver used directly (as the dispatcher would), with rc file ``rc``."""
    etc = tmp_path / "etc"
    (etc / "one").mkdir(parents=True, exist_ok=True)
    path = etc / "one" / "partnerrc"
    path.write_text(rc)
    path.chmod(0o600)
    return OneVmDriver(DriverContext(
        name="vmm_one", executable="one_vmm_one", arguments=("one/partnerrc",),
        options=DriverOptions(threads=4), etc_dir=etc, remotes_dir=tmp_path / "remotes",
        var_dir=tmp_path / "var", install_id=install_id))


def partner_spec(vm_id: int, token: str, tmp_path: Path) -> DeploySpec:
    """The deploy of our VM ``vm_id`` (0.5 CPU, 64 MB, a ``CONTEXT``) to :data:`PARTNER_HOST`."""
    template = Template([("NAME", f"vm-{vm_id}"), ("CPU", "0.5"), ("MEMORY", "64"),
                         ("PUBLIC_CLOUD", {"TYPE": "one", "FLAVOUR": "tiny"}),
                         ("CONTEXT", {"GREETING": "hello partner", "NETWORK": "YES"}),
                         ("VMID", str(vm_id))])
    return DeploySpec(vm_id=vm_id, host=PARTNER_HOST, deployment_file=tmp_path / "deployment.0",
                      template=template, token=token, memory_mb=64,
                      cpu=0.5, section=template.get_vector("PUBLIC_CLOUD"))

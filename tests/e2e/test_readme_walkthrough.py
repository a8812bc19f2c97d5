"""README.md's walkthrough, run word for word: a private cloud that bursts, and comes back.

The blocks fenced as ```` ```sh walkthrough ```` are taken from README.md as
they are and run by ``bash -e``, in order, in the clone, with the environment
a user of the walkthrough has: the daemon running (started here, as
``./scripts/run`` would, with ``CLOUDBURST_HOME`` in a temporary directory and
``CLOUDBURST_PORT`` free), and a libvirtd for ``localhost`` (a private
session-mode one, as :mod:`kvm_guest` starts it, named to the daemon by
``LIBVIRT_DEFAULT_URI`` since ``./scripts/run``'s is not here). The first
block (``export``s) is run again before each of the others, as a user's shell
keeps them. Where the README says to restart the daemon, the test does. Between
blocks the test only looks, except once: it points the kvm host's serial
console log at a directory, to see the guests boot.

So the README cannot drift from the product: if a command, an option, an
output the loops wait for, or the placement it promises changes, this fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_fixture import REPO, RunningDaemon, daemon_environment, start_daemon, wait_for
from kvm_guest import GUEST_UP, Libvirtd, private_libvirtd

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BLOCK = re.compile(r"^```sh walkthrough\n(.*?)^```$", re.MULTILINE | re.DOTALL)
#: Seconds one block may take (building the guest downloads a kernel package).
BLOCK_TIMEOUT = 600


def walkthrough_blocks() -> list[str]:
    return BLOCK.findall((REPO / "README.md").read_text(encoding="utf-8"))


def test_the_walkthrough_is_in_the_readme() -> None:
    blocks = walkthrough_blocks()
    assert len(blocks) == 7, blocks
    assert blocks[0].startswith('export PATH="$PWD/.venv/bin:$PATH"\n')
    text = "".join(blocks)
    assert "~/.cloudburst" not in text and "$CLOUDBURST_HOME" in text


@pytest.fixture(scope="module")
def workdir() -> Iterator[Path]:
    """A directory the unprivileged libvirtd and its QEMUs can enter (pytest's is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cloudburst-readme-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def libvirtd(workdir: Path) -> Iterator[Libvirtd]:
    with private_libvirtd(workdir / "libvirtd") as running:
        yield running


def daemon_for(workdir: Path, libvirtd: Libvirtd, *, restart: bool = False
               ) -> contextlib.AbstractContextManager[RunningDaemon]:
    """The daemon ``./scripts/run`` keeps running (``restart``: again, on its home as it is)."""
    # The home exists before the first start, readable by the libvirtd's user,
    # who boots the guest built in it.
    (workdir / "home").mkdir(mode=0o755, exist_ok=True)
    return start_daemon(workdir, env={"LIBVIRT_DEFAULT_URI": libvirtd.uri}, keep_conf=restart)


class Shell:
    """Runs README blocks as a user's shell would, after the first block's exports."""

    def __init__(self, workdir: Path) -> None:
        self.user_home = workdir / "user"
        self.user_home.mkdir(exist_ok=True)
        self.env: dict[str, str] = {}
        self.blocks = walkthrough_blocks()
        self.transcript: list[str] = []

    def talk_to(self, daemon: RunningDaemon) -> None:
        """Use ``daemon`` (found as a user's commands find it: CLOUDBURST_PORT, one_auth)."""
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        self.env = daemon_environment(daemon.home, daemon.port,
                                      {"HOME": str(self.user_home), "PATH": path})

    def run(self, index: int) -> str:
        script = self.blocks[0] + self.blocks[index] if index else self.blocks[0]
        completed = subprocess.run(["bash", "-e", "-c", script], cwd=REPO, env=self.env,
                                   capture_output=True, text=True, timeout=BLOCK_TIMEOUT,
                                   check=False)
        self.transcript.append(f"--- block {index} ---\n{completed.stdout}{completed.stderr}")
        assert completed.returncode == 0, "\n".join(self.transcript)
        return completed.stdout

    def json(self, *argv: str) -> object:
        completed = subprocess.run([*argv, "-j"], env=self.env, capture_output=True, text=True,
                                   timeout=60, check=True)
        return json.loads(completed.stdout)


def last_host(shell: Shell, vm_id: int) -> str:
    shown = shell.json("onevm", "show", str(vm_id))
    assert isinstance(shown, dict)
    return str(shown["HISTORY"][-1]["HOST"])


def console(libvirtd: Libvirtd, vm_id: int) -> str:
    """What guest ``vm_id`` printed on its serial console so far."""
    path = libvirtd.console_dir / f"one-{vm_id}.log"
    return path.read_text(errors="replace") if path.exists() else ""


@pytest.mark.timeout(1200)
def test_readme_walkthrough_bursts_and_comes_back(libvirtd: Libvirtd, workdir: Path) -> None:
    shell = Shell(workdir)
    with daemon_for(workdir, libvirtd) as daemon:
        shell.talk_to(daemon)
        shell.run(0)
        shell.run(1)  # the guest, the small kvm host
        guest = daemon.home / "guest"
        assert (guest / "vmlinuz").is_file() and (guest / "initrd.gz").is_file()
        # To see the guests boot (not in the README: the walkthrough needs no console log).
        subprocess.run(["onehost", "update", "localhost", "--append", "-"], env=shell.env,
                       input=f'CONSOLE_LOG_DIR = "{libvirtd.console_dir}"\n', text=True,
                       check=True, timeout=60)
        wait_for(lambda: shell.json("onehost", "show", "localhost")["HOST_SHARE"]["MAX_CPU"]
                 == 100, timeout=30)
        shell.run(2)  # the provider's scripts and oned.conf sections

    with daemon_for(workdir, libvirtd, restart=True) as daemon:  # "restart the daemon"
        shell.talk_to(daemon)
        listed = shell.run(3)
        assert "remote_provider" in listed
        wait_for(lambda: [host["STAT"] for host in shell.json("onehost", "list")]
                 == ["on", "on"], timeout=30)

        listed = shell.run(4)  # four VMs: two local, two burst
        assert [last_host(shell, vm_id) for vm_id in range(4)] == [
            "localhost", "localhost", "remote_provider", "remote_provider"], listed
        table = listed.split("  ID NAME", 1)[1].splitlines()[1:5]
        rows = {line.split()[0]: line.split() for line in table}
        assert rows["2"][2:] == ["runn", "remote_pro", "10.0.0.2"], listed  # HOST is 10 wide
        assert rows["3"][2:] == ["runn", "remote_pro", "10.0.0.3"], listed
        wait_for(lambda: all(GUEST_UP in console(libvirtd, vm_id) for vm_id in (0, 1)),
                 timeout=120, interval=0.5)

        listed = shell.run(5)  # capacity frees: back to local
        assert last_host(shell, 4) == "localhost", listed
        assert "VIRTUAL MACHINE 4 INFORMATION" in listed
        wait_for(lambda: GUEST_UP in console(libvirtd, 4), timeout=120, interval=0.5)

        shell.run(6)  # clean up
        wait_for(lambda: shell.json("onevm", "list") == [], timeout=120)

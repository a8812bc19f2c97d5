"""Start the real daemon as a separate process for end-to-end tests.

Usage (a plain module: import it, there is no conftest)::

    from daemon_fixture import start_daemon, wait_for

    def test_something(tmp_path):
        with start_daemon(tmp_path) as daemon:
            one = pyone.OneServer(daemon.url, session=daemon.session)
            ...

``start_daemon`` writes ``<home>/etc/oned.conf`` from the repository's
``share/etc/oned.conf`` plus ``oned_conf_extra`` (the daemon only writes its
default when the file is absent). Driver sections in the extra text
(``IM_MAD``, ``VM_MAD``, ``TM_MAD``) are added to the default ones; any other
attribute it sets (``MONITORING_INTERVAL = 1``, ``LOG = [...]``) replaces the
default's, which is commented out, because the daemon reads the first
occurrence of a setting. It then runs ``python -m cloudburst.daemon.main -f``
with ``CLOUDBURST_HOME``/``CLOUDBURST_PORT``/``PYTHONPATH`` set, waits until
the API answers and always stops the process (SIGTERM, then SIGKILL) on exit.
The daemon's output goes to ``<tmp_path>/oned.out``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
#: The shipped default: the repository's share/, else the copy inside the package.
DEFAULT_CONF = next(
    (path for path in (REPO / "share" / "etc" / "oned.conf",
                       SRC / "cloudburst" / "share" / "etc" / "oned.conf") if path.exists()),
    REPO / "share" / "etc" / "oned.conf")

#: Seconds allowed for the daemon to start answering, and to stop. Starting
#: (imports, migrations) took over 30 s at a load of 20 on the shared 2-core machine.
START_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

T = TypeVar("T")

#: Sections of which oned.conf may hold several; extra ones are added, not replacing.
REPEATABLE = frozenset({"IM_MAD", "VM_MAD", "TM_MAD"})
_ASSIGNMENT = re.compile(r"[ \t]*([A-Za-z0-9_]+)[ \t]*=")


@dataclass(frozen=True)
class RunningDaemon:
    """A daemon started by :func:`start_daemon`.

    Attributes:
        home: its ``CLOUDBURST_HOME``.
        port: the API port.
        session: ``oneadmin:<password>`` read from ``<home>/one_auth``.
        url: ``http://127.0.0.1:<port>/RPC2``.
        process: the daemon process.
    """

    home: Path
    port: int
    session: str
    url: str
    process: subprocess.Popen[bytes]

    @property
    def auth_file(self) -> Path:
        return self.home / "one_auth"

    def output(self) -> str:
        """What the daemon printed so far (its log, in the foreground)."""
        path = self.home.parent / "oned.out"
        return path.read_text(errors="replace") if path.exists() else ""


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


#: Every wait's bound is multiplied by this (``CLOUDBURST_TEST_PATIENCE``, default 2):
#: the bounds catch hangs, they are not speed goals, and test files run three at a
#: time on 2 cores that may be busy with more.
PATIENCE = float(os.environ.get("CLOUDBURST_TEST_PATIENCE", "2"))


def wait_for(predicate: Callable[[], T], timeout: float, interval: float = 0.1) -> T:
    """Poll ``predicate`` until it returns something truthy; return that.

    Exceptions raised by the predicate count as "not yet".

    Raises:
        TimeoutError: still falsy after ``timeout`` x :data:`PATIENCE` seconds (the
            last exception, if any, is chained).
    """
    deadline = time.monotonic() + timeout * PATIENCE
    last_error: Exception | None = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            raise TimeoutError(f"condition not met within {timeout:g} s") from last_error
        time.sleep(interval)


def _answers(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        return True
    return False


def _top_level(text: str) -> list[tuple[str | None, str]]:
    """Each line of an oned.conf text with the attribute it starts (None inside vectors)."""
    lines: list[tuple[str | None, str]] = []
    depth = 0
    for line in text.splitlines():
        code = line.split("#", 1)[0]
        match = _ASSIGNMENT.match(code) if depth == 0 else None
        lines.append((match.group(1).upper() if match else None, line))
        depth = max(depth + code.count("[") - code.count("]"), 0)
    return lines


def merged_conf(default: str, extra: str) -> str:
    """``default`` with ``extra`` appended and the settings ``extra`` redefines commented out."""
    replaced = {name for name, _ in _top_level(extra) if name} - REPEATABLE
    lines: list[str] = []
    replacing = False
    for name, line in _top_level(default):
        if name is not None:
            replacing = name in replaced
        elif not line.strip() or line.lstrip().startswith("#"):
            replacing = False
        lines.append(f"# replaced by the test: {line}" if replacing else line)
    return "\n".join(lines) + f"\n\n{extra}\n"


def daemon_environment(home: Path, port: int, extra: dict[str, str] | None = None
                       ) -> dict[str, str]:
    """The environment the daemon (and CLI subprocesses) run with."""
    env = dict(os.environ)
    env.pop("ONE_XMLRPC", None)
    env.pop("ONE_AUTH", None)
    env.update({
        "CLOUDBURST_HOME": str(home),
        "CLOUDBURST_PORT": str(port),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")])),
    })
    env.update(extra or {})
    return env


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM ``process``, then SIGKILL if it has not exited in time."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=STOP_TIMEOUT)


@contextlib.contextmanager
def start_daemon(tmp_path: Path, *, oned_conf_extra: str = "",
                 env: dict[str, str] | None = None,
                 preexec_fn: Callable[[], object] | None = None,
                 extra_args: list[str] | None = None,
                 keep_conf: bool = False) -> Iterator[RunningDaemon]:
    """Run a daemon with home ``<tmp_path>/home`` for the duration of the block.

    Args:
        tmp_path: a fresh directory (pytest's ``tmp_path``).
        oned_conf_extra: text appended to the default ``oned.conf``.
        env: extra environment variables for the daemon.
        preexec_fn: run in the daemon's process before it starts (e.g. to lower
            its open-file limit with ``resource.setrlimit``).
        extra_args: more ``oned`` arguments (e.g. ``--new-store``).
        keep_conf: keep the home's ``oned.conf`` when it has one (a restart
            after the test, or a user, edited it).

    Raises:
        RuntimeError: the daemon exited or did not answer in time (its output
            is in the message).
    """
    home = tmp_path / "home"
    (home / "etc").mkdir(parents=True, exist_ok=True)
    if not (keep_conf and (home / "etc" / "oned.conf").exists()):
        conf = merged_conf(DEFAULT_CONF.read_text(encoding="utf-8"), oned_conf_extra)
        (home / "etc" / "oned.conf").write_text(conf, encoding="utf-8")
    port = free_port()
    log_path = tmp_path / "oned.out"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "cloudburst.daemon.main", "-f", *(extra_args or [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            env=daemon_environment(home, port, env), cwd=tmp_path, preexec_fn=preexec_fn)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"the daemon did not start (exit status {process.poll()}):\n"
                    + log_path.read_text(errors="replace"))
            time.sleep(0.1)
        session = (home / "one_auth").read_text(encoding="utf-8").splitlines()[0].strip()
        yield RunningDaemon(home=home, port=port, session=session,
                            url=f"http://127.0.0.1:{port}/RPC2", process=process)
    finally:
        stop(process)

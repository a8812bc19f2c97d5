"""Running a driver script: no shell, own process group, bounded output, no secrets.

:func:`run_script` starts an argv list (never through a shell) in a new
session, so the script and everything it starts share one process group.
Cancelling the coroutine that awaits it, which is how the dispatcher enforces
``-w``, kills that whole group. Each of stdout and stderr is kept up to
``max_output`` bytes; the rest is read and dropped, so a chatty script never
blocks on a full pipe.

:func:`script_environment` builds a script's environment: the daemon's own
without the variables whose name (upper-cased) contains one of
:data:`SECRET_MARKERS` (credentials belong in the driver's own rc files), plus
what the driver adds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final

__all__ = [
    "MAX_OUTPUT",
    "SECRET_MARKERS",
    "ScriptResult",
    "is_secret_name",
    "run_script",
    "script_environment",
]

#: Bytes kept of each of a script's stdout and stderr; the rest is read and dropped.
MAX_OUTPUT: Final = 1024 * 1024

#: Substrings of environment variable names that are never passed to scripts.
SECRET_MARKERS: Final = ("SECRET", "PASSWORD", "TOKEN", "AWS_", "ONE_AUTH", "KEY")

#: Seconds a cancelled script's process group gets between SIGTERM and SIGKILL.
_KILL_GRACE: Final = 2.0
#: Seconds to keep reading after the script exited, while something it left
#: running in the background still holds its stdout or stderr open.
_PIPE_GRACE: Final = 1.0
#: Seconds between two checks of whether a signalled process group is gone.
_GROUP_CHECK_INTERVAL: Final = 0.02

# The script drivers' logger: its records keep the name they had before the
# runner moved out of cloudburst.drivers.script.
_log = logging.getLogger("cloudburst.drivers.script")
# Clean-ups that outlive a second cancellation; referenced so they are not collected.
_stopping: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """A finished script: exit code (negative: killed by that signal) and output."""

    exit_code: int
    stdout: str
    stderr: str


# -- environment ----------------------------------------------------------------


def is_secret_name(name: str) -> bool:
    """Whether an environment variable is withheld from scripts (see module docs)."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def script_environment(
    extra: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: the daemon's environment) without secrets, plus ``extra``.

    ``extra`` is added after the secrets are removed, so it is passed as given.
    """
    source = os.environ if base is None else base
    environment = {name: value for name, value in source.items() if not is_secret_name(name)}
    environment.update(extra)
    return environment


# -- running --------------------------------------------------------------------


class _BoundedOutput(asyncio.SubprocessProtocol):
    """Keeps the first ``limit`` bytes of stdout and stderr and drops the rest.

    Dropping (rather than pausing the pipe) keeps a chatty child from blocking
    on a full pipe.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, limit: int) -> None:
        self._limit = limit
        self.output = {1: bytearray(), 2: bytearray()}
        #: Set when the script itself has exited (and been reaped).
        self.exited: asyncio.Future[None] = loop.create_future()
        #: Set when, in addition, every pipe is closed.
        self.closed: asyncio.Future[None] = loop.create_future()

    def pipe_data_received(self, fd: int, data: bytes) -> None:
        buffer = self.output[fd]
        room = self._limit - len(buffer)
        if room > 0:
            buffer += data[:room]

    def process_exited(self) -> None:
        _resolve(self.exited)

    def connection_lost(self, exc: Exception | None) -> None:
        _resolve(self.closed)

    def text(self, fd: int) -> str:
        """What was kept of ``fd`` (1 or 2), decoded as UTF-8 (bad bytes replaced)."""
        return self.output[fd].decode("utf-8", errors="replace")


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def run_script(
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: str | os.PathLike[str],
    stdin_data: bytes | None = None,
    max_output: int = MAX_OUTPUT,
) -> ScriptResult:
    """Run ``argv`` (no shell) in a new session and collect its bounded output.

    Returns once the script has exited and its output is read; output still
    held open by a background process it left behind is waited for at most
    ``_PIPE_GRACE`` seconds, and that process is left alone.

    If the awaiting task is cancelled, the script's whole process group gets
    SIGTERM, then SIGKILL after ``_KILL_GRACE`` seconds, and the script is
    reaped before ``CancelledError`` propagates.

    Args:
        argv: the program and its arguments.
        env: the script's whole environment (see :func:`script_environment`).
        cwd: the directory it runs in.
        stdin_data: written to its stdin, which is then closed; None: stdin
            is ``/dev/null``.
        max_output: bytes kept of each of stdout and stderr.

    Raises:
        OSError: the script cannot be started (missing, not executable, bad
            interpreter line).
    """
    loop = asyncio.get_running_loop()
    output = _BoundedOutput(loop, max_output)
    transport, _ = await loop.subprocess_exec(
        lambda: output,
        *argv,
        stdin=asyncio.subprocess.DEVNULL if stdin_data is None else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
    )
    try:
        if stdin_data is not None:
            _feed(transport, stdin_data)
        await asyncio.shield(output.exited)
        done, _ = await asyncio.wait([output.closed], timeout=_PIPE_GRACE)
        if not done:
            _log.warning("%s exited but a process it started still holds its output", argv[0])
    except BaseException:
        await _stop_group_shielded(transport.get_pid(), output)
        raise
    finally:
        transport.close()
    exit_code = transport.get_returncode()
    assert exit_code is not None  # output.exited is set only after the exit
    return ScriptResult(exit_code, output.text(1), output.text(2))


def _feed(transport: asyncio.SubprocessTransport, data: bytes) -> None:
    """Write ``data`` to the child's stdin and close it."""
    pipe = transport.get_pipe_transport(0)
    assert isinstance(pipe, asyncio.WriteTransport)
    pipe.write(data)
    pipe.close()


# -- killing the process group --------------------------------------------------


async def _stop_group_shielded(pgid: int, output: _BoundedOutput) -> None:
    """:func:`_stop_group`, shielded so a second cancellation cannot leave the group running."""
    task = asyncio.ensure_future(_stop_group(pgid, output))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
    await asyncio.shield(task)


async def _stop_group(pgid: int, output: _BoundedOutput) -> None:
    """SIGTERM the group, SIGKILL it if still there after the grace, reap the script."""
    _signal_group(pgid, signal.SIGTERM)
    if not await _group_ended(pgid, output, _KILL_GRACE):
        _signal_group(pgid, signal.SIGKILL)
        await _group_ended(pgid, output, _KILL_GRACE)
    await output.exited


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ESRCH: the group is gone; EPERM: its id now belongs to someone else.
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


async def _group_ended(pgid: int, output: _BoundedOutput, timeout: float) -> bool:
    """Wait up to ``timeout`` seconds for the script to exit and its group to empty."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (output.exited.done() and not _group_alive(pgid)):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_CHECK_INTERVAL)
    return True


def _group_alive(pgid: int) -> bool:
    """Whether group ``pgid`` still has a running process that is ours to signal."""
    try:
        os.killpg(pgid, 0)
    except OSError:
        return False  # ESRCH: gone; EPERM: what is left is not ours to signal
    return _has_running_member(pgid)


def _has_running_member(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is running, zombies not counted.

    Reaping orphaned zombies is init's job, and some container inits never do
    it; such a zombie keeps ``killpg(pgid, 0)`` succeeding although it is dead.
    Without ``/proc`` the group is assumed to be running.
    """
    try:
        entries = os.listdir("/proc")
    except FileNotFoundError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8", errors="replace") as handle:
                stat = handle.read()
        except OSError:
            continue
        # After the command name in parentheses: state, ppid, pgrp, ...
        state, _, group, *_ = stat[stat.rindex(")") + 2 :].split()
        if int(group) == pgid and state != "Z":
            return True
    return False

"""Script drivers (``one_vmm_sh``, ``one_im_sh``): one executable per action, any language.

This is the cloud-bursting guide's contract. A VM driver whose ``ARGUMENTS``
end in ``provider`` runs ``remotes/vmm/provider/<action>``; an information
driver whose ``ARGUMENTS`` end in ``provider`` runs every executable probe in
``remotes/im/provider.d/``. Scripts get OpenNebula's arguments, so scripts
written for OpenNebula work unchanged; they always run on this machine, as
under ``one_vmm_sh``.

Scripts run from an argv list, never through a shell, each in its own process
group (session). Cancelling the coroutine that runs one, which is how the
dispatcher enforces ``-w``, kills the whole group: the script and anything it
started.

Environment of a script: the daemon's environment without the variables whose
name (upper-cased) contains ``SECRET``, ``PASSWORD``, ``TOKEN``, ``AWS_``,
``ONE_AUTH`` or ``KEY`` (credentials belong in the driver's own rc files), plus
``CLOUDBURST_HOME``, ``CLOUDBURST_DRIVER`` (the driver's ``NAME``),
``CLOUDBURST_ACTION``, and for VM actions ``CLOUDBURST_VM_ID``; ``deploy`` also
gets ``CLOUDBURST_ACTION_TOKEN``, the idempotency token, so a script can tell a
retry from a new deploy.

A script fails when it exits non-zero. The error text is what it wrote between
``ERROR MESSAGE --8<------`` and ``ERROR MESSAGE ------>8--`` lines on stderr
(OpenNebula's ``error_message`` helpers), else the last lines of stderr, else
of stdout, else the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloudburst.drivers.base import (
    ALL_ACTIONS,
    CORE_ACTIONS,
    DeploySpec,
    DriverContext,
    HostInfo,
    HostRef,
    InformationDriver,
    PollResult,
    PollState,
    ReportedVm,
    VmDriver,
    VmRef,
)
from cloudburst.errors import (
    DriverError,
    TemplateSyntaxError,
    UnsupportedActionError,
    one_line,
)
from cloudburst.model.capacity import instance_type_name
from cloudburst.template import parse

#: Bytes kept of each of a script's stdout and stderr; the rest is read and dropped.
MAX_OUTPUT: Final = 1024 * 1024

#: Substrings of environment variable names that are never passed to scripts.
SECRET_MARKERS: Final = ("SECRET", "PASSWORD", "TOKEN", "AWS_", "ONE_AUTH", "KEY")

#: OpenNebula 4.4+ ``run_probes`` arguments: collectd port and push interval.
_COLLECTD_PORT: Final = "4124"
_PUSH_INTERVAL: Final = "20"

_ERROR_BEGIN: Final = "ERROR MESSAGE --8<------"
_ERROR_END: Final = "ERROR MESSAGE ------>8--"
_TAIL_LINES: Final = 3

#: Seconds a cancelled script's process group gets between SIGTERM and SIGKILL.
_KILL_GRACE: Final = 2.0
#: Seconds to keep reading after the script exited, while something it left
#: running in the background still holds its stdout or stderr open.
_PIPE_GRACE: Final = 1.0
_GROUP_CHECK_INTERVAL: Final = 0.02

_OPTIONAL_ACTIONS: Final = ALL_ACTIONS - CORE_ACTIONS

_log = logging.getLogger(__name__)
# Clean-ups that outlive a second cancellation; referenced so they are not collected.
_stopping: set[asyncio.Task[None]] = set()


@dataclass(frozen=True, slots=True)
class ScriptResult:
    """A finished script: exit code (negative: killed by that signal) and output."""

    exit_code: int
    stdout: str
    stderr: str


class _Collector(asyncio.SubprocessProtocol):
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

    Raises:
        OSError: the script cannot be started (missing, not executable, bad
            interpreter line).
    """
    loop = asyncio.get_running_loop()
    collector = _Collector(loop, max_output)
    transport, _ = await loop.subprocess_exec(
        lambda: collector,
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
        await asyncio.shield(collector.exited)
        done, _ = await asyncio.wait([collector.closed], timeout=_PIPE_GRACE)
        if not done:
            _log.warning("%s exited but a process it started still holds its output", argv[0])
    except BaseException:
        await _stop_group_shielded(transport.get_pid(), collector)
        raise
    finally:
        transport.close()
    exit_code = transport.get_returncode()
    assert exit_code is not None  # collector.exited is set only after the exit
    return ScriptResult(exit_code, collector.text(1), collector.text(2))


def _feed(transport: asyncio.SubprocessTransport, data: bytes) -> None:
    pipe = transport.get_pipe_transport(0)
    assert isinstance(pipe, asyncio.WriteTransport)
    pipe.write(data)
    pipe.close()


async def _stop_group_shielded(pgid: int, collector: _Collector) -> None:
    # Shielded so that a second cancellation cannot leave the group running.
    task = asyncio.ensure_future(_stop_group(pgid, collector))
    _stopping.add(task)
    task.add_done_callback(_stopping.discard)
    await asyncio.shield(task)


async def _stop_group(pgid: int, collector: _Collector) -> None:
    """SIGTERM the group, SIGKILL it if still there after the grace, reap the script."""
    _signal_group(pgid, signal.SIGTERM)
    if not await _group_ended(pgid, collector, _KILL_GRACE):
        _signal_group(pgid, signal.SIGKILL)
        await _group_ended(pgid, collector, _KILL_GRACE)
    await collector.exited


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    # ESRCH: the group is gone; EPERM: its id now belongs to someone else.
    with contextlib.suppress(OSError):
        os.killpg(pgid, signum)


async def _group_ended(pgid: int, collector: _Collector, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (collector.exited.done() and not _group_alive(pgid)):
        if loop.time() >= deadline:
            return False
        await asyncio.sleep(_GROUP_CHECK_INTERVAL)
    return True


def _group_alive(pgid: int) -> bool:
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


def is_secret_name(name: str) -> bool:
    """Whether an environment variable is withheld from scripts (see module docs)."""
    upper = name.upper()
    return any(marker in upper for marker in SECRET_MARKERS)


def script_environment(
    extra: Mapping[str, str], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """``base`` (default: the daemon's environment) without secrets, plus ``extra``."""
    source = os.environ if base is None else base
    environment = {name: value for name, value in source.items() if not is_secret_name(name)}
    environment.update(extra)
    return environment


def failure_text(result: ScriptResult) -> str:
    """The one-line reason a script failed (see module docs for the order)."""
    marked = one_line(_marked_error(result.stderr))
    if marked:
        return marked
    for output in (result.stderr, result.stdout):
        lines = [line for line in output.splitlines() if line.strip()]
        if lines:
            return one_line("\n".join(lines[-_TAIL_LINES:]))
    if result.exit_code < 0:
        return f"killed by signal {-result.exit_code}"
    return f"exit code {result.exit_code}"


def _marked_error(stderr: str) -> str:
    found: list[str] = []
    inside = False
    for line in stderr.splitlines():
        marker = line.strip()
        if marker == _ERROR_BEGIN:
            inside = True
        elif marker == _ERROR_END:
            inside = False
        elif inside:
            found.append(line)
    return "\n".join(found)


def parse_poll(text: str) -> PollResult:
    """Parse a poll string (``STATE=a IP=10.0.0.5 ...``, spec 1.6).

    ``STATE`` becomes the state (missing: ``UNKNOWN``); every other single
    value goes to ``info``; vectors are ignored.

    Raises:
        DriverError: the text is not ``KEY=VALUE`` or ``STATE`` is not one of
            ``a p d e -``.
    """
    try:
        template = parse(text)
    except TemplateSyntaxError as exc:
        raise DriverError(f"poll output is not KEY=VALUE: {one_line(str(exc))}") from exc
    state = PollState.UNKNOWN
    info: dict[str, str] = {}
    for name, value in template:
        if not isinstance(value, str):
            continue
        if name == "STATE":
            state = _poll_state(value)
        else:
            info[name] = value
    return PollResult(state, info)


def _poll_state(value: str) -> PollState:
    try:
        return PollState(value.strip().lower())
    except ValueError:
        raise DriverError(f"poll output has an unknown STATE {value!r}") from None


def parse_host_info(text: str, logger: logging.Logger = _log) -> HostInfo:
    """Parse probe output into a :class:`HostInfo`.

    Single values become attributes (the last one of a name wins);
    ``VM=[ID, DEPLOY_ID, POLL]`` vectors become reported VMs (a malformed one is
    logged and skipped); other vectors (``DS=[...]``) are ignored.

    Raises:
        DriverError: the text is not template syntax.
    """
    try:
        template = parse(text)
    except TemplateSyntaxError as exc:
        raise DriverError(f"probe output is not KEY=VALUE: {one_line(str(exc))}") from exc
    attributes: dict[str, str] = {}
    vms: list[ReportedVm] = []
    capacity: dict[str, int] = {}
    for name, value in template:
        if isinstance(value, str):
            attributes[name] = value
        elif name == "CAPACITY":
            capacity.update(parse_capacity(value, logger))
        elif name == "VM":
            try:
                vms.append(_reported_vm(value))
            except DriverError as exc:
                logger.warning("probe output: skipped a VM vector: %s", exc)
    return HostInfo(attributes, tuple(vms), capacity)


def parse_capacity(fields: Mapping[str, str], logger: logging.Logger = _log) -> dict[str, int]:
    """``CAPACITY = [ M1_SMALL = 4 ]`` to ``{"m1.small": 4}`` (bad counts are skipped)."""
    limits: dict[str, int] = {}
    for key, count in fields.items():
        try:
            limits[instance_type_name(key)] = max(0, int(count))
        except ValueError:
            logger.warning("probe output: CAPACITY %s=%r is not a whole number", key, count)
    return limits


def _reported_vm(fields: Mapping[str, str]) -> ReportedVm:
    deploy_id = fields.get("DEPLOY_ID", "").strip()
    if not deploy_id:
        raise DriverError(f"no DEPLOY_ID in {dict(fields)}")
    try:
        vm_id = int(fields.get("ID", ""))
    except ValueError:
        raise DriverError(f"ID of {deploy_id} is not a number: {fields.get('ID')!r}") from None
    poll = fields.get("POLL")
    if poll is None:
        return ReportedVm(vm_id, deploy_id)
    try:
        result = parse_poll(poll)
    except DriverError as exc:
        result = PollResult(PollState.UNKNOWN, {"ERROR": str(exc)})
    return ReportedVm(vm_id, deploy_id, result)


def _last_argument(context: DriverContext, what: str) -> str:
    if not context.arguments:
        raise ValueError(
            f'driver {context.name}: ARGUMENTS of "{context.executable}" must end with the {what}'
        )
    return context.arguments[-1]


async def _run(
    context: DriverContext,
    script: Path,
    arguments: Sequence[str],
    environment: Mapping[str, str],
) -> ScriptResult:
    """Run a driver script from its own directory; ``OSError`` becomes ``DriverError``."""
    shown = _relative(context, script)
    extra = {
        "CLOUDBURST_HOME": str(context.etc_dir.parent),
        "CLOUDBURST_DRIVER": context.name,
        **environment,
    }
    try:
        result = await run_script(
            [str(script), *arguments], env=script_environment(extra), cwd=script.parent
        )
    except OSError as exc:
        raise DriverError(f"cannot run {shown}: {exc.strerror or exc}") from exc
    context.logger.debug("%s %s: exit code %d", shown, " ".join(arguments), result.exit_code)
    return result


def _relative(context: DriverContext, path: Path) -> str:
    try:
        return str(path.relative_to(context.remotes_dir))
    except ValueError:
        return str(path)


class _ScriptCapabilities:
    """``ScriptVmDriver.capabilities``: the optional actions whose scripts exist now.

    Looked up on every read, since operators add scripts while the daemon runs.
    """

    def __get__(self, driver: ScriptVmDriver | None, owner: type[ScriptVmDriver]) -> frozenset[str]:
        if driver is None:
            return frozenset()
        return frozenset(
            action for action in _OPTIONAL_ACTIONS if (driver.directory / action).is_file()
        )


class ScriptVmDriver(VmDriver):
    """``one_vmm_sh``: runs ``remotes/vmm/<provider>/<action>`` scripts.

    ``<provider>`` is the last word of ``ARGUMENTS``. Argument lists are
    OpenNebula's (3.2+): ``deploy <deployment file> <host> <vmid> <host>``,
    ``shutdown|cancel|reboot|reset|poll <deploy id> <host> <vmid> <host>``,
    ``save <deploy id> <checkpoint> <host> <vmid> <host>``,
    ``restore <checkpoint> <host> <deploy id> <vmid> <host>``,
    ``migrate <deploy id> <dst host> <src host> <vmid> <src host>``, any other
    optional action ``<deploy id> <args...> <host> <vmid> <host>``.

    Retries: any :class:`DriverError` is retryable (like OpenNebula's ``-r``;
    the token makes ``deploy`` safe to repeat) **except**
    :class:`UnsupportedActionError`, a subclass raised when the action's script
    is missing: the dispatcher must test for it before consulting
    :attr:`retryable` and never retry it.

    ``find`` always returns ``None``: a script cannot be asked, it gets the
    token instead (``CLOUDBURST_ACTION_TOKEN``) when ``deploy`` is replayed.
    """

    capabilities = _ScriptCapabilities()
    retryable: tuple[type[Exception], ...] = (DriverError,)

    def __init__(self, context: DriverContext) -> None:
        """Bind the driver to ``remotes/vmm/<last word of ARGUMENTS>``.

        Raises:
            ValueError: ``ARGUMENTS`` is empty.
        """
        super().__init__(context)
        self.provider = _last_argument(context, "provider directory name")
        self.directory = context.remotes_dir / "vmm" / self.provider

    def script(self, action: str) -> Path:
        """The executable for ``action``.

        Raises:
            UnsupportedActionError: no such file.
            DriverError: the file is not executable.
        """
        path = self.directory / action
        if not path.is_file():
            raise UnsupportedActionError(
                f'Action "{action}" is not supported by provider {self.provider} '
                f"(no executable {_relative(self.context, path)})"
            )
        if not os.access(path, os.X_OK):
            raise DriverError(f"{action}: {_relative(self.context, path)} is not executable")
        return path

    async def deploy(self, spec: DeploySpec) -> str:
        """Run ``deploy``; the first word it prints is the deploy id."""
        host = spec.host.name
        output = await self._call(
            "deploy",
            spec.vm_id,
            [str(spec.deployment_file), host, str(spec.vm_id), host],
            token=spec.token,
        )
        for line in output.splitlines():
            words = line.split()
            if words:
                return words[0]
        raise DriverError("deploy: the script printed no deploy id")

    async def shutdown(self, vm: VmRef) -> None:
        await self._call("shutdown", vm.vm_id, _vm_arguments(vm))

    async def cancel(self, vm: VmRef) -> None:
        await self._call("cancel", vm.vm_id, _vm_arguments(vm))

    async def reboot(self, vm: VmRef) -> None:
        await self._call("reboot", vm.vm_id, _vm_arguments(vm))

    async def reset(self, vm: VmRef) -> None:
        await self._call("reset", vm.vm_id, _vm_arguments(vm))

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """Run one ``poll`` per VM, at most ``-t`` at once.

        A VM whose poll fails or prints garbage is reported ``UNKNOWN`` with
        ``info["ERROR"]`` set; the other VMs are unaffected.

        Raises:
            UnsupportedActionError: there is no ``poll`` script at all.
        """
        self.script("poll")
        limit = asyncio.Semaphore(self.context.options.threads)

        async def poll_one(vm: VmRef) -> tuple[int, PollResult]:
            async with limit:
                try:
                    output = await self._call("poll", vm.vm_id, _vm_arguments(vm))
                    return vm.vm_id, parse_poll(output)
                except DriverError as exc:
                    return vm.vm_id, PollResult(PollState.UNKNOWN, {"ERROR": str(exc)})

        return dict(await asyncio.gather(*(poll_one(vm) for vm in vms)))

    async def run_optional(self, action: str, vm: VmRef, *args: str) -> str:
        """Run an optional action's script; returns its stdout, stripped.

        Raises:
            UnsupportedActionError: not an optional action, or no script for it.
            ValueError: ``save``, ``restore`` or ``migrate`` without exactly one
                argument (checkpoint path, checkpoint path, destination host).
        """
        if action not in _OPTIONAL_ACTIONS:
            raise UnsupportedActionError(
                f'Action "{action}" is not supported by provider {self.provider}'
            )
        output = await self._call(action, vm.vm_id, _optional_arguments(action, vm, args))
        return output.strip()

    async def _call(
        self, action: str, vm_id: int, arguments: Sequence[str], token: str | None = None
    ) -> str:
        """Run ``action``'s script; return its stdout or raise ``DriverError``."""
        environment = {"CLOUDBURST_ACTION": action, "CLOUDBURST_VM_ID": str(vm_id)}
        if token is not None:
            environment["CLOUDBURST_ACTION_TOKEN"] = token
        result = await _run(self.context, self.script(action), arguments, environment)
        if result.exit_code != 0:
            raise DriverError(f"{action}: {failure_text(result)}")
        return result.stdout


def _vm_arguments(vm: VmRef) -> list[str]:
    return [vm.deploy_id, vm.host.name, str(vm.vm_id), vm.host.name]


def _optional_arguments(action: str, vm: VmRef, args: Sequence[str]) -> list[str]:
    host = vm.host.name
    tail = [str(vm.vm_id), host]
    if action == "save":
        return [vm.deploy_id, _single(action, args), host, *tail]
    if action == "restore":
        return [_single(action, args), host, vm.deploy_id, *tail]
    if action == "migrate":
        return [vm.deploy_id, _single(action, args), host, *tail]
    return [vm.deploy_id, *args, host, *tail]


def _single(action: str, args: Sequence[str]) -> str:
    if len(args) != 1:
        raise ValueError(f"{action} takes exactly one argument, got {len(args)}")
    return args[0]


class ScriptInformationDriver(InformationDriver):
    """``one_im_sh``: runs the probes in ``remotes/im/<name>.d/`` and merges their output.

    ``<name>`` is the last word of ``ARGUMENTS``. Probes are the executable
    files of that directory (dot files and non-executables skipped), run one
    after another in byte order of their names (``LC_ALL=C ls``), each as
    ``<probe> <name> <var_dir>/datastores 4124 20 <host id> <host name>``
    (OpenNebula 4.4's ``run_probes`` arguments). Their outputs, joined with
    newlines, are parsed as by :func:`parse_host_info`.
    """

    def __init__(self, context: DriverContext) -> None:
        """Bind the driver to ``remotes/im/<last word of ARGUMENTS>.d``.

        Raises:
            ValueError: ``ARGUMENTS`` is empty.
        """
        super().__init__(context)
        self.probe_set = _last_argument(context, "probe set name")
        self.directory = context.remotes_dir / "im" / f"{self.probe_set}.d"

    def probes(self) -> list[Path]:
        """The probes to run, in order.

        Raises:
            DriverError: the probe directory is missing or unreadable.
        """
        try:
            names = sorted(os.listdir(self.directory))
        except FileNotFoundError:
            raise DriverError(f"probe directory {self.directory} does not exist") from None
        except OSError as exc:
            raise DriverError(f"probe directory {self.directory}: {exc.strerror}") from None
        paths = [self.directory / name for name in names if not name.startswith(".")]
        return [path for path in paths if path.is_file() and os.access(path, os.X_OK)]

    async def monitor(self, host: HostRef) -> HostInfo:
        """Run every probe; the first that fails aborts with its error."""
        arguments = [
            self.probe_set,
            str(self.context.var_dir / "datastores"),
            _COLLECTD_PORT,
            _PUSH_INTERVAL,
            str(host.id),
            host.name,
        ]
        outputs: list[str] = []
        for probe in self.probes():
            result = await _run(self.context, probe, arguments, {"CLOUDBURST_ACTION": "monitor"})
            if result.exit_code != 0:
                raise DriverError(f"probe {probe.name} failed: {failure_text(result)}")
            outputs.append(result.stdout)
        return parse_host_info("\n".join(outputs), self.context.logger)

"""In-process test drivers (``one_im_dummy``, ``one_vmm_dummy``) with failure injection.

They answer at once, like OpenNebula's dummy drivers, so the core, the
scheduler and benchmarks run without any hypervisor. Every action can be made
to fail, stall or report a given poll state, to exercise the core's failure
paths. The outcome of action ``X`` is read from, in order:

1. the host attribute ``DUMMY_<X upper>`` (e.g. ``DUMMY_DEPLOY=capacity``);
2. the file ``<var_dir>/dummy/<x>`` (``echo failure > var/dummy/deploy``), looked
   at once per turn of the event loop: a change shows from the next turn on;
3. otherwise the action succeeds.

Values (case-insensitive keyword, message kept as written):

* ``success``;
* ``failure`` or ``failure: <message>``: :class:`~cloudburst.errors.DriverError`;
* ``capacity[: <message>]``: :class:`~cloudburst.errors.CapacityError`;
* ``transient[: <message>]``: :class:`~cloudburst.errors.TransientDriverError`;
* ``sleep <seconds>``: wait, then succeed;
* ``hang``: wait forever (only the dispatcher's ``-w`` timeout ends it);
* for ``poll`` only: ``gone``, ``error``, ``paused``, ``unknown``: that
  :class:`~cloudburst.drivers.base.PollState` for every VM.

Any other value fails the action with a :class:`DriverError` naming the value.
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import random
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cloudburst.drivers.base import (
    OPTIONAL_ACTIONS,
    DeploySpec,
    DeviceSpec,
    DriverContext,
    HostInfo,
    HostRef,
    InformationDriver,
    PollResult,
    PollState,
    ResizeSpec,
    VmDriver,
    VmRef,
)
from cloudburst.errors import (
    CapacityError,
    DriverError,
    TransientDriverError,
    one_line,
)

_ERRORS: Final[dict[str, tuple[type[DriverError], str]]] = {
    "failure": (DriverError, "failure"),
    "capacity": (CapacityError, "no capacity"),
    "transient": (TransientDriverError, "transient failure"),
}

_POLL_STATES: Final[dict[str, PollState]] = {
    "gone": PollState.GONE,
    "error": PollState.ERROR,
    "paused": PollState.PAUSED,
    "unknown": PollState.UNKNOWN,
}

_TOTAL_CPU: Final = 800
_TOTAL_MEMORY_KB: Final = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Outcome:
    """What an injected action does.

    Attributes:
        error: the error class raised (with ``message``) after the delay, if any.
        message: the raised error's message.
        delay: seconds to wait first; ``None`` means forever (``hang``).
        state: the poll state to report (``poll`` only).
    """

    error: type[DriverError] | None = None
    message: str = ""
    delay: float | None = 0.0
    state: PollState = PollState.ACTIVE

    async def apply(self) -> None:
        """Wait as told, then raise the injected error, if any."""
        if self.delay is None:
            await asyncio.Event().wait()
        elif self.delay > 0:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error(self.message)


_SUCCESS: Final = Outcome()


def parse_outcome(action: str, value: str) -> Outcome:
    """Turn an injection value for ``action`` into an :class:`Outcome`.

    Unknown values give an outcome that fails with a :class:`DriverError`
    naming the value, so a typo shows up as a failed action, not a success.
    """
    text = value.strip()
    keyword, colon, message = text.partition(":")
    keyword = keyword.strip().lower()
    if keyword in _ERRORS:
        error, default = _ERRORS[keyword]
        return Outcome(error=error, message=one_line(message) or f"dummy {action} {default}")
    outcome = None if colon else _parse_word(action, keyword)
    if outcome is None:
        return Outcome(
            error=DriverError, message=f"dummy {action}: unknown injected outcome {text!r}"
        )
    return outcome


def _parse_word(action: str, keyword: str) -> Outcome | None:
    if keyword == "success":
        return _SUCCESS
    if keyword == "hang":
        return Outcome(delay=None)
    if action == "poll" and keyword in _POLL_STATES:
        return Outcome(state=_POLL_STATES[keyword])
    words = keyword.split()
    if len(words) == 2 and words[0] == "sleep":
        try:
            seconds = float(words[1])
        except ValueError:
            return None
        if math.isfinite(seconds) and seconds >= 0:
            return Outcome(delay=seconds)
    return None


# Injection values repeat (one per deploy of a benchmark); parse each once.
_cached_outcome = functools.lru_cache(maxsize=256)(parse_outcome)


class _Injector:
    """Reads injected outcomes from host attributes and ``<var_dir>/dummy/``.

    A file is stat-ed once per action and turn of the event loop (the actions of
    one turn are simultaneous: a file written meanwhile may as well have landed after
    all of them) and read again only when its inode, size or modification time
    changed. A ``stat`` gives up the GIL: on a loop beside busy threads, getting it
    back cost ~50 us, once per deploy of a burst.
    """

    def __init__(self, context: DriverContext) -> None:
        self._directory = str(context.var_dir / "dummy")
        self._files: dict[str, tuple[tuple[int, int, int], str]] = {}
        #: What each action's file said in this turn of the loop (cleared after it).
        self._this_turn: dict[str, str | None] = {}

    def outcome(self, action: str, host: HostRef) -> Outcome:
        value = host.attributes.get(f"DUMMY_{action.upper()}")
        if value is None:
            value = self._file_value(action)
        return _SUCCESS if value is None else _cached_outcome(action, value)

    def _file_value(self, action: str) -> str | None:
        if action in self._this_turn:
            return self._this_turn[action]
        value = self._read_file(action)
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # not on a loop: no turn to share it with
            return value
        if not self._this_turn:
            loop.call_soon(self._this_turn.clear)
        self._this_turn[action] = value
        return value

    def _read_file(self, action: str) -> str | None:
        path = os.path.join(self._directory, action)
        try:
            status = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        stamp = (status.st_ino, status.st_size, status.st_mtime_ns)
        cached = self._files.get(action)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        try:
            with open(path, encoding="utf-8") as handle:
                value = handle.read()
        except OSError as exc:
            raise DriverError(f"dummy {action}: cannot read {path}: {exc.strerror}") from exc
        self._files[action] = (stamp, value)
        return value


class DummyInformationDriver(InformationDriver):
    """Reports a fixed host at once: 8 CPUs (800) and 16 GiB.

    Host attributes ``DUMMY_TOTALCPU`` and ``DUMMY_TOTALMEMORY`` (KB) replace
    the totals; the host is always reported empty (free = total).
    """

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._injector = _Injector(context)

    async def monitor(self, host: HostRef) -> HostInfo:
        await self._injector.outcome("monitor", host).apply()
        cpu = _total(host, "DUMMY_TOTALCPU", _TOTAL_CPU)
        memory = _total(host, "DUMMY_TOTALMEMORY", _TOTAL_MEMORY_KB)
        return HostInfo(
            attributes={
                "HYPERVISOR": "dummy",
                "HOSTNAME": host.name,
                "TOTALCPU": cpu,
                "CPUSPEED": "2200",
                "TOTALMEMORY": memory,
                "USEDMEMORY": "0",
                "FREEMEMORY": memory,
                "FREECPU": cpu,
                "USEDCPU": "0",
            }
        )


def _total(host: HostRef, attribute: str, default: int) -> str:
    value = host.attributes.get(attribute)
    if value is None:
        return str(default)
    if not value.strip().isdigit():
        raise DriverError(f"host {host.name}: {attribute} must be a whole number, got {value!r}")
    return value.strip()


class DummyVmDriver(VmDriver):
    """Pretends to run VMs; every action succeeds unless injected otherwise.

    ``deploy`` is idempotent on the token: a repeated token returns the deploy
    id created first, and ``find`` returns it too, until the VM is shut down or
    cancelled. ``poll`` reports every VM ``ACTIVE`` (with ``NETTX=12345``),
    including VMs this process never deployed, so a daemon restart keeps them,
    except instances it powered off or saved, which it reports gone (``d``).
    :attr:`calls` keeps the latest actions that reached it, and :attr:`polled`
    the VMs of its latest polls, for tests.
    """

    capabilities = frozenset(OPTIONAL_ACTIONS)
    #: Its first poll reports all its later ones will (nothing is learnt after the start).
    fresh_poll_delays = (0.0,)
    polls_across_hosts = True

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._injector = _Injector(context)
        self._by_token: dict[str, str] = {}
        #: Suffixes of deploy ids: not secrets, and os.urandom per deploy gave up the GIL.
        self._suffixes = random.Random(os.urandom(16))
        self._token_of: dict[str, str] = {}
        #: Instances powered off or saved: polls report them gone (OpenNebula's ``d``).
        self._off: set[str] = set()
        #: Instances powered off as they left their host (undeploy), until powered on.
        self.left: set[str] = set()
        #: Every action that reached the driver, in order: ``(method, vm id)``.
        self.calls: deque[tuple[str, int]] = deque(maxlen=10_000)
        #: The VMs asked about in each of the latest ``poll`` calls, in order.
        self.polled: deque[tuple[int, ...]] = deque(maxlen=256)

    async def deploy(self, spec: DeploySpec) -> str:
        try:
            await self._injector.outcome("deploy", spec.host).apply()
        except DriverError as exc:
            # An injected failure fires before anything is created.
            exc.nothing_created = spec.token not in self._by_token
            raise
        deploy_id = self._by_token.get(spec.token)
        self.calls.append(("deploy", spec.vm_id))
        if deploy_id is None:
            deploy_id = f"dummy-{spec.vm_id}-{self._suffixes.getrandbits(32):08x}"
            self._by_token[spec.token] = deploy_id
            self._token_of[deploy_id] = spec.token
        return deploy_id

    async def find(self, spec: DeploySpec) -> str | None:
        return self._by_token.get(spec.token)

    async def shutdown(self, vm: VmRef) -> None:
        await self._injector.outcome("shutdown", vm.host).apply()
        self.calls.append(("shutdown", vm.vm_id))
        self._forget(vm.deploy_id)

    async def cancel(self, vm: VmRef) -> None:
        await self._injector.outcome("cancel", vm.host).apply()
        self.calls.append(("cancel", vm.vm_id))
        self._forget(vm.deploy_id)

    async def reboot(self, vm: VmRef) -> None:
        await self._injector.outcome("reboot", vm.host).apply()
        self.calls.append(("reboot", vm.vm_id))

    async def reset(self, vm: VmRef) -> None:
        await self._injector.outcome("reset", vm.host).apply()
        self.calls.append(("reset", vm.vm_id))

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """Poll ``vms``; the injected outcome is resolved once per host.

        Injected delays and errors of different hosts apply one after another.
        """
        self.polled.append(tuple(vm.vm_id for vm in vms))
        states: dict[int, PollState] = {}
        for vm in vms:
            if vm.host.id not in states:
                outcome = self._injector.outcome("poll", vm.host)
                await outcome.apply()
                states[vm.host.id] = outcome.state
        return {vm.vm_id: PollResult(PollState.GONE if vm.deploy_id in self._off
                                     else states[vm.host.id], {"NETTX": "12345"}) for vm in vms}

    async def reconfigure(self, vm: VmRef, spec: DeploySpec) -> bool:
        """Succeeds at once (as OpenNebula's dummy ``update_conf``) unless injected."""
        await self._injector.outcome("reconfigure", vm.host).apply()
        self.calls.append(("reconfigure", vm.vm_id))
        return True

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        await self._injector.outcome("poweroff", vm.host).apply()
        self.calls.append(("poweroff", vm.vm_id))
        self._off.add(vm.deploy_id)
        if leaving:
            self.left.add(vm.deploy_id)

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        await self._injector.outcome("poweron", vm.host).apply()
        self.calls.append(("poweron", vm.vm_id))
        self._off.discard(vm.deploy_id)
        self.left.discard(vm.deploy_id)
        return vm.deploy_id

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        await self._injector.outcome("save", vm.host).apply()
        self.calls.append(("save", vm.vm_id))
        self._off.add(vm.deploy_id)

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        await self._injector.outcome("restore", vm.host).apply()
        self.calls.append(("restore", vm.vm_id))
        self._off.discard(vm.deploy_id)
        return vm.deploy_id

    async def migrate(self, vm: VmRef, destination: HostRef, *, live: bool) -> str:
        await self._injector.outcome("migrate", destination).apply()
        self.calls.append(("migrate", vm.vm_id))
        return vm.deploy_id

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        await self._injector.outcome("resize", vm.host).apply()
        self.calls.append(("resize", vm.vm_id))

    async def snapshot_create(self, vm: VmRef, snapshot_id: int, name: str) -> str:
        await self._injector.outcome("snapshot_create", vm.host).apply()
        self.calls.append(("snapshot_create", vm.vm_id))
        return f"{vm.deploy_id}-snap{snapshot_id}"

    async def snapshot_revert(self, vm: VmRef, provider_name: str) -> None:
        await self._injector.outcome("snapshot_revert", vm.host).apply()
        self.calls.append(("snapshot_revert", vm.vm_id))

    async def snapshot_delete(self, vm: VmRef, provider_name: str) -> None:
        await self._injector.outcome("snapshot_delete", vm.host).apply()
        self.calls.append(("snapshot_delete", vm.vm_id))

    async def attach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._injector.outcome("attach_disk", vm.host).apply()
        self.calls.append(("attach_disk", vm.vm_id))

    async def detach_disk(self, vm: VmRef, disk: DeviceSpec) -> None:
        await self._injector.outcome("detach_disk", vm.host).apply()
        self.calls.append(("detach_disk", vm.vm_id))

    async def attach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._injector.outcome("attach_nic", vm.host).apply()
        self.calls.append(("attach_nic", vm.vm_id))

    async def detach_nic(self, vm: VmRef, nic: DeviceSpec) -> None:
        await self._injector.outcome("detach_nic", vm.host).apply()
        self.calls.append(("detach_nic", vm.vm_id))

    def instances(self) -> dict[str, str]:
        """Deploy ids this driver holds (created and not yet shut down or cancelled)."""
        return dict(self._token_of)

    def _forget(self, deploy_id: str) -> None:
        self._off.discard(deploy_id)
        token = self._token_of.pop(deploy_id, None)
        if token is not None:
            del self._by_token[token]

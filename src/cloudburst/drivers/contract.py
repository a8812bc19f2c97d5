"""Check a script provider against the driver contract, without a daemon.

:class:`ContractTest` drives a provider's scripts through the real
:class:`~cloudburst.drivers.script.ScriptVmDriver` and
:class:`~cloudburst.drivers.script.ScriptInformationDriver` -- the same
argument lists, environment, output parsing and error extraction the daemon
uses -- and judges each contract point:

1. ``probes``: the probes run; ``PUBLIC_CLOUD=YES`` and ``HYPERVISOR`` are
   reported (else the host is local); capacity values are numbers; ``VM=[...]``
   reports parse.
2. ``deploy`` prints a deploy id; ``deploy.idempotent``: the same
   ``CLOUDBURST_ACTION_TOKEN`` again gives the same id (a second resource is a
   warning, and it is cancelled).
3. ``poll`` prints a valid ``STATE`` letter and ``KEY=VALUE`` words.
4. ``reboot``, ``reset``, ``save``/``restore``: succeed, or are reported "not
   supported" when their script is missing (which the daemon turns into a
   clear error on the VM).
5. ``shutdown`` removes the resource; ``poll.gone`` then reports ``STATE=d``;
   ``cancel.gone``: cancelling the already-gone resource succeeds.
6. ``cancel`` removes a second, fresh resource.
7. ``errors``: a deploy that cannot work (its deployment file is missing)
   fails with a message, not silently.

Each point is one :class:`Check` (``PASS``, ``FAIL`` or ``WARN`` with the
reason). Every action runs under a time limit; a script that overruns is
killed with its process group, as the daemon's ``-w`` does. Whatever the run
created is cancelled at the end.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Final, TypeVar

from cloudburst.drivers.base import (
    ALL_ACTIONS,
    CORE_ACTIONS,
    DeploySpec,
    DriverContext,
    DriverOptions,
    HostInfo,
    HostRef,
    PollResult,
    PollState,
    VmRef,
)
from cloudburst.drivers.script import ScriptInformationDriver, ScriptVmDriver
from cloudburst.errors import DriverError, UnsupportedActionError, one_line
from cloudburst.model.cloud_sections import cloud_sections, section_for
from cloudburst.template import Template

T = TypeVar("T")

#: Optional actions checked one by one; the rest are listed in one line.
_CHECKED_OPTIONAL: Final = ("save", "restore")
_OTHER_OPTIONAL: Final = tuple(sorted(ALL_ACTIONS - CORE_ACTIONS - set(_CHECKED_OPTIONAL)))
_CANCEL_INSTEAD: Final = "the daemon cancels the VM instead (hard stop)"
#: Host attributes that must be numbers when a probe reports them.
_NUMERIC_KEYS: Final = ("TOTALCPU", "TOTALMEMORY", "USEDCPU", "USEDMEMORY", "FREECPU",
                        "FREEMEMORY", "CPUSPEED")


class Status(Enum):
    PASS = "PASS"
    FAIL = "FAIL"
    WARN = "WARN"


@dataclass(frozen=True, slots=True)
class Check:
    """One contract point's verdict."""

    status: Status
    point: str
    reason: str

    def line(self) -> str:
        return f"{self.status.value:<4}  {self.point:<18} {self.reason}"


@dataclass(frozen=True, slots=True)
class ContractSettings:
    """What to test and how.

    Attributes:
        provider: the provider's name (``remotes/vmm/<provider>``).
        remotes_dir: the remotes tree holding ``im/`` and ``vmm/``.
        home: ``CLOUDBURST_HOME`` given to the scripts (their state, their rc files).
        probe_set: the probe set (``remotes/im/<probe_set>.d``); default: ``provider``.
        timeout: seconds each action may run.
        host: the host name given to the scripts.
        host_id: the host id given to the probes.
        vm_id: the VM id given to the scripts.
        template: the VM template to deploy; default ``CPU=1``, ``MEMORY=128`` and
            ``PUBLIC_CLOUD=[TYPE=<provider>]``.
    """

    provider: str
    remotes_dir: Path
    home: Path
    probe_set: str = ""
    timeout: float = 30.0
    host: str = "driver-test"
    host_id: int = 0
    vm_id: int = 99999
    template: Template | None = None


@dataclass(slots=True)
class _Outcome:
    """What one timed action did: its value, or why it failed."""

    value: object = None
    error: str = ""
    unsupported: bool = False
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error


class _Warnings(logging.Handler):
    """Collects what the driver logs while parsing probe output."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(one_line(record.getMessage(), 300))


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _poll_words(result: PollResult) -> str:
    words = [f"STATE={result.state.value}"]
    words += [f"{key}={value}" for key, value in result.info.items() if key != "ERROR"]
    return " ".join(words)


def _silent_failure(message: str) -> bool:
    """Whether a script failure carried no message of its own (see ``failure_text``)."""
    tail = message.rsplit(": ", 1)[-1]
    return tail.startswith(("exit code ", "killed by signal "))


@dataclass
class ContractTest:
    """One run of the contract against a provider (see the module docstring)."""

    settings: ContractSettings
    report: Callable[[Check], None] = field(default=lambda check: None)
    checks: list[Check] = field(default_factory=list)

    def __post_init__(self) -> None:
        settings = self.settings
        self.probe_set = settings.probe_set or settings.provider
        self._run_id = uuid.uuid4().hex[:8]
        self._created: list[str] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="cloudburst-driver-test-"))
        self.host = HostRef(id=settings.host_id, name=settings.host)
        self.vm_driver = ScriptVmDriver(self._context("one_vmm_sh", f"vmm_{settings.provider}",
                                                      settings.provider))
        self.im_driver = ScriptInformationDriver(
            self._context("one_im_sh", f"im_{self.probe_set}", self.probe_set))

    def _context(self, executable: str, name: str, argument: str) -> DriverContext:
        settings = self.settings
        return DriverContext(
            name=name, executable=executable, arguments=(argument,),
            options=DriverOptions(threads=4, retries=0, timeout=settings.timeout),
            etc_dir=settings.home / "etc", remotes_dir=settings.remotes_dir,
            var_dir=settings.home / "var", install_id=f"driver-test-{self._run_id}",
        )

    # -- bookkeeping ---------------------------------------------------------------

    def _add(self, status: Status, point: str, reason: str) -> None:
        check = Check(status, point, one_line(reason, 400))
        self.checks.append(check)
        self.report(check)

    @property
    def failed(self) -> bool:
        return any(check.status is Status.FAIL for check in self.checks)

    async def _timed(self, call: Callable[[], Awaitable[T]]) -> _Outcome:
        start = time.monotonic()
        outcome = _Outcome()
        try:
            outcome.value = await asyncio.wait_for(call(), timeout=self.settings.timeout)
        except TimeoutError:
            outcome.error = (f"did not finish within {self.settings.timeout:g} s "
                             "(its process group was killed)")
        except UnsupportedActionError as exc:
            outcome.error, outcome.unsupported = exc.message, True
        except DriverError as exc:
            outcome.error = exc.message
        outcome.seconds = time.monotonic() - start
        return outcome

    def _token(self, number: int) -> str:
        return f"driver-test-{self._run_id}-vm{self.settings.vm_id}-{number}"

    def _ref(self, deploy_id: str) -> VmRef:
        return VmRef(vm_id=self.settings.vm_id, deploy_id=deploy_id, host=self.host)

    def _spec(self, token: str, path: Path | None = None) -> DeploySpec:
        template = self._template()
        # The host under test is the only site of its type here.
        chosen = section_for(cloud_sections(template), self.host.name, self.settings.provider,
                             1)
        return DeploySpec(
            vm_id=self.settings.vm_id, host=self.host,
            deployment_file=path or self._workdir / "deployment.0",
            template=template, token=token,
            memory_mb=int(float(template.get("MEMORY") or 0)),
            cpu=float(template.get("CPU") or 0),
            section=None if chosen is None else chosen.attributes,
        )

    def _template(self) -> Template:
        template = (self.settings.template.copy() if self.settings.template is not None
                    else Template([("CPU", "1"), ("MEMORY", "128"),
                                   ("PUBLIC_CLOUD", {"TYPE": self.settings.provider})]))
        template.set("VMID", str(self.settings.vm_id))
        if template.get("NAME") is None:
            template.set("NAME", f"driver-test-{self.settings.vm_id}")
        return template

    # -- the run -------------------------------------------------------------------

    async def run(self) -> list[Check]:
        """Check every contract point; returns the checks (also passed to ``report``)."""
        try:
            await self._run()
        finally:
            await self._cleanup()
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self.checks

    async def _run(self) -> None:
        await self._probes()
        spec = self._spec(self._token(1))
        spec.deployment_file.write_text(spec.template.to_xml("TEMPLATE", plain=True),
                                        encoding="utf-8")
        deploy_id = await self._deploy(spec)
        if deploy_id is not None:
            await self._idempotent(spec, deploy_id)
        else:
            self._add(Status.WARN, "deploy.idempotent", "not checked: deploy gave no id")
        await self._poll(deploy_id)
        for action in ("reboot", "reset"):
            await self._simple(action, deploy_id)
        await self._save_restore(deploy_id)
        self._optional()
        gone = await self._shutdown(deploy_id)
        await self._cancel_gone(gone or deploy_id)
        await self._cancel_fresh()
        await self._errors()

    async def _probes(self) -> None:
        try:
            probes = self.im_driver.probes()
        except DriverError as exc:
            self._add(Status.FAIL, "probes", exc.message)
            return
        where = f"im/{self.probe_set}.d"
        if not probes:
            self._add(Status.FAIL, "probes", f"no executable probe in {where} "
                                             "(chmod +x the probe files)")
            return
        collector = _Warnings()
        logger = self.im_driver.context.logger
        logger.addHandler(collector)
        try:
            outcome = await self._timed(lambda: self.im_driver.monitor(self.host))
        finally:
            logger.removeHandler(collector)
        if not outcome.ok:
            self._add(Status.FAIL, "probes", outcome.error)
            return
        info = outcome.value
        assert isinstance(info, HostInfo)
        names = ", ".join(probe.name for probe in probes)
        self._add(Status.PASS, "probes", f"{len(probes)} probe(s) ran in "
                                         f"{outcome.seconds:.2f} s: {names}")
        self._identity(info)
        self._capacity(info, collector.messages)
        self._reported_vms(info, collector.messages)

    def _identity(self, info: HostInfo) -> None:
        flag = info.attributes.get("PUBLIC_CLOUD", "").strip()
        if flag.upper() == "YES":
            self._add(Status.PASS, "probes.cloud", "PUBLIC_CLOUD=YES")
        else:
            shown = f"PUBLIC_CLOUD={flag}" if flag else "no PUBLIC_CLOUD"
            self._add(Status.FAIL, "probes.cloud", f"{shown}: print PUBLIC_CLOUD=YES, or the "
                                                   "host is treated as a local host")
        hypervisor = info.attributes.get("HYPERVISOR", "").strip()
        if not hypervisor:
            self._add(Status.FAIL, "probes.hypervisor", "no HYPERVISOR: print "
                      f"HYPERVISOR={self.settings.provider}, or the host is treated as local "
                      "and VMs cannot name it in PUBLIC_CLOUD=[TYPE=...]")
        elif hypervisor.lower() != self.settings.provider.lower():
            self._add(Status.PASS, "probes.hypervisor",
                      f"HYPERVISOR={hypervisor} (VM templates need PUBLIC_CLOUD=[TYPE="
                      f"{hypervisor}]; it differs from the provider name "
                      f"{self.settings.provider})")
        else:
            self._add(Status.PASS, "probes.hypervisor",
                      f"HYPERVISOR={hypervisor} (VM templates use PUBLIC_CLOUD=[TYPE="
                      f"{hypervisor}])")

    def _capacity(self, info: HostInfo, warnings: list[str]) -> None:
        bad = [f"{key}={info.attributes[key]!r}" for key in _NUMERIC_KEYS
               if key in info.attributes and not _is_number(info.attributes[key])]
        bad += [message for message in warnings if "CAPACITY" in message]
        if bad:
            self._add(Status.FAIL, "probes.capacity", "not numbers: " + "; ".join(bad))
            return
        totals = [f"{key}={info.attributes[key]}" for key in ("TOTALCPU", "TOTALMEMORY")
                  if key in info.attributes]
        if info.capacity:
            limits = ", ".join(f"{kind}={count}" for kind, count in sorted(info.capacity.items()))
            self._add(Status.PASS, "probes.capacity", f"CAPACITY limits {limits}"
                      + (f"; {', '.join(totals)}" if totals else ""))
        elif len(totals) == 2:
            self._add(Status.PASS, "probes.capacity", ", ".join(totals))
        else:
            self._add(Status.FAIL, "probes.capacity",
                      "print TOTALCPU (percent of a core) and TOTALMEMORY (KB), or "
                      "CAPACITY=[TYPE=count,...]: without them nothing fits on the host")

    def _reported_vms(self, info: HostInfo, warnings: list[str]) -> None:
        skipped = [message for message in warnings if "VM vector" in message]
        broken = [f"{vm.deploy_id}: {vm.poll.info['ERROR']}" for vm in info.vms
                  if vm.poll is not None and "ERROR" in vm.poll.info]
        if skipped or broken:
            self._add(Status.FAIL, "probes.vms", "; ".join(skipped + broken))
        elif info.vms:
            self._add(Status.PASS, "probes.vms", f"{len(info.vms)} VM=[...] report(s) parse")

    async def _deploy(self, spec: DeploySpec) -> str | None:
        outcome = await self._timed(lambda: self.vm_driver.deploy(spec))
        if not outcome.ok:
            self._add(Status.FAIL, "deploy", outcome.error)
            return None
        deploy_id = str(outcome.value)
        self._created.append(deploy_id)
        self._add(Status.PASS, "deploy", f"printed deploy id {deploy_id} "
                                         f"({outcome.seconds:.2f} s)")
        return deploy_id

    async def _idempotent(self, spec: DeploySpec, deploy_id: str) -> None:
        outcome = await self._timed(lambda: self.vm_driver.deploy(spec))
        if not outcome.ok:
            self._add(Status.FAIL, "deploy.idempotent",
                      f"a retry with the same CLOUDBURST_ACTION_TOKEN failed: {outcome.error}")
        elif outcome.value == deploy_id:
            self._add(Status.PASS, "deploy.idempotent", "the same CLOUDBURST_ACTION_TOKEN gave "
                                                        f"the same id {deploy_id}")
        else:
            second = str(outcome.value)
            self._created.append(second)
            self._add(Status.WARN, "deploy.idempotent",
                      f"the same CLOUDBURST_ACTION_TOKEN created a second resource {second}: "
                      "a retried deploy would leak one (it is cancelled at the end)")

    async def _poll_once(self, deploy_id: str) -> _Outcome:
        outcome = await self._timed(lambda: self.vm_driver.poll([self._ref(deploy_id)]))
        if outcome.ok:
            assert isinstance(outcome.value, dict)
            result = outcome.value[self.settings.vm_id]
            outcome.value = result
            if "ERROR" in result.info:
                outcome.error = result.info["ERROR"]
        return outcome

    async def _poll(self, deploy_id: str | None) -> None:
        target = deploy_id or f"{self.settings.provider}-contract-test-missing"
        outcome = await self._poll_once(target)
        if not outcome.ok:
            self._add(Status.FAIL, "poll", outcome.error)
            return
        result = outcome.value
        assert isinstance(result, PollResult)
        words = _poll_words(result)
        if deploy_id is None:
            status = Status.PASS if result.state is PollState.GONE else Status.WARN
            self._add(status, "poll", f"of a resource that does not exist: {words} "
                                      "(expected STATE=d)")
        elif result.state is PollState.ACTIVE:
            self._add(Status.PASS, "poll", words)
        elif result.state is PollState.UNKNOWN:
            self._add(Status.WARN, "poll", f"{words}: no STATE letter, the daemon cannot tell "
                                           "the VM is running")
        elif result.state is PollState.PAUSED:
            self._add(Status.WARN, "poll", f"{words}: the new resource is reported paused")
        else:
            self._add(Status.FAIL, "poll", f"{words}: the resource just deployed is reported "
                      f"{'gone' if result.state is PollState.GONE else 'in error'}")

    async def _simple(self, action: str, deploy_id: str | None) -> None:
        if self._unsupported(action, "WARN"):
            return
        if deploy_id is None:
            self._add(Status.WARN, action, "not checked: deploy gave no id")
            return
        ref = self._ref(deploy_id)
        call = self.vm_driver.reboot if action == "reboot" else self.vm_driver.reset
        outcome = await self._timed(lambda: call(ref))
        if outcome.ok:
            self._add(Status.PASS, action, f"exit 0 ({outcome.seconds:.2f} s)")
        else:
            self._add(Status.FAIL, action, outcome.error)

    def _unsupported(self, action: str, severity: str,
                     consequence: str = "the daemon reports this on the VM when asked for it"
                     ) -> bool:
        """Report ``action`` as not supported when its script is missing."""
        try:
            self.vm_driver.script(action)
        except UnsupportedActionError as exc:
            status = {"WARN": Status.WARN, "FAIL": Status.FAIL}.get(severity, Status.PASS)
            self._add(status, action, f"not supported: {exc.message}; {consequence}")
            return True
        except DriverError as exc:
            self._add(Status.FAIL, action, exc.message)
            return True
        return False

    async def _save_restore(self, deploy_id: str | None) -> None:
        missing = [action for action in _CHECKED_OPTIONAL if self._unsupported(action, "PASS")]
        if missing:
            return
        if deploy_id is None:
            self._add(Status.WARN, "save", "not checked: deploy gave no id")
            return
        ref = self._ref(deploy_id)
        checkpoint = self._workdir / "checkpoint"
        outcome = await self._timed(lambda: self.vm_driver.save(ref, checkpoint, leaving=False))
        if not outcome.ok:
            self._add(Status.FAIL, "save", outcome.error)
            return
        after = await self._poll_once(deploy_id)
        shown = _poll_words(after.value) if after.ok and isinstance(after.value, PollResult) \
            else after.error
        self._add(Status.PASS, "save", f"exit 0; then poll: {shown}")
        outcome = await self._timed(lambda: self.vm_driver.restore(ref, checkpoint))
        if not outcome.ok:
            self._add(Status.FAIL, "restore", outcome.error)
            return
        after = await self._poll_once(deploy_id)
        if after.ok and isinstance(after.value, PollResult):
            status = Status.PASS if after.value.state is PollState.ACTIVE else Status.WARN
            self._add(status, "restore", f"exit 0; then poll: {_poll_words(after.value)}")
        else:
            self._add(Status.FAIL, "restore", f"exit 0, but then poll failed: {after.error}")

    def _optional(self) -> None:
        present = sorted(self.vm_driver.capabilities - set(_CHECKED_OPTIONAL))
        absent = [action for action in _OTHER_OPTIONAL if action not in present]
        parts = []
        if present:
            parts.append(f"implemented (not exercised): {', '.join(present)}")
        if absent:
            parts.append(f"not supported: {', '.join(absent)}")
        self._add(Status.PASS, "optional", "; ".join(parts))

    async def _shutdown(self, deploy_id: str | None) -> str | None:
        """Shut the resource down (or cancel it when shutdown is missing); its id if gone."""
        if deploy_id is None:
            if not self._unsupported("shutdown", "WARN", _CANCEL_INSTEAD):
                self._add(Status.WARN, "shutdown", "not checked: deploy gave no id")
            return None
        ref = self._ref(deploy_id)
        if self._unsupported("shutdown", "WARN", _CANCEL_INSTEAD):
            outcome = await self._timed(lambda: self.vm_driver.cancel(ref))
        else:
            outcome = await self._timed(lambda: self.vm_driver.shutdown(ref))
            if outcome.ok:
                self._add(Status.PASS, "shutdown", f"exit 0 ({outcome.seconds:.2f} s)")
            else:
                self._add(Status.FAIL, "shutdown", outcome.error)
        if not outcome.ok:
            return None
        self._created.remove(deploy_id)
        after = await self._poll_once(deploy_id)
        if not after.ok:
            self._add(Status.FAIL, "poll.gone", after.error)
        elif isinstance(after.value, PollResult) and after.value.state is PollState.GONE:
            self._add(Status.PASS, "poll.gone", "the removed resource is reported STATE=d")
        else:
            assert isinstance(after.value, PollResult)
            self._add(Status.WARN, "poll.gone", f"the removed resource is reported "
                                                f"{_poll_words(after.value)} (expected STATE=d)")
        return deploy_id

    async def _cancel_gone(self, deploy_id: str | None) -> None:
        if self._unsupported("cancel", "FAIL", "VMs on this provider can never be removed"):
            return
        target = deploy_id or f"{self.settings.provider}-contract-test-missing"
        outcome = await self._timed(lambda: self.vm_driver.cancel(self._ref(target)))
        what = "an already-gone resource" if deploy_id else "a resource that does not exist"
        if outcome.ok:
            self._add(Status.PASS, "cancel.gone", f"cancel of {what} succeeds")
        else:
            self._add(Status.FAIL, "cancel.gone", f"cancel of {what} must succeed (the daemon "
                      f"repeats cancel after failures and restarts): {outcome.error}")

    async def _cancel_fresh(self) -> None:
        try:
            self.vm_driver.script("cancel")
        except DriverError:
            return  # reported by cancel.gone
        spec = self._spec(self._token(2))
        outcome = await self._timed(lambda: self.vm_driver.deploy(spec))
        if not outcome.ok:
            self._add(Status.WARN, "cancel", f"not checked: a second deploy failed: "
                                             f"{outcome.error}")
            return
        deploy_id = str(outcome.value)
        self._created.append(deploy_id)
        outcome = await self._timed(lambda: self.vm_driver.cancel(self._ref(deploy_id)))
        if not outcome.ok:
            self._add(Status.FAIL, "cancel", outcome.error)
            return
        self._created.remove(deploy_id)
        after = await self._poll_once(deploy_id)
        if after.ok and isinstance(after.value, PollResult):
            state = f"then poll: {_poll_words(after.value)}"
        else:
            state = f"then poll failed: {after.error}"
        self._add(Status.PASS, "cancel", f"removed a fresh resource {deploy_id}; {state}")

    async def _errors(self) -> None:
        """A deploy whose deployment file is missing must fail, with a message."""
        missing = self._workdir / "no-such-deployment-file"
        spec = self._spec(self._token(3), missing)
        outcome = await self._timed(lambda: self.vm_driver.deploy(spec))
        if outcome.ok:
            self._created.append(str(outcome.value))
            self._add(Status.WARN, "errors", "deploy of a missing deployment file succeeded "
                                             f"(printed {outcome.value})")
        elif outcome.error.endswith("printed no deploy id"):
            self._add(Status.WARN, "errors", "deploy of a missing deployment file exited 0 "
                      "without an id: exit non-zero with the reason on stderr instead")
        elif _silent_failure(outcome.error):
            self._add(Status.WARN, "errors", f"deploy of a missing deployment file failed "
                      f"without a message ({outcome.error}): write the reason to stderr, "
                      "between ERROR MESSAGE markers")
        else:
            self._add(Status.PASS, "errors", f"a failing deploy reports: {outcome.error}")

    async def _cleanup(self) -> None:
        leftovers = []
        for deploy_id in dict.fromkeys(self._created):
            cancel = functools.partial(self.vm_driver.cancel, self._ref(deploy_id))
            outcome = await self._timed(cancel)
            if not outcome.ok:
                leftovers.append(f"{deploy_id} ({outcome.error})")
        if leftovers:
            self._add(Status.FAIL, "cleanup", "could not cancel what the test created: "
                                              + "; ".join(leftovers))


def summary(provider: str, checks: list[Check]) -> str:
    counts = {status: sum(1 for check in checks if check.status is status) for status in Status}
    verdict = "FAILED" if counts[Status.FAIL] else "passed"
    return (f"{provider}: {verdict}: {counts[Status.PASS]} passed, {counts[Status.WARN]} "
            f"warning(s), {counts[Status.FAIL]} failed")

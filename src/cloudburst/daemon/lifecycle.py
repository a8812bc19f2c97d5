"""The life-cycle manager: the only code that changes a VM's state.

Every change is ``model.lifecycle.apply`` plus a compare-and-swap write, so an
illegal or lost race is refused cleanly. Entering a state that needs driver
work (``PROLOG``, ``BOOT``, ``SHUTDOWN``, ``EPILOG``, ``CLEANUP_DELETE``)
starts that work as a background task; for ``BOOT`` and ``SHUTDOWN`` the
action is first journalled with its idempotency token in the same
transaction, so a crash between "decided" and "done" is recoverable
(:mod:`cloudburst.daemon.recovery`).

A driver that fails, hangs or crashes marks that VM with the error; nothing
propagates beyond the VM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, bindparam, func, select

from cloudburst.config.settings import Settings
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.files import VmFiles
from cloudburst.drivers.base import DeploySpec, HostRef, PollResult, PollState, VmRef
from cloudburst.errors import (
    CapacityError,
    ConflictError,
    DriverError,
    IllegalActionError,
    NotFoundError,
    UnsupportedActionError,
    ValidationError,
    one_line,
)
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord, cpu_share
from cloudburst.model.states import HostState, VmState, vm_state_label
from cloudburst.scheduler.demand import cloud_sections
from cloudburst.store import host_pool, journal, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.schema import history

log = logging.getLogger(__name__)

#: Seconds a host that reported "no capacity" is skipped for that VM.
CAPACITY_BACKOFF = 60.0

#: History ``ACTION`` codes (OpenNebula's VMActions numbering for the ones we use).
ACTION_CODES = {"none": 0, "delete": 13, "terminate": 27, "terminate-hard": 28}


@dataclass(frozen=True, slots=True)
class Placement:
    """A VM placed on a host, as the deploy transaction returns it.

    ``prolog`` is the VM as it entered PROLOG; ``vm`` as it left the
    transaction (BOOT, since no host needs file transfers).
    """

    vm: VmRecord
    host: HostRecord
    seq: int
    prolog: VmRecord | None = None


def _now() -> int:
    return int(time.time())


_CURRENT_SEQ = select(func.max(history.c.seq)).where(history.c.vm_id == bindparam("vm_id"))


def _current_seq(connection: Connection, vm_id: int) -> int:
    value = connection.execute(_CURRENT_SEQ, {"vm_id": vm_id}).scalar()
    return -1 if value is None else int(value)


def _advance(connection: Connection, vm: VmRecord, event: Event, **changes: Any) -> VmRecord:
    """Apply ``event`` to ``vm`` as last seen, re-reading it once if it changed since.

    Most transitions follow the write that produced ``vm``, so the first
    compare-and-swap usually succeeds without a read.
    """
    try:
        state, lcm_state = lifecycle.apply(vm.position, event)
        return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, **changes)
    except IllegalActionError:
        pass  # stale copy (or a lost race): decide again on the stored record
    current = vm_pool.get_vm(connection, vm.id, with_history=False)
    state, lcm_state = lifecycle.apply(current.position, event)
    return vm_pool.update_vm(connection, current, state=state, lcm_state=lcm_state, **changes)


def token_for(install_id: str, vm_id: int, seq: int) -> str:
    """The idempotency token of the deploy of ``vm_id``'s ``seq``-th stay (<= 64 chars)."""
    return f"{install_id}-vm{vm_id}-{seq}"


class LifecycleManager:
    """Applies events to VMs and runs the driver work each state needs."""

    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        files: VmFiles,
        settings: Settings,
        install_id: str,
        on_capacity_freed: Callable[[], None],
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.files = files
        self.settings = settings
        self.install_id = install_id
        self._on_capacity_freed = on_capacity_freed
        self._tasks: set[asyncio.Task[Any]] = set()
        #: vm_id -> {host_id: time until which the host is skipped for it}
        self.capacity_backoff: dict[int, dict[int, float]] = {}

    # -- plumbing ----------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Run driver work in the background, keeping a reference until it ends."""
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for background work to finish (used at shutdown and in tests)."""
        deadline = time.monotonic() + timeout
        while self._tasks and time.monotonic() < deadline:
            await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=10)

    def _logged(self, vm: VmRecord) -> VmRecord:
        self.files.log(vm.id, "I", f"New state is {vm_state_label(*vm.position)}")
        log.debug("VM %d: %s", vm.id, vm_state_label(*vm.position))
        return vm

    async def transition(self, vm_id: int, event: Event, **changes: Any) -> VmRecord:
        """Apply ``event`` to VM ``vm_id`` and write ``changes`` with it.

        Raises:
            NotFoundError: no such VM.
            IllegalActionError: the event is not legal in the VM's state.
        """
        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            state, lcm_state = lifecycle.apply(vm.position, event)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, **changes)

        return self._logged(await self.db.write(write))

    # -- deploy: PENDING/HOLD -> PROLOG -> BOOT -> RUNNING ---------------------------

    async def deploy(self, vm_id: int, host_id: int, *, enforce: bool = False,
                     scheduled: bool = False) -> VmRecord:
        """Place VM ``vm_id`` on host ``host_id`` and start its prolog.

        Args:
            enforce: refuse when the host lacks the capacity (``one.vm.deploy``'s flag).
            scheduled: the scheduler chose the host (only PENDING VMs qualify).

        Raises:
            NotFoundError: VM or host missing.
            IllegalActionError: the VM cannot be deployed in its state, or the
                host cannot take it.
        """
        now = _now()

        def write(connection: Connection) -> Placement:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if scheduled and vm.state is not VmState.PENDING:
                raise ConflictError(f"VM {vm_id} is no longer pending")
            host = host_pool.get_host(connection, host_id, with_usage=enforce)
            _check_host_takes(vm, host, enforce)
            prolog_position = lifecycle.apply(vm.position, Event.DEPLOY)
            # Cloud and dummy hosts have no images to transfer: the prolog ends
            # in the same transaction, so one write stores PROLOG's end (BOOT,
            # with PROLOG as the previous state) and journals the deploy.
            state, lcm_state = lifecycle.apply(prolog_position, Event.PROLOG_SUCCESS)
            seq = _current_seq(connection, vm_id) + 1
            vm_pool.insert_history(connection, HistoryRecord(
                vm_id=vm_id, seq=seq, host_id=host.id, hostname=host.name, vm_mad=host.vm_mad,
                tm_mad=host.tm_mad, stime=now, pstime=now, petime=now, rstime=now,
            ))
            booting = vm_pool.update_vm(
                connection, vm, state=state, lcm_state=lcm_state, prev_state=prolog_position[0],
                prev_lcm_state=prolog_position[1], host_id=host.id, sched_message="", error="",
                deploy_id="",
            )
            journal.start(connection, vm_id=vm_id, host_id=host.id, seq=seq, action="deploy",
                          token=token_for(self.install_id, vm_id, seq))
            prolog = replace(booting, state=prolog_position[0], lcm_state=prolog_position[1])
            return Placement(booting, host, seq, prolog)

        placement = await self.db.write(write)
        if placement.prolog is not None:
            self._logged(placement.prolog)
        self.files.log(vm_id, "I", f"Deploying on host {placement.host.name} "
                                   f"(id {host_id}, driver {placement.host.vm_mad})")
        self._logged(placement.vm)
        self.spawn(self._boot(placement.vm, placement.host, placement.seq,
                              token_for(self.install_id, vm_id, placement.seq)),
                   f"boot-{vm_id}")
        return placement.vm

    def _end_prolog(self, connection: Connection, vm: VmRecord, host: HostRecord,
                    seq: int) -> VmRecord:
        """PROLOG -> BOOT, journalling the deploy with its token (inside a write)."""
        now = _now()
        booting = _advance(connection, vm, Event.PROLOG_SUCCESS)
        vm_pool.update_history(connection, vm.id, seq, petime=now, rstime=now)
        journal.start(connection, vm_id=vm.id, host_id=host.id, seq=seq, action="deploy",
                      token=token_for(self.install_id, vm.id, seq))
        return booting

    async def _prolog(self, placement: Placement) -> None:
        """Finish a prolog that a restart interrupted, then boot."""
        vm, host, seq = placement.vm, placement.host, placement.seq

        def write(connection: Connection) -> VmRecord:
            return self._end_prolog(connection, vm, host, seq)

        try:
            booting = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d left PROLOG before it finished: %s", vm.id, exc)
            return
        await self._boot(booting, host, seq, token_for(self.install_id, vm.id, seq))

    def deployment_document(self, vm: VmRecord) -> str:
        """The deployment file's contents: the VM's whole template as XML.

        Root ``TEMPLATE`` with ``CPU``, ``MEMORY``, ``PUBLIC_CLOUD``/``EC2``
        sections and everything else the user wrote, plus ``VMID`` and ``NAME``
        (the seed's layout).
        """
        template = vm.full_template()
        template.set("VMID", str(vm.id))
        if template.get("NAME") is None:
            template.set("NAME", vm.name)
        return template.to_xml("TEMPLATE")

    async def _boot(self, vm: VmRecord, host: HostRecord, seq: int, token: str) -> None:
        """Write the deployment file, call the driver's deploy, store the result."""
        try:
            path = await self.files.write_deployment(vm.id, seq, self.deployment_document(vm))
        except OSError as exc:
            await self._deploy_failed(vm.id, token, DriverError(
                f"Cannot write deployment file: {exc.strerror}"))
            return
        spec = self._deploy_spec(vm, host, path, token)
        driver = self.dispatcher.vm_driver(host.vm_mad)
        try:
            deploy_id = await self.dispatcher.run(
                "VM_MAD", host.vm_mad, "deploy", lambda: driver.deploy(spec))
            if not deploy_id.strip():
                raise DriverError("deploy: the driver returned an empty deploy id")
        except DriverError as exc:
            await self._deploy_failed(vm.id, token, exc, host_id=host.id)
            return
        await self.deploy_succeeded(vm, token, deploy_id.strip())

    def _deploy_spec(self, vm: VmRecord, host: HostRecord, path: Path, token: str) -> DeploySpec:
        return DeploySpec(
            vm_id=vm.id, host=self.host_ref(host), deployment_file=path,
            deployment=self.deployment_document(vm), token=token, memory_mb=vm.memory,
            cpu=vm.cpu,
        )

    @staticmethod
    def host_ref(host: HostRecord) -> HostRef:
        return HostRef(id=host.id, name=host.name, attributes=host.template.as_flat_dict())

    async def deploy_succeeded(self, booting: VmRecord, token: str, deploy_id: str) -> None:
        """Store a deploy id: BOOT -> RUNNING, journal entry done."""
        vm_id = booting.id

        def write(connection: Connection) -> VmRecord:
            running = _advance(connection, booting, Event.DEPLOY_SUCCESS, deploy_id=deploy_id,
                               last_poll=_now())
            journal.finish_token(connection, token, "deploy", ok=True, result=deploy_id)
            return running

        try:
            vm = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            # The VM moved on while the driver worked (e.g. it was deleted):
            # the instance must not be left behind.
            log.warning("VM %d deployed as %s but is no longer booting (%s); cancelling it",
                        vm_id, deploy_id, exc)
            self.files.log(vm_id, "W", f"Deployed as {deploy_id} after leaving BOOT; cancelling")
            await self._cancel_stray(vm_id, deploy_id)
            return
        self.capacity_backoff.pop(vm_id, None)
        self.files.log(vm_id, "I", f"Deployed: DEPLOY_ID={vm.deploy_id}")

    async def _deploy_failed(self, vm_id: int, token: str, error: DriverError,
                             host_id: int | None = None) -> None:
        message = one_line(error.message)
        no_room = isinstance(error, CapacityError)
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            journal.finish_token(connection, token, "deploy", ok=False, result=message)
            if no_room:
                state, lcm_state = lifecycle.apply(vm.position, Event.DEPLOY_NO_CAPACITY)
                seq = _current_seq(connection, vm_id)
                vm_pool.update_history(connection, vm_id, seq, etime=now, retime=now,
                                       reason=f"no capacity: {message}")
                return vm_pool.update_vm(
                    connection, vm, state=state, lcm_state=lcm_state, host_id=None,
                    sched_message=f"Host refused the VM (no capacity): {message}")
            state, lcm_state = lifecycle.apply(vm.position, Event.DEPLOY_FAILURE)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state,
                                     error=f"Error deploying virtual machine: {message}")

        try:
            vm = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d: deploy failure ignored, state moved on (%s)", vm_id, exc)
            return
        self.files.log(vm_id, "E", f"Error deploying virtual machine: {message}")
        if no_room and host_id is not None:
            self.capacity_backoff.setdefault(vm_id, {})[host_id] = (
                time.monotonic() + CAPACITY_BACKOFF)
            self._on_capacity_freed()
        log.info("VM %d deploy failed: %s", vm.id, message)

    async def _cancel_stray(self, vm_id: int, deploy_id: str) -> None:
        host = await self._host_of(vm_id)
        if host is None:
            return
        driver = self.dispatcher.vm_driver(host.vm_mad)
        ref = VmRef(vm_id=vm_id, deploy_id=deploy_id, host=self.host_ref(host))
        try:
            await self.dispatcher.run("VM_MAD", host.vm_mad, "cancel", lambda: driver.cancel(ref))
        except DriverError as exc:
            self.files.log(vm_id, "E", f"Could not cancel stray instance {deploy_id}: {exc}")

    async def _host_of(self, vm_id: int) -> HostRecord | None:
        def read(connection: Connection) -> HostRecord | None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if vm.host_id is None:
                return None
            try:
                return host_pool.get_host(connection, vm.host_id)
            except NotFoundError:
                return None

        return await self.db.read(read)

    # -- user actions ---------------------------------------------------------------

    async def hold(self, vm_id: int) -> VmRecord:
        return await self.transition(vm_id, Event.HOLD)

    async def release(self, vm_id: int) -> VmRecord:
        vm = await self.transition(vm_id, Event.RELEASE)
        self._on_capacity_freed()
        return vm

    async def terminate(self, vm_id: int, *, hard: bool, action: str) -> VmRecord:
        """Terminate a VM from any state that allows it.

        PENDING/HOLD end at once; RUNNING/UNKNOWN/POWEROFF/SUSPENDED go
        through the driver (graceful shutdown falling back to cancel, or cancel
        when ``hard``); failure states clean up what the provider may hold.
        A DONE VM is a no-op success.
        """
        event = Event.TERMINATE_HARD if hard else Event.TERMINATE
        now = _now()

        def write(connection: Connection) -> tuple[VmRecord, bool, bool]:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if vm.state is VmState.DONE:
                return vm, False, False
            state, lcm_state = lifecycle.apply(vm.position, event)
            seq = _current_seq(connection, vm_id)
            graceful = not hard and vm.position in (lifecycle.RUNNING, lifecycle.UNKNOWN)
            changes: dict[str, Any] = {"state": state, "lcm_state": lcm_state}
            if state is VmState.DONE:
                changes["etime"] = now
            elif seq >= 0:
                vm_pool.update_history(connection, vm_id, seq, action=ACTION_CODES.get(
                    action, ACTION_CODES["terminate"]), reason=f"{action} requested")
                if (state, lcm_state) == lifecycle.SHUTDOWN:
                    journal.start(connection, vm_id=vm_id, host_id=vm.host_id or -1, seq=seq,
                                  action="shutdown" if graceful else "cancel",
                                  token=f"{token_for(self.install_id, vm_id, seq)}-stop")
            return vm_pool.update_vm(connection, vm, **changes), True, graceful

        vm, changed, graceful = await self.db.write(write)
        if not changed:
            return vm
        self._logged(vm)
        if vm.position == lifecycle.SHUTDOWN:
            self.spawn(self._shutdown(vm, graceful), f"shutdown-{vm_id}")
        elif vm.position == lifecycle.CLEANUP_DELETE:
            self.spawn(self._cleanup(vm), f"cleanup-{vm_id}")
        elif vm.state is VmState.DONE:
            self._on_capacity_freed()
        return vm

    async def reboot(self, vm_id: int, *, hard: bool) -> VmRecord:
        """Reboot (or reset, when ``hard``) a RUNNING VM; the state does not change."""
        event = Event.REBOOT_HARD if hard else Event.REBOOT

        def read(connection: Connection) -> tuple[VmRecord, HostRecord]:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            lifecycle.apply(vm.position, event)
            assert vm.host_id is not None
            return vm, host_pool.get_host(connection, vm.host_id)

        vm, host = await self.db.read(read)
        self.spawn(self._reboot(vm, host, hard), f"reboot-{vm_id}")
        return vm

    async def _reboot(self, vm: VmRecord, host: HostRecord, hard: bool) -> None:
        action = "reset" if hard else "reboot"
        driver = self.dispatcher.vm_driver(host.vm_mad)
        ref = VmRef(vm_id=vm.id, deploy_id=vm.deploy_id, host=self.host_ref(host))
        call = (lambda: driver.reset(ref)) if hard else (lambda: driver.reboot(ref))
        try:
            await self.dispatcher.run("VM_MAD", host.vm_mad, action, call)
        except DriverError as exc:
            message = one_line(exc.message)
            self.files.log(vm.id, "E", f"Error {action}ing VM, assume it's still running: "
                                       f"{message}")
            await self.set_error(vm.id, f"Error {action}ing VM: {message}")
            return
        self.files.log(vm.id, "I", f"VM {action} done")

    async def set_error(self, vm_id: int, message: str) -> None:
        """Record an error on a VM without changing its state."""
        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            vm_pool.update_vm(connection, vm, error=message)

        with contextlib.suppress(ConflictError, NotFoundError):
            await self.db.write(write)

    # -- shutdown: SHUTDOWN -> EPILOG -> DONE -----------------------------------------

    async def _shutdown(self, vm: VmRecord, graceful: bool) -> None:
        host = await self._host_of(vm.id)
        if host is None or not vm.deploy_id:
            await self.shutdown_finished(vm.id, ok=True, message="nothing to stop")
            return
        driver = self.dispatcher.vm_driver(host.vm_mad)
        ref = VmRef(vm_id=vm.id, deploy_id=vm.deploy_id, host=self.host_ref(host))
        error: DriverError | None = None
        if graceful:
            try:
                await self.dispatcher.run("VM_MAD", host.vm_mad, "shutdown",
                                          lambda: driver.shutdown(ref))
                await self.shutdown_finished(vm.id, ok=True)
                return
            except UnsupportedActionError as exc:
                error = exc
            except DriverError as exc:
                error = exc
                self.files.log(vm.id, "W", f"Graceful shutdown failed ({one_line(exc.message)}); "
                                           "cancelling")
        try:
            await self.dispatcher.run("VM_MAD", host.vm_mad, "cancel", lambda: driver.cancel(ref))
        except DriverError as exc:
            text = one_line(exc.message)
            if error is not None and not isinstance(error, UnsupportedActionError):
                text = f"{one_line(error.message)}; then {text}"
            await self.shutdown_finished(vm.id, ok=False, message=text)
            return
        await self.shutdown_finished(vm.id, ok=True)

    async def shutdown_finished(self, vm_id: int, *, ok: bool, message: str = "") -> None:
        """Store a shutdown/cancel result; on success run the epilog."""
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            seq = _current_seq(connection, vm_id)
            token = f"{token_for(self.install_id, vm_id, seq)}-stop"
            for action in ("shutdown", "cancel"):
                journal.finish_token(connection, token, action, ok=ok, result=message)
            if ok:
                state, lcm_state = lifecycle.apply(vm.position, Event.SHUTDOWN_SUCCESS)
                vm_pool.update_history(connection, vm_id, seq, retime=now, estime=now)
                return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state)
            state, lcm_state = lifecycle.apply(vm.position, Event.SHUTDOWN_FAILURE)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state,
                                     error=f"Error shutting down VM: {message}")

        try:
            vm = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d: shutdown result ignored (%s)", vm_id, exc)
            return
        if ok:
            await self.epilog(vm.id)
        else:
            self.files.log(vm_id, "E", f"Error shutting down VM: {message}")

    async def epilog(self, vm_id: int) -> None:
        """EPILOG -> DONE: close the history record; capacity is released."""
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            state, lcm_state = lifecycle.apply(vm.position, Event.EPILOG_SUCCESS)
            seq = _current_seq(connection, vm_id)
            vm_pool.update_history(connection, vm_id, seq, eetime=now, etime=now)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, etime=now)

        try:
            self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d: epilog skipped (%s)", vm_id, exc)
            return
        self._on_capacity_freed()

    # -- cleanup after a failure ---------------------------------------------------------

    async def _cleanup(self, vm: VmRecord) -> None:
        """CLEANUP_DELETE: remove whatever a failed deploy may have created, then DONE."""
        host = await self._host_of(vm.id)
        deploy_id = vm.deploy_id
        if host is not None and not deploy_id:
            deploy_id = await self._find_by_token(vm, host) or ""
        if host is not None and deploy_id:
            driver = self.dispatcher.vm_driver(host.vm_mad)
            ref = VmRef(vm_id=vm.id, deploy_id=deploy_id, host=self.host_ref(host))
            try:
                await self.dispatcher.run("VM_MAD", host.vm_mad, "cancel",
                                          lambda: driver.cancel(ref))
            except DriverError as exc:
                message = one_line(exc.message)
                self.files.log(vm.id, "E", f"Cleanup failed: {message}")
                await self._cleanup_failed(vm.id, message)
                return
        await self.cleanup_finished(vm.id)

    async def _find_by_token(self, vm: VmRecord, host: HostRecord) -> str | None:
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)

        seq = await self.db.read(read)
        if seq < 0:
            return None
        token = token_for(self.install_id, vm.id, seq)
        driver = self.dispatcher.vm_driver(host.vm_mad)
        path = self.files.deployment_path(vm.id, seq)
        spec = self._deploy_spec(vm, host, path, token)
        try:
            return await self.dispatcher.run("VM_MAD", host.vm_mad, "find",
                                             lambda: driver.find(spec))
        except DriverError:
            return None

    async def cleanup_finished(self, vm_id: int) -> None:
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            state, lcm_state = lifecycle.apply(vm.position, Event.CLEANUP_SUCCESS)
            seq = _current_seq(connection, vm_id)
            if seq >= 0:
                vm_pool.update_history(connection, vm_id, seq, etime=now)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state, etime=now)

        try:
            self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d: cleanup result ignored (%s)", vm_id, exc)
            return
        self._on_capacity_freed()

    async def _cleanup_failed(self, vm_id: int, message: str) -> None:
        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            state, lcm_state = lifecycle.apply(vm.position, Event.CLEANUP_FAILURE)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state,
                                     error=f"Error cleaning up VM: {message}")

        with contextlib.suppress(IllegalActionError):
            self._logged(await self.db.write(write))

    # -- monitoring results ----------------------------------------------------------------

    async def apply_poll(self, results: dict[int, PollResult]) -> None:
        """Store poll data and apply the state it implies, VM by VM."""
        await asyncio.gather(*(self._apply_one(vm_id, result)
                               for vm_id, result in results.items()))

    async def _apply_one(self, vm_id: int, result: PollResult) -> None:
        now = _now()
        event = _POLL_EVENTS.get(result.state)
        info = {key: value for key, value in result.info.items() if key != "ERROR"}
        poll_error = result.info.get("ERROR", "")

        def write(connection: Connection) -> VmRecord | None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            changes: dict[str, Any] = {}
            monitoring = dict(vm.monitoring)
            monitoring.update(info)
            if monitoring != vm.monitoring:
                changes["monitoring"] = monitoring
            if poll_error and vm.error != f"Error monitoring VM: {poll_error}":
                changes["error"] = f"Error monitoring VM: {poll_error}"
            if event is not None and lifecycle.is_legal(vm.position, event):
                state, lcm_state = lifecycle.apply(vm.position, event)
                if (state, lcm_state) != vm.position:
                    changes.update(state=state, lcm_state=lcm_state)
                    if event is Event.MONITOR_GONE:
                        changes["error"] = ("The instance is gone: the driver no longer "
                                            "reports it (stopped or deleted outside cloudburst)")
            if not changes and now - vm.last_poll < 300:
                return None
            changes["last_poll"] = now
            return vm_pool.update_vm(connection, vm, **changes)

        try:
            updated = await self.db.write(write)
        except (ConflictError, NotFoundError):
            return
        if updated is not None and updated.position != (updated.prev_state,
                                                         updated.prev_lcm_state):
            self._logged(updated)
            if updated.position == lifecycle.EPILOG:
                await self.epilog(vm_id)

    # -- used by recovery --------------------------------------------------------------------

    async def resume_prolog(self, vm: VmRecord) -> None:
        """Re-run a prolog interrupted by a restart."""
        host = await self._host_of(vm.id)
        if host is None:
            return
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)
        seq = await self.db.read(read)
        self.spawn(self._prolog(Placement(vm, host, seq)), f"prolog-{vm.id}")

    async def resume_boot(self, vm: VmRecord) -> None:
        """Reconcile a deploy whose result never arrived: find it, else replay it."""
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)

        seq = await self.db.read(read)
        token = token_for(self.install_id, vm.id, seq)
        host = await self._host_of(vm.id)
        if host is None:
            await self._deploy_failed(vm.id, token, DriverError("the host of the VM was deleted"))
            return
        found = await self._find_by_token(vm, host)
        if found:
            self.files.log(vm.id, "I", f"Recovered deploy after restart: found {found}")
            await self.deploy_succeeded(vm, token, found)
            return
        self.files.log(vm.id, "I", "Replaying deploy after restart with the same token")
        self.spawn(self._boot(vm, host, seq, token), f"boot-{vm.id}")

    def resume_shutdown(self, vm: VmRecord) -> None:
        """Re-issue a stop interrupted by a restart (cancel is idempotent)."""
        self.spawn(self._shutdown(vm, graceful=False), f"shutdown-{vm.id}")

    def resume_cleanup(self, vm: VmRecord) -> None:
        self.spawn(self._cleanup(vm), f"cleanup-{vm.id}")


_POLL_EVENTS: dict[PollState, Event] = {
    PollState.ACTIVE: Event.MONITOR_RUNNING,
    PollState.GONE: Event.MONITOR_GONE,
    PollState.ERROR: Event.MONITOR_ERROR,
    PollState.PAUSED: Event.MONITOR_PAUSED,
}


def _check_host_takes(vm: VmRecord, host: HostRecord, enforce: bool) -> None:
    """Refuse a deploy the host cannot take (disabled, wrong cloud, or full)."""
    if host.state in (HostState.DISABLED, HostState.OFFLINE):
        raise IllegalActionError(f"Host {host.id} ({host.name}) is {host.state.name}")
    if host.is_public_cloud:
        types = {section.type.lower() for section in cloud_sections(vm.full_template())}
        if host.hypervisor.lower() not in types:
            raise ValidationError(
                f"VM {vm.id} has no PUBLIC_CLOUD (or EC2) section of TYPE {host.hypervisor} "
                f"for cloud host {host.name}")
    if enforce:
        cpu = cpu_share(vm.cpu)
        memory = vm.memory * 1024
        if host.max_cpu - host.cpu_usage < cpu or host.max_mem - host.mem_usage < memory:
            raise IllegalActionError(
                f"Host {host.id} ({host.name}) lacks capacity: needs CPU {cpu} and "
                f"MEMORY {memory} KB, has {host.max_cpu - host.cpu_usage} and "
                f"{host.max_mem - host.mem_usage} KB free")


def poll_refs(vms: Sequence[VmRecord], host: HostRecord) -> list[VmRef]:
    """References for polling ``vms`` on ``host``."""
    ref = LifecycleManager.host_ref(host)
    return [VmRef(vm_id=vm.id, deploy_id=vm.deploy_id, host=ref) for vm in vms if vm.deploy_id]

"""User actions and the way out: hold/release, reboot, terminate -> SHUTDOWN ->
EPILOG -> DONE, and the cleanup of failed VMs.

Terminating a running VM tries the driver's graceful ``shutdown`` and falls
back to ``cancel``; failure states go through ``CLEANUP_DELETE``, which cancels
whatever the provider may hold (found by the deploy's token when no deploy id
was ever stored) before the VM is DONE.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import (
    ACTION_CODES,
    ManagerBase,
    _current_seq,
    _now,
    token_for,
)
from cloudburst.drivers.base import VmRef
from cloudburst.errors import (
    DriverError,
    IllegalActionError,
    TransientDriverError,
    UnsupportedActionError,
    one_line,
)
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import VmState
from cloudburst.store import host_pool, journal, vm_pool

log = logging.getLogger("cloudburst.daemon.lifecycle")


class Stopping(ManagerBase):
    """User actions on existing VMs, shutdown, epilog and cleanup."""

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
                    journal.begin(connection, vm_id=vm_id, host_id=vm.host_id or -1, seq=seq,
                                  action="shutdown" if graceful else "cancel",
                                  base=f"{token_for(self.install_id, vm_id, seq)}-stop")
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
            if isinstance(exc, TransientDriverError):
                # An outage: the instance may still run. Stay in SHUTDOWN and
                # try again until the provider confirms it gone.
                await self._retry_later(vm, "cancel", text,
                                        lambda: self._shutdown(vm, graceful=False))
                return
            if error is not None and not isinstance(error, UnsupportedActionError):
                text = f"{one_line(error.message)}; then {text}"
            await self.shutdown_finished(vm.id, ok=False, message=text)
            return
        self.stop_retries.pop(vm.id, None)
        await self.shutdown_finished(vm.id, ok=True)

    async def shutdown_finished(self, vm_id: int, *, ok: bool, message: str = "") -> None:
        """Store a shutdown/cancel result; on success run the epilog."""
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            seq = _current_seq(connection, vm_id)
            journal.finish_started(connection, vm_id, ("shutdown", "cancel"), ok=ok,
                                   result=message)
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
                if isinstance(exc, TransientDriverError):
                    await self._retry_later(vm, "cleanup", message,
                                            lambda: self._cleanup(vm))
                    return
                self.files.log(vm.id, "E", f"Cleanup failed: {message}")
                await self._cleanup_failed(vm.id, message)
                return
        self.stop_retries.pop(vm.id, None)
        await self.cleanup_finished(vm.id)

    async def _retry_later(self, vm: VmRecord, what: str, message: str,
                           again: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Run ``again`` after a growing delay, unless the VM moved on meanwhile."""
        tries = self.stop_retries.get(vm.id, 0)
        self.stop_retries[vm.id] = tries + 1
        delay = self.settings.driver_retry_delay * 2 ** min(tries, 5)
        self.files.log(vm.id, "W", f"{what} failed ({message}); the instance is not confirmed "
                                   f"gone, trying again in {delay:g} s")
        await self.set_error(vm.id, f"Error in {what}, retrying: {message}")
        position = vm.position

        async def later() -> None:
            await asyncio.sleep(delay)
            current = await self._current(vm.id)
            if current is not None and current.position == position:
                await again()

        self.spawn(later(), f"{what}-retry-{vm.id}")

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


    def resume_shutdown(self, vm: VmRecord) -> None:
        """Re-issue a stop interrupted by a restart (cancel is idempotent)."""
        self.spawn(self._shutdown(vm, graceful=False), f"shutdown-{vm.id}")

    def resume_cleanup(self, vm: VmRecord) -> None:
        self.spawn(self._cleanup(vm), f"cleanup-{vm.id}")


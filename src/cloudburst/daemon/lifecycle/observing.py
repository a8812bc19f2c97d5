"""Observing: what polls report becomes monitoring data and, maybe, an event.

Poll results are applied VM by VM in one write each: the monitoring values
(``IP``, ``NETTX``...) are stored, and the state the poll implies
(``MONITOR_RUNNING``, ``MONITOR_GONE``...) goes through the one helper when
the table allows it there; otherwise it is ignored (a VM being shut down
that the provider already reports gone, for instance, is handled by the
table's own entries). A poll that carries the provider's price for the
instance (``PollResult.price``, an EC2 spot price) becomes the open stay's
recorded price. An instance the provider reclaimed (a spot
interruption) closes the VM's stay with the provider's reason and sends the
VM back to the scheduler.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import (
    BatchReads,
    Change,
    ManagerBase,
    Stepped,
    current_seq,
    now,
    step,
)
from cloudburst.drivers.base import PollResult, PollState, VmRef
from cloudburst.errors import ConflictError, NotFoundError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.store import spending, vm_pool
from cloudburst.store.vm_pool import PolledVm

log = logging.getLogger("cloudburst.daemon.lifecycle")

_POLL_EVENTS: dict[PollState, Event] = {
    PollState.ACTIVE: Event.MONITOR_RUNNING,
    PollState.GONE: Event.MONITOR_GONE,
    PollState.ERROR: Event.MONITOR_ERROR,
    PollState.PAUSED: Event.MONITOR_PAUSED,
    PollState.RECLAIMED: Event.MONITOR_RECLAIMED,
}

#: Seconds after which a poll that changed nothing still refreshes ``LAST_POLL``.
LAST_POLL_REFRESH = 300

_GONE = ("The instance is gone: the driver no longer reports it (stopped or deleted "
         "outside cloudburst)")


class Observing(ManagerBase):
    """Applies poll results (bulk polls and host reports) to VMs."""

    async def apply_poll(self, results: dict[int, PollResult],
                         versions: Mapping[int, int] | None = None,
                         read: Mapping[int, VmRecord | PolledVm] | None = None) -> None:
        """Store poll data and apply the state it implies, VM by VM.

        ``versions``: each VM's record version read before the driver was asked.
        A VM written since (an action moved it while the sample was taken) only
        gets the monitoring data: the sample may predate the move (a domain
        paused by a snapshot, gone while suspended) and must not undo it.

        ``read``: the records those versions come from. A result that changes
        nothing there (same monitoring values, no error, no price, no move) is
        not written VM by VM: only a ``LAST_POLL`` older than
        :data:`LAST_POLL_REFRESH` is refreshed, for all such VMs in one
        statement (a VM written since its read is left to its next poll). At
        100,000 running VMs this is what keeps steady polling off the writer.
        """
        if read is not None and versions is not None:
            stamp = now()
            quiet = {vm_id for vm_id, result in results.items()
                     if (vm := read.get(vm_id)) is not None
                     and vm.version == versions.get(vm_id) and _quiet(vm, result)}
            stale = {vm_id: read[vm_id].version for vm_id in quiet
                     if stamp - read[vm_id].last_poll >= LAST_POLL_REFRESH}
            if stale:
                await self.db.write(lambda connection: vm_pool.mark_polled(connection, stale,
                                                                           stamp))
            results = {vm_id: result for vm_id, result in results.items()
                       if vm_id not in quiet}
        # Written with the other changes of this turn (a monitoring tick's results, the
        # deploys and answers of the moment): one read of their VMs, one write each kind;
        # a future each, not a task each.
        queued = [(vm_id, self.queue_change(vm_id, self._poll_change(
            vm_id, result, None if versions is None else versions.get(vm_id, -1))))
            for vm_id, result in results.items()]
        failure: Exception | None = None
        try:
            for vm_id, future in queued:
                try:
                    before, stepped = await future
                except (ConflictError, NotFoundError):
                    continue
                except Exception as exc:  # the others are still applied
                    failure = failure or exc
                    continue
                if stepped.vm is not before:
                    if (stepped.vm.position == lifecycle.PENDING
                            and before.position != lifecycle.PENDING):
                        self.files.log(vm_id, "I", stepped.vm.sched_message)
                    self.after_step(before, stepped, {})
        except asyncio.CancelledError:
            for _, future in queued:
                future.cancel()
            raise
        if failure is not None:
            raise failure

    def _poll_change(self, vm_id: int, result: PollResult, version: int | None) -> Change:
        """The change that stores ``result`` on VM ``vm_id`` and applies the event it
        implies (``version``: the VM's version read before the poll, if known)."""
        stamp = now()
        event = _POLL_EVENTS.get(result.state)
        reclaimed = result.info.get("REASON", "instance taken back")

        def change(connection: Connection, vm: VmRecord, reads: BatchReads
                   ) -> tuple[VmRecord, Stepped]:
            changes = _sample_changes(vm, result)
            repriced = (result.price is not None and vm.host_id is not None
                        and spending.reprice_open_stay(connection, vm_id, result.price))
            moves = _moves(vm, event) and version in (None, vm.version)
            if (not moves and not changes and not repriced
                    and stamp - vm.last_poll < LAST_POLL_REFRESH):
                return vm, Stepped(vm)  # nothing to write
            changes["last_poll"] = stamp
            if not moves:
                return vm, Stepped(vm_pool.update_vm(connection, vm, later=reads.later,
                                                     **changes))
            assert event is not None
            if event is Event.MONITOR_GONE and vm.position == lifecycle.RUNNING:
                changes["error"] = _GONE
            elif lifecycle.apply(vm.position, event) == lifecycle.PENDING:
                why = f"reclaimed by the provider: {reclaimed}"
                vm_pool.update_history(connection, vm_id, current_seq(connection, vm_id),
                                       etime=stamp, reason=why)
                changes.update(host_id=None, deploy_id="", error="",
                               sched_message=f"Instance {why}; deploying again")
            return vm, step(connection, vm, event, install_id=self.install_id, changes=changes,
                            later=reads.later)

        return change


def _sample_changes(vm: VmRecord | PolledVm, result: PollResult) -> dict[str, Any]:
    """The monitoring values and error ``result`` changes on ``vm``."""
    changes: dict[str, Any] = {}
    monitoring = dict(vm.monitoring)
    monitoring.update((key, value) for key, value in result.info.items() if key != "ERROR")
    if monitoring != vm.monitoring:
        changes["monitoring"] = monitoring
    poll_error = result.info.get("ERROR", "")
    if poll_error and vm.error != f"Error monitoring VM: {poll_error}":
        changes["error"] = f"Error monitoring VM: {poll_error}"
    return changes


def _moves(vm: VmRecord | PolledVm, event: Event | None) -> bool:
    """Whether ``event`` moves ``vm`` somewhere else by the table."""
    return (event is not None and lifecycle.is_legal(vm.position, event)
            and lifecycle.move(vm.position, event).to != vm.position)


def _quiet(vm: VmRecord | PolledVm, result: PollResult) -> bool:
    """Whether ``result`` leaves ``vm`` as it is (apart from ``LAST_POLL``)."""
    return (result.price is None and not _moves(vm, _POLL_EVENTS.get(result.state))
            and not _sample_changes(vm, result))


def poll_refs(vms: Sequence[VmRecord | PolledVm], host: HostRecord) -> list[VmRef]:
    """References for polling ``vms`` on ``host``."""
    ref = ManagerBase.host_ref(host)
    return [VmRef(vm_id=vm.id, deploy_id=vm.deploy_id, host=ref) for vm in vms if vm.deploy_id]

"""What monitoring observed: poll results applied to VMs through the table.

The provider is the authority on whether an instance exists: a poll that
sees it gone moves the VM out of RUNNING with a reason; one that sees it back
moves it in again; one that sees it reclaimed by the provider (a spot
interruption) closes its history record with the reason and sends the VM back
to the scheduler. Poll data (``IP`` and the rest) goes to the VM's monitoring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import ManagerBase, _current_seq, _now
from cloudburst.daemon.lifecycle.stopping import Stopping
from cloudburst.drivers.base import PollResult, PollState, VmRef
from cloudburst.errors import (
    ConflictError,
    NotFoundError,
)
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import VmState
from cloudburst.store import vm_pool

log = logging.getLogger("cloudburst.daemon.lifecycle")


_POLL_EVENTS: dict[PollState, Event] = {
    PollState.ACTIVE: Event.MONITOR_RUNNING,
    PollState.GONE: Event.MONITOR_GONE,
    PollState.ERROR: Event.MONITOR_ERROR,
    PollState.PAUSED: Event.MONITOR_PAUSED,
    PollState.RECLAIMED: Event.MONITOR_RECLAIMED,
}



class Observing(Stopping):
    """Applies poll results (bulk polls and host reports) to VMs."""

    async def apply_poll(self, results: dict[int, PollResult]) -> None:
        """Store poll data and apply the state it implies, VM by VM."""
        await asyncio.gather(*(self._apply_one(vm_id, result)
                               for vm_id, result in results.items()))

    async def _apply_one(self, vm_id: int, result: PollResult) -> None:
        now = _now()
        event = _POLL_EVENTS.get(result.state)
        info = {key: value for key, value in result.info.items() if key != "ERROR"}
        poll_error = result.info.get("ERROR", "")
        reclaimed = result.info.get("REASON", "instance taken back")

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
                    elif state is VmState.PENDING:  # reclaimed: back to the scheduler
                        why = f"reclaimed by the provider: {reclaimed}"
                        vm_pool.update_history(connection, vm_id, _current_seq(connection, vm_id),
                                               etime=now, reason=why)
                        changes.update(host_id=None, deploy_id="", error="",
                                       sched_message=f"Instance {why}; deploying again")
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
            elif updated.position == lifecycle.PENDING:
                self.files.log(vm_id, "I", updated.sched_message)
                self._on_capacity_freed()



def poll_refs(vms: Sequence[VmRecord], host: HostRecord) -> list[VmRef]:
    """References for polling ``vms`` on ``host``."""
    ref = ManagerBase.host_ref(host)
    return [VmRef(vm_id=vm.id, deploy_id=vm.deploy_id, host=ref) for vm in vms if vm.deploy_id]

"""Recovery on start: finish what a crash or restart interrupted, as the journal says.

A VM left in a position whose work was under way (:data:`lifecycle.IN_FLIGHT`)
had driver work running when the daemon stopped. Its newest ``started``
journal entry names the work, its token and the host it acted on; nothing is
repeated blindly:

* a deploy asks the driver to *find* the instance by the token (EC2 and
  partner-cloud tags); found, its id is stored; not found, the deploy is
  replayed **with the same token**;
* stops, cleanups, power changes, save/restore and migrations are idempotent
  at the provider and run again with the same token (a migration to the
  journalled destination; a graceful shutdown or power-off is finished hard);
* hot-plug, snapshots, reboots and resizes cannot be safely repeated: they
  are settled as failed with an error asking the operator to check and retry;
* store-only positions (prolog, epilog) with no entry simply complete.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.lifecycle.work import REPLAYABLE
from cloudburst.errors import CloudburstError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event, Work
from cloudburst.model.records import JournalEntry, VmRecord
from cloudburst.model.states import VmState
from cloudburst.store import journal, vm_pool
from cloudburst.store.database import Database

log = logging.getLogger(__name__)

_WORK_BY_LABEL = {work.label: work for work in Work}
#: A graceful stop interrupted by a restart is finished hard: the guest had its chance.
_REPLAY_AS = {Work.SHUTDOWN: Work.CANCEL, Work.POWEROFF: Work.POWEROFF_HARD}


async def recover(db: Database, manager: LifecycleManager) -> int:
    """Resume or settle interrupted work; returns how many VMs needed it."""
    def read(connection: Connection) -> list[VmRecord]:
        found = vm_pool.list_vms(connection, states=[VmState.ACTIVE], with_history=False)
        return [vm for vm in found if vm.position in lifecycle.IN_FLIGHT]

    interrupted = await db.read(read)
    for vm in interrupted:
        log.info("recovering VM %d interrupted in %s", vm.id, vm.lcm_state.name)
        manager.files.log(vm.id, "I", f"Daemon restarted during {vm.lcm_state.name}; recovering")
        await resume(manager, vm)
    return len(interrupted)


async def resume(manager: LifecycleManager, vm: VmRecord) -> None:
    """Start (or settle) the work in-flight ``vm`` waits for, as its journal entry says.

    Also used by a leader taking over work a follower or a dead leader left
    (:mod:`cloudburst.daemon.handoff`).
    """
    def read(connection: Connection) -> JournalEntry | None:
        started = [entry for entry in journal.entries_for(connection, vm.id)
                   if entry.status == journal.STARTED]
        return started[-1] if started else None

    entry = await manager.db.read(read)
    work = _WORK_BY_LABEL.get(entry.action) if entry is not None else None
    try:
        if entry is None or work is None:
            await manager.advance(vm.id, Event.SUCCESS, expect=vm.position)
        elif work in REPLAYABLE:
            args = {"host_id": entry.host_id} if work in (Work.MIGRATE, Work.MIGRATE_LIVE) \
                else {}
            manager.start_work(vm, _REPLAY_AS.get(work, work), entry.token, args, replay=True)
        else:
            await manager.advance(
                vm.id, Event.FAILURE, expect=vm.position,
                changes={"error": f"{work.label} was interrupted by a restart; its outcome "
                                  "is unknown: check the VM and retry"},
                finish=(work.label, False, "interrupted by a restart"))
    except CloudburstError as exc:
        log.warning("VM %d: could not recover %s: %s", vm.id, vm.lcm_state.name, exc)

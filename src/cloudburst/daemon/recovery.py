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
  journalled destination; a graceful shutdown or power-off is finished hard;
  a stop that was backing off from an outage waits out its stored delay);
* hot-plug and snapshots cannot be safely repeated: they are settled as failed
  with an error asking the operator to check and retry; a context reconfigure
  (``updateconf`` of a running VM) can, and runs again from the stored template;
* in-place work (the VM stays where it is, so no position says it was under
  way; only its ``started`` journal entry does) is run again when the VM is
  still where it was (same position, same stay), else its entry is closed as
  failed with the reason: a resize of a powered-off or undeployed VM brings the
  instance to the capacity the VM has in the store; a reboot or reset of a
  running VM is done again (the guest may reboot twice, but a reboot the
  operator asked for is never silently lost);
* store-only positions (prolog, epilog) with no entry simply complete.
"""

from __future__ import annotations

import asyncio
import logging
import time

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.lifecycle.base import Known, cloud_section, current_seq
from cloudburst.daemon.lifecycle.work import REPLAYABLE
from cloudburst.errors import CloudburstError, NotFoundError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event, StateKey, Work
from cloudburst.model.records import JournalEntry, VmRecord
from cloudburst.store import backoffs, host_pool, journal, vm_pool
from cloudburst.store.database import Database

log = logging.getLogger(__name__)

_WORK_BY_LABEL = {work.label: work for work in Work}
_STOPS = frozenset({Work.SHUTDOWN, Work.CANCEL, Work.CLEANUP})
#: A graceful stop interrupted by a restart is finished hard: the guest had its chance.
_REPLAY_AS = {Work.SHUTDOWN: Work.CANCEL, Work.POWEROFF: Work.POWEROFF_HARD}


#: What resuming a VM needs from the store: its newest started journal entry and
#: when its stop may be tried again (if it is backing off from an outage).
_Plan = tuple[JournalEntry | None, float | None]

#: VMs read per statement when recovery reads every interrupted VM.
_CHUNK = 500


def _plan(connection: Connection, vm_id: int) -> _Plan:
    started = [entry for entry in journal.entries_for(connection, vm_id)
               if entry.status == journal.STARTED]
    return started[-1] if started else None, backoffs.due(connection, vm_id, backoffs.STOP)


def _interrupted(connection: Connection) -> list[tuple[VmRecord, _Plan, Known | None]]:
    """Every in-flight VM with its plan and what its work needs (host, stay, cloud
    section), read in a few statements whatever their number: after a takeover in
    a burst there are thousands, and a read per VM kept a new leader from driving
    for minutes."""
    ids = sorted(vm_id for vm_id, _ in vm_pool.in_flight_versions(connection,
                                                                   lifecycle.IN_FLIGHT))
    if not ids:
        return []
    records: list[VmRecord] = []
    for start in range(0, len(ids), _CHUNK):
        records += vm_pool.list_vms(connection, ids=ids[start:start + _CHUNK],
                                    with_history=False)
    started = {entry.vm_id: entry for entry in journal.unfinished(connection)}  # newest wins
    stops: dict[int, float] = {}
    for backoff in backoffs.active(connection, backoffs.STOP, 0.0):
        stops[backoff.vm_id] = max(backoff.until, stops.get(backoff.vm_id, backoff.until))
    seqs = vm_pool.current_seqs(connection, ids)
    placed = {vm.host_id for vm in records if vm.host_id is not None}
    hosts = {host.id: host for host in host_pool.list_hosts(
        connection, host_ids=sorted(placed), with_vms=False, with_usage=False)} if placed else {}
    memo: dict[object, object] = {}
    found = []
    for vm in records:
        host = hosts.get(vm.host_id) if vm.host_id is not None else None
        known = None
        if host is not None:
            section = cloud_section(connection, vm, host, memo) if host.is_public_cloud \
                else None
            known = Known(host, seqs.get(vm.id, -1),
                          None if section is None else section.attributes)
        found.append((vm, (started.get(vm.id), stops.get(vm.id)), known))
    return found


async def recover(db: Database, manager: LifecycleManager) -> int:
    """Resume or settle interrupted work; returns how many VMs needed it.

    Everything is read in one transaction of a few statements (a new leader runs
    this right after its election, on a machine that may be busy); then each VM's
    work starts in the background, knowing its host and stay.
    """
    started = time.monotonic()
    interrupted = await db.read(_interrupted)
    for vm, _, _ in interrupted:
        log.debug("recovering VM %d interrupted in %s", vm.id, vm.lcm_state.name)
        manager.files.log(vm.id, "I", f"Daemon restarted during {vm.lcm_state.name}; recovering")
    # Settling a VM writes it: together, the writes share batches.
    await asyncio.gather(*(resume(manager, vm, plan, known)
                           for vm, plan, known in interrupted))
    in_place = await db.write(_interrupted_in_place)
    for vm, entry in in_place:
        log.info("recovering VM %d: %s interrupted by a restart", vm.id, entry.action)
        manager.files.log(vm.id, "I", f"Daemon restarted during {entry.action}; running it again")
        manager.start_work(vm, _WORK_BY_LABEL[entry.action], entry.token, {}, replay=True)
    if interrupted or in_place:
        log.info("recovery resumed %d interrupted VMs and %d in-place actions in %.1f s",
                 len(interrupted), len(in_place), time.monotonic() - started)
    return len(interrupted) + len(in_place)


#: In-place work run again after a restart: a resize brings the instance to the
#: capacity the VM already has in the store, whatever the first try did; a reboot
#: or reset ends with the guest freshly booted, once or twice.
_REPLAY_IN_PLACE = frozenset({Work.RESIZE, Work.REBOOT, Work.RESET})


def _interrupted_in_place(connection: Connection) -> list[tuple[VmRecord, JournalEntry]]:
    """Started in-place work of :data:`_REPLAY_IN_PLACE` whose VM is still where it
    started; the entries of VMs that moved on are settled as failed."""
    found = []
    for entry in journal.unfinished(connection):
        work = _WORK_BY_LABEL.get(entry.action)
        if work not in _REPLAY_IN_PLACE:
            continue
        try:
            vm: VmRecord | None = vm_pool.get_vm(connection, entry.vm_id, with_history=False)
        except NotFoundError:
            vm = None
        if vm is None or (vm.position, work) not in IN_PLACE \
                or current_seq(connection, vm.id) != entry.seq:
            journal.finish(connection, entry.id, ok=False,
                           result="interrupted by a restart; the VM moved on")
        else:
            found.append((vm, entry))
    return found


async def resume(manager: LifecycleManager, vm: VmRecord, plan: _Plan | None = None,
                 known: Known | None = None) -> None:
    """Start (or settle) the work in-flight ``vm`` waits for, as its journal entry says.

    Also used by a leader taking over work a follower or a dead leader left
    (:mod:`cloudburst.daemon.handoff`). ``plan`` is what :func:`_plan` read, if
    the caller read it already; ``known``, what the work needs (not read again).
    """
    if plan is None:
        plan = await manager.db.read(lambda connection: _plan(connection, vm.id))
    entry, stop_due = plan
    work = _WORK_BY_LABEL.get(entry.action) if entry is not None else None
    try:
        if entry is None or work is None:
            await manager.advance(vm.id, Event.SUCCESS, expect=vm.position)
        elif work in REPLAYABLE:
            args = {"host_id": entry.host_id} if work in (Work.MIGRATE, Work.MIGRATE_LIVE) \
                else {}
            # A stop backing off from an outage waits out the delay its last try set.
            delay = max(0.0, stop_due - time.time()) if stop_due is not None \
                and work in _STOPS else 0.0
            manager.start_work(vm, _REPLAY_AS.get(work, work), entry.token, args, replay=True,
                               delay=delay, known=known)
        else:
            await manager.advance(
                vm.id, Event.FAILURE, expect=vm.position,
                changes={"error": f"{work.label} was interrupted by a restart; its outcome "
                                  "is unknown: check the VM and retry"},
                finish=(work.label, False, "interrupted by a restart"))
    except CloudburstError as exc:
        log.warning("VM %d: could not recover %s: %s", vm.id, vm.lcm_state.name, exc)


#: (position, work) pairs where the work leaves the VM where it is (reboot, reset,
#: a powered-off resize): what a follower journals ``handed`` for the leader.
IN_PLACE: frozenset[tuple[StateKey, Work]] = frozenset(
    (position, move.work) for (position, _), move in lifecycle.TRANSITIONS.items()
    if move.work is not None and not move.work.instant and move.to == position
    and position not in lifecycle.IN_FLIGHT)


async def take_handed(manager: LifecycleManager) -> int:
    """Run the work followers handed to this (leading) daemon; returns how many ran.

    An entry whose VM moved on since (terminated, powered off before its
    reboot ran...) is settled as failed, saying so.
    """
    entries = await manager.db.read(journal.handed)
    taken = 0
    for entry in entries:
        work = _WORK_BY_LABEL.get(entry.action)

        def write(connection: Connection, entry: JournalEntry = entry,
                  work: Work | None = work) -> VmRecord | None:
            try:
                vm = vm_pool.get_vm(connection, entry.vm_id, with_history=False)
            except NotFoundError:
                vm = None
            if vm is None or work is None or (vm.position, work) not in IN_PLACE \
                    or current_seq(connection, vm.id) != entry.seq:
                journal.finish(connection, entry.id, ok=False,
                               result="the VM moved on before the leader could run it")
                return None
            return vm if journal.take(connection, entry.id) else None

        vm = await manager.db.write(write)
        if vm is None or work is None:
            continue
        log.info("running %s of VM %d handed over by another daemon", work.label, vm.id)
        manager.start_work(vm, work, entry.token, {})
        taken += 1
    return taken

"""The life-cycle manager's core: the one helper that applies an event and writes it.

:func:`step` is the only code that changes a VM's state. Inside one store
transaction it looks the move up in :data:`cloudburst.model.lifecycle.TRANSITIONS`,
checks that the host's driver can do the work the move starts, writes the new
position with a compare-and-swap on the row's version, records the action on
the VM's current stay, journals the driver work with its idempotency token,
and runs store-only work (prolog, epilog) at once, following its ``SUCCESS``.
:meth:`ManagerBase.advance` wraps it in a write and then starts the driver
work (:mod:`cloudburst.daemon.lifecycle.work`) as a background task.

:func:`step_batch` is its batch form: the state changes asked in one turn of the
event loop (a launch batch's answers, a thousand terminations, a scheduler
pass's placements) are written by one store write that reads their VMs at
once and runs :func:`step` for each, every VM still by its own compare-and-swap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, bindparam, func, select

from cloudburst.config.settings import Settings
from cloudburst.daemon.deploy_notes import JournalNotes
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.files import VmFiles
from cloudburst.drivers.base import DeploySpec, HostRef, VmRef
from cloudburst.errors import (
    ConflictError,
    DriverError,
    IllegalActionError,
    NotFoundError,
    UnsupportedActionError,
)
from cloudburst.events import EventBus
from cloudburst.model import lifecycle
from cloudburst.model.cloud_sections import (
    CloudSection,
    cloud_sections,
    no_section_reason,
    section_for,
)
from cloudburst.model.lifecycle import Event, Move, StateKey, Work
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord
from cloudburst.model.snapshots import vm_snapshot
from cloudburst.model.states import CAPACITY_HOLDING_STATES, VmState, vm_state_label
from cloudburst.store import backoffs, host_pool, journal, quota_pool, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.deferred import Deferred
from cloudburst.store.prepared import Savepoint
from cloudburst.store.schema import history
from cloudburst.store.turn_writes import settle
from cloudburst.template import Template

log = logging.getLogger("cloudburst.daemon.lifecycle")

T = TypeVar("T")

#: Seconds a host that reported "no capacity" is skipped for that VM.
CAPACITY_BACKOFF = 60.0

#: Most changes written by one store write (:meth:`ManagerBase.batched`): the writes of
#: a pass of 1,000 placements leave room between them for an urgent write (a journal note).
BATCH_CHANGES = 100

#: Most VM records a manager keeps between batches (see ManagerBase._keep): a burst's VMs
#: between their deploy and their first poll.
KEPT_VMS = 20_000

#: Tries of one event that loses its compare-and-swap to another daemon's write.
CONFLICT_ATTEMPTS = 4

#: Extra inputs of the work an event starts (destination host, disk, snapshot...).
WorkArgs = Mapping[str, Any]
#: An in-transaction hook: more changes to write with the move (history, template...).
Prepare = Callable[[Connection, VmRecord, Move], dict[str, Any]]


def now() -> int:
    return int(time.time())


_CURRENT_SEQ = select(func.max(history.c.seq)).where(history.c.vm_id == bindparam("vm_id"))


def current_seq(connection: Connection, vm_id: int) -> int:
    """The VM's current stay (history ``SEQ``), -1 before its first deploy."""
    value = connection.execute(_CURRENT_SEQ, {"vm_id": vm_id}).scalar()
    return -1 if value is None else int(value)


def token_for(install_id: str, vm_id: int, seq: int) -> str:
    """The idempotency token of the deploy of ``vm_id``'s ``seq``-th stay (<= 64 chars)."""
    return f"{install_id}-vm{vm_id}-{seq}"


#: States in which the VM's current stay is open: user actions are recorded on it.
_ON_A_HOST = frozenset({VmState.ACTIVE, VmState.POWEROFF, VmState.SUSPENDED})


@dataclass(slots=True)
class BatchReads:
    """What the changes of one :func:`step_batch` share: their VMs, read at once, as
    each change leaves them, and reads several changes make (hosts, stays...)."""

    #: The VMs of the batch as last written in it (missing: no such VM).
    vms: dict[int, VmRecord]
    #: Anything a change of the batch may keep for the others (by its own keys).
    memo: dict[Any, Any] = field(default_factory=dict)
    #: The changes' blind writes (journal, backoffs), one statement each for the batch.
    later: Deferred = field(default_factory=Deferred)


#: One VM's change in a batch: applies it to the VM (as read in the transaction) with
#: :func:`step`; returns the VM as it was and what :func:`step` did.
Change = Callable[[Connection, VmRecord, BatchReads], "tuple[VmRecord, Stepped]"]


def step_batch(connection: Connection, changes: Sequence[tuple[int, Change]],
               hosts: Collection[int] = (), kept_hosts: dict[int, HostRecord] | None = None,
               kept_vms: Mapping[int, VmRecord] | None = None
               ) -> list[tuple[VmRecord, Stepped] | Exception]:
    """Apply each ``(vm_id, change)`` in order in this transaction; each gets its
    outcome or the exception it raised (its writes undone, the others kept).

    The VMs are read in one statement, and so are ``hosts`` (the changes read them
    through :func:`batch_host`), decoded only when changed since ``kept_hosts``
    (:func:`host_pool.hosts_kept`); so are the VMs, when ``kept_vms`` has records of
    them (:func:`vm_pool.vms_kept`). The changes run under one savepoint, their
    blind writes (:attr:`BatchReads.later`) sent once for all at the end; when one
    raises, that savepoint is rolled back and they run again one savepoint each
    (each with its own writes), so a failing change costs the others nothing but
    the re-run.
    """
    wanted = {vm_id for vm_id, _ in changes}
    first = (vm_pool.vms_kept(connection, wanted, kept_vms) if kept_vms
             else vm_pool.get_vms(connection, wanted))
    known_hosts = {("host", host_id): host for host_id, host in host_pool.hosts_kept(
        connection, hosts, {} if kept_hosts is None else kept_hosts).items()} if hosts else {}
    savepoint = Savepoint(connection)
    try:
        reads = BatchReads(dict(first), dict(known_hosts))
        outcomes: list[tuple[VmRecord, Stepped] | Exception] = [
            _one_change(connection, vm_id, change, reads) for vm_id, change in changes]
        reads.later.flush(connection)
    except Exception:
        savepoint.rollback()
    else:
        savepoint.commit()
        return outcomes
    reads = BatchReads(dict(first), dict(known_hosts))
    outcomes = []
    for vm_id, change in changes:
        savepoint = Savepoint(connection)
        try:
            outcome = _one_change(connection, vm_id, change, reads, alone=True)
        except Exception as exc:
            savepoint.rollback()
            reads.later.discard()
            outcomes.append(exc)
        else:
            savepoint.commit()
            outcomes.append(outcome)
    return outcomes


def memo(reads: BatchReads, key: tuple[object, ...], make: Callable[[], T]) -> T:
    """``make()``, once per batch of changes for ``key``."""
    if key not in reads.memo:
        reads.memo[key] = make()
    found: T = reads.memo[key]
    return found


def batch_host(connection: Connection, reads: BatchReads, host_id: int) -> HostRecord:
    """Host ``host_id`` without usage, read once per batch (or with the batch's hosts).

    Raises:
        NotFoundError: no such host.
    """
    return memo(reads, ("host", host_id),
                lambda: host_pool.get_host(connection, host_id, with_usage=False))


def _host_or_none(connection: Connection, reads: BatchReads, host_id: int
                  ) -> HostRecord | None:
    try:
        return batch_host(connection, reads, host_id)
    except NotFoundError:
        return None


def _one_change(connection: Connection, vm_id: int, change: Change, reads: BatchReads,
                *, alone: bool = False) -> tuple[VmRecord, Stepped]:
    """Run ``change``; ``alone``: with its deferred writes (in its own savepoint)."""
    vm = reads.vms.get(vm_id)
    if vm is None:
        raise NotFoundError(f"VM {vm_id} does not exist")
    if reads.later.touches(vm_id):  # the change may read what an earlier one wrote
        reads.later.flush(connection)
    before, stepped = change(connection, vm, reads)
    if alone:
        reads.later.flush(connection)
    reads.vms[vm_id] = stepped.vm
    return before, stepped


@dataclass(frozen=True, slots=True)
class Known:
    """What the write that started a work knew of it, so the work need not read it
    again: the VM's host, its stay (history ``SEQ``) and its cloud section there
    (``None``: a local host, or not known)."""

    host: HostRecord
    seq: int
    section: Mapping[str, str] | None = None


@dataclass(slots=True)
class Stepped:
    """What :func:`step` did: the VM as written, the positions it passed, the work to run."""

    vm: VmRecord
    passed: list[StateKey] = field(default_factory=list)
    work: Work | None = None
    token: str = ""
    #: The work was journalled for the leader to run (see ``handed`` of :func:`step`).
    handed: bool = False
    #: Handed to the work it starts (see :class:`Known`), when the change knew it.
    known: Known | None = None
    #: The VM's current stay as the move left it (history ``SEQ``, -1: none).
    seq: int = -1


def step(connection: Connection, vm: VmRecord, event: Event, *, install_id: str,
         check: Callable[[Connection, VmRecord, Work], None] | None = None,
         changes: Mapping[str, Any] | None = None, prepare: Prepare | None = None,
         journal_host: int | None = None, finish: tuple[str, bool, str] | None = None,
         why: str = "", handed: bool = False, seq: int | None = None,
         stay: HistoryRecord | None = None, later: Deferred | None = None) -> Stepped:
    """Apply ``event`` to ``vm`` (as read in this transaction) and write it.

    Args:
        check: refuses work the host's driver cannot do (raises before any write).
        changes: columns to write with the move (deploy id, error...).
        prepare: more changes computed from the VM and the move, in the transaction.
        journal_host: the host the journalled work acts on (default the VM's host).
        finish: ``(work label, ok, result)`` of the work whose result this is:
            its journal entries are closed in the same transaction, and a success
            ends the VM's backoff of that work (:data:`backoffs.CLEARED_BY`).
        why: the history REASON of a user action (default ``"<action> requested"``),
            e.g. the policy rule that asked for it.
        handed: this daemon does not lead. Work that leaves the VM where it is
            (reboot, reset...) is then journalled ``handed`` for the leader to
            take; in-flight work needs no such mark (the leader adopts the VM).
        seq: the VM's current stay once ``prepare`` ran, when the caller knows it
            (else it is read).
        stay: the stay the move opens (a deploy), written here (with its prolog's
            times when the prolog is instant: one write); it is the current stay, and
            no work is journalled on it yet, so the journal's count of earlier
            attempts is skipped.
        later: the batch's deferred writes (:mod:`cloudburst.store.deferred`): the
            VM's row, its stay's, the journal's writes and the backoff's end go there
            (so a ``ConflictError`` may come from its flush instead).

    A user's action that brings the VM back into the RUNNING_* quota metrics
    (``resume`` of a powered-off, suspended, stopped or undeployed VM) is
    checked against its owner's and group's quotas first, as oned does.

    Raises:
        IllegalActionError: the move is not in the table.
        UnsupportedActionError: the driver cannot do the work (from ``check``).
        QuotaActionError: the action would break a RUNNING_* quota.
        ConflictError: another writer changed the VM since it was read.
    """
    moved = lifecycle.move(vm.position, event)
    if event in lifecycle.USER_EVENTS and vm.state not in quota_pool.RUNNING_STATES \
            and moved.to[0] in quota_pool.RUNNING_STATES:
        quota_pool.check_running(connection, vm, stays_on_host=moved.to[0] is VmState.ACTIVE,
                                 later=later)
    if moved.work is not None and check is not None and not moved.work.instant:
        check(connection, vm, moved.work)
    values: dict[str, Any] = dict(changes or {})
    if prepare is not None:
        values.update(prepare(connection, vm, moved))
    if moved.to != vm.position:
        values.update(state=moved.to[0], lcm_state=moved.to[1])
    if stay is not None:
        seq = stay.seq
        if moved.work is Work.PROLOG:  # instant: it starts and ends now (see below)
            stamp = now()
            stay = replace(stay, petime=stamp, rstime=stamp)
        vm_pool.insert_history(connection, stay, later=later)
    elif seq is None:
        seq = current_seq(connection, vm.id)
    code = lifecycle.HISTORY_ACTIONS.get(event)
    if code is not None and seq >= 0 and event in lifecycle.USER_EVENTS \
            and vm.state in _ON_A_HOST:
        vm_pool.update_history(connection, vm.id, seq, action=code,
                               reason=why or f"{event.value} requested", later=later)
    if finish is not None:
        label, ok, result = finish
        journal.finish_started(connection, vm.id, _journal_actions(label), ok=ok,
                               result=result, later=later)
        cleared = backoffs.CLEARED_BY.get(label) if ok else None
        if cleared is not None:
            backoffs.clear(connection, vm.id, cleared, later=later)
    done = Stepped(vm, [moved.to] if moved.to != vm.position else [], seq=seq)
    # Store-only work (an instant prolog or epilog) is done here and its SUCCESS
    # followed: the VM's row is written once, at the position the VM ends up in.
    previous, position, work = vm.position, moved.to, moved.work
    while work is not None and work.instant:
        if not (work is Work.PROLOG and stay is not None):  # else written with the stay
            _instant(connection, vm, work, seq, later)
        after = lifecycle.move(position, Event.SUCCESS)
        previous, position, work = position, after.to, after.work
        done.passed.append(position)
    if position != moved.to:
        values.update(state=position[0], lcm_state=position[1], prev_state=previous[0],
                      prev_lcm_state=previous[1])
    if position == lifecycle.DONE:
        values.setdefault("etime", now())
    written = vm_pool.update_vm(connection, vm, later=later, **values) if values else vm
    done.vm = written
    if work is not None:
        done.work = work
        base = token_for(install_id, vm.id, seq)
        if work is not Work.DEPLOY:
            base = f"{base}-{work.label}"
        host_id = journal_host if journal_host is not None else (written.host_id or -1)
        done.handed = handed and written.position not in lifecycle.IN_FLIGHT
        done.token = journal.begin(connection, vm_id=vm.id, host_id=host_id, seq=seq,
                                   action=work.label, base=base, new_stay=stay is not None,
                                   status=journal.HANDED if done.handed else journal.STARTED,
                                   later=later)
    return done


def _journal_actions(label: str) -> tuple[str, ...]:
    # A graceful shutdown falls back to cancel: either closes the other.
    if label in ("shutdown", "cancel"):
        return ("shutdown", "cancel")
    return (label,)


def _instant(connection: Connection, vm: VmRecord, work: Work, seq: int,
             later: Deferred | None) -> None:
    """Store-only work: the prolog ends at once; the epilog closes the stay."""
    stamp = now()
    if seq < 0:
        return
    if work is Work.PROLOG:
        vm_pool.update_history(connection, vm.id, seq, petime=stamp, rstime=stamp, later=later)
    elif work is Work.EPILOG:
        close_stay(connection, vm.id, seq, later=later)


def close_stay(connection: Connection, vm_id: int, seq: int, *,
               later: Deferred | None = None) -> None:
    """The epilog's store step: the stay ``seq`` ends now (running, epilog, stay)."""
    if seq >= 0:
        stamp = now()
        vm_pool.update_history(connection, vm_id, seq, retime=stamp, estime=stamp,
                               eetime=stamp, etime=stamp, later=later)


class ManagerBase:
    """Collaborators, background work and :meth:`advance` (see the module docstring)."""

    def __init__(
        self,
        db: Database,
        dispatcher: Dispatcher,
        files: VmFiles,
        settings: Settings,
        install_id: str,
        on_capacity_freed: Callable[[], None],
        events: EventBus | None = None,
    ) -> None:
        self.db = db
        self.dispatcher = dispatcher
        self.files = files
        self.settings = settings
        self.install_id = install_id
        self._on_capacity_freed = on_capacity_freed
        #: Where committed VM changes are published (:mod:`cloudburst.events`).
        self.events = events if events is not None else EventBus()
        self._tasks: set[asyncio.Task[Any]] = set()
        #: Whether this daemon runs driver work (it leads); see spawn.
        self.drives: Callable[[], bool] = lambda: True
        #: Called instead of running work this daemon does not drive.
        self.hand_off: Callable[[], None] = lambda: None
        #: Drivers' notes on deploys in flight (EC2 batches), in the journal.
        self.deploy_notes = JournalNotes(db)
        #: Changes asked in this turn of the loop, written together (see batched).
        self._changes: list[tuple[int, Change, asyncio.Future[Any], int | None]] = []
        self._writes: set[asyncio.Task[None]] = set()
        #: Host records as the last batch that named them read them (by version).
        self._kept_hosts: dict[int, HostRecord] = {}
        #: VM records as the last batch that wrote them left them (by version), oldest
        #: first (see _keep).
        self._kept_vms: dict[int, VmRecord] = {}

    # -- background work --------------------------------------------------------------

    def spawn(self, coroutine: Coroutine[Any, Any, Any], name: str) -> None:
        """Run driver work in the background, keeping a reference until it ends.

        ``name`` is ``<work>-<vm id>``: :meth:`busy_vms` reads the id from it.
        A daemon that does not lead runs no driver work: the state change that
        asked for it is in the store, and :attr:`hand_off` tells the leader.
        """
        if not self.drives():
            coroutine.close()
            self.hand_off()
            return
        task = asyncio.get_running_loop().create_task(coroutine, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task %s failed", task.get_name(), exc_info=task.exception())

    def busy_vms(self) -> set[int]:
        """VMs that background work of this daemon is working on."""
        busy = set()
        for task in self._tasks:
            _, _, vm_id = task.get_name().rpartition("-")
            if vm_id.isdigit():
                busy.add(int(vm_id))
        return busy

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

    # -- the one way a VM moves -------------------------------------------------------

    async def advance(self, vm_id: int, event: Event, *, expect: StateKey | None = None,
                      changes: Mapping[str, Any] | None = None, prepare: Prepare | None = None,
                      args: WorkArgs | None = None, journal_host: int | None = None,
                      finish: tuple[str, bool, str] | None = None, why: str = "",
                      done_stays: bool = False, seq: int | None = None) -> VmRecord:
        """Apply ``event`` to VM ``vm_id`` with :func:`step`, then start the work it entered.

        ``expect`` refuses the event unless the VM is still where the caller
        saw it (a work result for a VM that moved on must not apply to its new
        position). ``done_stays``: a VM already DONE is returned as it is (terminate).

        Raises:
            NotFoundError: no such VM.
            IllegalActionError: illegal in the VM's state, or it moved on.
            UnsupportedActionError: the host's driver cannot do the work.
            ConflictError: other daemons' writes won the compare-and-swap
                ``CONFLICT_ATTEMPTS`` times in a row.
        """
        handed = not self.drives()

        def change(connection: Connection, vm: VmRecord, reads: BatchReads
                   ) -> tuple[VmRecord, Stepped]:
            if expect is not None and vm.position != expect:
                raise IllegalActionError(
                    f"VM {vm_id} moved on to {vm_state_label(*vm.position)}")
            if done_stays and vm.state is VmState.DONE:
                return vm, Stepped(vm)
            stepped = step(connection, vm, event, install_id=self.install_id,
                           check=self._check_driver(args), changes=changes,
                           prepare=prepare, journal_host=journal_host, finish=finish,
                           why=why, handed=handed, seq=seq, later=reads.later)
            host_id = stepped.vm.host_id
            if stepped.work is not None and host_id is not None:
                host = _host_or_none(connection, reads, host_id)
                if host is not None:
                    stepped.known = Known(host, stepped.seq)
            return vm, stepped

        for attempt in range(1, CONFLICT_ATTEMPTS + 1):
            try:
                before, stepped = await self.batched(vm_id, change)
                break
            except ConflictError:
                # Another daemon (PostgreSQL) wrote the VM between this one's read and
                # its compare-and-swap; the event is judged again on what it wrote.
                if attempt == CONFLICT_ATTEMPTS:
                    raise
        self.after_step(before, stepped, args or {})
        return stepped.vm

    async def batched(self, vm_id: int, change: Change, *, host_id: int | None = None
                      ) -> tuple[VmRecord, Stepped]:
        """Write ``change`` of VM ``vm_id`` with the others asked in this turn of the
        loop, in one :func:`step_batch`; returns its outcome or raises its exception.
        ``host_id``: a host the change reads (:func:`batch_host`), read with the
        batch's others in one statement."""
        return await self.queue_change(vm_id, change, host_id=host_id)

    def queue_change(self, vm_id: int, change: Change, *, host_id: int | None = None
                     ) -> asyncio.Future[tuple[VmRecord, Stepped]]:
        """:meth:`batched` without a coroutine: the future of ``change``'s outcome (many
        changes asked at once need no task each)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[VmRecord, Stepped]] = loop.create_future()
        if not self._changes:
            loop.call_soon(self._write_changes)
        self._changes.append((vm_id, change, future, host_id))
        return future

    def _write_changes(self) -> None:
        queued, self._changes = self._changes, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(queued), BATCH_CHANGES):
            task = loop.create_task(self._write_batch(queued[start:start + BATCH_CHANGES]))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write_batch(self, queued: list[tuple[int, Change, asyncio.Future[Any],
                                                    int | None]]) -> None:
        changes = [(vm_id, change) for vm_id, change, _, _ in queued]
        hosts = {host_id for _, _, _, host_id in queued if host_id is not None}
        try:
            outcomes: list[Any] = await self.db.write(
                lambda connection: step_batch(connection, changes, hosts, self._kept_hosts,
                                              self._kept_vms))
        except asyncio.CancelledError:
            for _, _, future, _ in queued:
                future.cancel()
            raise
        except Exception as exc:  # the write as a whole (store, fence): every change
            outcomes = [exc] * len(queued)
        settle([future for _, _, future, _ in queued], outcomes)
        self._keep(outcomes)

    def kept_vm(self, vm_id: int) -> VmRecord | None:
        """The record of VM ``vm_id`` kept for its next batch (``None``: none kept)."""
        return self._kept_vms.get(vm_id)

    def _keep(self, outcomes: Sequence[tuple[VmRecord, Stepped] | Exception]) -> None:
        """Keep the VM records a committed batch left (at most :data:`KEPT_VMS`, the
        newest), so the next batch of the same VM (its driver's answer, its first poll)
        need not decode it again. Records are never changed in place (a change copies
        a template before editing it), so sharing them is safe."""
        kept = self._kept_vms
        for outcome in outcomes:
            if isinstance(outcome, Exception):
                continue
            vm = outcome[1].vm
            kept.pop(vm.id, None)
            if vm.state is not VmState.DONE and not vm.history:
                kept[vm.id] = vm
        while len(kept) > KEPT_VMS:
            del kept[next(iter(kept))]

    def after_step(self, before: VmRecord, stepped: Stepped, args: WorkArgs) -> None:
        """Log and publish the positions passed, start the work, wake the scheduler
        when it matters."""
        for position in stepped.passed:
            self.files.log(before.id, "I", f"New state is {vm_state_label(*position)}")
        if stepped.passed:
            log.debug("VM %d: %s", before.id, vm_state_label(*stepped.vm.position))
        if stepped.vm.version != before.version:
            self.events.publish("vm", before.id, vm_snapshot(stepped.vm))
        if stepped.handed:
            self.hand_off()  # the leader takes it from the journal, even if we lead now
        elif stepped.work is not None:
            self.start_work(stepped.vm, stepped.work, stepped.token, args, known=stepped.known)
        held = before.state in CAPACITY_HOLDING_STATES
        if (held and stepped.vm.state not in CAPACITY_HOLDING_STATES) or (
                stepped.vm.state is VmState.PENDING and before.state is not VmState.PENDING):
            self._on_capacity_freed()

    def start_work(self, vm: VmRecord, work: Work, token: str, args: WorkArgs, *,
                   replay: bool = False, delay: float = 0.0, known: Known | None = None
                   ) -> None:
        """Run ``work`` for ``vm`` in the background (see :mod:`.work`), after
        ``delay`` seconds if the VM is still where it was then; ``known``: what
        the write that started it knew (it is not read again)."""
        raise NotImplementedError  # provided by the work mixin

    def _check_driver(self, args: WorkArgs | None) -> Callable[[Connection, VmRecord, Work],
                                                               None]:
        def check(connection: Connection, vm: VmRecord, work: Work) -> None:
            if work.capability is None or vm.host_id is None:
                return
            host = host_pool.get_host(connection, vm.host_id, with_usage=False)
            driver = self.dispatcher.vm_driver(host.vm_mad)
            if not driver.supports(work.capability):
                raise UnsupportedActionError(
                    f'Action "{work.label}" is not supported by driver {host.vm_mad} '
                    f"of host {host.name}")

        return check

    # -- reading --------------------------------------------------------------------------

    @staticmethod
    def host_ref(host: HostRecord) -> HostRef:
        """The driver's view of ``host``: id, name and template attributes."""
        return HostRef(id=host.id, name=host.name, attributes=host.template.as_flat_dict())

    def vm_ref(self, vm: VmRecord, host: HostRecord, deploy_id: str | None = None) -> VmRef:
        return VmRef(vm_id=vm.id, deploy_id=vm.deploy_id if deploy_id is None else deploy_id,
                     host=self.host_ref(host))

    async def host_of(self, vm_id: int) -> HostRecord | None:
        def read(connection: Connection) -> HostRecord | None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if vm.host_id is None:
                return None
            try:
                return host_pool.get_host(connection, vm.host_id, with_usage=False)
            except NotFoundError:
                return None

        return await self.db.read(read)

    async def host(self, host_id: int) -> HostRecord | None:
        def read(connection: Connection) -> HostRecord | None:
            try:
                return host_pool.get_host(connection, host_id, with_usage=False)
            except NotFoundError:
                return None

        return await self.db.read(read)

    async def current(self, vm_id: int) -> VmRecord | None:
        def read(connection: Connection) -> VmRecord | None:
            try:
                return vm_pool.get_vm(connection, vm_id, with_history=False)
            except NotFoundError:
                return None

        return await self.db.read(read)

    async def set_error(self, vm_id: int, message: str) -> None:
        """Record an error on a VM without changing its state."""
        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            vm_pool.update_vm(connection, vm, error=message)

        with contextlib.suppress(IllegalActionError, NotFoundError):
            await self.db.write(write)

    async def deploy_spec(self, vm: VmRecord, host: HostRecord, path: Path, token: str, *,
                          template: Template | None = None,
                          section: Mapping[str, str] | None = None) -> DeploySpec:
        """What the driver's ``deploy`` (or ``poweron``/``find``) gets, with the VM's
        cloud section for ``host`` chosen here (:func:`cloud_section`), never by the driver.
        ``template`` (the deployment) and ``section``, when the caller has them, are
        not made or read again.

        Raises:
            DriverError: ``host`` is a cloud site and none of the VM's sections applies.
        """
        return DeploySpec(
            vm_id=vm.id, host=self.host_ref(host), deployment_file=path,
            template=template if template is not None else self.deployment_template(vm),
            token=token, memory_mb=vm.memory, cpu=vm.cpu,
            section=section if section is not None else await self.section_on(vm, host),
            notes=self.deploy_notes,
        )

    async def section_on(self, vm: VmRecord, host: HostRecord) -> Mapping[str, str] | None:
        """The VM's cloud section that applies on ``host`` (:func:`cloud_section`);
        ``None`` on a local host.

        Raises:
            DriverError: ``host`` is a cloud site and none of the VM's sections applies.
        """
        if not host.is_public_cloud:
            return None
        chosen = await self.db.read(lambda connection: cloud_section(connection, vm, host))
        if chosen is None:
            raise DriverError(f"VM {vm.id}: " + no_section_reason(
                cloud_sections(vm.user_template), host.name, host.hypervisor))
        return chosen.attributes

    def deployment_template(self, vm: VmRecord) -> Template:
        """The deployment: the VM's whole template, ``CPU``, ``MEMORY``,
        ``PUBLIC_CLOUD``/``EC2`` sections and everything else the user wrote, plus
        ``VMID`` and ``NAME`` (the seed's layout). In-process drivers get it parsed."""
        template = vm.full_template()
        template.set("VMID", str(vm.id))
        if template.get("NAME") is None:
            template.set("NAME", vm.name)
        return template

    def deployment_document(self, vm: VmRecord) -> str:
        """The deployment file's contents: :meth:`deployment_template` as XML, root
        ``TEMPLATE`` (what script drivers read)."""
        return self.deployment_template(vm).to_xml("TEMPLATE", plain=True)


def cloud_section(connection: Connection, vm: VmRecord, host: HostRecord,
                  memo: dict[Any, Any] | None = None) -> CloudSection | None:
    """The VM's cloud section that applies on cloud site ``host``
    (:func:`cloudburst.model.cloud_sections.section_for`, the scheduler's rule too);
    ``None`` when none does. ``memo`` keeps the count of sites of a type it read."""
    def sites_of_type() -> int:
        key = ("sites of type", host.hypervisor)
        if memo is None or key not in memo:
            count = host_pool.cloud_sites_of_type(connection, host.hypervisor)
            if memo is None:
                return count
            memo[key] = count
        return int(memo[key])

    return section_for(cloud_sections(vm.user_template), host.name, host.hypervisor,
                       sites_of_type)

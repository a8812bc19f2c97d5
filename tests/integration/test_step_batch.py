"""The batch form of the one helper (:func:`step_batch`) on a real store (SQLite and
PostgreSQL): many VMs' changes in one write, each still its own compare-and-swap, a
failing change undone alone."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection
from test_store import (
    EC2_TEMPLATE,
    EC2_USER_TEMPLATE,
    db,
    db_url,
    history,
    new_host,
    new_vm,
    postgres,
    read,
    store_vms,
    write,
)

from cloudburst.daemon.lifecycle.base import BatchReads, Change, Stepped, step, step_batch
from cloudburst.errors import ConflictError, IllegalActionError, NotFoundError
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import HostState, VmState
from cloudburst.store import backoffs, host_pool, journal, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.deferred import Deferred

__all__ = ["db", "db_url", "postgres"]  # fixtures, imported for pytest


def hold() -> Change:
    def change(connection: Connection, vm: VmRecord, _: BatchReads
               ) -> tuple[VmRecord, Stepped]:
        return vm, step(connection, vm, Event.HOLD, install_id="test")
    return change


def renamed_then(error: Exception | None) -> Change:
    """Writes a new name, then raises ``error`` (if any)."""
    def change(connection: Connection, vm: VmRecord, _: BatchReads
               ) -> tuple[VmRecord, Stepped]:
        written = vm_pool.update_vm(connection, vm, name=f"renamed-{vm.id}")
        if error is not None:
            raise error
        return vm, Stepped(written)
    return change


def run(db: Database, changes: list[tuple[int, Change]]
        ) -> list[tuple[VmRecord, Stepped] | Exception]:
    return write(db, lambda connection: step_batch(connection, changes))


def test_every_change_of_a_batch_is_applied_in_one_write(db: Database) -> None:
    store_vms(db, *(new_vm(vm_id) for vm_id in range(5)))
    outcomes = run(db, [(vm_id, hold()) for vm_id in range(5)])
    assert [outcome[1].vm.state for outcome in outcomes if not isinstance(
        outcome, Exception)] == [VmState.HOLD] * 5
    stored = read(db, lambda c: vm_pool.get_vms(c, range(5)))
    assert {vm.state for vm in stored.values()} == {VmState.HOLD}
    assert {vm.version for vm in stored.values()} == {1}


def test_a_failing_change_is_undone_alone_and_gets_its_exception(db: Database) -> None:
    store_vms(db, *(new_vm(vm_id) for vm_id in range(4)))
    outcomes = run(db, [
        (0, renamed_then(None)),
        (1, renamed_then(ConflictError("raised after its write"))),
        (2, renamed_then(None)),
        (3, hold()),
        (9, hold()),  # no such VM
    ])
    assert isinstance(outcomes[1], ConflictError)
    assert isinstance(outcomes[4], NotFoundError) and "VM 9" in str(outcomes[4])
    stored = read(db, lambda c: vm_pool.get_vms(c, range(4)))
    assert [stored[vm_id].name for vm_id in range(3)] == ["renamed-0", "one-1", "renamed-2"]
    assert stored[3].state is VmState.HOLD


def test_changes_of_one_vm_in_one_batch_see_each_other(db: Database) -> None:
    """The second change gets the VM as the first wrote it (no false conflict); an
    illegal second change fails alone."""
    store_vms(db, new_vm(0))
    outcomes = run(db, [(0, hold()), (0, _event(Event.RELEASE)), (0, _event(Event.RELEASE))])
    assert not isinstance(outcomes[0], Exception) and not isinstance(outcomes[1], Exception)
    assert isinstance(outcomes[2], IllegalActionError)
    stored = read(db, lambda c: vm_pool.get_vm(c, 0, with_history=False))
    assert stored.state is VmState.PENDING and stored.version == 2


def _event(event: Event) -> Change:
    def change(connection: Connection, vm: VmRecord, _: BatchReads
               ) -> tuple[VmRecord, Stepped]:
        return vm, step(connection, vm, event, install_id="test")
    return change


def _journalled(*steps: tuple[str, str | None], error: Exception | None = None) -> Change:
    """Begins (``(action, base)``) or finishes (``(action, None)``) journal entries of
    the VM as deferred writes of the batch, in that order; then raises ``error``."""
    def change(connection: Connection, vm: VmRecord, reads: BatchReads
               ) -> tuple[VmRecord, Stepped]:
        for action, base in steps:
            if base is None:
                journal.finish_started(connection, vm.id, (action,), ok=True,
                                       result=f"done-{vm.id}", later=reads.later)
            else:
                journal.begin(connection, vm_id=vm.id, host_id=-1, seq=0, action=action,
                              base=base, later=reads.later)
        if error is not None:
            raise error
        return vm, Stepped(vm)
    return change


def test_deferred_journal_writes_keep_each_vms_order_and_fail_alone(db: Database) -> None:
    """A batch's journal writes go out together, yet each VM's in its own order (an
    entry closed before the next one begins stays the only one closed), a later
    change of the same VM sees the earlier one's (a retry's token counts the deferred
    try), and a failing change leaves none."""
    store_vms(db, *(new_vm(vm_id) for vm_id in range(3)))
    outcomes = run(db, [
        (0, _journalled(("cancel", "t0"), ("cancel", None), ("cancel", "t0-again"))),
        (1, _journalled(("deploy", "t1"))),
        (1, _journalled(("deploy", None))),
        (2, _journalled(("deploy", "t2"), error=ConflictError("after its journal"))),
    ])
    assert isinstance(outcomes[3], ConflictError)
    assert not any(isinstance(outcome, Exception) for outcome in outcomes[:3])
    entries = read(db, lambda c: {vm_id: [(entry.token, entry.status, entry.result)
                                           for entry in journal.entries_for(c, vm_id)]
                                  for vm_id in range(3)})
    assert entries == {0: [("t0", "done", "done-0"), ("t0-again.2", "started", "")],
                       1: [("t1", "done", "done-1")], 2: []}


def _held(*, changed_behind: bool = False) -> Change:
    """HOLD with the batch's deferred writes; ``changed_behind``: the VM's row is first
    written as another action would (so the deferred compare-and-swap must lose)."""
    def change(connection: Connection, vm: VmRecord, reads: BatchReads
               ) -> tuple[VmRecord, Stepped]:
        if changed_behind:
            vm_pool.update_vm(connection, vm, name=f"elsewhere-{vm.id}")
        return vm, step(connection, vm, Event.HOLD, install_id="test", later=reads.later)
    return change


def test_a_deferred_compare_and_swap_that_loses_fails_its_change_alone(db: Database) -> None:
    """The batch's row writes go out as one statement; when one finds its row changed
    the batch runs again change by change, and only that change fails."""
    store_vms(db, *(new_vm(vm_id) for vm_id in range(3)))
    outcomes = run(db, [(0, _held()), (1, _held(changed_behind=True)), (2, _held())])
    assert isinstance(outcomes[1], ConflictError)
    stored = read(db, lambda c: vm_pool.get_vms(c, range(3)))
    assert [stored[vm_id].state for vm_id in range(3)] == [VmState.HOLD, VmState.PENDING,
                                                            VmState.HOLD]
    assert stored[1].name == "one-1" and stored[1].version == 0


def test_kept_hosts_are_decoded_again_only_when_their_version_moved(db: Database) -> None:
    """What a batch of deploys reads of its hosts: the kept record while the host is
    unchanged (the very object), the new one once it changed; missing hosts left out."""
    write(db, lambda c: [host_pool.insert_host(c, new_host(host_id)) for host_id in (0, 1)])
    kept: dict[int, HostRecord] = {}
    first = read(db, lambda c: host_pool.hosts_kept(c, [0, 1, 7], kept))
    assert sorted(first) == [0, 1] and kept == first
    write(db, lambda c: host_pool.update_host(c, first[1], state=HostState.DISABLED))
    second = read(db, lambda c: host_pool.hosts_kept(c, [0, 1], kept))
    assert second[0] is first[0]
    assert second[1].state is HostState.DISABLED and kept[1] is second[1]


def test_kept_vms_are_the_records_a_batch_wrote_until_the_store_moves_on(db: Database) -> None:
    """What a batch reads of VMs a batch before it wrote: the record that batch left
    (the very object, equal to the stored row decoded again) while the VM's version is
    unchanged; the stored row once another write moved it; the scheduler's note (written
    without a version bump) as stored; missing VMs left out."""
    store_vms(db, *(new_vm(vm_id, template=EC2_TEMPLATE, user_template=EC2_USER_TEMPLATE)
                    for vm_id in range(3)))
    outcomes = run(db, [(vm_id, _held()) for vm_id in range(3)])
    kept = {outcome[1].vm.id: outcome[1].vm for outcome in outcomes
            if not isinstance(outcome, Exception)}
    assert kept == read(db, lambda c: vm_pool.get_vms(c, range(3)))
    write(db, lambda c: vm_pool.update_vm(c, kept[1], name="renamed"))
    write(db, lambda c: vm_pool.set_sched_messages(c, {2: "waiting"}, {2: '{"a": 1}'}))
    found = read(db, lambda c: vm_pool.vms_kept(c, [0, 1, 2, 7], kept))
    assert found == read(db, lambda c: vm_pool.get_vms(c, range(3)))
    assert found[0] is kept[0]
    assert found[1].name == "renamed" and found[1].version == kept[1].version + 1
    assert (found[2].sched_message, found[2].placement) == ("waiting", '{"a": 1}')


def test_a_flush_of_many_vms_writes_each_ones_rows_and_counts_those_it_changed(
        db: Database) -> None:
    """The deferred writes of 1,200 VMs (more than one multi-row statement takes on
    SQLite): each VM's own values land on its row, inserts and deletes take exactly the
    rows named, and one VM changed behind the batch fails the flush by the row count."""
    count = 1200
    store_vms(db, *(new_vm(vm_id) for vm_id in range(count)))
    write(db, lambda c: [backoffs.record(c, vm_id, backoffs.DEPLOY, 0, tries=1, until=1e12)
                         for vm_id in range(0, count, 2)])

    def flush_all(connection: Connection, behind: int | None = None) -> None:
        later = Deferred()
        records = vm_pool.get_vms(connection, range(count))
        if behind is not None:
            vm_pool.update_vm(connection, records[behind], name="behind")
        for vm_id, vm in records.items():
            vm_pool.update_vm(connection, vm, later=later, name=f"n{vm_id}",
                              deploy_id=f"d{vm_id}")
            vm_pool.insert_history(connection, history(vm_id, 0), later=later)
            if vm_id % 4 == 0:
                backoffs.clear(connection, vm_id, backoffs.DEPLOY, later=later)
        later.flush(connection)

    with pytest.raises(ConflictError, match="1 of 1200 VMs"):
        write(db, lambda c: flush_all(c, behind=7))
    write(db, flush_all)
    stored = read(db, lambda c: vm_pool.get_vms(c, range(count)))
    assert [(vm.name, vm.deploy_id, vm.version) for _, vm in sorted(stored.items())] == [
        (f"n{vm_id}", f"d{vm_id}", 1) for vm_id in range(count)]
    assert read(db, lambda c: vm_pool.current_seqs(c, list(range(count)))) == dict.fromkeys(
        range(count), 0)
    assert {backoff.vm_id for backoff in read(db, lambda c: backoffs.active(
        c, backoffs.DEPLOY, 0))} == set(range(2, count, 4))


def test_a_batch_reads_its_vms_exactly_as_one_by_one(db: Database) -> None:
    """The batch read of VMs (on SQLite one row of JSON for all of them) gives the very
    records the read of one VM gives: floats to the last digit, text with quotes,
    newlines and non-ASCII, missing values."""
    store_vms(db, new_vm(0, cpu=0.1 + 0.2, name='it\'s "odd"\n雲', host_id=None),
              new_vm(1, cpu=1 / 3, template=EC2_TEMPLATE, user_template=EC2_USER_TEMPLATE,
                     host_id=3, deploy_id="i-0abc"),
              new_vm(2, cpu=2.0, monitoring={"IP": "10.0.0.1", "NOTE": "ü\\"}))
    batch = read(db, lambda c: vm_pool.get_vms(c, [0, 1, 2, 9]))
    assert batch == {vm_id: read(db, lambda c, vm_id=vm_id: vm_pool.get_vm(
        c, vm_id, with_history=False)) for vm_id in range(3)}
    assert batch[0].cpu == 0.1 + 0.2 and batch[1].cpu == 1 / 3

"""The store against a real SQLite file and a real PostgreSQL server.

Every test runs twice: ``sqlite`` (a file in tmp_path) and ``postgresql`` (a
throw-away server started once per session by ``pg_server``, one fresh
database per test).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from sqlalchemy import Connection, event, func, insert, inspect, select
from sqlalchemy.exc import IntegrityError

import pg_server
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.errors import (
    ConflictError,
    IllegalActionError,
    NotFoundError,
    StoreInUseError,
    ValidationError,
)
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.scheduler.demand import vm_demand
from cloudburst.store import copy_inserts, host_pool, journal, schema, vm_logs, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.host_cache import HostCache
from cloudburst.store.schema import vms as vms_table
from cloudburst.store.sequences import next_ids
from cloudburst.template import Template, parse

T = TypeVar("T")

postgres = pg_server.session_fixture()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    server: pg_server.PostgresServer = request.getfixturevalue("postgres")
    return server.create_database()


def open_store(url: str) -> Database:
    database = Database(url)
    database.create_schema()
    database.start()
    return database


@pytest.fixture
def db(db_url: str) -> Iterator[Database]:
    database = open_store(db_url)
    try:
        yield database
    finally:
        database.close()


def write(db: Database, function: Callable[[Connection], T]) -> T:
    """One write from outside a loop."""
    async def go() -> T:
        return await db.write(function)
    return asyncio.run(go())


def read(db: Database, function: Callable[[Connection], T]) -> T:
    return db.read_sync(function)


# -- records ---------------------------------------------------------------------------

EC2_TEMPLATE = parse('''
    CPU = 0.5
    MEMORY = 128
    OS = [ KERNEL = "/vmlinuz", INITRD = "/initrd.img", ROOT = "sda1" ]
    DISK = [ SOURCE = "/images/apache.img", TARGET = "sda", READONLY = "no" ]
    VMID = 7
''')
EC2_USER_TEMPLATE = parse('''
    EC2 = [ CLOUD = "ec2_eu_west", AMI = "ami-0022c769", AUTHORIZED_PORTS = "22" ]
    EC2 = [ CLOUD = "ec2_eu_east", AMI = "ami-03324cc9", AUTHORIZED_PORTS = "22" ]
    EC2 = [ AMI = "ami-00bafcb5", KEYPAIR = "gsg-keypair", ELASTICIP = "75.101.155.97",
            INSTANCETYPE = m1.small ]
    PUBLIC_CLOUD = [ TYPE = provider_name, PROVIDER_IMAGE_ID = id-141234 ]
    REQUIREMENTS = "NAME = \\"ec2\\""
    DESCRIPTION = "multi\nline \\"quoted\\" ]]> <xml> & ünïcødé 雲"
    EMPTY = ""
''')


def new_vm(vm_id: int, **changes: Any) -> VmRecord:
    record = VmRecord(
        id=vm_id, name=f"one-{vm_id}", uid=0, gid=0, state=VmState.PENDING,
        lcm_state=LcmState.LCM_INIT, prev_state=VmState.PENDING,
        prev_lcm_state=LcmState.LCM_INIT, stime=1_700_000_000 + vm_id, etime=0, deploy_id="",
        host_id=None, template=parse(f"CPU=1 MEMORY=256 VMID={vm_id}"), user_template=Template(),
        cpu=1.0, memory=256, version=0,
    )
    return dataclasses.replace(record, **changes)


def new_host(host_id: int, name: str | None = None, **changes: Any) -> HostRecord:
    record = HostRecord(
        id=host_id, name=name or f"node{host_id}", state=HostState.MONITORED,
        prev_state=HostState.INIT, im_mad="dummy", vm_mad="dummy", tm_mad="dummy",
        vn_mad="dummy", cluster_id=0, template=parse("HYPERVISOR=dummy"), last_mon_time=1,
        version=0, max_cpu=800, max_mem=16 * 1024 * 1024,
    )
    return dataclasses.replace(record, **changes)


def history(vm_id: int, seq: int, host_id: int = 0, **changes: Any) -> HistoryRecord:
    record = HistoryRecord(vm_id=vm_id, seq=seq, host_id=host_id, hostname=f"node{host_id}",
                           vm_mad="dummy", tm_mad="dummy", stime=1_700_000_100 + seq)
    return dataclasses.replace(record, **changes)


def store_vms(db: Database, *records: VmRecord) -> None:
    write(db, lambda c: vm_pool.insert_vms(c, records))


# -- schema and ids ----------------------------------------------------------------------


def test_schema_is_created_and_creating_it_again_is_harmless(db: Database) -> None:
    tables = set(inspect(db.write_engine).get_table_names())
    assert {"meta", "sequences", "users", "hosts", "vms", "history", "journal",
            "vm_templates"} <= tables
    store_vms(db, new_vm(0))
    db.create_schema()
    assert read(db, lambda c: vm_pool.get_vm(c, 0)).name == "one-0"


def test_ids_start_at_zero_and_are_consecutive_per_pool(db: Database) -> None:
    assert write(db, lambda c: next_ids(c, "vm")) == 0
    assert write(db, lambda c: next_ids(c, "vm")) == 1
    assert write(db, lambda c: next_ids(c, "vm", 3)) == 2
    assert write(db, lambda c: next_ids(c, "vm")) == 5
    assert write(db, lambda c: next_ids(c, "host")) == 0


def test_ids_never_repeat_under_eight_concurrent_writers(db: Database) -> None:
    async def caller() -> list[int]:
        return [await db.write(lambda c: next_ids(c, "vm")) for _ in range(25)]

    async def main() -> list[list[int]]:
        return await asyncio.gather(*(caller() for _ in range(8)))

    ids = [vm_id for batch in asyncio.run(main()) for vm_id in batch]
    assert sorted(ids) == list(range(200))


def test_ids_survive_a_reopen_and_are_not_reused(db_url: str) -> None:
    first = open_store(db_url)
    try:
        assert [write(first, lambda c: next_ids(c, "vm")) for _ in range(3)] == [0, 1, 2]
    finally:
        first.close()
    second = open_store(db_url)
    try:
        assert write(second, lambda c: next_ids(c, "vm")) == 3
    finally:
        second.close()


def test_two_stores_sharing_a_database_never_hand_out_the_same_id(db_url: str) -> None:
    """Two daemons on one store (each with its own writer) reserve disjoint ids."""
    stores = [open_store(db_url), open_store(db_url)]
    try:
        write(stores[0], lambda c: next_ids(c, "vm"))  # the pool's row exists

        async def caller(store: Database) -> list[int]:
            return [await store.write(lambda c: next_ids(c, "vm", 2)) for _ in range(15)]

        async def main() -> list[list[int]]:
            return await asyncio.gather(*(caller(store) for store in stores for _ in range(4)))

        firsts = sorted(first for batch in asyncio.run(main()) for first in batch)
        assert firsts == list(range(1, 241, 2))
    finally:
        for store in stores:
            store.close()


def test_two_stores_creating_a_new_pool_at_once_both_get_an_id(db_url: str) -> None:
    """First use of a pool by two daemons at the same moment (e.g. both bootstrapping)."""
    stores = [open_store(db_url), open_store(db_url)]
    try:
        async def main() -> list[Any]:
            calls = [store.write(lambda c, pool=f"pool{i}": next_ids(c, pool))
                     for i in range(12) for store in stores]
            return await asyncio.gather(*calls, return_exceptions=True)

        outcomes = asyncio.run(main())
        errors = [repr(o) for o in outcomes if isinstance(o, BaseException)]
        assert errors == [], errors[:1]
        assert all(sorted(outcomes[i:i + 2]) == [0, 1] for i in range(0, len(outcomes), 2))
    finally:
        for store in stores:
            store.close()


# -- VMs ---------------------------------------------------------------------------------


def test_vm_templates_round_trip_exactly(db: Database) -> None:
    record = new_vm(7, template=EC2_TEMPLATE, user_template=EC2_USER_TEMPLATE, cpu=0.5,
                    memory=128, monitoring={"IP": "10.1.2.3", "NETTX": "12345"},
                    error="Error monitoring VM: x", sched_message="waiting", deploy_id="i-1",
                    host_id=None, name="web \"server\"")
    store_vms(db, record)
    stored = read(db, lambda c: vm_pool.get_vm(c, 7))
    assert stored == record
    assert stored.user_template.vectors("EC2") == EC2_USER_TEMPLATE.vectors("EC2")
    assert [v["AMI"] for v in stored.user_template.vectors("EC2")] == [
        "ami-0022c769", "ami-03324cc9", "ami-00bafcb5"]
    assert stored.user_template.get("DESCRIPTION") == EC2_USER_TEMPLATE.get("DESCRIPTION")
    assert stored.full_template().get("CPU") == "0.5"


def test_get_vm_of_a_missing_id_names_it(db: Database) -> None:
    with pytest.raises(NotFoundError, match="VM 42 does not exist"):
        read(db, lambda c: vm_pool.get_vm(c, 42))


def test_list_vms_filters_and_orders(db: Database) -> None:
    store_vms(db,
           new_vm(0),
           new_vm(1, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING, host_id=3, uid=5),
           new_vm(2, state=VmState.DONE),
           new_vm(3, state=VmState.HOLD, uid=5),
           new_vm(4, state=VmState.ACTIVE, lcm_state=LcmState.BOOT, host_id=3))

    def ids(**filters: Any) -> list[int]:
        return [vm.id for vm in read(db, lambda c: vm_pool.list_vms(c, **filters))]

    assert ids() == [0, 1, 2, 3, 4]
    assert ids(descending=True) == [4, 3, 2, 1, 0]
    assert ids(exclude_done=True) == [0, 1, 3, 4]
    assert ids(states=[VmState.PENDING, VmState.HOLD]) == [0, 3]
    assert ids(uid=5) == [1, 3]
    assert ids(first_id=1, last_id=3) == [1, 2, 3]
    assert ids(offset=1, limit=2) == [1, 2]
    assert ids(host_id=3) == [1, 4]
    assert ids(states=[VmState.STOPPED]) == []


def test_history_records_keep_their_order_and_fields(db: Database) -> None:
    store_vms(db, new_vm(0), new_vm(1))

    def add(c: Connection) -> None:
        vm_pool.insert_history(c, history(0, 1, host_id=2, reason="second stay"))
        vm_pool.insert_history(c, history(0, 0, host_id=1, etime=5, reason="no capacity"))
        vm_pool.insert_history(c, history(1, 0, host_id=2))

    write(db, add)
    write(db, lambda c: vm_pool.update_history(c, 0, 1, etime=99, action=2,
                                               reason="terminate requested"))
    stored = read(db, lambda c: vm_pool.get_vm(c, 0))
    assert [(h.seq, h.host_id) for h in stored.history] == [(0, 1), (1, 2)]
    assert stored.last_history == history(0, 1, host_id=2, etime=99, action=2,
                                          reason="terminate requested")
    assert stored.history[0].reason == "no capacity"
    without = read(db, lambda c: vm_pool.get_vm(c, 0, with_history=False))
    assert without.history == ()
    listed = read(db, lambda c: vm_pool.list_vms(c))
    assert [len(vm.history) for vm in listed] == [2, 1]


def test_history_of_many_vms_returns_only_those_asked_for(db: Database) -> None:
    store_vms(db, *(new_vm(i) for i in range(1200)))

    def add(c: Connection) -> None:
        for i in range(1200):
            vm_pool.insert_history(c, history(i, 0, host_id=i % 7))

    write(db, add)
    wanted = list(range(0, 1200, 2))  # 600 ids with gaps: the range-scan path
    found = read(db, lambda c: vm_pool.history_of(c, wanted))
    assert sorted(found) == wanted
    assert all(records[0].host_id == vm_id % 7 for vm_id, records in found.items())


def test_reads_by_id_lists_find_what_they_name_in_one_statement_text(db: Database) -> None:
    # Batch reads by key take the ids as one parameter: the same rows as IN (...) on
    # both stores, and on PostgreSQL one statement text whatever the list's length
    # (an array), which the driver converts once and the server prepares.
    write(db, lambda c: [host_pool.insert_host(c, new_host(h)) for h in range(3)])
    store_vms(db, *(new_vm(i, host_id=i % 3, state=VmState.ACTIVE,
                           lcm_state=LcmState.RUNNING) for i in range(30)))
    texts: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "vms" in statement:
            texts.append(statement)

    event.listen(db.read_engine, "before_cursor_execute", seen)
    try:
        for wanted in ([4], [1, 2, 29], list(range(0, 30, 3)), [99], []):
            got = read(db, lambda c, w=wanted: vm_pool.get_vms(c, w))  # type: ignore[misc]
            assert sorted(got) == [i for i in wanted if i < 30]
    finally:
        event.remove(db.read_engine, "before_cursor_execute", seen)
    if not db.is_sqlite:
        assert len(set(texts)) == 1, texts
    polled = read(db, lambda c: vm_pool.on_hosts(c, [0, 2, 7]))
    assert {host: [vm.id for vm in found] for host, found in polled.items()} == {
        0: list(range(0, 30, 3)), 2: list(range(2, 30, 3))}
    listed = read(db, lambda c: vm_pool.list_vms(c, ids=[5, 6, 40], with_history=False))
    assert [vm.id for vm in listed] == [5, 6]
    assert read(db, lambda c: vm_pool.host_usage(c, [1]))[1][2] == 10
    assert set(read(db, lambda c: host_pool.hosts_kept(c, [0, 1, 5], {}))) == {0, 1}


def test_held_capacity_is_what_each_vm_holds_and_sums_to_the_hosts_usage(db: Database) -> None:
    store_vms(db, new_vm(1, host_id=0, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING),
              new_vm(2, host_id=0, state=VmState.POWEROFF, lcm_state=LcmState.LCM_INIT,
                     memory=1024),
              new_vm(3, host_id=1, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING),
              new_vm(4, host_id=1, state=VmState.DONE, lcm_state=LcmState.LCM_INIT),
              new_vm(5))  # pending: no host
    held = read(db, vm_pool.held_capacity)
    assert held == {1: (0, 100, 256 * 1024), 2: (0, 100, 1024 * 1024),
                    3: (1, 100, 256 * 1024)}
    assert vm_pool.usage_of(held) == read(db, vm_pool.host_usage)


def test_rows_inserted_many_at_once_land_as_given(db: Database) -> None:
    # On PostgreSQL a multi-row INSERT of parameters goes out as COPY: text that COPY's
    # format escapes, NULL-looking text, server defaults and key clashes must come out
    # as an INSERT would leave them.
    odd = ["tab\there", "new\nline", "back\\slash", "\\N", "", "ünïcødé 雲 ]]> <x>&"]
    lines = [vm_logs.LogLine(3, 1_700_000_000.25 + i, "I", text) for i, text in enumerate(odd)]
    write(db, lambda c: vm_logs.append(c, lines))
    assert read(db, lambda c: vm_logs.tail(c, 3, 10)) == lines
    store_vms(db, new_vm(1), new_vm(2))
    assert read(db, lambda c: vm_pool.get_vm(c, 2)).placement == ""  # a server default
    with pytest.raises(IntegrityError):
        store_vms(db, new_vm(5), new_vm(2))
    assert read(db, lambda c: vm_pool.get_vms(c, [1, 2, 5])).keys() == {1, 2}  # nothing of it
    if not db.is_sqlite:
        compiled = str(insert(vms_table).compile(dialect=db.write_engine.dialect))
        assert copy_inserts.copy_statement(compiled) is not None  # the path taken above
        assert copy_inserts.copy_statement(compiled + " RETURNING vms.id") is None
        assert copy_inserts.copy_statement(compiled + " ON CONFLICT DO NOTHING") is None


def test_update_vm_is_a_compare_and_swap(db: Database) -> None:
    store_vms(db, new_vm(0))
    seen = read(db, lambda c: vm_pool.get_vm(c, 0))

    first = write(db, lambda c: vm_pool.update_vm(c, seen, state=VmState.HOLD))
    assert first.version == seen.version + 1
    assert (first.prev_state, first.prev_lcm_state) == (VmState.PENDING, LcmState.LCM_INIT)
    with pytest.raises(ConflictError, match="VM 0 was changed by another action"):
        write(db, lambda c: vm_pool.update_vm(c, seen, name="renamed"))
    stored = read(db, lambda c: vm_pool.get_vm(c, 0))
    assert (stored.state, stored.name, stored.version) == (VmState.HOLD, "one-0", 1)
    # A fresh read can write again.
    write(db, lambda c: vm_pool.update_vm(c, stored, name="renamed"))
    assert read(db, lambda c: vm_pool.get_vm(c, 0)).name == "renamed"


def test_two_updates_from_the_same_read_in_one_batch_exactly_one_wins(db: Database) -> None:
    store_vms(db, new_vm(0))
    seen = read(db, lambda c: vm_pool.get_vm(c, 0))

    async def main() -> list[Any]:
        return await asyncio.gather(
            db.write(lambda c: vm_pool.update_vm(c, seen, state=VmState.HOLD)),
            db.write(lambda c: vm_pool.update_vm(c, seen, state=VmState.DONE, etime=5)),
            return_exceptions=True)

    outcomes = asyncio.run(main())
    winners = [o for o in outcomes if isinstance(o, VmRecord)]
    losers = [o for o in outcomes if isinstance(o, ConflictError)]
    assert len(winners) == 1 and len(losers) == 1, outcomes
    assert read(db, lambda c: vm_pool.get_vm(c, 0)).state is winners[0].state


def test_an_urgent_write_goes_before_queued_writes_and_cuts_a_running_batch_short(
        db: Database) -> None:
    """The urgent lane: a journal note must not wait behind a scheduler pass's writes."""
    order: list[str] = []
    gates = {name: (threading.Event(), threading.Event()) for name in ("hold", "n1")}

    def job(name: str) -> Callable[[Connection], str]:
        def function(connection: Connection) -> str:
            connection.execute(select(func.count()).select_from(vms_table))
            if name in gates and name not in order:  # blocks once, not in a re-run
                started, release = gates[name]
                started.set()
                assert release.wait(30)
            order.append(name)
            return name
        return function

    async def main() -> list[str]:
        hold = asyncio.ensure_future(db.write(job("hold")))
        assert await asyncio.to_thread(gates["hold"][0].wait, 30)
        # Queued while the writer is busy: one group commit takes them all.
        normal = [asyncio.ensure_future(db.write(job(f"n{index}"))) for index in range(1, 6)]
        await asyncio.sleep(0.05)
        gates["hold"][1].set()
        assert await asyncio.to_thread(gates["n1"][0].wait, 30)
        urgent = asyncio.ensure_future(db.write(job("urgent"), urgent=True))
        await asyncio.sleep(0.05)
        gates["n1"][1].set()
        return list(await asyncio.gather(hold, *normal, urgent))

    assert asyncio.run(main()) == ["hold", "n1", "n2", "n3", "n4", "n5", "urgent"]
    # n1 was running when the urgent write came: its batch committed n1 only.
    assert order == ["hold", "n1", "urgent", "n2", "n3", "n4", "n5"]


def test_sched_messages_do_not_bump_the_version(db: Database) -> None:
    store_vms(db, new_vm(0), new_vm(1))
    write(db, lambda c: vm_pool.set_sched_messages(c, {0: "No host with enough capacity"}))
    stored = read(db, lambda c: vm_pool.get_vm(c, 0))
    assert (stored.sched_message, stored.version) == ("No host with enough capacity", 0)
    assert read(db, lambda c: vm_pool.get_vm(c, 1)).sched_message == ""


def test_sched_messages_of_many_vms_land_each_on_its_own_row(db: Database) -> None:
    """A pass over a full pool notes every pending VM at once: a message and a
    placement, a message alone, a placement alone; each VM gets its own, versions kept,
    the VMs not named untouched."""
    store_vms(db, *(new_vm(vm_id) for vm_id in range(700)))
    messages = {vm_id: f"wait {vm_id}" for vm_id in range(600)}
    placements = {vm_id: f'{{"p": {vm_id}}}' for vm_id in range(300, 690)}
    write(db, lambda c: vm_pool.set_sched_messages(c, messages, placements))
    stored = read(db, lambda c: vm_pool.get_vms(c, range(700)))
    assert {vm.id: (vm.sched_message, vm.placement, vm.version) for vm in stored.values()} == {
        vm_id: (messages.get(vm_id, ""), placements.get(vm_id, new_vm(vm_id).placement), 0)
        for vm_id in range(700)}


# -- two daemons racing on one store ----------------------------------------------------------
# Only PostgreSQL stores are shared; the lease normally lets one daemon drive.
# These tests make two daemons drive at once on purpose (the split brain the
# lease's fence prevents) to show that compare-and-swap alone keeps VMs whole.


@pytest.fixture
def pg_url(postgres: pg_server.PostgresServer) -> str:
    return postgres.create_database()


def idle_daemon(home: Path, url: str) -> Daemon:
    """A daemon on ``url`` whose loops are not started, driving as if it led."""
    settings, _ = load_settings(home)
    daemon = Daemon(dataclasses.replace(settings, db_url=url))
    daemon.db.start()
    daemon.lifecycle.drives = lambda: True
    daemon.dispatcher.refusal = lambda: None
    return daemon


def test_a_second_daemon_on_one_sqlite_store_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'store.db'}"
    settings, _ = load_settings(tmp_path / "a")
    first = Daemon(dataclasses.replace(settings, db_url=url))
    try:
        other, _ = load_settings(tmp_path / "b")
        with pytest.raises(StoreInUseError) as refused:
            Daemon(dataclasses.replace(other, db_url=url))
        assert str(refused.value) == (
            f"another daemon already uses the SQLite store {tmp_path / 'store.db'}; a SQLite "
            "store serves one daemon (share a PostgreSQL store to run several)")
    finally:
        asyncio.run(first.stop())
    Daemon(dataclasses.replace(settings, db_url=url))  # free again once the first stopped


async def settle(*daemons: Daemon) -> None:
    for daemon in daemons:
        await daemon.lifecycle.drain(10)


@pytest.mark.postgres
def test_racing_hold_and_deploy_cannot_both_win(pg_url: str, tmp_path: Path) -> None:
    """Two daemons act on the same PENDING VMs at once: one of them always loses."""
    first, second = idle_daemon(tmp_path / "a", pg_url), idle_daemon(tmp_path / "b", pg_url)

    async def main() -> list[tuple[Any, Any, VmRecord]]:
        try:
            host_id = await first.hosts.allocate("node", "dummy", "dummy")
            vm_ids = [await first.vms.allocate("CPU=1 MEMORY=64") for _ in range(12)]
            outcomes = []
            for vm_id in vm_ids:
                held, deployed = await asyncio.gather(
                    first.lifecycle.act(vm_id, Event.HOLD),
                    second.lifecycle.deploy(vm_id, host_id, scheduled=True),
                    return_exceptions=True)
                outcomes.append((held, deployed, vm_id))
            await settle(first, second)
            return [(held, deployed, await first.vms.info(vm_id))
                    for held, deployed, vm_id in outcomes]
        finally:
            await settle(first, second)
            await first.stop()
            await second.stop()

    for held, deployed, vm in asyncio.run(main()):
        won = [o for o in (held, deployed) if not isinstance(o, BaseException)]
        lost = [o for o in (held, deployed) if isinstance(o, BaseException)]
        assert len(won) == 1 and len(lost) == 1, (vm.id, held, deployed)
        assert isinstance(lost[0], IllegalActionError), repr(lost[0])
        if isinstance(held, BaseException):
            assert vm.state is VmState.ACTIVE and len(vm.history) == 1
        else:
            assert vm.state is VmState.HOLD and vm.history == ()


@pytest.mark.postgres
def test_two_schedulers_placing_the_same_vm_place_it_once(pg_url: str,
                                                          tmp_path: Path) -> None:
    first, second = idle_daemon(tmp_path / "a", pg_url), idle_daemon(tmp_path / "b", pg_url)

    async def main() -> list[tuple[Any, Any, VmRecord]]:
        try:
            host_a = await first.hosts.allocate("node-a", "dummy", "dummy")
            host_b = await first.hosts.allocate("node-b", "dummy", "dummy")
            results = []
            for _ in range(10):
                vm_id = await first.vms.allocate("CPU=1 MEMORY=64")
                one, two = await asyncio.gather(
                    first.lifecycle.deploy(vm_id, host_a, scheduled=True),
                    second.lifecycle.deploy(vm_id, host_b, scheduled=True),
                    return_exceptions=True)
                results.append((one, two, vm_id))
            await settle(first, second)
            return [(one, two, await first.vms.info(vm_id)) for one, two, vm_id in results]
        finally:
            await settle(first, second)
            await first.stop()
            await second.stop()

    for one, two, vm in asyncio.run(main()):
        winners = [o for o in (one, two) if isinstance(o, VmRecord)]
        losers = [o for o in (one, two) if isinstance(o, BaseException)]
        assert len(winners) == 1 and len(losers) == 1, (one, two)
        assert isinstance(losers[0], IllegalActionError), repr(losers[0])
        assert len(vm.history) == 1
        assert vm.host_id == winners[0].host_id == vm.history[0].host_id
        assert vm.state is VmState.ACTIVE and vm.lcm_state is LcmState.RUNNING


# -- hosts -------------------------------------------------------------------------------------


def test_host_usage_is_derived_from_the_vms_that_hold_it(db: Database) -> None:
    write(db, lambda c: host_pool.insert_host(c, new_host(0)))
    write(db, lambda c: host_pool.insert_host(c, new_host(1)))
    store_vms(db,
           new_vm(0, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING, host_id=0, cpu=1.0,
                  memory=512),
           new_vm(1, state=VmState.ACTIVE, lcm_state=LcmState.BOOT, host_id=0, cpu=0.5,
                  memory=256),
           new_vm(2, state=VmState.POWEROFF, host_id=0, cpu=0.25, memory=128),
           new_vm(3, state=VmState.DONE, host_id=0, cpu=4.0, memory=4096),
           new_vm(4, state=VmState.PENDING, host_id=None, cpu=4.0, memory=4096),
           new_vm(5, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING, host_id=1))

    host = read(db, lambda c: host_pool.get_host(c, 0))
    assert (host.cpu_usage, host.mem_usage, host.running_vms) == (175, 896 * 1024, 3)
    assert host.vm_ids == (0, 1, 2)

    vm0 = read(db, lambda c: vm_pool.get_vm(c, 0))
    write(db, lambda c: vm_pool.update_vm(c, vm0, state=VmState.DONE,
                                          lcm_state=LcmState.LCM_INIT))
    host = read(db, lambda c: host_pool.get_host(c, 0))
    assert (host.cpu_usage, host.mem_usage, host.running_vms) == (75, 384 * 1024, 2)
    assert host.vm_ids == (1, 2)
    assert read(db, lambda c: host_pool.get_host(c, 0, with_usage=False)).running_vms == 0
    listed = read(db, lambda c: host_pool.list_hosts(c))
    assert [(h.id, h.running_vms) for h in listed] == [(0, 2), (1, 1)]


def test_host_usage_counts_cpu_per_vm_as_the_scheduler_does(db: Database) -> None:
    """The scheduler charges each VM round(CPU * 100); the host must report the same sum.

    Seven VMs of CPU=0.145 are charged 14 each (98) and fit a 100-CPU host; summing
    the floats first and rounding once gives 101, a host that looks over-committed.
    """
    write(db, lambda c: host_pool.insert_host(c, new_host(0, max_cpu=100)))
    store_vms(db, *(new_vm(i, state=VmState.ACTIVE, lcm_state=LcmState.RUNNING, host_id=0,
                           cpu=0.145, memory=64) for i in range(7)))
    host = read(db, lambda c: host_pool.get_host(c, 0))
    charged = sum(vm_demand(vm).cpu for vm in read(db, lambda c: vm_pool.list_vms(c)))
    assert charged == 98
    assert host.cpu_usage == charged, (
        f"host CPU_USAGE {host.cpu_usage} differs from the {charged} the scheduler charged")
    assert host.cpu_usage <= host.max_cpu


def test_host_names_are_unique_and_updates_are_compare_and_swap(db: Database) -> None:
    write(db, lambda c: host_pool.insert_host(c, new_host(0, "ec2")))
    with pytest.raises(ValidationError, match="NAME is already taken by HOST 0"):
        write(db, lambda c: host_pool.insert_host(c, new_host(1, "ec2")))
    seen = read(db, lambda c: host_pool.get_host(c, 0))
    template = seen.template.copy()
    template.set("PUBLIC_CLOUD", "YES")
    updated = write(db, lambda c: host_pool.update_host(c, seen, template=template,
                                                        state=HostState.ERROR))
    assert updated.prev_state is HostState.MONITORED
    with pytest.raises(ConflictError):
        write(db, lambda c: host_pool.update_host(c, seen, error="late"))
    stored = read(db, lambda c: host_pool.get_host(c, 0))
    assert stored.template.get("PUBLIC_CLOUD") == "YES" and stored.error == ""
    assert read(db, lambda c: host_pool.find_host_id(c, "ec2")) == 0
    with pytest.raises(NotFoundError, match="HOST 9 does not exist"):
        read(db, lambda c: host_pool.get_host(c, 9))


def test_the_host_cache_sees_every_host_added_written_or_removed(db: Database) -> None:
    """It reads nothing per host while the pool's stamp is unchanged; any change shows."""
    cache = HostCache()
    for host_id in (0, 1):
        write(db, lambda c, host_id=host_id: host_pool.insert_host(c, new_host(host_id)))
    assert [h.id for h in read(db, cache.refresh)] == [0, 1]
    generation = cache.generation
    assert [h.id for h in read(db, cache.refresh)] == [0, 1]
    assert cache.generation == generation  # nothing changed
    seen = read(db, lambda c: host_pool.get_host(c, 1))
    template = seen.template.copy()
    template.set("LABEL", "new")
    write(db, lambda c: host_pool.update_host(c, seen, template=template))
    assert read(db, cache.refresh)[1].template.get("LABEL") == "new"
    write(db, lambda c: host_pool.insert_host(c, new_host(2)))
    assert [h.id for h in read(db, cache.refresh)] == [0, 1, 2]
    # One removed and one added: the same number of hosts, other ones.
    write(db, lambda c: host_pool.delete_host(c, 0))
    write(db, lambda c: host_pool.insert_host(c, new_host(3)))
    assert [h.id for h in read(db, cache.refresh)] == [1, 2, 3]
    assert cache.generation == generation + 3
    assert cache.get(3) is not None and cache.get(0) is None


# -- journal ------------------------------------------------------------------------------------


def test_journal_start_finish_and_unfinished(db: Database) -> None:
    def start(vm_id: int, action: str, token: str) -> Callable[[Connection], int]:
        return lambda c: journal.start(c, vm_id=vm_id, host_id=1, seq=0, action=action,
                                       token=token)

    deploy_0 = write(db, start(0, "deploy", "cb-x-vm0-0"))
    write(db, start(1, "deploy", "cb-x-vm1-0"))
    write(db, start(0, "shutdown", "cb-x-vm0-0-stop"))
    assert [(e.vm_id, e.action) for e in read(db, journal.unfinished)] == [
        (0, "deploy"), (1, "deploy"), (0, "shutdown")]

    write(db, lambda c: journal.finish(c, deploy_0, ok=True, result="i-123"))
    write(db, lambda c: journal.finish_token(c, "cb-x-vm1-0", "deploy", ok=False,
                                             result="boom" * 1000))
    assert [(e.vm_id, e.action) for e in read(db, journal.unfinished)] == [(0, "shutdown")]
    entries = read(db, lambda c: journal.entries_for(c, 0))
    assert [(e.action, e.status, e.result) for e in entries] == [
        ("deploy", "done", "i-123"), ("shutdown", "started", "")]
    assert entries[0].finished >= entries[0].created > 0
    failed = read(db, lambda c: journal.entries_for(c, 1))[0]
    assert failed.status == "failed" and len(failed.result) == 2000


def test_journal_refuses_the_same_action_and_token_twice(db: Database) -> None:
    def start(c: Connection) -> int:
        return journal.start(c, vm_id=0, host_id=1, seq=0, action="deploy", token="tok")

    write(db, start)
    with pytest.raises(Exception, match=r"(?i)unique|duplicate"):
        write(db, start)
    assert len(read(db, journal.unfinished)) == 1


def test_finish_token_only_closes_started_entries(db: Database) -> None:
    write(db, lambda c: journal.start(c, vm_id=0, host_id=1, seq=0, action="deploy",
                                      token="tok"))
    write(db, lambda c: journal.finish_token(c, "tok", "deploy", ok=True, result="i-1"))
    write(db, lambda c: journal.finish_token(c, "tok", "deploy", ok=False, result="late"))
    entry = read(db, lambda c: journal.entries_for(c, 0))[0]
    assert (entry.status, entry.result) == ("done", "i-1")


# -- group commit --------------------------------------------------------------------------------


class Blocker:
    """A write that holds the writer thread until released, so that what is queued
    behind it is committed as one batch."""

    def __init__(self) -> None:
        self.running = threading.Event()
        self.release = threading.Event()

    def __call__(self, connection: Connection) -> None:
        self.running.set()
        assert self.release.wait(30), "blocker never released"


def count_commits(db: Database) -> list[int]:
    commits = [0]

    @event.listens_for(db.write_engine, "commit")
    def _counted(_connection: Any) -> None:
        commits[0] += 1

    return commits


class Boom(Exception):
    pass


def test_one_failing_write_does_not_undo_the_others(db: Database) -> None:
    commits = count_commits(db)

    def add(vm_id: int) -> Callable[[Connection], int]:
        def function(connection: Connection) -> int:
            vm_pool.insert_vms(connection, [new_vm(vm_id)])
            if vm_id == 17:
                raise Boom("write 17 fails after inserting")
            return vm_id
        return function

    async def main() -> list[Any]:
        blocker = Blocker()
        held = asyncio.ensure_future(db.write(blocker))
        await asyncio.to_thread(blocker.running.wait, 10)
        before = commits[0]
        writes = [asyncio.ensure_future(db.write(add(i))) for i in range(50)]
        await asyncio.sleep(0.05)  # every write is queued behind the blocker
        blocker.release.set()
        await held
        outcomes = await asyncio.gather(*writes, return_exceptions=True)
        outcomes.append(commits[0] - before)
        return outcomes

    *outcomes, batch_commits = asyncio.run(main())
    assert isinstance(outcomes[17], Boom) and str(outcomes[17]) == "write 17 fails after inserting"
    assert [o for i, o in enumerate(outcomes) if i != 17] == [i for i in range(50) if i != 17]
    stored = [vm.id for vm in read(db, lambda c: vm_pool.list_vms(c))]
    assert stored == [i for i in range(50) if i != 17]
    assert batch_commits <= 2, f"50 queued writes took {batch_commits} commits"


def test_a_database_error_in_a_batch_only_fails_its_own_caller(db: Database) -> None:
    """A constraint violation aborts a PostgreSQL transaction: the batch must survive it."""
    store_vms(db, new_vm(0))

    async def main() -> list[Any]:
        blocker = Blocker()
        held = asyncio.ensure_future(db.write(blocker))
        await asyncio.to_thread(blocker.running.wait, 10)
        writes = [asyncio.ensure_future(db.write(
            lambda c, i=i: vm_pool.insert_vms(c, [new_vm(i)]))) for i in range(1, 21)]
        duplicate = asyncio.ensure_future(db.write(
            lambda c: vm_pool.insert_vms(c, [new_vm(0)])))
        writes += [asyncio.ensure_future(db.write(
            lambda c, i=i: vm_pool.insert_vms(c, [new_vm(i)]))) for i in range(21, 31)]
        await asyncio.sleep(0.05)
        blocker.release.set()
        await held
        results = await asyncio.gather(*writes, return_exceptions=True)
        results.append(await asyncio.gather(duplicate, return_exceptions=True))
        return results

    *results, (duplicate_outcome,) = asyncio.run(main())
    assert all(r is None for r in results), results
    assert isinstance(duplicate_outcome, Exception)
    assert "unique" in str(duplicate_outcome).lower() or "duplicate" in str(
        duplicate_outcome).lower()
    assert read(db, lambda c: c.execute(select(func.count()).select_from(vms_table))
                .scalar()) == 31


def test_close_lets_queued_writes_land(db_url: str) -> None:
    store = open_store(db_url)

    async def main() -> list[Any]:
        blocker = Blocker()
        held = asyncio.ensure_future(store.write(blocker))
        await asyncio.to_thread(blocker.running.wait, 10)
        writes = [asyncio.ensure_future(store.write(
            lambda c, i=i: c.execute(insert(vms_table).values(**_row(i))) and i))
            for i in range(100)]
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        closing = loop.run_in_executor(None, store.close)  # queued behind the 100 writes
        await asyncio.sleep(0.05)
        blocker.release.set()
        await closing
        await held
        return await asyncio.gather(*writes, return_exceptions=True)

    outcomes = asyncio.run(main())
    assert outcomes == list(range(100))
    reopened = open_store(db_url)
    try:
        assert len(read(reopened, lambda c: vm_pool.list_vms(c))) == 100
    finally:
        reopened.close()


def test_a_write_issued_while_closing_fails_instead_of_hanging(db_url: str) -> None:
    store = open_store(db_url)

    async def main() -> Any:
        blocker = Blocker()
        held = asyncio.ensure_future(store.write(blocker))
        await asyncio.to_thread(blocker.running.wait, 10)
        closing = asyncio.get_running_loop().run_in_executor(None, store.close)
        await asyncio.sleep(0.05)  # close() has queued its stop marker
        late = asyncio.ensure_future(store.write(lambda c: 42))
        await asyncio.sleep(0.05)
        blocker.release.set()
        await closing
        await held
        try:
            return await asyncio.wait_for(late, 3)
        except TimeoutError:
            return "hung"
        except RuntimeError as exc:
            return exc

    outcome = asyncio.run(main())
    assert outcome != "hung", "a write queued behind close() never resolved"
    assert outcome == 42 or "closed" in str(outcome), outcome


def _row(vm_id: int) -> dict[str, Any]:
    return vm_pool._column_values(new_vm(vm_id))


def test_write_before_start_is_refused(db_url: str) -> None:
    store = Database(db_url)
    try:
        store.create_schema()

        async def go() -> None:
            await store.write(lambda c: None)

        with pytest.raises(RuntimeError, match="start"):
            asyncio.run(go())
    finally:
        store.close()


def test_reads_run_while_a_write_is_in_progress(db: Database) -> None:
    """Readers are not queued behind the writer (WAL on SQLite, MVCC on PostgreSQL)."""
    store_vms(db, new_vm(0))

    async def main() -> float:
        blocker = Blocker()
        held = asyncio.ensure_future(db.write(blocker))
        await asyncio.to_thread(blocker.running.wait, 10)
        started = time.monotonic()
        vm = await asyncio.wait_for(db.read(lambda c: vm_pool.get_vm(c, 0)), 5)
        elapsed = time.monotonic() - started
        blocker.release.set()
        await held
        assert vm.id == 0
        return elapsed

    assert asyncio.run(main()) < 2


def test_a_read_lane_call_makes_its_lookups_off_the_loop_and_answers_once(db: Database) -> None:
    """``in_read_lane``: on PostgreSQL the whole call runs on an API lane thread (its
    lookups and reads there, none on the caller's loop); on SQLite it runs here. Its result and
    its errors come back to the caller; a failing lookup leaves the lane serving."""
    store_vms(db, new_vm(0))

    async def call(vm_id: int) -> tuple[str, str]:
        vm = await db.lookup(lambda c: vm_pool.get_vm(c, vm_id))
        thread = await db.lookup(lambda c: threading.current_thread().name)
        # In a lane a read (a listing's) runs there too, not on a reader thread.
        reader = await db.read(lambda c: threading.current_thread().name)
        assert (reader == thread) != db.is_sqlite, (reader, thread)
        return vm.name, thread

    async def main() -> None:
        loop_thread = threading.current_thread().name
        name, thread = await db.in_read_lane(lambda: call(0))
        assert name == new_vm(0).name
        if db.is_sqlite:
            assert thread == loop_thread
        else:
            assert thread.startswith("db-api-") and thread != loop_thread
        with pytest.raises(NotFoundError):
            await db.in_read_lane(lambda: call(99))
        answers = await asyncio.gather(*(db.in_read_lane(lambda: call(0)) for _ in range(8)))
        assert {answer[0] for answer in answers} == {new_vm(0).name}

    asyncio.run(main())


def test_an_unchanged_read_is_read_again_after_any_commit(db: Database) -> None:
    """``read_unchanged``: the result of a read is given again only while nothing was
    committed to the store since (SQLite's data version, PostgreSQL's snapshot); a
    commit of any table, by the writer or by another connection (another process, say),
    makes it read again."""
    store_vms(db, new_vm(0))
    runs: list[int] = []

    def names(connection: Connection) -> list[str]:
        runs.append(1)
        return [vm.name for vm in vm_pool.list_vms(connection)]

    async def read_all() -> list[list[str]]:
        # Each reader connection keeps its own results: read on all of them.
        return list(await asyncio.gather(*(db.read_unchanged("names", names)
                                           for _ in range(8))))

    async def main() -> None:
        async def again(times: int) -> None:
            for _ in range(times):  # one after the other: on the connection that read it
                assert await db.read_unchanged("names", names) == [new_vm(0).name]

        await again(1)
        before = len(runs)
        await again(4)
        assert len(runs) == before or not db.is_sqlite  # PostgreSQL's pool: in turn
        before = len(runs)
        await db.in_read_lane(lambda: again(5))  # an API call: on its lane's connection
        assert len(runs) <= before + 1
        await db.write(lambda c: vm_pool.insert_vms(c, [new_vm(1)]))
        assert await read_all() == [[new_vm(0).name, new_vm(1).name]] * 8
        with db.write_engine.begin() as connection:
            vm_pool.update_vm(connection, vm_pool.get_vm(connection, 1), name="renamed")
        assert await read_all() == [[new_vm(0).name, "renamed"]] * 8
        before = len(runs)
        with db.write_engine.begin() as connection:  # another table: read again too
            connection.execute(insert(schema.acl_rules).values(
                id=99, user=1, resource=2, rights=3, zone=4))
        await read_all()
        assert len(runs) > before

    asyncio.run(main())


# -- the journal's indexes -----------------------------------------------------------------


def _journal_of(db: Database, statuses: Sequence[str]) -> None:
    """One journal entry per status, VM ``i`` for the ``i``-th (ids in that order)."""
    def fill(connection: Connection) -> None:
        for vm_id, status in enumerate(statuses):
            journal.start(connection, vm_id=vm_id, host_id=0, seq=0, action="deploy",
                          token=f"t{vm_id}", status=status)

    write(db, fill)


def test_handed_entries_are_listed_oldest_first_and_nothing_else(db: Database) -> None:
    _journal_of(db, [journal.STARTED, journal.HANDED, journal.DONE, journal.HANDED,
                     journal.FAILED])
    assert [entry.vm_id for entry in read(db, journal.handed)] == [1, 3]
    assert [entry.vm_id for entry in read(db, journal.unfinished)] == [0]


@pytest.fixture
def pg_db(pg_url: str) -> Iterator[Database]:
    """A store on PostgreSQL alone, for what only its planner does."""
    database = open_store(pg_url)
    try:
        yield database
    finally:
        database.close()


@pytest.mark.postgres
def test_finishing_an_entry_reads_the_vms_index_alone_even_without_statistics(
        pg_db: Database) -> None:
    """A young store (no ANALYZE yet) with thousands of actions in flight: finishing one
    VM's entry walks that VM's entries, not every started one (0.4 ms per update in a
    burst when PostgreSQL intersected the VM index with a status index)."""
    db = pg_db
    _journal_of(db, [journal.STARTED if vm_id % 4 else journal.DONE for vm_id in range(4000)])
    statement = journal._FINISH_STARTED  # what finish_started runs for each VM
    params = {"_vm_id": 1234, "_action": "deploy", "_other": "deploy",
              "_started": journal.STARTED, "status": journal.DONE, "finished": 1.0,
              "result": ""}

    def plan(connection: Connection) -> str:
        compiled = statement.compile(dialect=connection.dialect)
        rows = connection.exec_driver_sql(f"EXPLAIN {compiled}", compiled.construct_params(
            params)).all()
        return "\n".join(str(row[0]) for row in rows)

    found = read(db, plan)
    assert set(re.findall(r"\bix_\w+|\w+_pkey", found)) == {"ix_journal_vm"}, found

"""The action journal: driver work recorded before it runs.

Every driver action that changes the outside world (deploy, shutdown, cancel)
is written here with an idempotency token *in the same transaction* as the VM
state change that asks for it, and marked finished in the transaction that
stores its result. After a crash, ``started`` entries are exactly the actions
whose outcome is unknown; the daemon reconciles them with the driver.

Work that leaves a VM where it is (a reboot, a reset, a powered-off resize) asked
through a daemon that does not lead is journalled ``handed``: no position tells
the leader about it, the entry does. The leader :func:`take` s it (``handed`` ->
``started``) before it runs it, so it runs once.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection, Row, bindparam, func, insert, select, text, update

from cloudburst.model.records import JournalEntry
from cloudburst.store.deferred import Deferred
from cloudburst.store.schema import JOURNAL_HANDED, journal

STARTED = "started"
HANDED = "handed"
DONE = "done"
FAILED = "failed"


def _entry(row: Row[Any]) -> JournalEntry:
    return JournalEntry(
        id=row.id, vm_id=row.vm_id, host_id=row.host_id, seq=row.seq, action=row.action,
        token=row.token, status=row.status, created=row.created, finished=row.finished,
        result=row.result,
    )


def start(
    connection: Connection, *, vm_id: int, host_id: int, seq: int, action: str, token: str,
    status: str = STARTED,
) -> int:
    """Record that ``action`` is about to run; returns the entry id.

    A (token, action) pair is recorded once; the unique constraint refuses a
    second entry, which would mean the same work was started twice.
    """
    result = connection.execute(_INSERT, _new_entry(vm_id, host_id, seq, action, token, status))
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


_INSERT = insert(journal)


def _new_entry(vm_id: int, host_id: int, seq: int, action: str, token: str, status: str
               ) -> dict[str, Any]:
    return {"vm_id": vm_id, "host_id": host_id, "seq": seq, "action": action, "token": token,
            "status": status, "created": time.time(), "finished": 0.0, "result": ""}


def begin(connection: Connection, *, vm_id: int, host_id: int, seq: int, action: str,
          base: str, status: str = STARTED, new_stay: bool = False,
          later: Deferred | None = None) -> str:
    """Journal the next attempt of ``action`` in stay ``seq`` of ``vm_id``; return its token.

    The first attempt's token is ``base`` (deterministic, so a replay after a
    crash reuses it); attempt *n* > 1 gets ``base.n``, so a retried action never
    collides with its own earlier try. ``new_stay``: the caller opened stay
    ``seq`` in this transaction, so nothing is journalled on it yet (stays and
    journal entries are never deleted): the earlier attempts are not counted.
    ``later``: the entry is written at its flush.
    """
    count = 0
    if not new_stay:
        if later is not None and later.touches(vm_id):
            later.flush(connection)  # the count must see this VM's deferred entries
        tries = connection.execute(_COUNT_TRIES, {"vm_id": vm_id, "seq": seq, "action": action})
        count = int(tries.scalar() or 0)
    token = base if count == 0 else f"{base}.{count + 1}"
    if later is None:
        start(connection, vm_id=vm_id, host_id=host_id, seq=seq, action=action, token=token,
              status=status)
    else:
        later.add(vm_id, _INSERT, _new_entry(vm_id, host_id, seq, action, token, status))
    return token


def handed(connection: Connection) -> list[JournalEntry]:
    """Work handed to the leader and not taken yet, oldest first."""
    rows = connection.execute(
        select(journal).where(text(JOURNAL_HANDED)).order_by(journal.c.id)).all()
    return [_entry(row) for row in rows]


def take(connection: Connection, entry_id: int) -> bool:
    """Mark handed entry ``entry_id`` started; False if it was taken or settled already."""
    result = connection.execute(update(journal).where(
        journal.c.id == entry_id, journal.c.status == HANDED).values(status=STARTED))
    return bool(result.rowcount)


_COUNT_TRIES = select(func.count()).select_from(journal).where(
    journal.c.vm_id == bindparam("vm_id"), journal.c.seq == bindparam("seq"),
    journal.c.action == bindparam("action"))


def finish_started(connection: Connection, vm_id: int, actions: tuple[str, ...], *, ok: bool,
                   result: str = "", later: Deferred | None = None) -> None:
    """Mark every started entry of ``vm_id`` for one of ``actions`` (one or two) done or
    failed (at ``later``'s flush, if given)."""
    if not 1 <= len(actions) <= 2:
        raise ValueError(f"finish_started takes one or two actions, not {actions!r}")
    first, *other = actions
    params = {"_vm_id": vm_id, "_action": first, "_other": other[0] if other else first,
              "_started": STARTED,
              "status": DONE if ok else FAILED, "finished": time.time(),
              "result": result[:2000]}
    if later is not None:
        later.add(vm_id, _FINISH_STARTED, params)
    else:
        connection.execute(_FINISH_STARTED, params)


# Built once (a hot path: every driver result): SQLAlchemy reuses the compiled form.
# Two action parameters, not an expanding list: ``executemany`` cannot expand.
_FINISH_STARTED = (
    update(journal)
    .where(journal.c.vm_id == bindparam("_vm_id"),
           journal.c.action.in_([bindparam("_action"), bindparam("_other")]),
           journal.c.status == bindparam("_started"))
    .values(status=bindparam("status"), finished=bindparam("finished"),
            result=bindparam("result"))
)


def latest_started(connection: Connection, vm_id: int, action: str) -> JournalEntry | None:
    """The newest started entry of ``vm_id`` for ``action`` (what recovery resumes)."""
    row = connection.execute(
        select(journal).where(journal.c.vm_id == vm_id, journal.c.action == action,
                              journal.c.status == STARTED)
        .order_by(journal.c.id.desc()).limit(1)
    ).first()
    return None if row is None else _entry(row)


def finish(connection: Connection, entry_id: int, *, ok: bool, result: str = "") -> None:
    """Mark an entry done or failed, with the deploy id or error text."""
    connection.execute(
        update(journal).where(journal.c.id == entry_id)
        .values(status=DONE if ok else FAILED, finished=time.time(), result=result[:2000])
    )


def finish_token(connection: Connection, token: str, action: str, *, ok: bool,
                 result: str = "") -> None:
    """Mark the started entry of (``token``, ``action``) done or failed, if there is one."""
    connection.execute(_FINISH_TOKEN, {
        "_token": token, "_action": action, "_started": STARTED,
        "status": DONE if ok else FAILED, "finished": time.time(), "result": result[:2000],
    })


_FINISH_TOKEN = (
    update(journal)
    .where(journal.c.token == bindparam("_token"), journal.c.action == bindparam("_action"),
           journal.c.status == bindparam("_started"))
    .values(status=bindparam("status"), finished=bindparam("finished"),
            result=bindparam("result"))
)


def unfinished(connection: Connection) -> list[JournalEntry]:
    """Entries whose action never reported back, oldest first."""
    rows = connection.execute(
        select(journal).where(journal.c.status == STARTED).order_by(journal.c.id)
    ).all()
    return [_entry(row) for row in rows]


def entries_for(connection: Connection, vm_id: int) -> list[JournalEntry]:
    """Every entry of one VM, oldest first."""
    rows = connection.execute(
        select(journal).where(journal.c.vm_id == vm_id).order_by(journal.c.id)
    ).all()
    return [_entry(row) for row in rows]


# -- notes on deploys in flight ------------------------------------------------------
# A driver that sends several deploys in one provider call notes, before the
# call, which call each token went out in (``drivers.base.DeployNotes``). The
# note is the started entry's ``result``; finishing the entry replaces it.

_NOTE = (
    update(journal)
    .where(journal.c.token == bindparam("_token"), journal.c.action == "deploy",
           journal.c.status == STARTED)
    .values(result=bindparam("note"))
)


def write_notes(connection: Connection, notes: Mapping[str, str]) -> None:
    """Store ``token -> note`` on the tokens' started ``deploy`` entries."""
    if notes:
        connection.execute(_NOTE, [{"_token": token, "note": note[:2000]}
                                   for token, note in notes.items()])


def read_notes(connection: Connection, tokens: Sequence[str]) -> dict[str, str]:
    """The notes of those ``tokens`` whose ``deploy`` entry is still started."""
    found: dict[str, str] = {}
    for start_at in range(0, len(tokens), 500):
        chunk = list(tokens[start_at:start_at + 500])
        rows = connection.execute(
            select(journal.c.token, journal.c.result).where(
                journal.c.token.in_(chunk), journal.c.action == "deploy",
                journal.c.status == STARTED, journal.c.result != "")).all()
        found.update({str(row.token): str(row.result) for row in rows})
    return found

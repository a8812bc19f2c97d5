"""The audit trail: every state-changing call with who, what, when and the result."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, insert, select

from cloudburst.store.schema import audit


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    time: float
    uid: int
    uname: str
    method: str
    object: str
    success: bool
    message: str


def record(connection: Connection, entry: AuditEntry) -> None:
    """Append ``entry`` (its id is assigned by the store)."""
    connection.execute(insert(audit).values(
        time=entry.time, uid=entry.uid, uname=entry.uname, method=entry.method,
        object=entry.object, success=int(entry.success), message=entry.message))


def entries(connection: Connection, *, since: float = 0.0, uid: int | None = None,
            limit: int = 1000) -> list[AuditEntry]:
    """The newest ``limit`` entries from ``since`` on (of user ``uid``), oldest first."""
    query = select(audit).where(audit.c.time >= since)
    if uid is not None:
        query = query.where(audit.c.uid == uid)
    rows = connection.execute(query.order_by(audit.c.id.desc()).limit(limit)).all()
    return [AuditEntry(row.id, row.time, row.uid, row.uname, row.method, row.object,
                       bool(row.success), row.message) for row in reversed(rows)]

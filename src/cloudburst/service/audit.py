"""The audit trail: every state-changing call, who made it, on what, when and how it ended."""

from __future__ import annotations

import time

from cloudburst.errors import one_line
from cloudburst.store import audit_log
from cloudburst.store.audit_log import AuditEntry
from cloudburst.store.database import Database


class AuditService:
    """Records calls and reads them back (oneadmin's group only: see the access table)."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def record(self, *, uid: int, uname: str, method: str, target: str, success: bool,
                     message: str) -> None:
        """Append one entry. ``message`` is the error, or the call's result (an id);
        callers never pass secrets (passwords, tokens, templates)."""
        entry = AuditEntry(0, time.time(), uid, uname, method, target, success,
                           one_line(message, limit=512))
        await self.db.write(lambda connection: audit_log.record(connection, entry))

    async def entries(self, *, since: float = 0.0, uid: int | None = None,
                      limit: int = 1000) -> list[AuditEntry]:
        return await self.db.read(lambda connection: audit_log.entries(
            connection, since=since, uid=uid, limit=limit))

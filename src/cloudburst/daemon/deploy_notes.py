"""Drivers' notes on deploys in flight, kept in the action journal (the store).

The implementation of :class:`cloudburst.drivers.base.DeployNotes` that the
life-cycle manager hands to drivers with every deploy: notes ride on the
deploy's own journal entry, so they are as durable as the journal, survive a
crash and are shared by every daemon of a PostgreSQL store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from sqlalchemy import Connection

from cloudburst.store import journal
from cloudburst.store.database import Database


class JournalNotes:
    """Reads and writes drivers' deploy notes through one store."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def write(self, notes: Mapping[str, str]) -> None:
        items = dict(notes)

        def write(connection: Connection) -> None:
            journal.write_notes(connection, items)

        # Urgent: a provider call waits on it; it must not queue behind other writes.
        await self.db.write(write, urgent=True)

    async def read(self, tokens: Sequence[str]) -> dict[str, str]:
        wanted = list(tokens)

        def read(connection: Connection) -> dict[str, str]:
            return journal.read_notes(connection, wanted)

        return await self.db.read(read)

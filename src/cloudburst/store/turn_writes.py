"""Requests made in one turn of the event loop, written by one store write.

A burst of callers (a thousand ``one.vm.allocate`` calls) each asking for a write
of the same kind costs a writer job each; :class:`TurnWrites` collects the
requests made before the loop turns and hands them to one function that writes
them all in one job (and so can send each statement once for all of them). Each
caller gets its own outcome: the value for its request, or the exception that
refused it alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection

from cloudburst.store.database import Database

R = TypeVar("R")
T = TypeVar("T")

#: ``write_all(connection, requests)``: one outcome per request, in order (a value,
#: or the exception refusing that request; raising refuses them all).
WriteAll = Callable[[Connection, Sequence[R]], Sequence["T | Exception"]]


class TurnWrites(Generic[R, T]):
    """Collects requests per turn of the loop and writes them with one job each
    ``most`` of them (see the module docstring)."""

    def __init__(self, db: Database, write_all: WriteAll[R, T], *, most: int = 500) -> None:
        self._db = db
        self._write_all = write_all
        self._most = most
        self._asked: list[tuple[R, asyncio.Future[T]]] = []
        self._writes: set[asyncio.Task[None]] = set()

    async def ask(self, request: R) -> T:
        """Write ``request`` with the others asked in this turn; its outcome.

        Raises:
            Exception: what refused this request (or the whole write).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if not self._asked:
            loop.call_soon(self._write_asked)
        self._asked.append((request, future))
        return await future

    def _write_asked(self) -> None:
        asked, self._asked = self._asked, []
        loop = asyncio.get_running_loop()
        for start in range(0, len(asked), self._most):
            task = loop.create_task(self._write(asked[start:start + self._most]))
            self._writes.add(task)
            task.add_done_callback(self._writes.discard)

    async def _write(self, asked: list[tuple[R, asyncio.Future[T]]]) -> None:
        requests = [request for request, _ in asked]
        try:
            outcomes: Sequence[Any] = await self._db.write(
                lambda connection: self._write_all(connection, requests))
        except asyncio.CancelledError:
            for _, future in asked:
                future.cancel()
            raise
        except Exception as exc:  # the write as a whole: every request
            outcomes = [exc] * len(asked)
        settle([future for _, future in asked], outcomes)


def settle(futures: Sequence[asyncio.Future[Any]], outcomes: Sequence[Any]) -> None:
    """Give each future its outcome (an exception raises from it), in order; futures
    already done (cancelled by their caller) are left alone."""
    for future, outcome in zip(futures, outcomes, strict=True):
        if future.done():
            continue
        if isinstance(outcome, Exception):
            future.set_exception(outcome)
        else:
            future.set_result(outcome)

"""How background loops wait while the store is unavailable (busy, full, read-only, lost).

A loop that meets :class:`~cloudburst.errors.StoreUnavailableError` logs one
warning line (not a traceback), waits, and tries again: 0.5 s, then twice as
long each time up to 10 s, back to the start once a pass succeeds. It thus
recovers by itself within seconds of the store coming back.
"""

from __future__ import annotations

import asyncio
import logging

from cloudburst.errors import StoreUnavailableError

__all__ = ["StoreBackoff"]


class StoreBackoff:
    """Growing pauses of one loop while the store refuses it."""

    def __init__(self, loop_name: str, logger: logging.Logger, *, first: float = 0.5,
                 longest: float = 10.0) -> None:
        self._name = loop_name
        self._log = logger
        self._first = first
        self._longest = longest
        self._delay = first

    async def wait(self, error: StoreUnavailableError) -> None:
        """Log ``error`` in one line and pause before the loop's next try."""
        self._log.warning("%s postponed for %.1f s: %s", self._name, self._delay, error.message)
        await asyncio.sleep(self._delay)
        self._delay = min(self._delay * 2, self._longest)

    def succeeded(self) -> None:
        self._delay = self._first

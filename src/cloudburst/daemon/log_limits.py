"""Rate-limited logging: the same error repeated thousands of times a second is logged a few.

:class:`RepeatFilter` sits on the daemon's log handler. Records are grouped by
logger, level and the first line of their message before its arguments are
filled in (so "closing a connection from %s" is one kind whatever the address); each group may log
``burst`` records per ``window`` seconds. The rest are dropped and counted,
and the next record of the group that gets through says how many were.
A flood of one failure (for instance ``accept()`` failing on every connection
attempt) thus costs a few lines a minute instead of megabytes a second.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

__all__ = ["RepeatFilter"]

#: Groups remembered at most (the oldest are forgotten first).
_MAX_GROUPS: Final = 1024


class RepeatFilter(logging.Filter):
    """Lets at most ``burst`` records of a kind through per ``window`` seconds."""

    def __init__(self, burst: int = 5, window: float = 60.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst = burst
        self.window = window
        self._clock = clock
        #: group -> [window start, records let through, records dropped]
        self._groups: dict[tuple[str, int, str], list[float]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        first_line = str(record.msg).split("\n", 1)[0][:200]
        key = (record.name, record.levelno, first_line)
        now = self._clock()
        group = self._groups.get(key)
        if group is None or now - group[0] >= self.window:
            dropped = int(group[2]) if group is not None else 0
            if len(self._groups) >= _MAX_GROUPS:
                self._groups.pop(next(iter(self._groups)))
            self._groups.pop(key, None)
            self._groups[key] = [now, 1.0, 0.0]
            if dropped:
                record.msg = f"{record.msg} (and {dropped} more like it in the last " \
                             f"{self.window:g} s, not logged)"
            return True
        if group[1] < self.burst:
            group[1] += 1
            return True
        group[2] += 1
        return False

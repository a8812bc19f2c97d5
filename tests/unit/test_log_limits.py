"""The log's repeat filter: a flood of one message costs a few lines, then a count."""

from __future__ import annotations

import logging

from cloudburst.daemon.log_limits import RepeatFilter


def _record(message: str, *args: object, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("asyncio", level, __file__, 1, message, args, None)


def test_repeats_beyond_the_burst_are_dropped_then_counted() -> None:
    now = [0.0]
    repeat = RepeatFilter(burst=3, window=10.0, clock=lambda: now[0])
    passed = [repeat.filter(_record("accept failed on fd %d\ndetails", n)) for n in range(100)]
    assert passed == [True] * 3 + [False] * 97
    assert repeat.filter(_record("another message"))
    now[0] = 10.0
    record = _record("accept failed on fd %d\ndetails", 7)
    assert repeat.filter(record)
    assert "and 97 more like it" in record.getMessage()


def test_levels_and_loggers_are_counted_apart() -> None:
    repeat = RepeatFilter(burst=1, window=60.0, clock=lambda: 0.0)
    assert repeat.filter(_record("same"))
    assert repeat.filter(_record("same", level=logging.WARNING))
    assert not repeat.filter(_record("same"))

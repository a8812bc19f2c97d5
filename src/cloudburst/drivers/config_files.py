"""Drivers' own configuration files: their ``KEY=VALUE`` lines, and parsing them once.

Both helpers are format-neutral: how a value is unquoted, which keys are
valid and which error a bad line raises stay with each driver.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

T = TypeVar("T")

_EXPORT = "export "


@dataclass(frozen=True, slots=True)
class RcLine:
    """One meaningful line of a shell-style ``KEY=VALUE`` file.

    Attributes:
        number: the line number (from 1).
        key: the text before the first ``=``, stripped and not yet checked.
        value: the raw text after the first ``=`` (quotes and comments untouched).
        assignment: whether the line has an ``=`` at all.
    """

    number: int
    key: str
    value: str
    assignment: bool


def rc_lines(text: str) -> Iterator[RcLine]:
    """The lines of ``text`` that are neither blank nor ``#`` comments, in order.

    A leading ``export`` is dropped, as the shell would.
    """
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith(_EXPORT):
            line = line[len(_EXPORT):].lstrip()
        key, equals, value = line.partition("=")
        yield RcLine(number, key.strip(), value, bool(equals))


#: What tells that a file changed: inode, size, modification time and mode.
_Signature = tuple[int, int, int, int]


class ParsedFiles(Generic[T]):
    """``parse(path)`` per file, parsed again only when the file changed.

    A file counts as changed when its inode, size, modification time or mode
    differs from when it was parsed (the mode too: a ``chmod`` decides whether
    a credentials file is acceptable).
    """

    def __init__(self, parse: Callable[[Path], T]) -> None:
        self._parse = parse
        self._entries: dict[Path, tuple[_Signature, T]] = {}

    def get(self, path: Path) -> T:
        """The parsed contents of ``path``.

        Raises:
            OSError: the file cannot be looked at (missing, no permission);
                what was cached for it is forgotten.
            Exception: whatever ``parse`` raises; nothing is cached then.
        """
        try:
            status = path.stat()
        except OSError:
            self._entries.pop(path, None)
            raise
        signature = (status.st_ino, status.st_size, status.st_mtime_ns, status.st_mode)
        cached = self._entries.get(path)
        if cached is not None and cached[0] == signature:
            return cached[1]
        value = self._parse(path)
        self._entries[path] = (signature, value)
        return value

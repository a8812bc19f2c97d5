"""How the CLI prints: fixed-width tables, units, times, info blocks, JSON.

Tables follow OpenNebula's CLI (spec/opennebula.md 7.1): every column has a
width and an alignment (right unless marked left), each cell is padded or
truncated to exactly that width, and columns are separated by one blank. On a
terminal the header is bold and underlined and the ``STAT`` column is coloured.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Final, TextIO

from cloudburst.template import Template

#: Units of :func:`unit_to_str`, each 1024 times the previous.
UNITS: Final = ("K", "M", "G", "T")

_BOLD_UNDERLINE: Final = "\033[1;4m"
_GREEN: Final = "\033[92m"
_RED: Final = "\033[91m"
_RESET: Final = "\033[0m"
_GOOD_STATES: Final = frozenset({"runn", "on"})
_BAD_STATES: Final = frozenset({"fail", "err"})


@dataclass(frozen=True, slots=True)
class Column:
    """A table column: header ``name``, ``width`` characters, right-aligned unless ``left``.

    A column that is not ``default`` is shown only when asked for (``-l NAME,...``).
    """

    name: str
    width: int
    left: bool = False
    default: bool = True

    def cell(self, value: str) -> str:
        """``value`` truncated and padded to exactly ``width`` characters."""
        value = value[: self.width]
        return value.ljust(self.width) if self.left else value.rjust(self.width)


def render_table(columns: Sequence[Column], rows: Iterable[Sequence[str]], *,
                 colour: bool = False) -> list[str]:
    """The header line and one line per row, trailing blanks removed.

    Args:
        columns: the layout.
        rows: one string per column each.
        colour: add terminal highlighting (header, ``STAT`` values).
    """
    header = " ".join(column.cell(column.name) for column in columns).rstrip()
    lines = [f"{_BOLD_UNDERLINE}{header}{_RESET}" if colour else header]
    stat = next((index for index, column in enumerate(columns) if column.name == "STAT"), None)
    for row in rows:
        cells = [column.cell(value) for column, value in zip(columns, row, strict=True)]
        if colour and stat is not None:
            cells[stat] = _coloured(cells[stat], row[stat])
        lines.append(" ".join(cells).rstrip())
    return lines


def _coloured(cell: str, value: str) -> str:
    if value in _GOOD_STATES:
        return f"{_GREEN}{cell}{_RESET}"
    if value in _BAD_STATES:
        return f"{_RED}{cell}{_RESET}"
    return cell


def unit_to_str(value: float, unit: str = "K") -> str:
    """A size in ``unit`` (``K`` for KB) scaled to the largest unit that keeps it > 1.

    Divides by 1024 while the value exceeds 1024 (up to ``T``), rounds half up
    to one decimal and drops a trailing ``.0``: ``8912896`` KB is ``8.5G``,
    ``0`` is ``0K`` (OpenNebula's ``unit_to_str``).
    """
    index = UNITS.index(unit)
    while value > 1024 and index < len(UNITS) - 1:
        value /= 1024
        index += 1
    rounded = math.floor(value * 10 + 0.5) / 10
    text = f"{int(rounded)}" if rounded == int(rounded) else f"{rounded:.1f}"
    return f"{text}{UNITS[index]}"


def allocated(usage: int, maximum: int, *, memory: bool = False) -> str:
    """An ``ALLOCATED_CPU``/``ALLOCATED_MEM`` cell: ``"usage / max (pct%)"``.

    ``-`` when both are 0, ``"usage / -"`` when only the maximum is; memory
    (KB) goes through :func:`unit_to_str`. The percentage is truncated.
    """
    if usage == 0 and maximum == 0:
        return "-"
    shown = unit_to_str(usage) if memory else str(usage)
    if maximum == 0:
        return f"{shown} / -"
    total = unit_to_str(maximum) if memory else str(maximum)
    return f"{shown} / {total} ({usage * 100 // maximum}%)"


def elapsed(seconds: int) -> str:
    """A duration as ``"dd hh:mm:ss"`` (``onevm list``'s TIME)."""
    seconds = max(seconds, 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days:02d} {hours:02d}:{minutes:02d}:{seconds:02d}"


def period(seconds: int) -> str:
    """A duration as ``"%3dd %02dh%02dm"`` (OpenNebula 4+'s ``onevm list`` TIME).

    The table's 10-character column shows it without the final ``m``, as
    OpenNebula's does.
    """
    seconds = max(seconds, 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    return f"{days:3d}d {hours:02d}h{rest // 60:02d}m"


def short_date(epoch: int) -> str:
    """A UNIX time as local ``"mm/dd HH:MM:SS"``; ``-`` for 0 (never)."""
    if epoch <= 0:
        return "-"
    return time.strftime("%m/%d %H:%M:%S", time.localtime(epoch))


def info_block(title: str, pairs: Sequence[tuple[str, str]], *, width: int = 20) -> list[str]:
    """A ``show`` section: the title, then ``LABEL<padding>: value`` lines."""
    return [title, *(f"{label.ljust(width)}: {value}" for label, value in pairs)]


def template_lines(template: Template) -> list[str]:
    """The template in OpenNebula syntax, one line per attribute or vector line."""
    return template.to_text().splitlines()


def template_json(template: Template) -> dict[str, object]:
    """The template as JSON: a name maps to its value, or to a list when repeated."""
    result: dict[str, object] = {}
    for name, value in template:
        if name not in result:
            result[name] = value
            continue
        previous = result[name]
        if isinstance(previous, list):
            previous.append(value)
        else:
            result[name] = [previous, value]
    return result


def print_json(data: object, stream: TextIO | None = None) -> None:
    """Write ``data`` as indented JSON with a final newline."""
    out = stream or sys.stdout
    json.dump(data, out, indent=2, ensure_ascii=False)
    out.write("\n")


def use_colour(stream: TextIO | None = None) -> bool:
    """Whether to highlight: a terminal, and ``NO_COLOR`` unset."""
    out = stream or sys.stdout
    return out.isatty() and not os.environ.get("NO_COLOR")

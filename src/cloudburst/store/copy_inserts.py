"""Many rows inserted at once go to PostgreSQL as one ``COPY``.

The store inserts rows in batches (a turn's new VMs, a batch's stays, journal
entries and log lines) with ``executemany``. psycopg sends those as one
statement per row in pipeline mode: one round trip, but ~30 us of Python per
row in the driver, on a daemon whose throughput is bound by the interpreter.
``COPY ... FROM STDIN`` takes the same rows as one stream that psycopg formats
in C (about half the time per row, measured in the s22-pg note).

:func:`install` hooks an engine's ``executemany``: a plain ``INSERT INTO t
(columns) VALUES (%(a)s, ...)`` (every value a parameter, nothing after it: no
``RETURNING``, no ``ON CONFLICT``) becomes a ``COPY`` of those columns; anything
else runs as before. The rows land as the ``INSERT`` would put them (columns
left out get their server defaults, constraints are checked, an error fails the
statement and is raised as SQLAlchemy's exception of its kind), in the same
transaction. Nothing reads an insert's row count.

``COPY`` reads every value as text in its column's type, where the ``INSERT``
sent a typed parameter and cast it (a float to an integer column is rounded
there, refused by ``COPY``). So a batch goes as ``COPY`` only when each value
is of the Python type of its column's cast (``int`` for the integer types,
``str`` for text, ``float`` or ``int`` where SQLAlchemy casts nothing, or
None); any other batch runs as the ``INSERT`` it was.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, Final, NamedTuple

from sqlalchemy import Engine, event

__all__ = ["CopyForm", "copy_statement", "install"]

#: A compiled psycopg ``INSERT`` whose values are all parameters (each maybe cast).
_INSERT: Final = re.compile(
    r"INSERT INTO (?P<table>[\w\".]+) \((?P<columns>[^()]+)\) "
    r"VALUES \((?P<values>%\(\w+\)s(?:::[A-Z ]+)?(?:, %\(\w+\)s(?:::[A-Z ]+)?)*)\)")
_PARAMETER: Final = re.compile(r"%\((\w+)\)s(?:::([A-Z ]+))?")
#: The Python types a value may have to go through ``COPY`` as the ``INSERT`` would
#: store it, by the cast SQLAlchemy put on its parameter ("": none, a float column).
_TYPES: Final[dict[str, tuple[type, ...]]] = {
    "INTEGER": (int,), "BIGINT": (int,), "SMALLINT": (int,), "VARCHAR": (str,),
    "TEXT": (str,), "BOOLEAN": (bool,), "": (float, int)}


class CopyForm(NamedTuple):
    """How to send the rows of one ``INSERT`` as a ``COPY``."""

    sql: str
    #: The parameters' names, in column order.
    names: tuple[str, ...]
    #: The Python types each one's values may have (see the module docstring).
    types: tuple[tuple[type, ...], ...]

    def rows(self, parameters: Sequence[Mapping[str, Any]]) -> list[list[Any]] | None:
        """The rows to copy, or None if a value is not of its column's types."""
        rows = [[row[name] for name in self.names] for row in parameters]
        for values in rows:
            for value, types in zip(values, self.types, strict=True):
                if value is not None and type(value) not in types:
                    return None
        return rows


def copy_statement(insert: str) -> CopyForm | None:
    """How to load the rows of ``insert`` with ``COPY``, or None when ``insert`` is
    not a plain insert of parameters whose casts :data:`_TYPES` knows."""
    match = _INSERT.fullmatch(insert.strip())
    if match is None:
        return None
    parameters = _PARAMETER.findall(match["values"])
    if len(parameters) != len(match["columns"].split(",")) or any(
            cast not in _TYPES for _, cast in parameters):
        return None
    return CopyForm(f"COPY {match['table']} ({match['columns']}) FROM STDIN",
                    tuple(name for name, _ in parameters),
                    tuple(_TYPES[cast] for _, cast in parameters))


def install(engine: Engine) -> None:
    """Send ``engine``'s plain multi-row inserts as ``COPY`` (PostgreSQL with psycopg)."""
    forms: dict[str, CopyForm | None] = {}

    @event.listens_for(engine, "do_executemany")
    def _copy(cursor: Any, statement: str, parameters: Sequence[Mapping[str, Any]],
              _context: Any) -> bool:
        if statement not in forms:
            forms[statement] = copy_statement(statement)
        form = forms[statement]
        rows = None if form is None else form.rows(parameters)
        if form is None or rows is None:
            return False
        with cursor.copy(form.sql) as copy:
            for row in rows:
                copy.write_row(row)
        return True

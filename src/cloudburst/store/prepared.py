"""Statements run below SQLAlchemy's per-statement work: reads on the database
driver's own cursor, batch writes as plain SQL, savepoints.

SQLAlchemy's execution of a statement (events, parameter processing, its
result and row objects) costs several times the statement itself when the
statement reads a row or two by key, and a few microseconds more per row of a
listing. The reads every API call makes (its caller, the object's owner, the
object) and the pool listings' stamps are :class:`Prepared`: built with
SQLAlchemy as usual, compiled once per dialect, then run on the DBAPI
connection underneath the SQLAlchemy :class:`~sqlalchemy.Connection` (in its
transaction, if it has one).

For reads whose columns need no SQLAlchemy type processing (integers, text,
floats). A driver error is raised as SQLAlchemy's :class:`DBAPIError` (with
``connection_invalidated`` set when the connection is gone), so
:meth:`~cloudburst.store.database.Database.failures` and the lookup retry
treat it as any other.
"""

from __future__ import annotations

import functools
import json
import re
import sqlite3
from collections import namedtuple
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ClauseElement, ColumnElement, Connection, Executable, Float, Select
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.compiler import SQLCompiler

__all__ = ["Prepared", "Savepoint", "execute_many", "row_type", "rows_at_once"]


def row_type(columns: Iterable[ColumnElement[Any]]) -> Any:
    """A named tuple type for rows of ``columns`` (by their keys; duplicates renamed)."""
    return namedtuple(
        "Row", [str(getattr(column, "key", "")) for column in columns], rename=True)


@dataclass(frozen=True, slots=True)
class _Form:
    """A statement compiled for one dialect."""

    sql: str
    #: Parameter names in order for a positional paramstyle (None: named).
    names: tuple[str, ...] | None
    #: Values of the statement's own literals (``IN`` lists, default offsets).
    literals: Mapping[str, Any]


class Prepared:
    """A read statement compiled once per dialect, run on the DBAPI cursor.

    Parameters are the statement's ``bindparam`` names; every call passes the
    same names (an expanding ``IN`` of a call's values is not supported; ``IN``
    lists of constants are).
    """

    def __init__(self, statement: Select[Any]) -> None:
        self._statement = statement
        self._forms: dict[str, _Form] = {}
        #: Rows as named tuples of the selected columns' keys (duplicates renamed).
        self.row: Any = row_type(statement.selected_columns)

    def tuples(self, connection: Connection, **params: Any) -> list[tuple[Any, ...]]:
        """Every row, as plain tuples of the selected columns."""
        dialect = connection.dialect
        form = self._forms.get(dialect.name)
        if form is None:
            form = self._forms[dialect.name] = self._compile(dialect, params)
        values = {**form.literals, **params} if form.literals else params
        arguments: Any = values if form.names is None else [values[name]
                                                             for name in form.names]
        driver: Any = connection.connection.driver_connection
        try:
            return list(driver.execute(form.sql, arguments).fetchall())
        except dialect.loaded_dbapi.Error as exc:
            gone = dialect.is_disconnect(exc, driver, None)
            if gone:
                connection.invalidate(exc)
            raise DBAPIError.instance(form.sql, arguments, exc, dialect.loaded_dbapi.Error,
                                      connection_invalidated=gone,
                                      dialect=dialect) from exc

    def rows(self, connection: Connection, **params: Any) -> list[Any]:
        """Every row, as named tuples (``row.name``)."""
        return list(map(self.row._make, self.tuples(connection, **params)))

    def first(self, connection: Connection, **params: Any) -> Any | None:
        """The first row as a named tuple, or None."""
        found = self.tuples(connection, **params)
        return self.row._make(found[0]) if found else None

    def _compile(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        state = self._statement.compile(dialect=dialect).construct_expanded_state(
            dict(params))
        literals = {name: value for name, value in state.parameters.items()
                    if name not in params}
        names = None if state.positiontup is None else tuple(state.positiontup)
        return _Form(state.statement, names, literals)


def execute_many(connection: Connection, statement: Executable,
                 rows: Sequence[Mapping[str, Any]], *, disjoint: bool = False) -> int:
    """Run the write ``statement`` once for each of ``rows``; returns how many rows it
    changed in all.

    On SQLite the statement is compiled once for the rows' keys and sent as plain SQL
    (``exec_driver_sql``: SQLAlchemy's events, error wrapping and transaction as
    usual, without its per-row building of parameters, which cost more than the
    write), and as **one statement for many rows**: an INSERT with a row of VALUES
    each, and, when ``disjoint`` (no two rows change the same stored row, e.g. one
    row per VM, each about its VM), an UPDATE joined with the rows' VALUES or a
    DELETE of the rows they name. SQLite's driver gives up Python's GIL at every
    step of a statement, once per row of an ``executemany``, and while the event
    loop is busy each such step waits for the GIL again: 100 rows took 100 times
    longer than their one-statement form.

    A statement whose rows need values computed by SQLAlchemy (Python-side defaults),
    and any statement on other databases, runs as an ordinary ``executemany``.
    """
    if not rows:
        return 0
    dialect = connection.dialect
    form = _many_form(statement, dialect, tuple(rows[0])) if dialect.name == "sqlite" else None
    if form is None:
        return int(connection.execute(statement, list(rows)).rowcount)
    fields = form.fields
    if form.head is None or (form.joined and not disjoint) or len(rows) == 1:
        return int(connection.exec_driver_sql(form.sql, [
            tuple([row[name] if process is None else process(row[name])
                   for name, process in fields]) for row in rows]).rowcount)
    raw: Any = connection.connection.driver_connection
    most = max(1, min(_MOST_ROWS, raw.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
                      // len(fields)))
    changed = 0
    for start in range(0, len(rows), most):
        chunk = rows[start:start + most]
        sql = f"{form.head}{', '.join([form.group] * len(chunk))}{form.tail}"
        values = [row[name] if process is None else process(row[name])
                  for row in chunk for name, process in fields]
        changed += int(connection.exec_driver_sql(sql, tuple(values)).rowcount)
    return changed


#: Most rows in one multi-row statement of :func:`execute_many`.
_MOST_ROWS = 500

_Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _ManyForm:
    """A write compiled for :func:`execute_many`: its SQL for one row, its parameters
    in order (name, type processor), and its form for many rows, ``head`` + ``group``
    once per row (comma-separated) + ``tail`` (``head`` None: none)."""

    sql: str
    fields: tuple[tuple[str, _Processor], ...]
    head: str | None = None
    group: str = ""
    tail: str = ""
    #: The many-row form joins the rows with the table (UPDATE, DELETE): only for rows
    #: that change different stored rows.
    joined: bool = False


_INSERT = re.compile(r"INSERT INTO (\S+) \(([^()]*)\) VALUES \(([?, ]*)\)")
_UPDATE = re.compile(r"UPDATE (\S+) SET (.*) WHERE (.*)", re.DOTALL)
_DELETE = re.compile(r"DELETE FROM (\S+) WHERE (.*)", re.DOTALL)


@functools.lru_cache(maxsize=512)
def _many_form(statement: Executable, dialect: Dialect, keys: tuple[str, ...]
               ) -> _ManyForm | None:
    """``statement`` compiled for ``keys`` (see :class:`_ManyForm`); ``None`` when
    SQLAlchemy must build the rows."""
    if not isinstance(statement, ClauseElement):
        return None
    compiled = statement.compile(dialect=dialect, column_keys=list(keys))
    if not isinstance(compiled, SQLCompiler) or compiled.positiontup is None:
        return None
    if (compiled.insert_prefetch or compiled.update_prefetch or compiled.post_compile_params
            or compiled.literal_execute_params or compiled.escaped_bind_names
            or not set(compiled.positiontup) <= set(keys)):
        return None
    fields: list[tuple[str, _Processor]] = []
    for name in compiled.positiontup:
        process = compiled._bind_processors.get(name)
        if process is not None and not callable(process):  # a tuple's processors
            return None
        fields.append((name, process))
    sql = compiled.string
    count = len(fields)
    if sql.count("?") != count or "'" in sql or '"' in sql:  # placeholders only
        return _ManyForm(sql, tuple(fields))
    group = f"({', '.join(['?'] * count)})"
    if (found := _INSERT.fullmatch(sql)) is not None:
        return _ManyForm(sql, tuple(fields), f"INSERT INTO {found[1]} ({found[2]}) VALUES ",
                         group)
    if sqlite3.sqlite_version_info < (3, 33):  # UPDATE ... FROM came with 3.33
        return _ManyForm(sql, tuple(fields))
    # The rows' values as a table v (columns column1, column2...) joined by the clause.
    columns = iter(range(1, count + 1))
    joined = re.sub(r"\?", lambda _: f"v.column{next(columns)}", sql)
    if (found := _UPDATE.fullmatch(joined)) is not None and " FROM " not in sql:
        return _ManyForm(sql, tuple(fields), f"UPDATE {found[1]} SET {found[2]} FROM (VALUES ",
                         group, f") AS v WHERE {found[3]}", joined=True)
    if (found := _DELETE.fullmatch(joined)) is not None:
        table = found[1]
        return _ManyForm(sql, tuple(fields),
                         f"DELETE FROM {table} WHERE rowid IN (SELECT {table}.rowid FROM "
                         "(VALUES ", group, f") AS v, {table} WHERE {found[2]})", joined=True)
    return _ManyForm(sql, tuple(fields))


def rows_at_once(connection: Connection, statement: Select[Any], params: Mapping[str, Any]
                 ) -> list[tuple[Any, ...]]:
    """The rows of ``statement`` (plain tuples of its columns), fetched as one row on
    SQLite: the rows as one JSON array (``json_group_array``), decoded here.

    SQLite's driver gives up Python's GIL once per row fetched; a writer reading the
    100 VMs of a batch waited to get it back 100 times while the loop was busy. For
    columns of integers, text and floats (floats pass as their 17-digit text: JSON's
    own rendering keeps 15 digits). Other databases return their rows as usual.
    """
    if connection.dialect.name != "sqlite":
        return [tuple(row) for row in connection.execute(statement, dict(params))]
    compiled, columns, floats = _at_once_form(statement, connection.dialect)
    state = compiled.construct_expanded_state(dict(params))
    arguments = tuple(state.parameters[name] for name in state.positiontup or ())
    text = connection.exec_driver_sql(
        f"SELECT json_group_array(json_array({columns})) FROM ({state.statement})",
        arguments).scalar()
    rows: list[list[Any]] = json.loads(text or "[]")
    for row in rows if floats else ():
        for index in floats:
            if row[index] is not None:
                row[index] = float(row[index])
    return [tuple(row) for row in rows]


@functools.lru_cache(maxsize=64)
def _at_once_form(statement: Select[Any], dialect: Dialect
                  ) -> tuple[SQLCompiler, str, tuple[int, ...]]:
    """``statement`` compiled, its columns as ``json_array``'s arguments, and the
    indexes of its float columns."""
    compiled = statement.compile(dialect=dialect)
    assert isinstance(compiled, SQLCompiler)
    columns = list(statement.selected_columns)
    if len({column.key for column in columns}) != len(columns):
        raise ValueError("rows_at_once needs distinct column names")
    floats = tuple(index for index, column in enumerate(columns)
                   if isinstance(column.type, Float))
    names = [f'"{column.key}"' for column in columns]
    rendered = [f"CASE WHEN {name} IS NULL THEN NULL ELSE printf('%!.17g', {name}) END"
                if index in floats else name for index, name in enumerate(names)]
    return compiled, ", ".join(rendered), floats


class Savepoint:
    """A savepoint in ``connection``'s transaction, set with plain SQL; end it with
    :meth:`commit` (release) or :meth:`rollback` (undo what followed it).

    SQLAlchemy's ``begin_nested`` compiles its SAVEPOINT statement afresh each time (a
    new name each): a batch of state changes paid more for its savepoint than for
    most of its writes.
    """

    __slots__ = ("_connection", "_name")

    def __init__(self, connection: Connection) -> None:
        number = int(connection.info.get("savepoints", 0)) + 1
        connection.info["savepoints"] = number
        self._connection = connection
        self._name = f"cb_savepoint_{number}"
        connection.exec_driver_sql(f"SAVEPOINT {self._name}")

    def commit(self) -> None:
        self._connection.exec_driver_sql(f"RELEASE SAVEPOINT {self._name}")

    def rollback(self) -> None:
        self._connection.exec_driver_sql(f"ROLLBACK TO SAVEPOINT {self._name}")

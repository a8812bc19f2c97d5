"""A column matched against a list of values passed at execution: ``one_of``.

The store reads rows in batches by key (a batch's VMs, a tick's hosts): ``IN``
with the list as an *expanding* parameter. SQLAlchemy expands it into one
placeholder per value on every execution, so each list length is another
statement: PostgreSQL parses and plans each, and psycopg does not cache the
conversion of a statement of more than 50 parameters (it splits the text again
on every call). On PostgreSQL :func:`one_of` is ``column = ANY(:name)`` instead,
the list sent as one array: one statement text whatever the length, which
psycopg converts once and prepares on the server after a few runs. Elsewhere
(SQLite) it is the expanding ``IN`` as before.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Boolean, ColumnElement, any_, bindparam
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.visitors import InternalTraversal

__all__ = ["one_of"]


class _OneOf(ColumnElement[bool]):
    """``column`` is one of the values of the execution parameter ``name``."""

    inherit_cache = True
    type = Boolean()
    #: A comparison: no ``= 1`` added where the dialect has no boolean type (SQLite).
    _is_implicitly_boolean = True
    _traverse_internals = [("column", InternalTraversal.dp_clauseelement),
                           ("name", InternalTraversal.dp_string)]

    def __init__(self, column: ColumnElement[Any], name: str) -> None:
        self.column = column
        self.name = name


def one_of(column: ColumnElement[Any], name: str) -> ColumnElement[bool]:
    """``column`` equals one of the values passed as parameter ``name`` (a list) when the
    statement runs; an empty list matches nothing."""
    return _OneOf(column, name)


@compiles(_OneOf)
def _expanding_in(element: _OneOf, compiler: Any, **kw: Any) -> str:
    return str(compiler.process(element.column.in_(bindparam(element.name, expanding=True)),
                                **kw))


@compiles(_OneOf, "postgresql")
def _equals_any(element: _OneOf, compiler: Any, **kw: Any) -> str:
    values = bindparam(element.name, type_=ARRAY(element.column.type))
    return str(compiler.process(element.column == any_(values), **kw))

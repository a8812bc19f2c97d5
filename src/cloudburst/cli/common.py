"""What ``onehost``, ``onevm`` and ``onetemplate`` (and every other command) share.

* :class:`CommandLine`: a command with subcommands, each run by the
  ``handler`` that :func:`cloudburst.cli.client.run` calls. Every subcommand
  takes OpenNebula's connection options (``--endpoint``, ``--user``,
  ``--password``, ``-v/--verbose``) and the command ``-V/--version``; options
  may come before or after the positional arguments (``update 0 --append FILE``).
* :func:`add_show_options`, :func:`add_list_options`: ``-x/--xml`` and
  ``-j/--json`` for a ``show``; those plus ``--csv``, ``-l/--list COLS``,
  ``-f/--filter``, ``--operator`` and ``--no-header`` for a ``list``.
* :func:`print_rows`, :func:`print_xml`: print a ``list`` or a ``show``'s
  document as those options ask.
* :func:`add_update_arguments`, :func:`add_multiple_option`: arguments several
  subcommands take alike; :func:`update_template`: an ``update`` that replaces
  or merges a template read from a file or edited in ``$EDITOR``.

List filters follow OpenNebula's CLI: ``--filter KEY=VALUE,KEY!=VALUE`` with the
operators ``=``, ``!=``, ``<``, ``<=``, ``>``, ``>=`` and ``~`` (contains), on
column names (any case); values compare as numbers when both sides are
numbers; ``--operator OR`` keeps rows matching any condition instead of all.
"""

from __future__ import annotations

import argparse
import csv
import operator
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import Any, Final, Protocol
from xml.etree import ElementTree

from cloudburst.cli.client import Client, CliError, new_contents, template_at
from cloudburst.cli.tables import Column, print_json, render_table, use_colour

__all__ = [
    "CommandHandler",
    "CommandLine",
    "Row",
    "add_list_options",
    "add_multiple_option",
    "add_show_options",
    "add_update_arguments",
    "print_rows",
    "print_xml",
    "update_template",
]

CommandHandler = Callable[[argparse.Namespace], int]
"""Runs a subcommand with its parsed arguments; returns the exit status."""


# -- parsers ------------------------------------------------------------------------------


class _IntermixedParser(argparse.ArgumentParser):
    """A subcommand's parser: options and positionals in any order.

    Plain argparse binds an optional positional (``[FILE]``) as soon as it meets
    the first option, so ``update 0 --append FILE`` would leave ``FILE`` over.
    """

    _parsing = False

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        if self._parsing:  # the intermixed parse calls back in, twice
            return super().parse_known_args(args, namespace)
        self._parsing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._parsing = False


def _version(prog: str) -> str:
    try:
        version = metadata.version("cloudburst")
    except metadata.PackageNotFoundError:
        version = "unknown"
    return f"{prog} (cloudburst {version}), OpenNebula-compatible command line"


def _add_connection_options(parser: argparse.ArgumentParser, prog: str) -> None:
    """The options every OpenNebula command takes (read by ``client.run``)."""
    group = parser.add_argument_group("connection")
    group.add_argument("--endpoint", metavar="URL",
                       help="the daemon's XML-RPC URL (default: $ONE_XMLRPC)")
    group.add_argument("--user", metavar="NAME",
                       help="user name (instead of the session file's)")
    group.add_argument("--password", metavar="PASSWORD",
                       help="password for --user (asked on a terminal when missing)")
    group.add_argument("-v", "--verbose", action="store_true",
                       help="print each call to the daemon on stderr")
    group.add_argument("-V", "--version", action="version", version=_version(prog))


class CommandLine:
    """A command's parser and its subcommands (``onevm list``, ``onevm show`` ...)."""

    def __init__(self, prog: str, description: str) -> None:
        self.prog = prog
        self.parser = argparse.ArgumentParser(prog=prog, description=description)
        self.parser.add_argument("-V", "--version", action="version", version=_version(prog))
        self._commands = self.parser.add_subparsers(title="commands", metavar="COMMAND",
                                                    parser_class=_IntermixedParser)

    def command(self, name: str, handler: CommandHandler, help_text: str, *,
                description: str | None = None) -> argparse.ArgumentParser:
        """Add subcommand ``name`` run by ``handler``; return its parser for its arguments.

        ``help_text`` is its line in the command list and, unless
        ``description`` is given, the description of its own ``--help``. The
        subcommand already has the connection options; one of its own may
        take over a short option (``onehost create -v VMM``: then only
        ``--verbose`` is left).
        """
        if description is None:
            description = help_text
        sub = self._commands.add_parser(name, help=help_text, description=description,
                                        conflict_handler="resolve")
        _add_connection_options(sub, self.prog)
        sub.set_defaults(handler=handler)
        return sub


def add_show_options(sub: argparse.ArgumentParser, json_help: str = "print JSON") -> None:
    """``-x/--xml`` (the daemon's document as it is) and ``-j/--json``."""
    output = sub.add_mutually_exclusive_group()
    output.add_argument("-x", "--xml", action="store_true",
                        help="print the daemon's XML document")
    output.add_argument("-j", "--json", action="store_true", help=json_help)


def add_list_options(sub: argparse.ArgumentParser, json_help: str = "print JSON") -> None:
    """A ``list``'s output options (see the module docstring)."""
    output = sub.add_mutually_exclusive_group()
    output.add_argument("-x", "--xml", action="store_true",
                        help="print the daemon's XML document")
    output.add_argument("-j", "--json", action="store_true", help=json_help)
    output.add_argument("--csv", action="store_true", help="print CSV (values not truncated)")
    sub.add_argument("-l", "--list", metavar="COLS", type=_names,
                     help="the columns to show, e.g. ID,NAME (any case; some columns are "
                          "shown only when listed)")
    sub.add_argument("-f", "--filter", metavar="KEY=VALUE,...", type=_conditions, default=(),
                     help="keep rows whose columns match: =, !=, <, <=, >, >=, ~ (contains), "
                          "comma-separated")
    sub.add_argument("--operator", choices=("AND", "OR"), type=str.upper, default="AND",
                     help="whether rows must match all filter conditions (AND, default) or any")
    sub.add_argument("--no-header", action="store_true", help="print the table without header")


def add_update_arguments(sub: argparse.ArgumentParser) -> None:
    """``[FILE] [-a/--append]`` of an ``update``, after its object argument."""
    sub.add_argument("file", nargs="?", help="template file, or - for standard input")
    sub.add_argument("-a", "--append", action="store_true", help="merge instead of replacing")


def add_multiple_option(sub: argparse.ArgumentParser) -> None:
    """``-m N``: create N VMs (``args.multiple``, default 1)."""
    sub.add_argument("-m", "--multiple", type=int, default=1, metavar="N",
                     help="create N VMs (default 1)")


# -- list filters -------------------------------------------------------------------------


#: Filter operators, longest first so that ``<=`` is not read as ``<``.
_OPERATORS: Final[tuple[tuple[str, Callable[[Any, Any], bool]], ...]] = (
    ("!=", operator.ne), ("<=", operator.le), (">=", operator.ge), ("=", operator.eq),
    ("<", operator.lt), (">", operator.gt), ("~", lambda value, part: part in value),
)


@dataclass(frozen=True, slots=True)
class _Condition:
    column: str
    symbol: str
    value: str

    def holds(self, cell: str) -> bool:
        test = dict(_OPERATORS)[self.symbol]
        if self.symbol == "~":
            return bool(test(cell, self.value))
        try:
            return bool(test(float(cell), float(self.value)))
        except ValueError:
            return bool(test(cell, self.value))


def _names(value: str) -> tuple[str, ...]:
    names = tuple(name.strip().upper() for name in value.split(",") if name.strip())
    if not names:
        raise argparse.ArgumentTypeError("give column names, e.g. ID,NAME")
    return names


def _conditions(value: str) -> tuple[_Condition, ...]:
    conditions = []
    for part in value.split(","):
        for symbol, _ in _OPERATORS:
            column, found, expected = part.partition(symbol)
            if found and column.strip():
                conditions.append(_Condition(column.strip().upper(), symbol, expected.strip()))
                break
        else:
            raise argparse.ArgumentTypeError(
                f"invalid filter {part!r}: use COLUMN=VALUE (or !=, <, <=, >, >=, ~), "
                "comma-separated")
    return tuple(conditions)


# -- output -------------------------------------------------------------------------------


class Row(Protocol):
    """One line of a ``list``: a cell per column (untruncated) and its JSON object."""

    def cells(self) -> list[str]: ...

    def as_json(self) -> dict[str, object]: ...


def _column_index(columns: Sequence[Column], name: str) -> int:
    for index, column in enumerate(columns):
        if column.name == name:
            return index
    raise CliError(f"unknown column {name}; the columns are "
                   f"{', '.join(column.name for column in columns)}")


def print_xml(args: argparse.Namespace, document: ElementTree.Element) -> bool:
    """With ``-x``, print ``document`` (indented) and return True; else False."""
    if not getattr(args, "xml", False):
        return False
    ElementTree.indent(document)
    print(ElementTree.tostring(document, encoding="unicode"))
    return True


def print_rows(args: argparse.Namespace, columns: Sequence[Column], rows: Sequence[Row],
               document: ElementTree.Element) -> None:
    """Print a ``list`` as its options ask (see :func:`add_list_options`).

    ``columns`` are all the list's columns, ``rows`` give a cell for each;
    ``document`` is what ``-x`` prints.

    Raises:
        CliError: ``-l`` or ``--filter`` names a column the list does not have.
    """
    if print_xml(args, document):
        return
    conditions = [(_column_index(columns, c.column), c) for c in args.filter]
    combine = any if args.operator == "OR" else all
    kept = [row for row in rows if not conditions or combine(
        condition.holds(cells[index]) for cells in [row.cells()]
        for index, condition in conditions)]
    if args.list:
        shown = [_column_index(columns, name) for name in args.list]
    else:
        shown = [index for index, column in enumerate(columns) if column.default]
    if args.json:
        names = {columns[index].name for index in shown}
        print_json([{key: value for key, value in row.as_json().items()
                     if key in names or not args.list} for row in kept])
        return
    table = [[cells[index] for index in shown] for cells in (row.cells() for row in kept)]
    selected = [columns[index] for index in shown]
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        if not args.no_header:
            writer.writerow(column.name for column in selected)
        writer.writerows(table)
        return
    lines = render_table(selected, table, colour=use_colour())
    print("\n".join(lines[1:] if args.no_header else lines))


# -- update -------------------------------------------------------------------------------


def update_template(client: Client, object_id: int, args: argparse.Namespace, *,
                    info_method: str, update_method: str, section: str) -> int:
    """Run an ``update`` subcommand (see :func:`add_update_arguments`); return 0.

    The new text is ``args.file``'s contents or, without a file, the object's
    ``section`` template (read with ``info_method``) edited in ``$EDITOR``.
    ``update_method`` replaces the template with it, or merges it in with
    ``--append``.

    Raises:
        CliError: the file cannot be read, the editor fails, or a call fails.
    """
    source = new_contents(args.file,
                          lambda: template_at(client.document(info_method, object_id), section))
    client.call(update_method, object_id, source, 1 if args.append else 0)
    return 0

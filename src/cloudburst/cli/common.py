"""What ``onehost``, ``onevm`` and ``onetemplate`` share: subcommands, lists, updates.

* :class:`CommandLine`: a command with subcommands, each run by the
  ``handler`` that :func:`cloudburst.cli.client.run` calls.
* :func:`add_json_option`, :func:`add_update_arguments`,
  :func:`add_multiple_option`: arguments several subcommands take alike.
* :func:`print_rows`: a ``list`` as a table, or as JSON with ``--json``.
* :func:`update_template`: an ``update`` that replaces or merges a template
  read from a file or edited in ``$EDITOR``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Protocol

from cloudburst.cli.client import Client, new_contents, template_at
from cloudburst.cli.tables import Column, print_json, render_table, use_colour

__all__ = [
    "CommandHandler",
    "CommandLine",
    "Row",
    "add_json_option",
    "add_multiple_option",
    "add_update_arguments",
    "print_rows",
    "update_template",
]

CommandHandler = Callable[[argparse.Namespace], int]
"""Runs a subcommand with its parsed arguments; returns the exit status."""


# -- parsers ------------------------------------------------------------------------------


class CommandLine:
    """A command's parser and its subcommands (``onevm list``, ``onevm show`` ...)."""

    def __init__(self, prog: str, description: str) -> None:
        self.parser = argparse.ArgumentParser(prog=prog, description=description)
        self._commands = self.parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(self, name: str, handler: CommandHandler, help_text: str, *,
                description: str | None = None) -> argparse.ArgumentParser:
        """Add subcommand ``name`` run by ``handler``; return its parser for its arguments.

        ``help_text`` is its line in the command list and, unless
        ``description`` is given, the description of its own ``--help``.
        """
        if description is None:
            description = help_text
        sub = self._commands.add_parser(name, help=help_text, description=description)
        sub.set_defaults(handler=handler)
        return sub


def add_json_option(sub: argparse.ArgumentParser, help_text: str = "print JSON") -> None:
    """``--json``: print JSON instead of text (``args.json``)."""
    sub.add_argument("--json", action="store_true", help=help_text)


def add_update_arguments(sub: argparse.ArgumentParser) -> None:
    """``[FILE] [--append]`` of an ``update``, after its object argument."""
    sub.add_argument("file", nargs="?", help="template file, or - for standard input")
    sub.add_argument("--append", action="store_true", help="merge instead of replacing")


def add_multiple_option(sub: argparse.ArgumentParser) -> None:
    """``-m N``: create N VMs (``args.multiple``, default 1)."""
    sub.add_argument("-m", "--multiple", type=int, default=1, metavar="N",
                     help="create N VMs (default 1)")


# -- output -------------------------------------------------------------------------------


class Row(Protocol):
    """One line of a ``list``: its table cells and its JSON object."""

    def cells(self) -> list[str]: ...

    def as_json(self) -> dict[str, object]: ...


def print_rows(columns: Sequence[Column], rows: Sequence[Row], *, as_json: bool) -> None:
    """Print ``rows`` as a JSON array of objects, or as a table (coloured on a terminal)."""
    if as_json:
        print_json([row.as_json() for row in rows])
    else:
        print("\n".join(render_table(columns, (row.cells() for row in rows),
                                     colour=use_colour())))


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

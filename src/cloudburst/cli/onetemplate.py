"""``onetemplate``: register VM templates and instantiate VMs from them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

from cloudburst.cli.client import (
    Client,
    connect,
    new_contents,
    number,
    read_source,
    run,
    template_at,
    text,
)
from cloudburst.cli.tables import (
    Column,
    info_block,
    print_json,
    render_table,
    short_date,
    template_json,
    template_lines,
    use_colour,
)
from cloudburst.template import Template

LIST_COLUMNS: Final = (
    Column("ID", 4),
    Column("USER", 10, left=True),
    Column("GROUP", 10, left=True),
    Column("NAME", 27, left=True),
    Column("REGTIME", 14),
)


@dataclass(frozen=True, slots=True)
class TemplateRow:
    """One line of ``onetemplate list``; ``regtime`` is a UNIX time."""

    id: int
    user: str
    group: str
    name: str
    regtime: int

    def cells(self) -> list[str]:
        return [str(self.id), self.user, self.group, self.name, short_date(self.regtime)]

    def as_json(self) -> dict[str, object]:
        return {"ID": self.id, "USER": self.user, "GROUP": self.group, "NAME": self.name,
                "REGTIME": self.regtime}


def template_row(element: ElementTree.Element) -> TemplateRow:
    """The ``list`` row of a ``VMTEMPLATE`` element."""
    return TemplateRow(id=number(element, "ID"), user=text(element, "UNAME"),
                       group=text(element, "GNAME"), name=text(element, "NAME"),
                       regtime=number(element, "REGTIME"))


def _create(args: argparse.Namespace) -> int:
    source = read_source(args.file)
    print(f"ID: {connect().call('one.template.allocate', source)}")
    return 0


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.templatepool.info", -2, -1, -1)
    rows = [template_row(element) for element in pool.findall("VMTEMPLATE")]
    if args.json:
        print_json([row.as_json() for row in rows])
    else:
        print("\n".join(render_table(LIST_COLUMNS, (row.cells() for row in rows),
                                     colour=use_colour())))
    return 0


def _show(args: argparse.Namespace) -> int:
    element = connect().document("one.template.info", args.id)
    row = template_row(element)
    template = template_at(element, "TEMPLATE")
    if args.json:
        print_json({**row.as_json(), "TEMPLATE": template_json(template)})
        return 0
    lines = info_block(f"TEMPLATE {row.id} INFORMATION", [
        ("ID", str(row.id)), ("NAME", row.name), ("USER", row.user), ("GROUP", row.group),
        ("REGISTER TIME", short_date(row.regtime)),
    ])
    lines += ["", "TEMPLATE CONTENTS", *template_lines(template)]
    print("\n".join(lines))
    return 0


def _instantiate(args: argparse.Namespace) -> int:
    client = connect()
    for _ in range(args.multiple):
        vm_id = client.call("one.template.instantiate", args.id, args.name, args.hold, "", False)
        print(f"VM ID: {vm_id}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    connect().call("one.template.delete", args.id)
    return 0


def _update(args: argparse.Namespace) -> int:
    client = connect()
    source = new_contents(args.file, lambda: _template(client, args.id))
    client.call("one.template.update", args.id, source, 1 if args.append else 0)
    return 0


def _template(client: Client, template_id: int) -> Template:
    return template_at(client.document("one.template.info", template_id), "TEMPLATE")


def _rename(args: argparse.Namespace) -> int:
    connect().call("one.template.rename", args.id, args.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``onetemplate`` command line."""
    parser = argparse.ArgumentParser(
        prog="onetemplate",
        description="Manage cloudburst VM templates (OpenNebula's onetemplate).")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Callable[[argparse.Namespace], int],
                help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    sub = command("create", _create, "register a template from a file ('-' reads stdin); "
                                     "prints ID: <id>")
    sub.add_argument("file", help="template file, or - for standard input")

    sub = command("list", _list, "list templates")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = command("show", _show, "show a template")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("--json", action="store_true", help="print JSON")

    sub = command("instantiate", _instantiate, "create VMs from a template; "
                                               "prints VM ID: <id> for each")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("--name", default="", help="name of the VM (default: one-<id>)")
    sub.add_argument("--hold", action="store_true", help="create it on hold")
    sub.add_argument("-m", "--multiple", type=int, default=1, metavar="N",
                     help="create N VMs (default 1)")

    sub = command("delete", _delete, "delete a template")
    sub.add_argument("id", type=int, help="template id")

    sub = command("update", _update, "replace (or --append to) a template; "
                                     "without FILE, edit it in $EDITOR")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("file", nargs="?", help="template file, or - for standard input")
    sub.add_argument("--append", action="store_true", help="merge instead of replacing")

    sub = command("rename", _rename, "rename a template")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("name", help="new name")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onetemplate``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

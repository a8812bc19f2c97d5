"""``onetemplate``: register VM templates and instantiate VMs from them."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

from cloudburst.cli.client import connect, number, read_source, run, template_at, text
from cloudburst.cli.common import (
    CommandLine,
    add_list_options,
    add_multiple_option,
    add_show_options,
    add_update_arguments,
    print_rows,
    print_xml,
    update_template,
)
from cloudburst.cli.tables import (
    Column,
    info_block,
    print_json,
    short_date,
    template_json,
    template_lines,
)

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
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def _show(args: argparse.Namespace) -> int:
    element = connect().document("one.template.info", args.id)
    if print_xml(args, element):
        return 0
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
    return update_template(connect(), args.id, args, info_method="one.template.info",
                           update_method="one.template.update", section="TEMPLATE")


def _rename(args: argparse.Namespace) -> int:
    connect().call("one.template.rename", args.id, args.name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``onetemplate`` command line."""
    cli = CommandLine("onetemplate",
                      "Manage cloudburst VM templates (OpenNebula's onetemplate).")
    command = cli.command

    sub = command("create", _create, "register a template from a file ('-' reads stdin); "
                                     "prints ID: <id>")
    sub.add_argument("file", help="template file, or - for standard input")

    sub = command("list", _list, "list templates")
    add_list_options(sub)

    sub = command("show", _show, "show a template")
    sub.add_argument("id", type=int, help="template id")
    add_show_options(sub)

    sub = command("instantiate", _instantiate, "create VMs from a template; "
                                               "prints VM ID: <id> for each")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("--name", default="", help="name of the VM (default: one-<id>)")
    sub.add_argument("--hold", action="store_true", help="create it on hold")
    add_multiple_option(sub)

    sub = command("delete", _delete, "delete a template")
    sub.add_argument("id", type=int, help="template id")

    sub = command("update", _update, "replace (or --append to) a template; "
                                     "without FILE, edit it in $EDITOR")
    sub.add_argument("id", type=int, help="template id")
    add_update_arguments(sub)

    sub = command("rename", _rename, "rename a template")
    sub.add_argument("id", type=int, help="template id")
    sub.add_argument("name", help="new name")
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onetemplate``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

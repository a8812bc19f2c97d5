"""``onegroup``: create, list, show and manage groups, their admins and quotas.

``list`` shows OpenNebula's ``ID NAME USERS VMS MEMORY CPU``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

from cloudburst.auth import acl
from cloudburst.cli.client import (
    Client,
    CliError,
    connect,
    new_contents,
    number,
    run,
    template_at,
    text,
)
from cloudburst.cli.common import (
    CommandLine,
    add_list_options,
    add_show_options,
    add_update_arguments,
    print_rows,
    print_xml,
    update_template,
)
from cloudburst.cli.rows import Row, find_id, quota_cell, quota_tables, total_quota
from cloudburst.cli.tables import Column, info_block, print_json, template_lines

LIST_COLUMNS: Final = (
    Column("ID", 4), Column("NAME", 15, left=True), Column("USERS", 5), Column("VMS", 9),
    Column("MEMORY", 17), Column("CPU", 13),
)


def _group_id(client: Client, token: str) -> int:
    return find_id(client, token, "one.grouppool.info", "GROUP")


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.grouppool.info")
    quotas = {number(q, "ID"): total_quota(q) for q in pool.findall("QUOTAS")}
    rows = []
    for group in pool.findall("GROUP"):
        quota = quotas.get(number(group, "ID"))
        users = len(group.findall("USERS/ID"))
        rows.append(Row([text(group, "ID"), text(group, "NAME"), str(users),
                         quota_cell(quota, "VMS"), quota_cell(quota, "MEMORY", memory=True),
                         quota_cell(quota, "CPU", cpu=True)],
                        {"ID": number(group, "ID"), "NAME": text(group, "NAME"),
                         "USERS": users}))
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def _show(args: argparse.Namespace) -> int:
    client = connect()
    group = client.document("one.group.info", _group_id(client, args.group))
    if print_xml(args, group):
        return 0
    users = [number(user, ".") for user in group.findall("USERS/ID")]
    admins = [number(user, ".") for user in group.findall("ADMINS/ID")]
    if args.json:
        print_json({"ID": number(group, "ID"), "NAME": text(group, "NAME"), "USERS": users,
                    "ADMINS": admins})
        return 0
    lines = info_block(f"GROUP {text(group, 'ID')} INFORMATION",
                       [("ID", text(group, "ID")), ("NAME", text(group, "NAME"))], width=16)
    lines += ["", "GROUP TEMPLATE", *template_lines(template_at(group, "TEMPLATE")), ""]
    lines += ["USERS", "ID", *(str(user) for user in users), ""]
    lines += ["ADMINS", "ID", *(str(user) for user in admins), ""]
    lines += quota_tables(group)
    print("\n".join(lines))
    return 0


#: What members of a new group may create, as OpenNebula's CLI allows it (oned itself
#: gives a new group no CREATE rule).
DEFAULT_CREATE: Final = "VM+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VROUTER+VMGROUP+BACKUPJOB"


def _create(args: argparse.Namespace) -> int:
    """The group, then (as OpenNebula's CLI) the ACL rule ``@ID RESOURCES/* CREATE``;
    ``--resources ""`` adds none. If the rule cannot be added the group is removed."""
    resources = args.resources.strip()
    if resources:
        try:
            acl.parse(f"@0 {resources}/* CREATE")
        except acl.AclError as exc:
            raise CliError(f"--resources: {exc}") from None
    client = connect()
    group_id = client.call("one.group.allocate", args.name)
    if resources:
        try:
            rule = acl.parse(f"@{group_id} {resources}/* CREATE")
            client.call("one.acl.addrule", *(f"{number:X}" for number in rule))
        except CliError as exc:
            client.call("one.group.delete", group_id)
            raise CliError(f"Error creating group ACL's: {exc}") from None
    print(f"ID: {group_id}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    client = connect()
    client.call("one.group.delete", _group_id(client, args.group))
    return 0


def _admin(method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        client = connect()
        user = find_id(client, args.member, "one.userpool.info", "USER")
        client.call(method, _group_id(client, args.group), user)
        return 0

    return handler


def _update(args: argparse.Namespace) -> int:
    client = connect()
    return update_template(client, _group_id(client, args.group), args,
                           info_method="one.group.info", update_method="one.group.update",
                           section="TEMPLATE")


def _quota(args: argparse.Namespace) -> int:
    client = connect()
    group_id = _group_id(client, args.group)
    contents = new_contents(args.file, lambda: template_at(client.document(
        "one.group.info", group_id), "VM_QUOTA"))
    client.call("one.group.quota", group_id, contents)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``onegroup`` command line."""
    cli = CommandLine("onegroup", "Manage cloudburst groups (OpenNebula's onegroup).")
    command = cli.command
    group_help = "group id or name"
    sub = command("create", _create, "create a group whose members may create VMs, "
                  "templates...; prints ID: <id>")
    sub.add_argument("name")
    sub.add_argument("-r", "--resources", default=DEFAULT_CREATE,
                     help=f"what members may create, joined by + (default {DEFAULT_CREATE}; "
                          '"" for nothing)')
    sub = command("list", _list, "list groups with their VM quota usage")
    add_list_options(sub)
    sub = command("show", _show, "show a group's users, admins and quotas")
    sub.add_argument("group", help=group_help)
    add_show_options(sub)
    sub = command("delete", _delete, "delete an empty group")
    sub.add_argument("group", help=group_help)
    for name, method, help_text in (("addadmin", "one.group.addadmin", "make a member admin"),
                                    ("deladmin", "one.group.deladmin", "remove an admin")):
        sub = command(name, _admin(method), help_text)
        sub.add_argument("group", help=group_help)
        sub.add_argument("member", metavar="USER", help="user id or name")
    sub = command("update", _update, "replace (or --append to) a group's template")
    sub.add_argument("group", help=group_help)
    add_update_arguments(sub)
    sub = command("quota", _quota, "set a group's quota, e.g. VM = [ VMS = 10 ]")
    sub.add_argument("group", help=group_help)
    sub.add_argument("file", nargs="?", help="quota template file, or - for standard input")
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onegroup``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``oneuser``: create, list, show and manage users, their groups, tokens and quotas.

Subcommands and columns follow OpenNebula's ``oneuser``: ``list`` shows
``ID NAME ENAB GROUP AUTH VMS MEMORY CPU`` (usage / limit of the user's VM
quota); ``login`` prints a token usable as ``NAME:TOKEN`` session.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final
from xml.etree import ElementTree

from cloudburst.cli.client import Client, connect, new_contents, number, run, template_at, text
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
from cloudburst.cli.tables import Column, info_block, print_json, short_date, template_lines

LIST_COLUMNS: Final = (
    Column("ID", 4), Column("NAME", 15, left=True), Column("ENAB", 4, left=True),
    Column("GROUP", 8, left=True), Column("AUTH", 8, left=True), Column("VMS", 9),
    Column("MEMORY", 17), Column("CPU", 13),
)


Handler = Callable[[argparse.Namespace], int]


def _user_id(client: Client, token: str) -> int:
    return find_id(client, token, "one.userpool.info", "USER")


def _group_id(client: Client, token: str) -> int:
    return find_id(client, token, "one.grouppool.info", "GROUP")


def user_row(user: ElementTree.Element, quota: ElementTree.Element | None) -> Row:
    enabled = "yes" if text(user, "ENABLED") == "1" else "no"
    return Row([str(number(user, "ID")), text(user, "NAME"), enabled, text(user, "GNAME"),
                text(user, "AUTH_DRIVER"), quota_cell(quota, "VMS"),
                quota_cell(quota, "MEMORY", memory=True), quota_cell(quota, "CPU", cpu=True)],
               {"ID": number(user, "ID"), "NAME": text(user, "NAME"), "ENABLED": enabled == "yes",
                "GROUP": text(user, "GNAME"), "AUTH": text(user, "AUTH_DRIVER")})


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.userpool.info")
    quotas = {number(q, "ID"): total_quota(q) for q in pool.findall("QUOTAS")}
    rows = [user_row(user, quotas.get(number(user, "ID"))) for user in pool.findall("USER")]
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def _show(args: argparse.Namespace) -> int:
    client = connect()
    user = client.document("one.user.info", _user_id(client, args.who))
    if print_xml(args, user):
        return 0
    if args.json:
        print_json({"ID": number(user, "ID"), "NAME": text(user, "NAME"),
                    "GROUP": text(user, "GNAME"), "GROUPS": [
                        number(g, ".") for g in user.findall("GROUPS/ID")],
                    "AUTH_DRIVER": text(user, "AUTH_DRIVER"),
                    "ENABLED": text(user, "ENABLED") == "1"})
        return 0
    lines = info_block(f"USER {text(user, 'ID')} INFORMATION", [
        ("ID", text(user, "ID")), ("NAME", text(user, "NAME")),
        ("GROUP", text(user, "GNAME")), ("PASSWORD", text(user, "PASSWORD")),
        ("AUTH_DRIVER", text(user, "AUTH_DRIVER")),
        ("ENABLED", "Yes" if text(user, "ENABLED") == "1" else "No"),
    ], width=16)
    lines += ["", "TOKENS", f"{'ID':>7} {'EGID':>4}  {'EXPIRATION':<19}"]
    for token in user.findall("LOGIN_TOKEN"):
        expires = number(token, "EXPIRATION_TIME")
        lines.append(f"{text(token, 'TOKEN'):>7} {text(token, 'EGID'):>4}  "
                     f"{'forever' if expires < 0 else short_date(expires)}")
    lines += ["", "USER TEMPLATE", *template_lines(template_at(user, "TEMPLATE")), ""]
    lines += quota_tables(user)
    print("\n".join(lines))
    return 0


def _create(args: argparse.Namespace) -> int:
    client = connect()
    groups = [_group_id(client, group) for group in args.groups or []]
    print(f"ID: {client.call('one.user.allocate', args.name, args.secret, args.driver, groups)}")
    return 0


def _simple(method: str, *extra: str) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        client = connect()
        values: list[object] = [_user_id(client, args.who)]
        for name in extra:
            value = getattr(args, name)
            values.append(_group_id(client, value) if name == "group" else value)
        client.call(method, *values)
        return 0

    return handler


def _enable(value: bool) -> Handler:
    def handler(args: argparse.Namespace) -> int:
        client = connect()
        client.call("one.user.enable", _user_id(client, args.who), value)
        return 0

    return handler


def _login(args: argparse.Namespace) -> int:
    token = connect().call("one.user.login", args.name, args.token or "", args.time, -1)
    if token:
        print(token)
    return 0


def _update(args: argparse.Namespace) -> int:
    client = connect()
    return update_template(client, _user_id(client, args.who), args,
                           info_method="one.user.info", update_method="one.user.update",
                           section="TEMPLATE")


def _quota(args: argparse.Namespace) -> int:
    client = connect()
    user_id = _user_id(client, args.who)
    text_ = new_contents(args.file, lambda: template_at(client.document(
        "one.user.info", user_id), "VM_QUOTA"))
    client.call("one.user.quota", user_id, text_)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``oneuser`` command line."""
    cli = CommandLine("oneuser", "Manage cloudburst users (OpenNebula's oneuser).")
    command = cli.command
    user_help = "user id or name"
    sub = command("create", _create, "create a user; prints ID: <id>")
    sub.add_argument("name")
    sub.add_argument("secret", metavar="PASSWORD")
    sub.add_argument("--driver", default="core", help="authentication driver (core)")
    sub.add_argument("--group", dest="groups", action="append",
                     help="group id or name (the first is the primary group); repeatable")
    sub = command("list", _list, "list users with their VM quota usage")
    add_list_options(sub)
    sub = command("show", _show, "show a user's information, tokens and quotas")
    sub.add_argument("who", metavar="USER", nargs="?", default="-1",
                     help=user_help + " (default: you)")
    add_show_options(sub)
    for name, method, extra, help_text in (
            ("delete", "one.user.delete", (), "delete a user"),
            ("passwd", "one.user.passwd", ("secret",), "change a user's password"),
            ("chgrp", "one.user.chgrp", ("group",), "change a user's primary group"),
            ("addgroup", "one.user.addgroup", ("group",), "add a user to a secondary group"),
            ("delgroup", "one.user.delgroup", ("group",), "remove a user from a group")):
        sub = command(name, _simple(method, *extra), help_text)
        sub.add_argument("who", metavar="USER", help=user_help)
        for argument in extra:
            sub.add_argument(argument, metavar=argument.upper().replace("SECRET", "PASSWORD"))
    for name, value in (("enable", True), ("disable", False)):
        sub = command(name, _enable(value), f"{name} a user (at once, sessions too)")
        sub.add_argument("who", metavar="USER", help=user_help)
    sub = command("login", _login, "create a login token; prints it (use NAME:TOKEN as "
                                   "session)")
    sub.add_argument("name", help="user name")
    sub.add_argument("--time", type=int, default=36000,
                     help="seconds the token is valid (-1: never; 0: revoke --token)")
    sub.add_argument("--token", help="an existing token to renew or revoke")
    sub = command("update", _update, "replace (or --append to) a user's template")
    sub.add_argument("who", metavar="USER", help=user_help)
    add_update_arguments(sub)
    sub = command("quota", _quota, "set a user's quota, e.g. VM = [ VMS = 2, CPU = 1 ]; "
                                   "without FILE, edit it in $EDITOR")
    sub.add_argument("who", metavar="USER", help=user_help)
    sub.add_argument("file", nargs="?", help="quota template file, or - for standard input")
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``oneuser``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

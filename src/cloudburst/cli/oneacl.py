"""``oneacl``: list, create and delete ACL rules in OpenNebula's syntax.

``create "@1 VM+TEMPLATE/* CREATE"`` sends the rule's numeric form (as
OpenNebula's CLI does); ``list`` shows ``ID USER RES_VHNIUTGDCOZSvRMAPtB RID
OPE_UMAC ZONE`` with one letter per resource type and right.
"""

from __future__ import annotations

import argparse
import sys
from typing import Final

from cloudburst.auth import acl
from cloudburst.cli.client import CliError, connect, number, run, text
from cloudburst.cli.common import CommandLine, add_list_options, print_rows
from cloudburst.cli.rows import Row
from cloudburst.cli.tables import Column

LIST_COLUMNS: Final = (
    Column("ID", 4), Column("USER", 8), Column(f"RES_{acl.RESOURCE_LETTERS}", 23),
    Column("RID", 5), Column("OPE_UMAC", 8), Column("ZONE", 5),
)


def rule_row(rule_id: int, user: int, resource: int, rights: int, zone: int,
             string: str) -> Row:
    letters = "".join(letter if resource & bit else "-" for letter, bit in zip(
        acl.RESOURCE_LETTERS, acl.RESOURCES.values(), strict=True))
    operations = "".join(letter if rights & bit else "-" for letter, bit in zip(
        "umac", acl.RIGHTS.values(), strict=True))
    target = string.split()[1].split("/", 1)[1]
    return Row([str(rule_id), string.split()[0], f"    {letters}", target, f"    {operations}",
                string.split()[3]],
               {"ID": rule_id, "RULE": string})


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.acl.info")
    rows = [rule_row(number(rule, "ID"), int(text(rule, "USER"), 16),
                     int(text(rule, "RESOURCE"), 16), int(text(rule, "RIGHTS"), 16),
                     int(text(rule, "ZONE"), 16), text(rule, "STRING"))
            for rule in pool.findall("ACL")]
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def _create(args: argparse.Namespace) -> int:
    rule = " ".join(args.rule)
    try:
        numbers = acl.parse(rule)
    except acl.AclError as exc:
        raise CliError(exc.message) from None
    print(f"ID: {connect().call('one.acl.addrule', *(f'{n:X}' for n in numbers))}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    connect().call("one.acl.delrule", args.id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``oneacl`` command line."""
    cli = CommandLine("oneacl", "Manage ACL rules (OpenNebula's oneacl).")
    sub = cli.command("create", _create, 'add a rule, e.g. "@1 VM+TEMPLATE/* CREATE"; prints '
                                         "ID: <id>")
    sub.add_argument("rule", nargs="+", help="USER RESOURCES/ID RIGHTS [ZONE]")
    sub = cli.command("list", _list, "list the rules")
    add_list_options(sub)
    sub = cli.command("delete", _delete, "delete a rule")
    sub.add_argument("id", type=int)
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``oneacl``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

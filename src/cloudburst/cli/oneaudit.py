"""``oneaudit``: the audit trail of state-changing calls (oneadmin's group only).

``list`` shows ``ID TIME USER METHOD OBJECT RESULT MESSAGE``, oldest first,
read with ``one.audit.info(since, uid, limit)``.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Final

from cloudburst.cli.client import connect, number, run, text
from cloudburst.cli.common import CommandLine, add_list_options, print_rows
from cloudburst.cli.rows import Row, find_id
from cloudburst.cli.tables import Column

LIST_COLUMNS: Final = (
    Column("ID", 6), Column("TIME", 19, left=True), Column("USER", 12, left=True),
    Column("METHOD", 22, left=True), Column("OBJECT", 14, left=True),
    Column("RESULT", 6, left=True), Column("MESSAGE", 60, left=True),
)


def _list(args: argparse.Namespace) -> int:
    client = connect()
    uid = -1 if args.user_filter is None else find_id(
        client, args.user_filter, "one.userpool.info", "USER")
    since = int(time.time() - args.since * 3600) if args.since else 0
    pool = client.document("one.audit.info", since, uid, args.limit)
    rows = []
    for record in pool.findall("RECORD"):
        when = time.strftime("%Y-%m-%d %H:%M:%S",
                             time.localtime(float(text(record, "TIME", "0"))))
        ok = text(record, "SUCCESS") == "1"
        rows.append(Row([text(record, "ID"), when, text(record, "UNAME"),
                         text(record, "METHOD"), text(record, "OBJECT"),
                         "ok" if ok else "failed", text(record, "MESSAGE")],
                        {"ID": number(record, "ID"), "TIME": when, "UID": number(record, "UID"),
                         "USER": text(record, "UNAME"), "METHOD": text(record, "METHOD"),
                         "OBJECT": text(record, "OBJECT"), "SUCCESS": ok,
                         "MESSAGE": text(record, "MESSAGE")}))
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``oneaudit`` command line."""
    cli = CommandLine("oneaudit", "Read the audit trail of state-changing calls.")
    sub = cli.command("list", _list, "list the newest records, oldest first")
    sub.add_argument("--of", dest="user_filter", metavar="USER",
                     help="only this user's calls (id or name)")
    sub.add_argument("--since", type=float, metavar="HOURS", help="only the last HOURS hours")
    sub.add_argument("--limit", type=int, default=1000, help="at most this many (1000)")
    add_list_options(sub)
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``oneaudit``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

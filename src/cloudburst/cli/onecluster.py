"""``onecluster``: clusters (a cloud site, or a set of local hosts) and their hosts.

``list`` shows OpenNebula's ``ID NAME HOSTS VNETS DATASTORES``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Final

from cloudburst.cli.client import (
    Client,
    connect,
    find_host_id,
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
from cloudburst.cli.rows import Row, budget_table, find_id
from cloudburst.cli.tables import Column, info_block, print_json, template_lines

LIST_COLUMNS: Final = (
    Column("ID", 4), Column("NAME", 20, left=True), Column("HOSTS", 5), Column("VNETS", 10),
    Column("DATASTORES", 10),
)


def _cluster_id(client: Client, token: str) -> int:
    return find_id(client, token, "one.clusterpool.info", "CLUSTER")


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.clusterpool.info")
    rows = [Row([text(c, "ID"), text(c, "NAME"), str(len(c.findall("HOSTS/ID"))),
                 str(len(c.findall("VNETS/ID"))), str(len(c.findall("DATASTORES/ID")))],
                {"ID": number(c, "ID"), "NAME": text(c, "NAME"),
                 "HOSTS": [number(h, ".") for h in c.findall("HOSTS/ID")]})
            for c in pool.findall("CLUSTER")]
    print_rows(args, LIST_COLUMNS, rows, pool)
    return 0


def _show(args: argparse.Namespace) -> int:
    client = connect()
    cluster = client.document("one.cluster.info", _cluster_id(client, args.cluster))
    if print_xml(args, cluster):
        return 0
    hosts = [number(host, ".") for host in cluster.findall("HOSTS/ID")]
    if args.json:
        print_json({"ID": number(cluster, "ID"), "NAME": text(cluster, "NAME"), "HOSTS": hosts})
        return 0
    lines = info_block(f"CLUSTER {text(cluster, 'ID')} INFORMATION",
                       [("ID", text(cluster, "ID")), ("NAME", text(cluster, "NAME"))], width=18)
    lines += ["", "CLUSTER TEMPLATE", *template_lines(template_at(cluster, "TEMPLATE")), ""]
    lines += ["HOSTS", *(str(host) for host in hosts), "", "VNETS", "", "DATASTORES"]
    if cluster.find("VM_QUOTA/VM") is not None:
        lines += ["", *budget_table(cluster)]
    print("\n".join(lines))
    return 0


def _quota(args: argparse.Namespace) -> int:
    client = connect()
    cluster_id = _cluster_id(client, args.cluster)
    text_ = new_contents(args.file, lambda: template_at(client.document(
        "one.cluster.info", cluster_id), "VM_QUOTA"))
    client.call("one.cluster.quota", cluster_id, text_)
    return 0


def _create(args: argparse.Namespace) -> int:
    print(f"ID: {connect().call('one.cluster.allocate', args.name)}")
    return 0


def _delete(args: argparse.Namespace) -> int:
    client = connect()
    client.call("one.cluster.delete", _cluster_id(client, args.cluster))
    return 0


def _host(method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        client = connect()
        client.call(method, _cluster_id(client, args.cluster), find_host_id(client, args.host))
        return 0

    return handler


def _rename(args: argparse.Namespace) -> int:
    client = connect()
    client.call("one.cluster.rename", _cluster_id(client, args.cluster), args.name)
    return 0


def _update(args: argparse.Namespace) -> int:
    client = connect()
    return update_template(client, _cluster_id(client, args.cluster), args,
                           info_method="one.cluster.info", update_method="one.cluster.update",
                           section="TEMPLATE")


def build_parser() -> argparse.ArgumentParser:
    """The ``onecluster`` command line."""
    cli = CommandLine("onecluster", "Manage clusters (OpenNebula's onecluster).")
    command = cli.command
    cluster_help = "cluster id or name"
    sub = command("create", _create, "create a cluster; prints ID: <id>")
    sub.add_argument("name")
    sub = command("list", _list, "list clusters")
    add_list_options(sub)
    sub = command("show", _show, "show a cluster and its hosts")
    sub.add_argument("cluster", help=cluster_help)
    add_show_options(sub)
    sub = command("delete", _delete, "delete a cluster without hosts")
    sub.add_argument("cluster", help=cluster_help)
    for name, method, help_text in (
            ("addhost", "one.cluster.addhost", "move a host into the cluster"),
            ("delhost", "one.cluster.delhost", "move a host back to cluster 0 (default)")):
        sub = command(name, _host(method), help_text)
        sub.add_argument("cluster", help=cluster_help)
        sub.add_argument("host", help="host id or name")
    sub = command("rename", _rename, "rename a cluster")
    sub.add_argument("cluster", help=cluster_help)
    sub.add_argument("name")
    sub = command("quota", _quota, "set a site's own budgets, e.g. "
                  "VM = [ HOURLY_COST = 2, MONTHLY_COST = 500 ]")
    sub.add_argument("cluster", help=cluster_help)
    sub.add_argument("file", nargs="?", help="quota template file, or - for standard input")
    sub = command("update", _update, "replace (or --append to) a cluster's template")
    sub.add_argument("cluster", help=cluster_help)
    add_update_arguments(sub)
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onecluster``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

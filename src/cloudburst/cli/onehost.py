"""``onehost``: add, list, show, update and manage hosts (hypervisors or cloud sites).

``create`` takes both historical forms: the seed's positional
``NAME IM_MAD VMM_MAD TM_MAD [VNM_MAD]`` (3.0/3.2, sent as such) and
``NAME -i IM -v VMM [-n VNM] [-c CLUSTER]`` (3.4+). ``list`` shows the
3.8-4.x columns ``ID NAME CLUSTER RVM ALLOCATED_CPU ALLOCATED_MEM STAT``
(``dsbl`` for a disabled host, ``off`` for an offline one, ``err`` for one in
error); ``-l ...,REASON`` adds why a host is in error, in one line that says
what to do when a missing component (libvirt-python, libvirtd) is the cause.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

from cloudburst.cli.client import (
    Client,
    CliError,
    UnreachableError,
    connect,
    find_host_id,
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
from cloudburst.cli.onevm import vm_table
from cloudburst.cli.rows import find_id
from cloudburst.cli.tables import (
    Column,
    allocated,
    info_block,
    print_json,
    short_date,
    template_json,
    template_lines,
    unit_to_str,
)
from cloudburst.model.records import HostRecord
from cloudburst.model.states import HOST_STATE_SHORT, HostState

LIST_COLUMNS: Final = (
    Column("ID", 4),
    Column("NAME", 15, left=True),
    Column("CLUSTER", 9, left=True),
    Column("RVM", 3),
    Column("ALLOCATED_CPU", 18),
    Column("ALLOCATED_MEM", 18),
    Column("STAT", 6, left=True),
    Column("REASON", 64, left=True, default=False),
)

#: How the monitor prefixes a host's ``TEMPLATE/ERROR`` (``Error monitoring host 3 : ...``).
_ERROR_PREFIX: Final = re.compile(r"Error monitoring host \d+ : ")

#: ``one.host.status`` values of enable / disable / offline.
STATUS: Final = {"enable": 0, "disable": 1, "offline": 2}


@dataclass(frozen=True, slots=True)
class HostRow:
    """One line of ``onehost list``; memory in KB."""

    id: int
    name: str
    cluster: str
    running_vms: int
    cpu_usage: int
    max_cpu: int
    mem_usage: int
    max_mem: int
    stat: str
    reason: str

    def cells(self) -> list[str]:
        return [str(self.id), self.name, self.cluster or "-", str(self.running_vms),
                allocated(self.cpu_usage, self.max_cpu),
                allocated(self.mem_usage, self.max_mem, memory=True), self.stat, self.reason]

    def as_json(self) -> dict[str, object]:
        return {"ID": self.id, "NAME": self.name, "CLUSTER": self.cluster or None,
                "RVM": self.running_vms, "CPU_USAGE": self.cpu_usage, "MAX_CPU": self.max_cpu,
                "MEM_USAGE": self.mem_usage, "MAX_MEM": self.max_mem, "STAT": self.stat,
                "REASON": self.reason or None}


def _state(host: ElementTree.Element) -> HostState | None:
    try:
        return HostState(number(host, "STATE", -1))
    except ValueError:
        return None


def host_row(host: ElementTree.Element) -> HostRow:
    """The ``list`` row of a ``HOST`` element."""
    state = _state(host)
    return HostRow(
        id=number(host, "ID"), name=text(host, "NAME"), cluster=text(host, "CLUSTER"),
        running_vms=number(host, "HOST_SHARE/RUNNING_VMS"),
        cpu_usage=number(host, "HOST_SHARE/CPU_USAGE"),
        max_cpu=number(host, "HOST_SHARE/MAX_CPU"),
        mem_usage=number(host, "HOST_SHARE/MEM_USAGE"),
        max_mem=number(host, "HOST_SHARE/MAX_MEM"),
        stat=HOST_STATE_SHORT[state] if state is not None else "?",
        reason=_ERROR_PREFIX.sub("", text(host, "TEMPLATE/ERROR"), count=1)
        if state is HostState.ERROR else "",
    )


def host_record(host: ElementTree.Element) -> HostRecord:
    """The record a ``HOST`` element describes (enough for its locality rules)."""
    state = _state(host) or HostState.INIT
    return HostRecord(
        id=number(host, "ID"), name=text(host, "NAME"), state=state, prev_state=state,
        im_mad=text(host, "IM_MAD"), vm_mad=text(host, "VM_MAD"), tm_mad=text(host, "TM_MAD"),
        vn_mad=text(host, "VN_MAD"), cluster_id=number(host, "CLUSTER_ID"),
        template=template_at(host, "TEMPLATE"), last_mon_time=number(host, "LAST_MON_TIME"),
        version=0,
    )


# -- commands -----------------------------------------------------------------------------


def _create(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    params: tuple[object, ...]
    client = connect()
    if args.drivers:
        if len(args.drivers) not in (2, 3, 4) or args.im or args.vm or args.net:
            parser.error("give either NAME IM_MAD VMM_MAD [TM_MAD [VNM_MAD]] or "
                         "NAME -i IM_MAD -v VMM_MAD [-n VNM_MAD] [-c CLUSTER]")
        # NAME IM VMM (e.g. `onehost create node1 kvm kvm`) is the -i/-v form.
        params = ((args.name, *args.drivers, _cluster(client, args.cluster))
                  if len(args.drivers) == 2 else (args.name, *args.drivers))
    else:
        if not (args.im and args.vm):
            parser.error("the IM and VMM drivers are required: -i IM_MAD -v VMM_MAD")
        cluster = _cluster(client, args.cluster)
        params = ((args.name, args.im, args.vm, args.net, cluster) if args.net
                  else (args.name, args.im, args.vm, cluster))
    print(f"ID: {client.call('one.host.allocate', *params)}")
    return 0


def _cluster(client: Client, token: str) -> int:
    """``-c``'s cluster id: a number (-1 the default cluster) or a cluster's name."""
    return find_id(client, token, "one.clusterpool.info", "CLUSTER")


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.hostpool.info")
    print_rows(args, LIST_COLUMNS, [host_row(host) for host in pool.findall("HOST")], pool)
    return 0


def _show(args: argparse.Namespace) -> int:
    client = connect()
    host = client.document("one.host.info", find_host_id(client, args.host))
    if print_xml(args, host):
        return 0
    record = host_record(host)
    vm_ids = {number(vm_id, ".") for vm_id in host.findall("VMS/ID")}
    vms = [vm for vm in client.document("one.vmpool.info", -2, -1, -1, -1).findall("VM")
           if number(vm, "ID") in vm_ids]
    share = {name: number(host, f"HOST_SHARE/{name}") for name in (
        "MAX_MEM", "USED_MEM", "MEM_USAGE", "MAX_CPU", "USED_CPU", "CPU_USAGE", "RUNNING_VMS")}
    template = template_at(host, "TEMPLATE")
    if args.json:
        print_json({
            "ID": record.id, "NAME": record.name, "CLUSTER": text(host, "CLUSTER") or None,
            "STATE": record.state.name, "IM_MAD": record.im_mad, "VM_MAD": record.vm_mad,
            "TM_MAD": record.tm_mad, "LAST_MONITORING_TIME": record.last_mon_time,
            "PUBLIC_CLOUD": record.is_public_cloud, "LOCALITY": record.locality_reason,
            "HOST_SHARE": share, "TEMPLATE": template_json(template),
            "VMS": sorted(vm_ids),
        })
        return 0
    lines = info_block(f"HOST {record.id} INFORMATION", [
        ("ID", str(record.id)), ("NAME", record.name),
        ("CLUSTER", text(host, "CLUSTER") or "-"), ("STATE", record.state.name),
        ("IM_MAD", record.im_mad), ("VM_MAD", record.vm_mad), ("TM_MAD", record.tm_mad),
        ("LAST MONITORING TIME", short_date(record.last_mon_time)),
        ("LOCALITY", record.locality_reason),
    ], width=24)
    lines += ["", *info_block("HOST SHARES", [
        ("MAX MEM", unit_to_str(share["MAX_MEM"])),
        ("USED MEM (REAL)", unit_to_str(share["USED_MEM"])),
        ("USED MEM (ALLOCATED)", unit_to_str(share["MEM_USAGE"])),
        ("MAX CPU", str(share["MAX_CPU"])),
        ("USED CPU (REAL)", str(share["USED_CPU"])),
        ("USED CPU (ALLOCATED)", str(share["CPU_USAGE"])),
        ("RUNNING VMS", str(share["RUNNING_VMS"])),
    ], width=24)]
    lines += ["", "MONITORING INFORMATION", *template_lines(template)]
    lines += ["", "VIRTUAL MACHINES", *vm_table(vms)]
    print("\n".join(lines))
    return 0


def _update(args: argparse.Namespace) -> int:
    client = connect()
    return update_template(client, find_host_id(client, args.host), args,
                           info_method="one.host.info", update_method="one.host.update",
                           section="TEMPLATE")


def _delete(args: argparse.Namespace) -> int:
    client = connect()
    client.call("one.host.delete", find_host_id(client, args.host))
    return 0


def _flush(args: argparse.Namespace) -> int:
    """Disable the host and ask the scheduler to move every VM off it (OpenNebula's flush)."""
    client = connect()
    host_id = find_host_id(client, args.host)
    client.call("one.host.status", host_id, STATUS["disable"])
    host = client.document("one.host.info", host_id)
    failed = False
    for element in host.findall("VMS/ID"):
        vm_id = int(element.text or "-1")
        try:
            client.call("one.vm.action", "resched", vm_id)
        except UnreachableError:
            raise
        except CliError as exc:
            print(f"VM {vm_id} stays: {exc}", file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _status(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        client = connect()
        client.call("one.host.status", find_host_id(client, args.host), STATUS[name])
        return 0

    return handler


def _rename(args: argparse.Namespace) -> int:
    client = connect()
    client.call("one.host.rename", find_host_id(client, args.host), args.name)
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``onehost`` command line."""
    cli = CommandLine("onehost", "Manage cloudburst hosts (OpenNebula's onehost).")
    command = cli.command

    host_help = "host id or name"
    create = command(
        "create", lambda args: _create(args, create), "add a host; prints ID: <id>",
        description="Add a host: NAME IM_MAD VMM_MAD [TM_MAD [VNM_MAD]], or "
                    "NAME -i IM_MAD -v VMM_MAD [-n VNM_MAD] [-c CLUSTER]. Prints ID: <id>.")
    create.add_argument("name", help="host name")
    create.add_argument("drivers", nargs="*", metavar="MAD",
                        help="IM_MAD VMM_MAD [TM_MAD [VNM_MAD]] (OpenNebula 3.x form)")
    create.add_argument("-i", "--im", help="information driver (IM_MAD in oned.conf)")
    create.add_argument("-v", "--vm", help="virtualization driver (VM_MAD in oned.conf)")
    create.add_argument("-n", "--net", help="network driver")
    create.add_argument("-c", "--cluster", default="-1",
                        help="cluster id or name (default: the default cluster, 0)")

    sub = command("list", _list, "list hosts")
    add_list_options(sub, "print JSON (memory in KB)")

    sub = command("show", _show, "show a host's information, shares, monitoring and VMs")
    sub.add_argument("host", help=host_help)
    add_show_options(sub)

    sub = command("update", _update, "replace (or --append to) a host's template; "
                                     "without FILE, edit it in $EDITOR")
    sub.add_argument("host", help=host_help)
    add_update_arguments(sub)

    sub = command("delete", _delete, "remove a host that holds no VM")
    sub.add_argument("host", help=host_help)
    for name, help_text in (("enable", "enable a host (monitor it and place VMs on it)"),
                            ("disable", "disable a host (no monitoring, no new VMs)"),
                            ("offline", "set a host offline")):
        sub = command(name, _status(name), help_text)
        sub.add_argument("host", help=host_help)

    sub = command("flush", _flush, "disable a host and reschedule its VMs to other hosts")
    sub.add_argument("host", help=host_help)

    sub = command("rename", _rename, "rename a host")
    sub.add_argument("host", help=host_help)
    sub.add_argument("name", help="new name")
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onehost``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

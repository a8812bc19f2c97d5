"""``onevm``: create, list, show, deploy and act on virtual machines.

``list`` shows OpenNebula 6's columns ``ID USER GROUP NAME STAT CPU MEM HOST
TIME``: CPU and MEM are what the VM was *allocated* (``TEMPLATE/CPU``, and
``TEMPLATE/MEMORY`` in MB shown as ``128M``/``2G``); HOST is shown only while
the VM is ACTIVE, SUSPENDED or POWEROFF; TIME is ``  0d 00h00`` (the full value,
with minutes' ``m``, in CSV). ``-l ...,IP`` adds the IP the driver reported.

Actions take one id, a list (``1,2,5``) or a range (``3..7``); each VM is
tried, failures are reported one per line and make the exit status 1.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Final
from xml.etree import ElementTree

from cloudburst.cli.client import (
    CliError,
    UnreachableError,
    connect,
    find_host_id,
    id_list,
    number,
    read_source,
    run,
    template_at,
    text,
)
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
    elapsed,
    info_block,
    period,
    print_json,
    render_table,
    short_date,
    template_json,
    template_lines,
    unit_to_str,
)
from cloudburst.model.states import LcmState, VmState, vm_short_state

LIST_COLUMNS: Final = (
    Column("ID", 4),
    Column("USER", 8, left=True),
    Column("GROUP", 8, left=True),
    Column("NAME", 15, left=True),
    Column("STAT", 4),
    Column("CPU", 4),
    Column("MEM", 7),
    Column("HOST", 10, left=True),
    Column("TIME", 10),
    Column("IP", 15, left=True, default=False),
)

HISTORY_COLUMNS: Final = (
    Column("SEQ", 3),
    Column("HOST", 15, left=True),
    Column("ACTION", 14, left=True),
    Column("REASON", 6, left=True),
    Column("START", 14),
    Column("TIME", 11),
)

#: OpenNebula's history ACTION numbering (VMActions), index = number.
HISTORY_ACTIONS: Final = (
    "none", "migrate", "live-migrate", "shutdown", "shutdown-hard", "undeploy",
    "undeploy-hard", "hold", "release", "stop", "suspend", "resume", "boot", "delete",
    "delete-recreate", "reboot", "reboot-hard", "resched", "unresched", "poweroff",
    "poweroff-hard", "disk-attach", "disk-detach", "nic-attach", "nic-detach",
    "disk-snapshot-create", "disk-snapshot-delete", "terminate", "terminate-hard",
)
#: History REASON codes (oned 4.x).
HISTORY_REASONS: Final = ("none", "erro", "user")

#: States in which the VM has a host worth showing (4.x adds POWEROFF to 3.x's two).
STATES_WITH_HOST: Final = frozenset({VmState.ACTIVE, VmState.SUSPENDED, VmState.POWEROFF})

#: ``list``'s filter words (one.vmpool.info filter flags).
FILTER_WORDS: Final = {"a": -2, "all": -2, "m": -3, "mine": -3, "g": -4, "group": -4}


# -- rows ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VmRow:
    """One line of ``onevm list``; ``cpu`` as written, ``memory`` in MB, ``time`` in seconds."""

    id: int
    user: str
    group: str
    name: str
    stat: str
    cpu: str
    memory: int
    host: str | None
    time: int
    ip: str | None

    def cells(self) -> list[str]:
        return [str(self.id), self.user, self.group, self.name, self.stat, self.cpu,
                unit_to_str(self.memory, "M"), self.host or "", period(self.time),
                self.ip or ""]

    def as_json(self) -> dict[str, object]:
        return {"ID": self.id, "USER": self.user, "GROUP": self.group, "NAME": self.name,
                "STAT": self.stat, "CPU": _number_or_text(self.cpu), "MEM": self.memory,
                "HOST": self.host, "TIME": self.time, "IP": self.ip}


def _states(vm: ElementTree.Element) -> tuple[VmState | None, LcmState | None]:
    try:
        state = VmState(number(vm, "STATE", -1))
    except ValueError:
        return None, None
    try:
        return state, LcmState(number(vm, "LCM_STATE", -1))
    except ValueError:
        return state, None


def _state_names(vm: ElementTree.Element) -> tuple[str, str]:
    state, lcm_state = _states(vm)
    return (state.name if state is not None else text(vm, "STATE", "?"),
            lcm_state.name if lcm_state is not None else text(vm, "LCM_STATE", "?"))


def short_state(vm: ElementTree.Element) -> str:
    """``STAT``: the short state name (``runn``, ``pend``, ...)."""
    state, lcm_state = _states(vm)
    if state is None or (state is VmState.ACTIVE and lcm_state is None):
        return "unkn"
    return vm_short_state(state, lcm_state or LcmState.LCM_INIT)


def current_host(vm: ElementTree.Element) -> str | None:
    """The last history HOSTNAME while the state has a host, else None."""
    state, _ = _states(vm)
    records = vm.findall("HISTORY_RECORDS/HISTORY")
    if state not in STATES_WITH_HOST or not records:
        return None
    return text(records[-1], "HOSTNAME") or None


def _lifetime(element: ElementTree.Element, now: int) -> int:
    stime, etime = number(element, "STIME"), number(element, "ETIME")
    return (etime if etime > 0 else now) - stime


def vm_row(vm: ElementTree.Element, now: int) -> VmRow:
    """The ``list`` row of a ``VM`` element (reduced or full)."""
    return VmRow(
        id=number(vm, "ID"), user=text(vm, "UNAME"), group=text(vm, "GNAME"),
        name=text(vm, "NAME"), stat=short_state(vm), cpu=text(vm, "TEMPLATE/CPU", "0"),
        memory=number(vm, "TEMPLATE/MEMORY"), host=current_host(vm), time=_lifetime(vm, now),
        ip=text(vm, "MONITORING/IP") or text(vm, "TEMPLATE/NIC/IP") or None,
    )


def vm_table(vms: Iterable[ElementTree.Element], *, colour: bool = False) -> list[str]:
    """``onevm list``'s table for ``vms`` (its default columns)."""
    now = int(time.time())
    shown = [index for index, column in enumerate(LIST_COLUMNS) if column.default]
    return render_table([LIST_COLUMNS[index] for index in shown],
                        ([vm_row(vm, now).cells()[index] for index in shown] for vm in vms),
                        colour=colour)


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One stay of the VM on a host; ``start`` is a UNIX time, ``time`` seconds."""

    seq: int
    host: str
    action: str
    reason: str
    start: int
    time: int

    def cells(self) -> list[str]:
        return [str(self.seq), self.host, self.action, self.reason, short_date(self.start),
                elapsed(self.time)]

    def as_json(self) -> dict[str, object]:
        return {"SEQ": self.seq, "HOST": self.host, "ACTION": self.action,
                "REASON": self.reason, "START": self.start, "TIME": self.time}


def _name(names: tuple[str, ...], code: int) -> str:
    return names[code] if 0 <= code < len(names) else str(code)


def history_rows(vm: ElementTree.Element, now: int) -> list[HistoryRow]:
    """The VM's HISTORY records, oldest first."""
    return [
        HistoryRow(
            seq=number(record, "SEQ"), host=text(record, "HOSTNAME"),
            action=_name(HISTORY_ACTIONS, number(record, "ACTION")),
            reason=_name(HISTORY_REASONS, number(record, "REASON")),
            start=number(record, "STIME"), time=_lifetime(record, now),
        )
        for record in vm.findall("HISTORY_RECORDS/HISTORY")
    ]


# -- commands -----------------------------------------------------------------------------


def _create(args: argparse.Namespace) -> int:
    source = read_source(args.file)
    client = connect()
    for _ in range(args.multiple):
        print(f"ID: {client.call('one.vm.allocate', source, args.hold)}")
    return 0


def _filter_flag(value: str) -> int:
    if value in FILTER_WORDS:
        return FILTER_WORDS[value]
    if value.isdigit():
        return int(value)
    raise argparse.ArgumentTypeError(f"invalid filter {value!r}: use a, m, g or a user id")


def _list(args: argparse.Namespace) -> int:
    pool = connect().document("one.vmpool.info", args.owner, -1, -1, -1)
    now = int(time.time())
    print_rows(args, LIST_COLUMNS, [vm_row(vm, now) for vm in pool.findall("VM")], pool)
    return 0


def _number_or_text(value: str) -> object:
    try:
        return int(value)
    except ValueError:
        pass
    try:
        return float(value)
    except ValueError:
        return value


def _show(args: argparse.Namespace) -> int:
    vm = connect().document("one.vm.info", args.id)
    if print_xml(args, vm):
        return 0
    now = int(time.time())
    state, lcm_state = _state_names(vm)
    user_template = template_at(vm, "USER_TEMPLATE")
    template = template_at(vm, "TEMPLATE")
    monitoring = [(child.tag, child.text or "") for child in vm.findall("MONITORING/*")
                  if child.tag not in ("ID", "TIMESTAMP")]
    history = history_rows(vm, now)
    host = current_host(vm)
    if args.json:
        print_json({
            "ID": number(vm, "ID"), "NAME": text(vm, "NAME"), "USER": text(vm, "UNAME"),
            "GROUP": text(vm, "GNAME"), "STATE": state, "LCM_STATE": lcm_state, "HOST": host,
            "START_TIME": number(vm, "STIME"), "END_TIME": number(vm, "ETIME"),
            "DEPLOY_ID": text(vm, "DEPLOY_ID"), "LAST_POLL": number(vm, "LAST_POLL"),
            "ERROR": user_template.get("ERROR"),
            "MONITORING": {key: _number_or_text(value) for key, value in monitoring},
            "HISTORY": [row.as_json() for row in history],
            "USER_TEMPLATE": template_json(user_template), "TEMPLATE": template_json(template),
            "PLACEMENT": _placement_json(vm), "COST": _cost_json(vm),
        })
        return 0
    pairs = [("ID", text(vm, "ID")), ("NAME", text(vm, "NAME")), ("USER", text(vm, "UNAME")),
             ("GROUP", text(vm, "GNAME")), ("STATE", state), ("LCM_STATE", lcm_state),
             ("LOCK", _LOCK_NAMES.get(number(vm, "LOCK/LOCKED", 0), "-"))]
    if host is not None:
        pairs.append(("HOST", host))
    pairs += [("START TIME", short_date(number(vm, "STIME"))),
              ("END TIME", short_date(number(vm, "ETIME"))),
              ("DEPLOY ID", text(vm, "DEPLOY_ID") or "-"),
              ("LAST POLL", short_date(number(vm, "LAST_POLL")))]
    for label, name in (("ERROR", "ERROR"), ("SCHED MESSAGE", "SCHED_MESSAGE")):
        value = user_template.get(name)
        if value:
            pairs.append((label, value))
    lines = info_block(f"VIRTUAL MACHINE {text(vm, 'ID')} INFORMATION", pairs)
    lines += ["", *_placement_lines(vm)]
    lines += ["", "VIRTUAL MACHINE MONITORING", *(f"{key}={value}" for key, value in monitoring)]
    if history:
        lines += ["", "VIRTUAL MACHINE HISTORY",
                  *render_table(HISTORY_COLUMNS, (row.cells() for row in history))]
    lines += ["", "USER TEMPLATE", *template_lines(user_template),
              "", "VIRTUAL MACHINE TEMPLATE", *template_lines(template)]
    print("\n".join(lines))
    return 0


def _cost_json(vm: ElementTree.Element) -> dict[str, object]:
    found = {name: vm.findtext(f"COST/{name}") or "" for name in ("PRICE_PER_HOUR", "ACCRUED")}
    return {name: _number_or_text(value) if value else None for name, value in found.items()}


def _placement_json(vm: ElementTree.Element) -> dict[str, object]:
    placement = vm.find("PLACEMENT")
    if placement is None:
        return {}
    found: dict[str, object] = {child.tag: _number_or_text(child.text or "")
                                for child in placement if child.tag != "REFUSED"}
    found["REFUSED"] = [{"KIND": refused.findtext("KIND") or "",
                         "COUNT": int(refused.findtext("COUNT") or 0),
                         "HOSTS": [name for name in (refused.findtext("HOSTS") or "").split(",")
                                   if name]}
                        for refused in placement.findall("REFUSED")]
    return found


def _placement_lines(vm: ElementTree.Element) -> list[str]:
    """The PLACEMENT AND COST block of ``onevm show``."""
    pairs = [("PRICE PER HOUR", vm.findtext("COST/PRICE_PER_HOUR") or "-"),
             ("ACCRUED COST", vm.findtext("COST/ACCRUED") or "-")]
    placement = vm.find("PLACEMENT")
    if placement is not None and placement.findtext("MESSAGE"):
        pairs += [("PLACEMENT", placement.findtext("MESSAGE") or ""),
                  ("HOSTS CONSIDERED", placement.findtext("CONSIDERED") or "0")]
        for refused in placement.findall("REFUSED"):
            hosts = refused.findtext("HOSTS") or ""
            count = int(refused.findtext("COUNT") or 0)
            more = ", ..." if count > len(hosts.split(",")) else ""
            pairs.append((f"REFUSED ({refused.findtext('KIND')})",
                          f"{count}" + (f": {hosts.replace(',', ', ')}{more}" if hosts else "")))
    return info_block("PLACEMENT AND COST", pairs)


def _for_each(ids: list[int], act: Callable[[int], object]) -> int:
    """Run ``act`` on every id; report failures one per line; 1 if any failed."""
    failed = False
    for vm_id in ids:
        try:
            act(vm_id)
        except UnreachableError:
            raise
        except CliError as exc:
            print(exc, file=sys.stderr)
            failed = True
    return 1 if failed else 0


def _deploy(args: argparse.Namespace) -> int:
    client = connect()
    host_id = find_host_id(client, args.host)
    return _for_each(args.ids, lambda vm_id: client.call(
        "one.vm.deploy", vm_id, host_id, args.enforce, -1, ""))


def _action(name: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        action = f"{name}-hard" if getattr(args, "hard", False) else name
        client = connect()
        return _for_each(args.ids, lambda vm_id: client.call("one.vm.action", action, vm_id))

    return handler


def _migrate(args: argparse.Namespace) -> int:
    client = connect()
    host_id = find_host_id(client, args.host)
    return _for_each(args.ids, lambda vm_id: client.call(
        "one.vm.migrate", vm_id, host_id, args.live, args.enforce, -1, 0))


#: ``recover`` options and one.vm.recover's operation numbers.
RECOVER_OPERATIONS: Final = {"failure": 0, "success": 1, "retry": 2, "delete": 3,
                             "recreate": 4, "delete_db": 5}


def _recover(args: argparse.Namespace) -> int:
    chosen = [name for name in RECOVER_OPERATIONS if getattr(args, name)]
    if len(chosen) != 1:
        raise CliError("recover needs exactly one of --success, --failure, --retry, "
                       "--delete, --recreate, --delete-db")
    client = connect()
    return _for_each(args.ids, lambda vm_id: client.call(
        "one.vm.recover", vm_id, RECOVER_OPERATIONS[chosen[0]]))


def _resize(args: argparse.Namespace) -> int:
    parts = [f"{name}={value:g}" if isinstance(value, float) else f"{name}={value}"
             for name, value in (("CPU", args.cpu), ("VCPU", args.vcpu),
                                 ("MEMORY", args.memory)) if value is not None]
    if not parts:
        raise CliError("resize needs --cpu, --vcpu or --memory")
    client = connect()
    return _for_each(args.ids, lambda vm_id: client.call(
        "one.vm.resize", vm_id, "\n".join(parts), args.enforce))


#: ``lock`` options and one.vm.lock's levels.
LOCK_LEVELS: Final = {"use": 1, "manage": 2, "admin": 3, "all": 4}
#: How ``show`` names a lock level, as OpenNebula's CLI (0: not locked).
_LOCK_NAMES: Final = {0: "None",
                      **{level: name.capitalize() for name, level in LOCK_LEVELS.items()}}


def _lock(args: argparse.Namespace) -> int:
    level = next((value for name, value in LOCK_LEVELS.items() if getattr(args, name)), 1)
    client = connect()
    return _for_each(args.ids, lambda vm_id: client.call("one.vm.lock", vm_id, level, False))


def _unlock(args: argparse.Namespace) -> int:
    client = connect()
    return _for_each(args.ids, lambda vm_id: client.call("one.vm.unlock", vm_id))


def _snapshot_create(args: argparse.Namespace) -> int:
    client = connect()

    def create(vm_id: int) -> None:
        print(f"ID: {client.call('one.vm.snapshotcreate', vm_id, args.name or '')}")

    return _for_each(args.ids, create)


def _snapshot(method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        connect().call(method, args.id, args.snapshot)
        return 0

    return handler


def _attach(section: str, method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        if args.file:
            template = read_source(args.file)
        elif section == "DISK" and args.image:
            template = f'DISK = [ SOURCE = "{args.image}" ]'
        elif section == "NIC" and args.network:
            template = f'NIC = [ NETWORK = "{args.network}" ]'
        else:
            raise CliError(f"give a template file with --file, or "
                           f"{'--image' if section == 'DISK' else '--network'}")
        connect().call(method, args.id, template)
        return 0

    return handler


def _detach(method: str) -> Callable[[argparse.Namespace], int]:
    def handler(args: argparse.Namespace) -> int:
        connect().call(method, args.id, args.device)
        return 0

    return handler


def _update(args: argparse.Namespace) -> int:
    return update_template(connect(), args.id, args, info_method="one.vm.info",
                           update_method="one.vm.update", section="USER_TEMPLATE")


def _updateconf(args: argparse.Namespace) -> int:
    return update_template(connect(), args.id, args, info_method="one.vm.info",
                           update_method="one.vm.updateconf", section="TEMPLATE")


def _rename(args: argparse.Namespace) -> int:
    connect().call("one.vm.rename", args.id, args.name)
    return 0


# -- parser -------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The ``onevm`` command line."""
    cli = CommandLine("onevm", "Manage cloudburst virtual machines (OpenNebula's onevm).")
    command = cli.command

    ids_help = "VM id, list (1,2,5) or range (3..7)"
    for name, help_text in (("create", "create VMs from a template file ('-' reads stdin); "
                                       "prints ID: <id> for each"),
                            ("submit", "same as create (OpenNebula 1.x/2.x name)")):
        sub = command(name, _create, help_text)
        sub.add_argument("file", help="template file, or - for standard input")
        sub.add_argument("--hold", action="store_true", help="create them on hold")
        add_multiple_option(sub)

    sub = command("list", _list, "list VMs that are not DONE")
    sub.add_argument("owner", nargs="?", type=_filter_flag, default=-2, metavar="FILTERFLAG",
                     help="a|all (default), m|mine, g|group, or a user id")
    add_list_options(sub, "print JSON (MEM in MB, TIME in seconds)")

    sub = command("show", _show, "show a VM's information, monitoring, history and templates")
    sub.add_argument("id", type=int, help="VM id")
    add_show_options(sub)

    sub = command("deploy", _deploy, "deploy PENDING or HOLD VMs on a host")
    sub.add_argument("ids", type=id_list, help=ids_help)
    sub.add_argument("host", help="host id or name")
    sub.add_argument("--enforce", action="store_true", help="refuse if the host lacks capacity")

    for name, action, help_text in (
            ("terminate", "terminate", "shut VMs down and end them (DONE)"),
            ("shutdown", "terminate", "same as terminate"),
            ("reboot", "reboot", "reboot RUNNING VMs"),
            ("poweroff", "poweroff", "power RUNNING VMs off, keeping their host"),
            ("undeploy", "undeploy", "power VMs off and release their host")):
        sub = command(name, _action(action), help_text)
        sub.add_argument("ids", type=id_list, help=ids_help)
        sub.add_argument("--hard", action="store_true",
                         help="without a graceful step (cancel / reset)")
    for name, help_text in (
            ("hold", "hold PENDING VMs"), ("release", "release VMs on hold"),
            ("resume", "resume POWEROFF, SUSPENDED, STOPPED or UNDEPLOYED VMs"),
            ("suspend", "save RUNNING VMs' state in place"),
            ("stop", "save RUNNING VMs' state and release their host"),
            ("resched", "ask the scheduler to move RUNNING VMs to a better host"),
            ("unresched", "cancel a resched")):
        sub = command(name, _action(name), help_text)
        sub.add_argument("ids", type=id_list, help=ids_help)

    sub = command("migrate", _migrate, "move RUNNING VMs to another host of the same driver")
    sub.add_argument("ids", type=id_list, help=ids_help)
    sub.add_argument("host", help="host id or name")
    sub.add_argument("--live", action="store_true", help="keep the VMs running while moving")
    sub.add_argument("--enforce", action="store_true", help="refuse if the host lacks capacity")

    sub = command("recover", _recover, "settle failed or stuck VMs")
    sub.add_argument("ids", type=id_list, help=ids_help)
    for option, help_text in (
            ("success", "take the pending action as done"),
            ("failure", "take the pending action as failed"),
            ("retry", "run the failed action again"),
            ("delete", "end the VM, cleaning up at the provider"),
            ("recreate", "end the VM's instance and start over as PENDING"),
            ("delete-db", "forget the VM without asking the driver")):
        sub.add_argument(f"--{option}", action="store_true", help=help_text)

    sub = command("resize", _resize, "change CPU, VCPU and MEMORY (POWEROFF, UNDEPLOYED, "
                                     "PENDING or HOLD VMs)")
    sub.add_argument("ids", type=id_list, help=ids_help)
    sub.add_argument("--cpu", type=float, help="new CPU share")
    sub.add_argument("--vcpu", type=int, help="new number of virtual CPUs")
    sub.add_argument("--memory", type=int, help="new MEMORY in MB")
    sub.add_argument("--enforce", action="store_true", help="refuse if the host lacks capacity")

    sub = command("lock", _lock, "refuse operations on VMs until unlocked")
    sub.add_argument("ids", type=id_list, help=ids_help)
    for option in LOCK_LEVELS:
        sub.add_argument(f"--{option}", action="store_true",
                         help=f"lock {option} operations and above (default --use)")
    sub = command("unlock", _unlock, "lift a lock")
    sub.add_argument("ids", type=id_list, help=ids_help)

    sub = command("snapshot-create", _snapshot_create, "take a system snapshot of RUNNING VMs")
    sub.add_argument("ids", type=id_list, help=ids_help)
    sub.add_argument("name", nargs="?", help="snapshot name")
    for name, method, help_text in (
            ("snapshot-revert", "one.vm.snapshotrevert", "return a VM to a snapshot"),
            ("snapshot-delete", "one.vm.snapshotdelete", "delete a snapshot")):
        sub = command(name, _snapshot(method), help_text)
        sub.add_argument("id", type=int, help="VM id")
        sub.add_argument("snapshot", type=int, help="snapshot id")

    for name, section, method in (("disk-attach", "DISK", "one.vm.attach"),
                                  ("nic-attach", "NIC", "one.vm.attachnic")):
        sub = command(name, _attach(section, method), f"hot-plug a {section} into a VM")
        sub.add_argument("id", type=int, help="VM id")
        sub.add_argument("--file", help=f"template file with a {section} = [ ... ] section")
        if section == "DISK":
            sub.add_argument("--image", help="image path or name (SOURCE)")
        else:
            sub.add_argument("--network", help="network name")
    for name, method, what in (("disk-detach", "one.vm.detach", "disk"),
                               ("nic-detach", "one.vm.detachnic", "NIC")):
        sub = command(name, _detach(method), f"unplug a {what} from a VM")
        sub.add_argument("id", type=int, help="VM id")
        sub.add_argument("device", type=int, help=f"{what} id")

    sub = command("update", _update, "replace (or --append to) a VM's USER_TEMPLATE; "
                                     "without FILE, edit it in $EDITOR")
    sub.add_argument("id", type=int, help="VM id")
    add_update_arguments(sub)

    sub = command("updateconf", _updateconf, "replace (or --append to) a VM's OS, FEATURES, "
                  "INPUT, GRAPHICS, VIDEO, RAW, CPU_MODEL and CONTEXT (CONTEXT expanded "
                  "anew) while PENDING, HOLD, POWEROFF, UNDEPLOYED or RUNNING (a running "
                  "guest gets a new CONTEXT at once, the rest at its next boot); without "
                  "FILE, edit its TEMPLATE in $EDITOR")
    sub.add_argument("id", type=int, help="VM id")
    add_update_arguments(sub)

    sub = command("rename", _rename, "rename a VM")
    sub.add_argument("id", type=int, help="VM id")
    sub.add_argument("name", help="new name")
    return cli.parser


def main(argv: list[str] | None = None) -> int:
    """Run ``onevm``; returns the exit status."""
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())

"""``cloudburst purge-done``: delete what the store keeps of VMs long terminated.

Like OpenNebula's ``onedb purge-done``: VMs in ``DONE`` whose end time falls in
``[--start, --end)`` (local dates or times; default: from the beginning until
now) are deleted from the store with their stays, journal entries and log
lines, and their directories under ``$CLOUDBURST_HOME/vms`` go too. It may run
while the daemon does (see :mod:`cloudburst.store.purge` for why that is safe);
VMs that ended less than a minute ago (``--settle``) are left. ``--dry-run`` only lists
what would go. Each purge is written to the audit trail (``oneaudit``).
"""

from __future__ import annotations

import argparse
import getpass
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from cloudburst.config.settings import Settings
from cloudburst.store import purge

_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S",
            "%Y/%m/%d %H:%M", "%Y/%m/%d %H:%M:%S")


def moment(text: str) -> float:
    """A local date (``2026-12-01`` or ``2026/12/01``, optionally ``HH:MM[:SS]``) as
    UNIX time; argparse's type for ``--start``/``--end``."""
    for form in _FORMATS:
        try:
            return datetime.strptime(text.strip(), form).timestamp()
        except ValueError:
            continue
    raise argparse.ArgumentTypeError(
        f"{text!r} is not a date: use YYYY-MM-DD or YYYY/MM/DD, optionally with HH:MM[:SS]")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds >= 0, not {text!r}")
    return value


def add_parser(commands: Any, settings: Callable[[], Settings]) -> None:
    """Add ``purge-done`` to the ``cloudburst`` subcommands ``commands``; ``settings``
    loads the settings of ``$CLOUDBURST_HOME`` when the command runs."""
    parser = commands.add_parser(
        "purge-done", help="delete VMs terminated long ago from the store (the daemon may run)",
        description="Delete from the store of $CLOUDBURST_HOME the VMs in DONE whose end time "
                    "is in [--start, --end), with their history, journal and log lines, and "
                    "their directories under $CLOUDBURST_HOME/vms. VMs that ended less than "
                    "--settle seconds ago are left. Safe while the daemon runs. Dates are "
                    "local.")
    parser.add_argument("--start", type=moment, default=0.0, metavar="DATE",
                        help="only VMs that ended at or after DATE")
    parser.add_argument("--end", type=moment, default=None, metavar="DATE",
                        help="only VMs that ended before DATE (default: now)")
    parser.add_argument("--settle", type=_seconds, default=purge.SETTLE_SECONDS,
                        metavar="SECONDS",
                        help="leave VMs that ended less than SECONDS ago (their last log lines "
                             f"may still be landing; default {purge.SETTLE_SECONDS})")
    parser.add_argument("--dry-run", action="store_true",
                        help="list the VMs that would be purged; change nothing")
    parser.set_defaults(handler=lambda args: run(args, settings()))


def run(args: argparse.Namespace, settings: Settings) -> int:
    """The command's body: 0 when done (also when nothing was to purge), 1 on an error."""
    end = time.time() if args.end is None else args.end

    def remove_directories(batch: list[int]) -> None:
        for vm_id in batch:
            shutil.rmtree(settings.vms_dir / str(vm_id), ignore_errors=True)

    try:
        vm_ids = purge.purge_done(
            settings.database_url, args.start, end, settle=args.settle, dry_run=args.dry_run,
            operator=f"{getpass.getuser()} (cloudburst purge-done)", on_batch=remove_directories)
    except purge.PurgeError as exc:
        after = f" (after purging {_listed(exc.purged)})" if exc.purged else ""
        print(f"cloudburst purge-done: {exc}{after}", file=sys.stderr)
        return 1
    print(f"{'Would purge' if args.dry_run else 'Purged'} {_listed(vm_ids)}")
    return 0


def _listed(vm_ids: list[int]) -> str:
    count = "1 VM" if len(vm_ids) == 1 else f"{len(vm_ids)} VMs"
    return f"{count}: {purge.id_ranges(vm_ids)}" if vm_ids else count

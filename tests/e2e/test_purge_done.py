"""``cloudburst purge-done`` against a running daemon's SQLite store: terminated VMs
go with everything kept of them, live ones and their files stay, ids are not reused,
the daemon keeps serving, and the purge is in the audit trail."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path

import pyone
import pytest
from daemon_fixture import daemon_environment, free_port, start_daemon, wait_for

pytestmark = [pytest.mark.e2e]

VM = "CPU = 0.1\nMEMORY = 16\n"
RUNNING = (3, 3)
DONE = 6
#: Tables holding rows of a VM (the VM itself: ``vms``).
KEPT = ("history", "journal", "vm_logs")


def purge_done(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudburst.cli.tool", "purge-done", *args],
                          env=daemon_environment(home, free_port()), capture_output=True,
                          text=True, timeout=120, check=False)


def rows_of(home: Path, vm_ids: list[int]) -> dict[str, int]:
    marks = ",".join("?" * len(vm_ids))
    with sqlite3.connect(str(home / "one.db")) as connection:
        counts = {table: connection.execute(
            f"SELECT count(*) FROM {table} WHERE vm_id IN ({marks})", vm_ids).fetchone()[0]
            for table in KEPT}
        counts["vms"] = connection.execute(
            f"SELECT count(*) FROM vms WHERE id IN ({marks})", vm_ids).fetchone()[0]
    return counts


def test_terminated_vms_are_purged_while_the_daemon_runs(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        home = daemon.home
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=30)
        one.host.allocate("h0", "dummy", "dummy")
        vm_ids = [one.vm.allocate(VM) for _ in range(4)]
        for vm_id in vm_ids:
            wait_for(lambda vm_id=vm_id: (one.vm.info(vm_id).STATE,
                                          one.vm.info(vm_id).LCM_STATE) == RUNNING, timeout=60)
        ended, kept = vm_ids[:3], vm_ids[3]
        for vm_id in ended:
            one.vm.action("terminate-hard", vm_id)
        for vm_id in ended:
            wait_for(lambda vm_id=vm_id: one.vm.info(vm_id).STATE == DONE, timeout=60)
        assert all(count > 0 for count in rows_of(home, ended).values())
        assert (home / "vms" / str(ended[0])).is_dir()

        # Just ended: left by default (their last writes may still be landing).
        fresh = purge_done(home)
        assert (fresh.returncode, fresh.stdout.strip()) == (0, "Purged 0 VMs"), fresh.stderr
        time.sleep(2.5)
        listed = purge_done(home, "--settle", "2", "--dry-run")
        assert listed.stdout.strip() == f"Would purge 3 VMs: {ended[0]}-{ended[-1]}", listed
        before = purge_done(home, "--settle", "2", "--end", "2000-01-01")
        assert before.stdout.strip() == "Purged 0 VMs", before
        assert rows_of(home, ended)["vms"] == 3

        purged = purge_done(home, "--settle", "2")
        assert (purged.returncode, purged.stdout.strip()) == (
            0, f"Purged 3 VMs: {ended[0]}-{ended[-1]}"), purged.stderr
        assert rows_of(home, ended) == {"vms": 0, **dict.fromkeys(KEPT, 0)}
        assert not any((home / "vms" / str(vm_id)).exists() for vm_id in ended)
        assert (home / "vms" / str(kept)).is_dir()

        # The daemon serves on: the purged VMs are gone from its answers, the live one
        # runs, and a new VM gets a new id.
        with pytest.raises(pyone.OneException, match=rf"virtual machine \[{ended[0]}\]"):
            one.vm.info(ended[0])
        assert [vm.ID for vm in one.vmpool.info(-2, -1, -1, -2).VM] == [kept]
        assert (one.vm.info(kept).STATE, one.vm.info(kept).LCM_STATE) == RUNNING
        assert one.vm.allocate(VM) == vm_ids[-1] + 1
        ok, audit, *_ = xmlrpc.client.ServerProxy(daemon.url).one.audit.info(
            daemon.session, 0, -1, 200)
        assert ok and "purge-done" in audit and f"{ended[0]}-{ended[-1]}" in audit, audit


def test_bad_input_gets_one_line(tmp_path: Path) -> None:
    (tmp_path / "home").mkdir()
    missing = purge_done(tmp_path / "home")
    assert missing.returncode == 1
    assert missing.stderr.strip() == \
        f"cloudburst purge-done: there is no store at {tmp_path / 'home' / 'one.db'}"
    bad = purge_done(tmp_path / "home", "--end", "yesterday")
    assert bad.returncode == 2 and "'yesterday' is not a date" in bad.stderr

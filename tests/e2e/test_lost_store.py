"""Losing the store is noticed at once, never papered over, and recoverable (issue 15, finding 2).

A daemon with a VM and a host: the store is backed up while it runs, then
deleted under it. Writes are refused at once with a clear error; a restart
refuses to create a new store over the lost one; ``cloudburst restore`` brings
everything back (same oneadmin session, same installation id); ``oned
--new-store`` starts empty but keeps the installation id, so what the old
store launched can still be swept.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyone
import pytest
from daemon_fixture import daemon_environment, free_port, start_daemon, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VM = "CPU = 0.1\nMEMORY = 16\n"


def _tool(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cloudburst.cli.tool", *args],
                          env=daemon_environment(home, free_port()), capture_output=True,
                          text=True, timeout=120, check=False)


def _start_fails(home: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "cloudburst.daemon.main", "-f", *args],
                            env=daemon_environment(home, free_port()), capture_output=True,
                            text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr
    # In the foreground the log also goes to stderr; the verdict is the last line.
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("oned: "), result.stderr
    return last


def _installation_id(database: Path) -> str:
    with sqlite3.connect(str(database)) as connection:
        row = connection.execute(
            "SELECT value FROM meta WHERE key = 'installation_id'").fetchone()
    return str(row[0])


def test_a_deleted_store_stops_writes_and_is_restored_from_a_backup(tmp_path: Path) -> None:
    backup = tmp_path / "one.backup"
    with start_daemon(tmp_path) as daemon:
        home = daemon.home
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=30)
        host_id = one.host.allocate("h0", "dummy", "dummy")
        vm_id = one.vm.allocate(VM)
        wait_for(lambda: one.vm.info(vm_id).LCM_STATE == 3, timeout=30)
        result = _tool(home, "backup", str(backup))
        assert result.returncode == 0, result.stderr
        assert backup.stat().st_mode & 0o077 == 0
        marker = json.loads((home / "store-identity").read_text())
        installation = marker["installation_id"]

        for path in home.glob("one.db*"):
            path.unlink()
        started = time.monotonic()
        with pytest.raises(pyone.OneException, match=r"Store lost: the store file .* deleted"):
            one.vm.allocate(VM)
        assert time.monotonic() - started < 3.0
        wait_for(lambda: "[ERROR] cloudburst.store.identity: Store lost" in daemon.output(),
                 timeout=10)
        session = daemon.session

    # Restarting must not quietly make a new, empty store (and a new oneadmin password).
    message = _start_fails(home)
    assert "missing or empty" in message and "cloudburst restore" in message

    result = _tool(home, "restore", str(backup))
    assert result.returncode == 0, result.stderr
    with start_daemon(tmp_path) as daemon:
        assert daemon.session == session
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=30)
        assert one.host.info(host_id).NAME == "h0"
        assert one.vm.info(vm_id).STATE == 3
        assert json.loads((home / "store-identity").read_text())["installation_id"] == \
            installation


def test_a_new_store_on_purpose_keeps_the_installation_id(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        home = daemon.home
        installation = _installation_id(home / "one.db")
    for path in home.glob("one.db*"):
        path.unlink()
    assert "missing or empty" in _start_fails(home)
    (home / "one_auth").unlink()
    with start_daemon(tmp_path, extra_args=["--new-store"]) as daemon:
        assert _installation_id(home / "one.db") == installation
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=30)
        assert one.vmpool.info(-2, -1, -1, -1).VM == []


def test_a_replaced_store_is_refused_at_start(tmp_path: Path) -> None:
    with start_daemon(tmp_path / "a") as first:
        first_store = first.home / "one.db"
    with start_daemon(tmp_path / "b") as second:
        second_home = second.home
    for path in second_home.glob("one.db*"):
        path.unlink()
    (second_home / "one.db").write_bytes(first_store.read_bytes())
    assert "not store" in _start_fails(second_home)


def test_backup_refuses_to_restore_over_a_running_daemon(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        backup = tmp_path / "copy"
        assert _tool(daemon.home, "backup", str(backup)).returncode == 0
        result = _tool(daemon.home, "restore", str(backup))
        assert result.returncode == 1
        assert "oned is running" in result.stderr

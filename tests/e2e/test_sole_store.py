"""A second ``oned`` on a SQLite store that a running daemon uses is refused in one line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from daemon_fixture import daemon_environment, free_port, start_daemon

pytestmark = pytest.mark.e2e


def test_a_second_daemon_on_the_same_sqlite_store_refuses_to_start(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        second = subprocess.run(
            [sys.executable, "-m", "cloudburst.daemon.main", "-f"],
            env=daemon_environment(daemon.home, free_port()), capture_output=True, text=True,
            timeout=60, cwd=tmp_path, stdin=subprocess.DEVNULL)
        assert second.returncode == 1
        lines = second.stderr.strip().splitlines()
        assert lines[-1] == (
            f"oned: another daemon already uses the SQLite store {daemon.home / 'one.db'}; "
            "a SQLite store serves one daemon (share a PostgreSQL store to run several)")
        assert "Traceback" not in second.stderr
        assert daemon.process.poll() is None  # the first one goes on serving

"""A locked store, a full disk, a read-only home (issue 15, finding 6).

User actions are accepted or refused with a message naming the cause within
a bound (``STORE_TIMEOUT = 2``); background loops recover once the fault is
gone; nothing accepted is lost. The full disk is a small tmpfs the test
mounts (root, or ``sudo -n``, is needed for the mount only).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from daemon_fixture import daemon_environment, free_port, start_daemon, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

VM = "CPU = 0.1\nMEMORY = 16\n"
CONF = "STORE_TIMEOUT = 2\nMONITORING_INTERVAL = 1\nVM_POLLING_INTERVAL = 1\n"
#: Longest wait for an answer during a fault: a batch in progress plus our own.
BOUND = 2 * 2 + 2.0
RUNNING, DONE = 3, 6


def _privileged(*argv: str) -> None:
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    subprocess.run([*prefix, *argv], check=True, capture_output=True, timeout=30)


@contextlib.contextmanager
def _tmpfs(path: Path, size: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    _privileged("mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path))
    try:
        yield path
    finally:
        _privileged("umount", "-l", str(path))


def _timed(call: object, *args: object) -> tuple[float, object]:
    """Seconds ``call(*args)`` took, and its result or the OneException it raised."""
    started = time.monotonic()
    try:
        result: object = call(*args)  # type: ignore[operator]
    except pyone.OneException as exc:
        result = exc
    return time.monotonic() - started, result


def _running_vm(one: pyone.OneServer) -> int:
    one.host.allocate(f"h{time.monotonic_ns()}", "dummy", "dummy")
    vm_id = one.vm.allocate(VM)
    wait_for(lambda: one.vm.info(vm_id).LCM_STATE == RUNNING, timeout=30)
    return int(vm_id)


def _accepted_or_refused_for(cause: str, result: object) -> bool:
    """True if accepted; asserts a refusal names ``cause`` (never ``Internal error``)."""
    if isinstance(result, pyone.OneException):
        assert cause in str(result), str(result)
        assert "Internal error" not in str(result)
        return False
    return True


def test_a_locked_store_answers_within_the_bound_and_loses_nothing(tmp_path: Path) -> None:
    with start_daemon(tmp_path, oned_conf_extra=CONF) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        vm_id = _running_vm(one)
        locker = sqlite3.connect(str(daemon.home / "one.db"), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            seconds, created = _timed(one.vm.allocate, VM)
            assert seconds < BOUND
            assert not _accepted_or_refused_for("Store busy", created)
            seconds, terminated = _timed(one.vm.action, "terminate-hard", vm_id)
            assert seconds < BOUND
            accepted = _accepted_or_refused_for("Store busy", terminated)
            assert vm_id == one.vm.info(vm_id).ID  # reads still work
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        if not accepted:
            one.vm.action("terminate-hard", vm_id)
        wait_for(lambda: one.vm.info(vm_id).STATE == DONE, timeout=30)
        assert _running_vm(one) > vm_id  # the scheduler and monitor came back
        assert "Traceback" not in daemon.output()


def test_a_full_disk_is_named_and_recovered_from(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "home", "6m") as home, \
            start_daemon(tmp_path, oned_conf_extra=CONF) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        vm_id = _running_vm(one)
        filler = home / "filler"
        with contextlib.suppress(OSError), open(filler, "wb") as handle:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        refusals = 0
        try:
            for _ in range(5):
                seconds, created = _timed(one.vm.allocate, VM + "CONTEXT = [ X = \""
                                          + "x" * 50_000 + "\" ]\n")
                assert seconds < BOUND
                refusals += not _accepted_or_refused_for("Store full", created)
            seconds, terminated = _timed(one.vm.action, "terminate-hard", vm_id)
            assert seconds < BOUND
            accepted = _accepted_or_refused_for("Store full", terminated)
        finally:
            filler.unlink()
        assert refusals, "the disk never filled up"
        if not accepted:
            one.vm.action("terminate-hard", vm_id)
        wait_for(lambda: one.vm.info(vm_id).STATE == DONE, timeout=30)
        assert _running_vm(one) > vm_id


def test_a_read_only_home_gives_one_line_at_start(tmp_path: Path) -> None:
    with _tmpfs(tmp_path / "home", "16m") as home:
        with start_daemon(tmp_path):
            pass
        _privileged("mount", "-o", "remount,ro", str(home))
        result = subprocess.run([sys.executable, "-m", "cloudburst.daemon.main", "-f"],
                                env=daemon_environment(home, free_port()), capture_output=True,
                                text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr, result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("oned: ") and "read-only" in last.lower(), result.stderr


def test_a_terminate_accepted_before_the_fault_completes_after_it(tmp_path: Path) -> None:
    """The driver's answer to an accepted terminate arrives while the store is locked:
    it cannot be recorded then, and the VM still ends DONE once the lock goes."""
    with start_daemon(tmp_path, oned_conf_extra=CONF) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        vm_id = _running_vm(one)
        host_id = one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-1].HID
        # The cancel takes a while: long enough to lock the store before it answers.
        one.host.update(host_id, 'DUMMY_CANCEL = "sleep 3"', 1)
        one.vm.action("terminate-hard", vm_id)  # accepted: the store is free
        locker = sqlite3.connect(str(daemon.home / "one.db"), isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        try:
            # Hold the lock until the driver's answer has met it.
            wait_for(lambda: f"recording the cancel result of VM {vm_id} postponed"
                     in daemon.output(), timeout=120)
            assert one.vm.info(vm_id).STATE != DONE
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        wait_for(lambda: one.vm.info(vm_id).STATE == DONE, timeout=60)
        assert "Traceback" not in daemon.output()

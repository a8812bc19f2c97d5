"""Per-VM files under ``CLOUDBURST_HOME/vms/<id>/`` and each VM's log.

A VM's **log** lives in the store (:mod:`cloudburst.store.vm_logs`): every
daemon that leads while the VM lives adds to the same log, and any daemon
shows all of it. The daemon that writes a line also appends it to its own
``vms/<id>/vm.log`` (OpenNebula's per-VM log file, for people who tail files).
Lines are buffered and written in batches, never making the caller wait.

**Deployment files** are the driver's input, written by the daemon that
deploys, from the VM's record in the store: a new leader that resumes a
deploy writes the file again itself, so nothing of it is needed from the
daemon that led before.

File writes happen on background threads so the event loop never waits on
the disk: deployment files on one, log copies on another, so a deploy never
waits behind the log lines of a burst (creating a file costs the kernel far
more than appending to one: up to 0.5 ms on a busy ext4, and each VM makes three).
:meth:`VmFiles.write_deployment` still returns only once the file is
complete, because the driver reads it next. Files are private to the daemon's
user (mode 0600).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from cloudburst.store import vm_logs
from cloudburst.store.database import Database
from cloudburst.store.turn_writes import settle
from cloudburst.store.vm_logs import LogLine

log = logging.getLogger(__name__)


class VmFiles:
    """Writes deployment files and appends to VM logs (see the module docstring)."""

    def __init__(self, vms_dir: Path, db: Database) -> None:
        self.vms_dir = vms_dir
        #: ``vms_dir`` as text: the file thread joins thousands of paths a second.
        self._root = os.fspath(vms_dir)
        self.db = db
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm-files")
        #: Log copies have their own thread: they may lag, deployment files must not.
        self._log_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm-logs")
        self._lock = threading.Lock()
        self._pending: dict[int, list[str]] = {}
        self._flush_scheduled = False
        #: Lines not yet in the store, and the task storing them.
        self._unstored: list[LogLine] = []
        self._storing: asyncio.Task[None] | None = None
        #: Deployment files asked in this turn of the loop (see write_deployment).
        self._deployments: list[_Deployment] = []

    def directory(self, vm_id: int) -> Path:
        return self.vms_dir / str(vm_id)

    def deployment_path(self, vm_id: int, seq: int) -> Path:
        return self.directory(vm_id) / f"deployment.{seq}"

    def checkpoint_path(self, vm_id: int) -> Path:
        """Where ``save`` writes the VM's memory (its directory is created when needed)."""
        directory = self.directory(vm_id)
        _ensure_directory(os.fspath(directory))
        return directory / "checkpoint"

    def log_path(self, vm_id: int) -> Path:
        """This daemon's copy of the lines it logged for the VM (the store has them all)."""
        return self.directory(vm_id) / "vm.log"

    async def write_deployment(self, vm_id: int, seq: int, document: str) -> Path:
        """Write the deployment document atomically; returns its path.

        The files asked in one turn of the loop (the deploys of a batch) are written
        by one job of the file thread, which answers them all at once: one hop
        there and back for the batch, not one per VM.

        Raises:
            OSError: the file cannot be written.
        """
        path = self.deployment_path(vm_id, seq)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        if not self._deployments:
            loop.call_soon(self._write_deployments, loop)
        self._deployments.append((path, document, future))
        await future
        return path

    def _write_deployments(self, loop: asyncio.AbstractEventLoop) -> None:
        asked, self._deployments = self._deployments, []
        self._executor.submit(_write_deployments, loop, asked)

    def log(self, vm_id: int, level: str, message: str) -> None:
        """Add ``[level] message`` to the VM's log (fire and forget; on the event loop).

        Lines are stored in batches, one write at a time, in the order they
        were logged; the file copy is flushed by the file thread, one open per
        file per batch.
        """
        line = LogLine(vm_id, time.time(), level, message)
        self._unstored.append(line)
        if self._storing is None:
            self._storing = asyncio.get_running_loop().create_task(self._store(),
                                                                   name="store-vm-logs")
        with self._lock:
            self._pending.setdefault(vm_id, []).append(line.text() + "\n")
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._log_executor.submit(self._flush)

    async def _store(self) -> None:
        try:
            while self._unstored:
                lines, self._unstored = self._unstored, []
                try:
                    await self.db.write(functools.partial(vm_logs.append, lines=lines))
                except Exception as exc:  # e.g. fenced: this daemon no longer leads
                    log.warning("%d VM log lines could not be stored: %s", len(lines),
                                str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        finally:
            self._storing = None

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flush_scheduled = False
        for vm_id, lines in pending.items():
            try:
                _append(f"{self._root}/{vm_id}", "vm.log", "".join(lines))
            except OSError:
                log.exception("cannot write the log of VM %d", vm_id)

    async def close(self) -> None:
        """Store the lines logged so far, flush the files, stop the file thread."""
        if self._storing is not None:
            await asyncio.gather(self._storing, return_exceptions=True)
        self._log_executor.submit(self._flush)
        self._log_executor.shutdown(wait=True)
        self._executor.shutdown(wait=True)


#: A deployment file to write: its path, its contents, and who waits for it.
_Deployment = tuple[Path, str, "asyncio.Future[None]"]


#: Deployment files answered per callback: the first drivers start while the rest of a
#: scheduler pass's files (thousands) are written.
_ANSWER_EVERY = 100


def _write_deployments(loop: asyncio.AbstractEventLoop, asked: list[_Deployment]) -> None:
    """Write ``asked`` (on the file thread), answering their futures in one callback
    per :data:`_ANSWER_EVERY` files."""
    for first in range(0, len(asked), _ANSWER_EVERY):
        chunk = asked[first:first + _ANSWER_EVERY]
        outcomes: list[OSError | None] = []
        for path, document, _ in chunk:
            try:
                _write_atomic(path, document)
            except OSError as exc:
                outcomes.append(exc)
            else:
                outcomes.append(None)
        try:
            loop.call_soon_threadsafe(settle, [future for _, _, future in chunk], outcomes)
        except RuntimeError:  # the loop closed meanwhile: nobody waits
            return


def _write_atomic(path: Path, text: str) -> None:
    target = os.fspath(path)
    temporary = f"{target}.tmp"
    _ensure_directory(target.rpartition("/")[0])
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.fchmod(descriptor, 0o600)  # private to the daemon's user, whatever the umask
            _write_all(descriptor, text.encode())
        finally:
            os.close(descriptor)
        os.replace(temporary, target)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def _append(directory: str, name: str, text: str) -> None:
    # Plain descriptors and text paths: a VM's log lines cost an open, a write and a
    # close on the file thread (a file object and pathlib cost several times that).
    _ensure_directory(directory)
    descriptor = os.open(f"{directory}/{name}", os.O_WRONLY | os.O_CREAT | os.O_APPEND,
                         0o600)
    try:
        _write_all(descriptor, text.encode())
    finally:
        os.close(descriptor)


def _write_all(descriptor: int, data: bytes) -> None:
    written = 0
    while written < len(data):
        written += os.write(descriptor, data[written:])


@functools.lru_cache(maxsize=4096)
def _ensure_directory(directory: str) -> None:
    # Cached: thousands of appends per second must not each pay a mkdir. One mkdir
    # when the parent exists (a VM's directory in vms/), else every missing level.
    try:
        os.mkdir(directory)
    except FileExistsError:
        pass
    except FileNotFoundError:
        os.makedirs(directory, exist_ok=True)

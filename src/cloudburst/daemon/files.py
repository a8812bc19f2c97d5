"""Per-VM files under ``CLOUDBURST_HOME/vms/<id>/``: deployment files and logs.

File writes happen on one background thread so the event loop never waits on
the disk; :meth:`VmFiles.write_deployment` still returns only once the file
is complete, because the driver reads it next.
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

log = logging.getLogger(__name__)


class VmFiles:
    """Writes deployment files and appends to VM logs."""

    def __init__(self, vms_dir: Path) -> None:
        self.vms_dir = vms_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm-files")
        self._lock = threading.Lock()
        self._pending: dict[int, list[str]] = {}
        self._flush_scheduled = False

    def directory(self, vm_id: int) -> Path:
        return self.vms_dir / str(vm_id)

    def deployment_path(self, vm_id: int, seq: int) -> Path:
        return self.directory(vm_id) / f"deployment.{seq}"

    def checkpoint_path(self, vm_id: int) -> Path:
        """Where ``save`` writes the VM's memory (its directory is created when needed)."""
        directory = self.directory(vm_id)
        _ensure_directory(directory)
        return directory / "checkpoint"

    def log_path(self, vm_id: int) -> Path:
        return self.directory(vm_id) / "vm.log"

    async def write_deployment(self, vm_id: int, seq: int, document: str) -> Path:
        """Write the deployment document atomically; returns its path."""
        path = self.deployment_path(vm_id, seq)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _write_atomic, path, document)
        return path

    def log(self, vm_id: int, level: str, message: str) -> None:
        """Append ``[level] message`` to the VM's log (fire and forget).

        Lines are buffered and flushed by the file thread in batches, one
        open per file per batch, in the order they were logged.
        """
        line = f"{time.strftime('%a %b %d %H:%M:%S %Y')} [{level}]: {message}\n"
        with self._lock:
            self._pending.setdefault(vm_id, []).append(line)
            if self._flush_scheduled:
                return
            self._flush_scheduled = True
        self._executor.submit(self._flush)

    def _flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
            self._flush_scheduled = False
        for vm_id, lines in pending.items():
            try:
                _append(self.log_path(vm_id), "".join(lines))
            except OSError:
                log.exception("cannot write the log of VM %d", vm_id)

    def close(self) -> None:
        self._executor.submit(self._flush)
        self._executor.shutdown(wait=True)


def _write_atomic(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    _ensure_directory(path.parent)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temporary, 0o600)  # private to the daemon's user, whatever the umask
        os.replace(temporary, path)
    except OSError:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise


def _append(path: Path, text: str) -> None:
    _ensure_directory(path.parent)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


@functools.lru_cache(maxsize=4096)
def _ensure_directory(directory: Path) -> None:
    # Cached: thousands of appends per second must not each pay a mkdir.
    directory.mkdir(parents=True, exist_ok=True)

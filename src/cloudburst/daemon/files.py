"""Per-VM files under ``CLOUDBURST_HOME/vms/<id>/``: deployment files and logs.

File writes happen on one background thread so the event loop never waits on
the disk; :meth:`VmFiles.write_deployment` still returns only once the file
is complete, because the driver reads it next.
"""

from __future__ import annotations

import asyncio
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


class VmFiles:
    """Writes deployment files and appends to VM logs."""

    def __init__(self, vms_dir: Path) -> None:
        self.vms_dir = vms_dir
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vm-files")

    def directory(self, vm_id: int) -> Path:
        return self.vms_dir / str(vm_id)

    def deployment_path(self, vm_id: int, seq: int) -> Path:
        return self.directory(vm_id) / f"deployment.{seq}"

    def log_path(self, vm_id: int) -> Path:
        return self.directory(vm_id) / "vm.log"

    async def write_deployment(self, vm_id: int, seq: int, document: str) -> Path:
        """Write the deployment document atomically; returns its path."""
        path = self.deployment_path(vm_id, seq)
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, _write_atomic, path, document)
        return path

    def log(self, vm_id: int, level: str, message: str) -> None:
        """Append ``[level] message`` to the VM's log (fire and forget)."""
        line = f"{time.strftime('%a %b %d %H:%M:%S %Y')} [{level}]: {message}\n"
        self._executor.submit(_append, self.log_path(vm_id), line)

    def close(self) -> None:
        self._executor.shutdown(wait=True)


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(temporary, 0o640)
    os.replace(temporary, path)


def _append(path: Path, line: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(line)

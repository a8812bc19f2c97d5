"""Recovery on start: finish what a crash or restart interrupted.

A VM in an in-flight state (``PROLOG``, ``BOOT``, ``SHUTDOWN``, ``EPILOG``,
``CLEANUP_DELETE``) had driver work under way when the daemon stopped. Nothing
is repeated blindly:

* ``BOOT``: the driver is asked to *find* the instance by the deploy's token
  (EC2 tags, partner-cloud tags). Found: the deploy id is stored. Not found:
  the deploy is replayed **with the same token**, which idempotent drivers and
  scripts use to avoid creating a second instance.
* ``SHUTDOWN`` and ``CLEANUP_DELETE``: ``cancel`` is issued again (it succeeds
  when the instance is already gone).
* ``PROLOG`` and ``EPILOG`` have no side effects outside the store and are
  simply run again.

Journal entries left ``started`` are closed by the results of this work.
"""

from __future__ import annotations

import logging

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.model import lifecycle
from cloudburst.model.records import VmRecord
from cloudburst.model.states import VmState
from cloudburst.store import vm_pool
from cloudburst.store.database import Database

log = logging.getLogger(__name__)


async def recover(db: Database, manager: LifecycleManager) -> int:
    """Resume interrupted work; returns how many VMs needed it."""
    def read(connection: Connection) -> list[VmRecord]:
        active = vm_pool.list_vms(connection, states=[VmState.ACTIVE], with_history=False)
        return [vm for vm in active if vm.position in lifecycle.IN_FLIGHT]

    interrupted = await db.read(read)
    for vm in interrupted:
        log.info("recovering VM %d interrupted in %s", vm.id, vm.lcm_state.name)
        manager.files.log(vm.id, "I", f"Daemon restarted during {vm.lcm_state.name}; recovering")
        await resume(manager, vm)
    return len(interrupted)


async def resume(manager: LifecycleManager, vm: VmRecord) -> None:
    """Start the work in-flight ``vm`` waits for (see the module docstring)."""
    if vm.position == lifecycle.PROLOG:
        await manager.resume_prolog(vm)
    elif vm.position == lifecycle.BOOT:
        manager.spawn(manager.resume_boot(vm), f"recover-boot-{vm.id}")
    elif vm.position == lifecycle.SHUTDOWN:
        manager.resume_shutdown(vm)
    elif vm.position == lifecycle.EPILOG:
        manager.spawn(manager.epilog(vm.id), f"recover-epilog-{vm.id}")
    elif vm.position == lifecycle.CLEANUP_DELETE:
        manager.resume_cleanup(vm)

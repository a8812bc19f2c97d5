"""Coming back home: cloud VMs with ``RECALL = "YES"`` return when local capacity frees.

The scheduler loop calls :meth:`Recaller.recall` after each full placement
pass, with the hosts as that pass left them (pending VMs are placed first,
recalls get what remains). A recall never moves the running VM: it creates a
replacement (``store/recalls.py``) and deploys it on the chosen local host
through the lifecycle's ordinary deploy; :meth:`Recaller.settle` terminates
the cloud VM (the ordinary ``terminate-hard`` action) once the replacement is
RUNNING, or gives up the recall, terminating the replacement, if it fails.

What keeps capacity flapping from causing churn (``RECALL`` in oned.conf):
at most ``PER_MINUTE`` recalls start in any minute (counted in the store), a
VM is recalled only after ``MIN_CLOUD_TIME`` seconds on its cloud site, only
inside ``WINDOW`` when one is set, and a VM is recalled at most once; a
replacement is deployed on a local host only, never bursts back by itself.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Connection

from cloudburst.config.settings import RecallSettings
from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.errors import CloudburstError, NotFoundError
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import VmRecord
from cloudburst.model.states import VmState
from cloudburst.scheduler.demand import vm_demand
from cloudburst.scheduler.placement import HostCandidate, place
from cloudburst.store import recalls, vm_pool
from cloudburst.store.database import Database
from cloudburst.store.recalls import Recall
from cloudburst.template.expr import Rank

log = logging.getLogger(__name__)

#: Seconds a replacement may stay held (its deploy never started) before the
#: recall is given up.
HELD_TOO_LONG = 120.0


class Recaller:
    """Starts and settles recalls; every change goes through the lifecycle manager."""

    def __init__(self, db: Database, lifecycle_manager: LifecycleManager,
                 settings: RecallSettings) -> None:
        self.db = db
        self.lifecycle = lifecycle_manager
        self.settings = settings
        self._next_look = 0.0

    def due(self, now: float) -> bool:
        """Whether the next full pass should look for VMs to recall."""
        return (self.settings.per_minute > 0 and self.settings.in_window(now)
                and time.monotonic() >= self._next_look)

    async def recall(self, hosts: list[HostCandidate], default_rank: Rank,
                     now: float | None = None) -> list[int]:
        """Start the recalls the rules allow now onto the local room left in ``hosts``;
        returns the ids of the recalled cloud VMs."""
        moment = time.time() if now is None else now
        if not self.due(moment):
            return []
        self._next_look = time.monotonic() + self.settings.check_interval
        cloud = [host.id for host in hosts if host.is_cloud]
        if not cloud or all(host.is_cloud for host in hosts):
            return []

        def read(connection: Connection) -> tuple[int, list[VmRecord]]:
            allowed = self.settings.per_minute - recalls.started_since(connection, moment - 60)
            if allowed <= 0:
                return 0, []
            return allowed, recalls.candidates(connection, cloud,
                                               moment - self.settings.min_cloud_time)

        allowed, wanted = await self.db.read(read)
        if not wanted:
            return []
        result = place([vm_demand(vm, frozenset(cloud)) for vm in wanted], hosts,
                       default_rank=default_rank, max_dispatch=allowed)
        by_id = {vm.id: vm for vm in wanted}
        started = []
        for vm_id, host_id in result.assignments:
            if await self._start(by_id[vm_id], host_id, result.reasons[vm_id].host, moment):
                started.append(vm_id)
        return started

    async def _start(self, vm: VmRecord, host_id: int, host_name: str, now: float) -> bool:
        cloud_site = vm.last_history.hostname if vm.last_history else "?"
        replacement = await self.db.write(
            lambda connection: recalls.start(connection, vm, host_id, now))
        self.lifecycle.files.log(vm.id, "I", f"Recall: local host {host_name} has room; "
                                             f"replacement VM {replacement.id} starts there")
        self.lifecycle.files.log(replacement.id, "I", f"Replacement of VM {vm.id}, recalled "
                                                      f"from cloud site {cloud_site}")
        try:
            await self.lifecycle.deploy(replacement.id, host_id)
        except CloudburstError as exc:
            log.info("recall of VM %d: deploying replacement %d failed: %s", vm.id,
                     replacement.id, exc)
            await self._give_up(Recall(vm.id, replacement.id, host_id, now, "started"),
                                f"its replacement could not be deployed: {exc}")
            return False
        return True

    async def settle(self) -> None:
        """Finish the recalls whose replacement runs, give up those whose replacement failed."""
        def read(connection: Connection) -> list[tuple[Recall, VmRecord | None]]:
            found = []
            for recall in recalls.in_progress(connection):
                try:
                    replacement = vm_pool.get_vm(connection, recall.replacement_id,
                                                 with_history=False)
                except NotFoundError:
                    replacement = None
                found.append((recall, replacement))
            return found

        for recall, replacement in await self.db.read(read):
            if replacement is None or replacement.state is VmState.DONE:
                await self._give_up(recall, "its replacement is gone")
            elif replacement.position == lifecycle.RUNNING:
                await self._finish(recall)
            elif replacement.position in lifecycle.FAILURES or (
                    replacement.state is VmState.HOLD
                    and time.time() - recall.started > HELD_TOO_LONG):
                await self._give_up(recall, f"its replacement VM {replacement.id} failed "
                                            f"({replacement.error or replacement.lcm_state.name})")

    async def _finish(self, recall: Recall) -> None:
        """The replacement runs: terminate the cloud VM."""
        self.lifecycle.files.log(recall.vm_id, "I", f"Recall: replacement VM "
                                                    f"{recall.replacement_id} is running; "
                                                    "terminating the cloud instance")
        try:
            await self.lifecycle.act(recall.vm_id, Event.TERMINATE_HARD)
        except CloudburstError as exc:  # the user moved it meanwhile: leave it be
            log.info("recall of VM %d: terminating it failed: %s", recall.vm_id, exc)
        await self.db.write(lambda connection: recalls.finish(connection, recall.vm_id, "done"))

    async def _give_up(self, recall: Recall, why: str) -> None:
        """Keep the cloud VM; terminate the replacement if it still exists."""
        self.lifecycle.files.log(recall.vm_id, "W", f"Recall given up: {why}; "
                                                    "the VM stays in the cloud")
        current = await self.lifecycle.current(recall.replacement_id)
        if current is not None and current.state is not VmState.DONE:
            try:
                await self.lifecycle.act(recall.replacement_id, Event.TERMINATE_HARD)
            except CloudburstError as exc:
                log.info("recall of VM %d: removing replacement %d failed: %s",
                         recall.vm_id, recall.replacement_id, exc)
        await self.db.write(lambda connection: recalls.finish(connection, recall.vm_id,
                                                              "failed"))


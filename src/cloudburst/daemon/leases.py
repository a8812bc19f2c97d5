"""Leases and idle rules: cloud VMs that end on their own, so none is forgotten.

* ``LEASE = "<seconds>"``: a VM on a cloud site ends that many seconds after
  its stay there began.
* ``IDLE_CPU = "<percent>"`` with ``IDLE_TIME = "<seconds>"``: a cloud VM
  whose polls report ``CPU`` (percent of one CPU) below ``IDLE_CPU`` for
  ``IDLE_TIME`` seconds in a row ends.

Ending is the ordinary ``terminate-hard`` action, or ``poweroff-hard`` with
``LEASE_ACTION = "poweroff"``, through the lifecycle manager; the stay's
history records the action and, as its reason, the rule
(``"lease of 60 s: terminate-hard requested"``). A warning goes to the VM's log first, a tenth
of the time (at most a minute) before, and always before the action.

The scheduler loop runs :meth:`Reaper.run` after full passes (every
``SCHED_INTERVAL`` at least), which bounds how late a rule acts. How long a
VM has been idle is kept in memory: after a restart the idle time starts
again, which can only end a VM later, never sooner.
"""

from __future__ import annotations

import logging
import math
import time

from sqlalchemy import Connection, or_, select

from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.errors import CloudburstError
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import VmRecord
from cloudburst.model.states import LcmState, VmState
from cloudburst.store import vm_pool
from cloudburst.store.database import Database
from cloudburst.store.schema import vms

log = logging.getLogger(__name__)


def _seconds(vm: VmRecord, name: str) -> float | None:
    text = vm.user_template.get(name) or vm.template.get(name)
    try:
        value = float(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value >= 0 else None


def _warning(period: float) -> float:
    return min(60.0, period / 10)


class Reaper:
    """Applies ``LEASE`` and ``IDLE_CPU``/``IDLE_TIME`` to RUNNING cloud VMs."""

    def __init__(self, db: Database, lifecycle_manager: LifecycleManager) -> None:
        self.db = db
        self.lifecycle = lifecycle_manager
        #: ``(vm id, stay seq, rule)`` already warned about.
        self._warned: set[tuple[int, int, str]] = set()
        #: When each idle-ruled VM was first seen below its IDLE_CPU (this run).
        self._idle_since: dict[int, float] = {}

    async def run(self, cloud_hosts: list[int], now: float | None = None) -> list[int]:
        """Warn about and end the VMs whose lease or idle time is up; returns those ended."""
        moment = time.time() if now is None else now
        if not cloud_hosts:
            return []

        def read(connection: Connection) -> list[VmRecord]:
            query = select(vms.c.id).where(
                vms.c.state == int(VmState.ACTIVE), vms.c.lcm_state == int(LcmState.RUNNING),
                vms.c.host_id.in_(cloud_hosts),
                or_(vms.c.user_template.contains("LEASE"),
                    vms.c.user_template.contains("IDLE_CPU")))
            ids = [row.id for row in connection.execute(query)]
            return vm_pool.list_vms(connection, ids=ids) if ids else []

        ended = []
        watched = await self.db.read(read)
        for vm in watched:
            if await self._apply(vm, moment):
                ended.append(vm.id)
        seen = {vm.id for vm in watched}
        self._idle_since = {vm_id: since for vm_id, since in self._idle_since.items()
                            if vm_id in seen}
        return ended

    async def _apply(self, vm: VmRecord, now: float) -> bool:
        stay = vm.last_history
        if stay is None:
            return False
        lease = _seconds(vm, "LEASE")
        if lease is not None and await self._due(vm, stay.seq, "lease", stay.stime + lease,
                                                 _warning(lease), now,
                                                 f"lease of {lease:g} s"):
            return True
        idle_cpu, idle_time = _seconds(vm, "IDLE_CPU"), _seconds(vm, "IDLE_TIME")
        if idle_cpu is None or idle_time is None:
            return False
        cpu = _float(vm.monitoring.get("CPU"))
        if cpu is None or cpu >= idle_cpu:
            self._idle_since.pop(vm.id, None)
            self._warned.discard((vm.id, stay.seq, "idle"))
            return False
        since = self._idle_since.setdefault(vm.id, now)
        return await self._due(vm, stay.seq, "idle", since + idle_time, _warning(idle_time),
                               now, f"idle rule: CPU below {idle_cpu:g}% for {idle_time:g} s")

    async def _due(self, vm: VmRecord, seq: int, rule: str, ends: float, warning: float,
                   now: float, what: str) -> bool:
        """Warn when ``ends`` is near; end the VM once it has passed (warned first)."""
        poweroff = (vm.user_template.get("LEASE_ACTION") or "").strip().lower() == "poweroff"
        action = "powered off" if poweroff else "terminated"
        key = (vm.id, seq, rule)
        if now >= ends - warning and key not in self._warned:
            self._warned.add(key)
            left = max(0.0, ends - now)
            self.lifecycle.files.log(vm.id, "W", f"{what.capitalize()} ends in {left:.0f} s: "
                                                 f"the VM will be {action}")
        if now < ends:
            return False
        event = Event.POWEROFF_HARD if poweroff else Event.TERMINATE_HARD
        try:
            await self.lifecycle.act(vm.id, event, why=f"{what}: {event.value} requested")
        except CloudburstError as exc:  # the user acted first
            log.info("VM %d: %s ended but %s failed: %s", vm.id, what, event.value, exc)
            return False
        self.lifecycle.files.log(vm.id, "I", f"{what.capitalize()} ended: {event.value}")
        self._warned.discard(key)
        self._idle_since.pop(vm.id, None)
        return True


def _float(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None

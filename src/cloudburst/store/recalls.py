"""Recalls of cloud VMs (``RECALL = "YES"``) to local hosts, kept in the store.

A recall creates the VM's **replacement**: a new VM owned by the same user
with the same templates plus ``RECALL_OF = <id>``, held (``HOLD``) until the
recall manager deploys it on the chosen local host through the lifecycle's
ordinary deploy. The row written with it records the recall; rows started in
the last minute are what the per-minute rate limit counts, so the limit holds
across restarts and daemons sharing a store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Connection, func, insert, select, update

from cloudburst.model.records import VmRecord
from cloudburst.model.states import LcmState, VmState
from cloudburst.store import vm_pool
from cloudburst.store.schema import recalls, vms
from cloudburst.store.sequences import next_ids

#: The user-template attribute naming the cloud VM a replacement replaces.
RECALL_OF = "RECALL_OF"


@dataclass(frozen=True, slots=True)
class Recall:
    """One recall: the cloud VM, its replacement, the local host, when, and how far."""

    vm_id: int
    replacement_id: int
    host_id: int
    started: float
    state: str


def wants_recall(vm: VmRecord) -> bool:
    """Whether the VM's template asks to come back home (``RECALL = "YES"``)."""
    return (vm.user_template.get("RECALL") or vm.template.get("RECALL") or "").strip().upper() \
        == "YES"


def candidates(connection: Connection, cloud_hosts: list[int], in_cloud_since: float
               ) -> list[VmRecord]:
    """RUNNING VMs on ``cloud_hosts`` that ask for recall, whose stay there began at
    or before ``in_cloud_since`` and that were never recalled, ordered by id."""
    if not cloud_hosts:
        return []
    query = (select(vms.c.id).where(
        vms.c.state == int(VmState.ACTIVE), vms.c.lcm_state == int(LcmState.RUNNING),
        vms.c.host_id.in_(cloud_hosts), vms.c.user_template.contains("RECALL"),
        vms.c.id.not_in(select(recalls.c.vm_id))).order_by(vms.c.id))
    ids = [row.id for row in connection.execute(query)]
    if not ids:
        return []
    found = vm_pool.list_vms(connection, ids=ids)
    return [vm for vm in found if wants_recall(vm) and vm.last_history is not None
            and vm.last_history.stime <= in_cloud_since]


def started_since(connection: Connection, since: float) -> int:
    """Recalls started at or after ``since`` (the rate limit's count)."""
    return int(connection.execute(select(func.count()).select_from(recalls).where(
        recalls.c.started >= since)).scalar_one())


def in_progress(connection: Connection) -> list[Recall]:
    rows = connection.execute(select(recalls).where(recalls.c.state == "started"))
    return [Recall(row.vm_id, row.replacement_id, row.host_id, row.started, row.state)
            for row in rows]


def start(connection: Connection, vm: VmRecord, host_id: int,
          now: float | None = None) -> VmRecord:
    """Create ``vm``'s replacement (held) and record the recall; returns the replacement."""
    moment = time.time() if now is None else now
    replacement_id = next_ids(connection, "vm")
    system = vm.template.copy()
    system.set("VMID", str(replacement_id))
    user = vm.user_template.copy()
    user.set(RECALL_OF, str(vm.id))
    replacement = VmRecord(
        id=replacement_id, name=vm.name, uid=vm.uid, gid=vm.gid, state=VmState.HOLD,
        lcm_state=LcmState.LCM_INIT, prev_state=VmState.HOLD, prev_lcm_state=LcmState.LCM_INIT,
        stime=int(moment), etime=0, deploy_id="", host_id=None, template=system,
        user_template=user, cpu=vm.cpu, memory=vm.memory, version=0, perms=vm.perms)
    vm_pool.insert_vms(connection, [replacement])
    connection.execute(insert(recalls).values(vm_id=vm.id, replacement_id=replacement_id,
                                              host_id=host_id, started=moment,
                                              state="started"))
    return replacement


def finish(connection: Connection, vm_id: int, state: str) -> None:
    """Mark a recall ``done`` or ``failed``."""
    connection.execute(update(recalls).where(recalls.c.vm_id == vm_id).values(state=state))

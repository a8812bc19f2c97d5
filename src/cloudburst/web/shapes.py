"""The JSON shapes of the API's objects (documented in ``openapi.json``).

Functions of records only: no I/O, so the API handlers decide what to read
and these decide how it looks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from cloudburst.auth import quotas
from cloudburst.model.capacity import limits_of
from cloudburst.model.lifecycle import RECOVER_EVENTS, Event, allowed_actions, is_legal
from cloudburst.model.reasons import PlacementReason
from cloudburst.model.records import HistoryRecord, HostRecord, TemplateRecord, UserRecord, VmRecord
from cloudburst.model.states import HOST_STATE_SHORT, vm_short_state, vm_state_label
from cloudburst.store.audit_log import AuditEntry
from cloudburst.store.vm_search import VmRow

__all__ = ["RECOVER_OPERATIONS", "audit_entry", "host_shape", "migration_target",
           "quota_defaults", "quota_owner", "recover_choices", "template_shape", "user_shape",
           "vm_detail", "vm_row"]

#: ``uid -> user name`` (the number when unknown).
Names = Callable[[int], str]
#: ``{cluster id: {metric: limit or use}}`` (cluster -1: all clusters).
PerCluster = Mapping[int, Mapping[str, float]]

#: ``one.vm.recover`` operations by the name ``onevm recover`` gives them
#: (``retry`` is 2, ``delete-db`` 5...).
RECOVER_OPERATIONS: dict[str, int] = {
    event.value.removeprefix("recover-"): number for number, event in RECOVER_EVENTS.items()}


def where(host: HostRecord | None) -> str | None:
    """``"local"``, ``"cloud"``, or ``None`` for a VM on no (or a vanished) host."""
    if host is None:
        return None
    return "cloud" if host.is_public_cloud else "local"


def host_shape(host: HostRecord, cooloff: tuple[int, float] | None = None
               ) -> dict[str, object]:
    """A host or cloud site with its capacity, use, limits and cool-off.

    ``cooloff`` is ``(VMs kept off it, seconds left)`` after "no capacity" answers.
    """
    return {
        "id": host.id,
        "name": host.name,
        "state": int(host.state),
        "short_state": HOST_STATE_SHORT[host.state],
        "state_name": host.state.name,
        "where": where(host),
        "locality": host.locality_reason,
        "error": host.error,
        "im_mad": host.im_mad,
        "vm_mad": host.vm_mad,
        "hypervisor": host.hypervisor,
        "max_cpu": host.max_cpu,
        "max_mem": host.max_mem,
        "used_cpu": host.used_cpu,
        "used_mem": host.used_mem,
        "cpu_usage": host.cpu_usage,
        "mem_usage": host.mem_usage,
        "running_vms": host.running_vms,
        "last_mon_time": host.last_mon_time,
        "capacity": limits_of(host.template),
        "cooloff": ({"vms": cooloff[0], "seconds_left": round(cooloff[1], 1)}
                    if cooloff is not None else None),
        "site_cooloffs": [dict(vector) for vector in host.template.vectors("COOLOFF")],
        "attributes": {name: value for name, value in host.template.as_flat_dict().items()
                       if not name.startswith("CAPACITY")},
    }


def vm_row(row: VmRow, hosts: Mapping[int, tuple[str, bool]], names: Names
           ) -> dict[str, object]:
    """A VM as a table row; ``hosts`` maps host ids to ``(name, is a cloud site)``."""
    host = hosts.get(row.host_id) if row.host_id is not None else None
    return {
        "id": row.id,
        "name": row.name,
        "uid": row.uid,
        "owner": names(row.uid),
        "gid": row.gid,
        "state": int(row.state),
        "lcm_state": int(row.lcm_state),
        "short_state": vm_short_state(row.state, row.lcm_state),
        "state_label": vm_state_label(row.state, row.lcm_state),
        "host_id": row.host_id,
        "host": host[0] if host is not None else None,
        "where": None if host is None else ("cloud" if host[1] else "local"),
        "deploy_id": row.deploy_id,
        "ip": row.ip,
        "cpu": row.cpu,
        "memory": row.memory,
        "stime": row.stime,
        "error": row.error,
    }


def recover_choices(vm: VmRecord) -> list[str]:
    """The ``one.vm.recover`` operations legal in the VM's state, by name."""
    return [name for name, number in RECOVER_OPERATIONS.items()
            if is_legal(vm.position, RECOVER_EVENTS[number])]


def migration_target(host: HostRecord) -> dict[str, object]:
    """A host a VM may migrate to, as the migrate form lists it."""
    return {"id": host.id, "name": host.name, "where": where(host),
            "short_state": HOST_STATE_SHORT[host.state]}


def _history(record: HistoryRecord) -> dict[str, object]:
    return {
        "seq": record.seq,
        "host_id": record.host_id,
        "host": record.hostname,
        "vm_mad": record.vm_mad,
        "start": record.stime,
        "end": record.etime,
        "running_start": record.rstime,
        "running_end": record.retime,
        "action": record.action,
        "reason": record.reason,
    }


def placement_reason(vm: VmRecord, host: HostRecord | None) -> str:
    """Why the VM is where it is (or why it waits), in one line, with the scheduler's
    reason (:mod:`cloudburst.model.reasons`) when it has one."""
    why = PlacementReason.from_json(vm.placement)
    if host is not None:
        chosen = f": {why.summary()}" if why is not None and why.host_id == host.id else ""
        return f"on {host.name}, {host.locality_reason}{chosen}"
    if vm.host_id is not None:
        return f"on host {vm.host_id}, which no longer exists"
    waiting = vm.sched_message or "not placed yet"
    if why is not None and why.host_id is None and why.refused:
        waiting = f"{waiting} ({why.considered} hosts considered: {why.refusals_text()})"
    last = vm.last_history
    if last is not None and last.reason:
        return f"{waiting} (its stay on {last.hostname} ended: {last.reason})"
    return waiting


def vm_detail(vm: VmRecord, host: HostRecord | None, names: Names, *, log: list[str],
              cost: float | None) -> dict[str, object]:
    """A VM's page: state, placement, history, log, monitoring, cost, legal actions."""
    return {
        "id": vm.id,
        "name": vm.name,
        "uid": vm.uid,
        "owner": names(vm.uid),
        "gid": vm.gid,
        "state": int(vm.state),
        "lcm_state": int(vm.lcm_state),
        "state_name": vm.state.name,
        "lcm_state_name": vm.lcm_state.name,
        "short_state": vm_short_state(vm.state, vm.lcm_state),
        "state_label": vm_state_label(vm.state, vm.lcm_state),
        "host_id": vm.host_id,
        "host": host.name if host is not None else None,
        "where": where(host),
        "deploy_id": vm.deploy_id,
        "ip": vm.monitoring.get("IP", ""),
        "cpu": vm.cpu,
        "memory": vm.memory,
        "stime": vm.stime,
        "etime": vm.etime,
        "error": vm.error,
        "placement": placement_reason(vm, host),
        "sched_message": vm.sched_message,
        "monitoring": dict(vm.monitoring),
        "last_poll": vm.last_poll,
        "history": [_history(record) for record in vm.history],
        "log": log,
        "cost_per_hour": cost,
        "actions": allowed_actions(vm.position),
        "migrate": {"cold": is_legal(vm.position, Event.MIGRATE),
                    "live": is_legal(vm.position, Event.MIGRATE_LIVE)},
        "recover": recover_choices(vm),
        "template": vm.full_template().to_text(),
    }


def template_shape(record: TemplateRecord, names: Names) -> dict[str, object]:
    """A registered VM template."""
    return {
        "id": record.id,
        "name": record.name,
        "uid": record.uid,
        "owner": names(record.uid),
        "gid": record.gid,
        "regtime": record.regtime,
        "cpu": record.template.get("CPU"),
        "memory": record.template.get("MEMORY"),
        "template": record.template.to_text(),
    }


def user_shape(user: UserRecord) -> dict[str, object]:
    """A user (never its password hash)."""
    return {
        "id": user.id,
        "name": user.name,
        "gid": user.gid,
        "auth_driver": user.auth_driver,
        "enabled": user.enabled,
    }


def quota_owner(owner_id: int, name: str, limits: PerCluster, usage: PerCluster,
                defaults: PerCluster) -> dict[str, object]:
    """A user's or group's VM quota as ``one.user.info`` lists it (the same clusters and
    metrics): per metric the limit set (-1 default, -2 unlimited), the limit that
    applies once the default is taken into account, and the use."""
    return {
        "id": owner_id,
        "name": name,
        "exempt": owner_id == quotas.EXEMPT,
        "quotas": [{
            "cluster_id": cluster,
            "metrics": [{
                "metric": metric,
                "limit": limits.get(cluster, {}).get(metric, quotas.DEFAULT),
                "effective": quotas.effective(limits.get(cluster, {}).get(metric, quotas.DEFAULT),
                                              defaults.get(cluster, {}).get(metric)),
                "used": usage.get(cluster, {}).get(metric, 0.0),
            } for metric in quotas.VM_METRICS],
        } for cluster in quotas.shown_clusters(limits, usage)],
    }


def quota_defaults(defaults: PerCluster) -> list[dict[str, object]]:
    """The default limits of a kind of owner, per cluster."""
    return [{"cluster_id": cluster, "limits": dict(sorted(metrics.items()))}
            for cluster, metrics in sorted(defaults.items())]


def audit_entry(entry: AuditEntry) -> dict[str, object]:
    """One audit record (who called which ``one.*`` method on what, and how it ended)."""
    return {"id": entry.id, "time": entry.time, "uid": entry.uid, "user": entry.uname,
            "method": entry.method, "object": entry.object, "success": entry.success,
            "message": entry.message}

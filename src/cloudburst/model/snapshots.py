"""What the event bus carries about a VM or a host: small, JSON-ready, secret-free.

One definition, used by every publisher (:mod:`cloudburst.events`), so a
consumer sees the same fields whichever part of the daemon wrote the change.
Templates are left out on purpose: they may hold user data.
"""

from __future__ import annotations

from cloudburst.model.records import HostRecord, VmRecord
from cloudburst.model.states import HOST_STATE_SHORT, vm_short_state

__all__ = ["host_snapshot", "vm_snapshot"]


def vm_snapshot(vm: VmRecord) -> dict[str, object]:
    """The VM's identity, owner, state, placement, size and error after a change."""
    return {
        "id": vm.id,
        "name": vm.name,
        "uid": vm.uid,
        "gid": vm.gid,
        "perms": vm.perms,
        "state": int(vm.state),
        "lcm_state": int(vm.lcm_state),
        "prev_state": int(vm.prev_state),
        "prev_lcm_state": int(vm.prev_lcm_state),
        "short_state": vm_short_state(vm.state, vm.lcm_state),
        "host_id": vm.host_id,
        "cpu": vm.cpu,
        "memory": vm.memory,
        "deploy_id": vm.deploy_id,
        "error": vm.error,
    }


def host_snapshot(host: HostRecord) -> dict[str, object]:
    """The host's identity, state, site kind and error after a change."""
    return {
        "id": host.id,
        "name": host.name,
        "state": int(host.state),
        "short_state": HOST_STATE_SHORT[host.state],
        "public_cloud": host.is_public_cloud,
        "error": host.error,
    }

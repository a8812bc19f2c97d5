"""Deploying: placing a PENDING (or HOLD) VM on a host.

The deploy transaction checks the host, opens the VM's new stay (history
record) and applies ``DEPLOY`` through the one helper, which ends the prolog
at once (no transfers) and journals the driver's deploy with its token; the
driver is called afterwards (:mod:`cloudburst.daemon.lifecycle.work`). A VM
that ``stop`` or ``undeploy`` parked is deployed with ``DEPLOY_RESTORE`` or
``DEPLOY_POWERON`` instead, on a host of the driver that keeps its instance.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import (
    BatchReads,
    Known,
    ManagerBase,
    Stepped,
    batch_host,
    cloud_section,
    memo,
    now,
    step,
)
from cloudburst.errors import ConflictError, IllegalActionError, ValidationError
from cloudburst.model import reasons
from cloudburst.model.cloud_sections import CloudSection, cloud_sections, no_section_reason
from cloudburst.model.lifecycle import Event, Work
from cloudburst.model.reasons import PlacementReason
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord, cpu_share
from cloudburst.model.states import HostState, VmState
from cloudburst.scheduler.demand import host_candidate, vm_demand
from cloudburst.scheduler.placement import hourly_price
from cloudburst.store import host_pool, quota_pool, vm_pool

log = logging.getLogger("cloudburst.daemon.lifecycle")

#: History action codes of the stays that park a VM, and the deploy that brings it back.
_PARKED_BY: dict[int, Event] = {9: Event.DEPLOY_RESTORE, 5: Event.DEPLOY_POWERON,
                                6: Event.DEPLOY_POWERON}


class Deploying(ManagerBase):
    """Places VMs on hosts."""

    async def deploy(self, vm_id: int, host_id: int, *, enforce: bool = False,
                     scheduled: bool = False, reason: PlacementReason | None = None
                     ) -> VmRecord:
        """Place VM ``vm_id`` on host ``host_id`` and start its prolog.

        The new stay records its price per hour (:func:`stay_price`) and the VM
        its placement reason (``reason``, or one saying the caller chose the host).

        Args:
            enforce: refuse when the host lacks the capacity (``one.vm.deploy``'s flag).
            scheduled: the scheduler chose the host (only PENDING VMs qualify).
            reason: why the scheduler chose the host.

        Raises:
            NotFoundError: VM or host missing.
            IllegalActionError: the VM cannot be deployed in its state, or the
                host cannot take it.
            QuotaError: the owner's quota for the host's cluster is used up.
        """
        def change(connection: Connection, vm: VmRecord, reads: BatchReads
                   ) -> tuple[VmRecord, Stepped]:
            if scheduled and vm.state is not VmState.PENDING:
                raise ConflictError(f"VM {vm_id} is no longer pending")
            # The deploys of a scheduler pass are written together: what they
            # share (the host, limits, stays) is read once for all of them.
            if enforce:  # the host's usage: what the batch placed there so far too
                reads.later.flush(connection)
            host = (host_pool.get_host(connection, host_id) if enforce
                    else batch_host(connection, reads, host_id))
            event = parked_deploy(connection, vm)
            section = _check_host_takes(connection, vm, host, enforce, event, reads)
            price = stay_price(vm, host, reads)
            # Per-cluster (per-site) quotas: the VM counts in its totals already;
            # budgets: the stay's price must fit the owner's, per site and in total.
            quota_pool.check_vm(connection, uid=vm.uid, gid=vm.gid, cpu=vm.cpu,
                                memory=vm.memory, cluster_id=host.cluster_id,
                                price=price, memo=reads.memo, later=reads.later)
            why = reason or reasons.manual(
                host.id, host.name,
                reasons.CLOUD_TIER if host.is_public_cloud else reasons.LOCAL_TIER, price)
            seq = _current_seqs(connection, reads).get(vm.id, -1) + 1
            stamp = now()
            stay = HistoryRecord(vm_id=vm.id, seq=seq, host_id=host.id, hostname=host.name,
                                 vm_mad=host.vm_mad, tm_mad=host.tm_mad, stime=stamp,
                                 pstime=stamp, price=price, cluster_id=host.cluster_id)
            changes: dict[str, Any] = {"host_id": host.id, "sched_message": "", "error": "",
                                       "placement": why.to_json()}
            if event is Event.DEPLOY:
                changes["deploy_id"] = ""
            stepped = step(connection, vm, event, install_id=self.install_id,
                           changes=changes, stay=stay, later=reads.later)
            _current_seqs(connection, reads)[vm.id] = seq
            stepped.known = Known(host, seq, None if section is None else section.attributes)
            return vm, stepped

        # Announced while it is written: a batching driver keeps its batch open for it.
        backlog = self.dispatcher.backlog
        backlog.add(host_id, Work.DEPLOY.label, vm_id)
        try:
            before, stepped = await self.batched(vm_id, change, host_id=host_id)
            assert stepped.known is not None
            host = stepped.known.host
            self.files.log(vm_id, "I", f"Deploying on host {host.name} "
                                       f"(id {host_id}, driver {host.vm_mad})")
            self.after_step(before, stepped, {})
        finally:
            backlog.discard(host_id, vm_id)  # its work, if it started, notes itself
        return stepped.vm


def stay_price(vm: VmRecord, host: HostRecord, reads: BatchReads | None = None
               ) -> float | None:
    """The hourly price of ``vm`` on cloud site ``host`` (``None``: local or unknown)."""
    if not host.is_public_cloud:
        return None
    candidate = (host_candidate(host) if reads is None
                 else memo(reads, ("candidate", host.id, host.version),
                            lambda: host_candidate(host)))
    return hourly_price(vm_demand(vm), candidate, {})


def _current_seqs(connection: Connection, reads: BatchReads) -> dict[int, int]:
    """The current stay of each VM of the batch (read at once, kept up to date by the
    deploys of the batch; a VM without stays is missing)."""
    return memo(reads, ("seqs",), lambda: vm_pool.current_seqs(connection, list(reads.vms)))


def parked_deploy(connection: Connection, vm: VmRecord) -> Event:
    """``DEPLOY``, or the deploy that brings back a VM stop/undeploy parked with its instance."""
    if not vm.deploy_id or vm.state not in (VmState.PENDING, VmState.HOLD):
        return Event.DEPLOY
    last = vm_pool.get_vm(connection, vm.id).last_history
    return _PARKED_BY.get(last.action, Event.DEPLOY) if last is not None else Event.DEPLOY


def parked_driver(connection: Connection, vm: VmRecord) -> str | None:
    """The driver (``VM_MAD``) holding a parked VM's instance, if it is parked."""
    if parked_deploy(connection, vm) is Event.DEPLOY:
        return None
    last = vm_pool.get_vm(connection, vm.id).last_history
    return None if last is None else last.vm_mad


def _check_host_takes(connection: Connection, vm: VmRecord, host: HostRecord, enforce: bool,
                      event: Event, reads: BatchReads) -> CloudSection | None:
    """Refuse a deploy the host cannot take (disabled, wrong cloud, wrong driver, or full);
    returns the VM's cloud section there (``None`` on a local host)."""
    if host.state in (HostState.DISABLED, HostState.OFFLINE):
        raise IllegalActionError(f"Host {host.id} ({host.name}) is {host.state.name}")
    if event is not Event.DEPLOY:
        driver = parked_driver(connection, vm)
        if driver is not None and driver != host.vm_mad:
            raise IllegalActionError(
                f"VM {vm.id} was parked by driver {driver}, which keeps its instance; "
                f"host {host.name} uses {host.vm_mad}")
    section = cloud_section(connection, vm, host, reads.memo) if host.is_public_cloud else None
    if host.is_public_cloud and section is None:
        raise ValidationError(f"VM {vm.id} cannot be deployed on {host.name}: " +
                              no_section_reason(cloud_sections(vm.user_template), host.name,
                                                host.hypervisor))
    if enforce:
        cpu = cpu_share(vm.cpu)
        memory = vm.memory * 1024
        if host.max_cpu - host.cpu_usage < cpu or host.max_mem - host.mem_usage < memory:
            raise IllegalActionError(
                f"Host {host.id} ({host.name}) lacks capacity: needs CPU {cpu} and "
                f"MEMORY {memory} KB, has {host.max_cpu - host.cpu_usage} and "
                f"{host.max_mem - host.mem_usage} KB free")
    return section

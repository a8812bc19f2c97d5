"""Deploying: PENDING/HOLD -> PROLOG -> BOOT -> RUNNING, and its recovery.

The deploy transaction places the VM, records its history and journals the
deploy with its token; the driver is called afterwards. A deploy that reports
back after the VM moved on has its instance cancelled, so nothing is leaked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import replace

from sqlalchemy import Connection

from cloudburst.daemon.lifecycle.base import (
    CAPACITY_BACKOFF,
    ManagerBase,
    Placement,
    _advance,
    _current_seq,
    _now,
    token_for,
)
from cloudburst.drivers.base import VmRef
from cloudburst.errors import (
    CapacityError,
    ConflictError,
    DriverError,
    IllegalActionError,
    TransientDriverError,
    ValidationError,
    one_line,
)
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord, cpu_share
from cloudburst.model.states import HostState, VmState
from cloudburst.scheduler.demand import cloud_sections
from cloudburst.store import host_pool, journal, quota_pool, vm_pool

log = logging.getLogger("cloudburst.daemon.lifecycle")


class Deploying(ManagerBase):
    """Places VMs on hosts and runs the drivers' deploys."""

    async def deploy(self, vm_id: int, host_id: int, *, enforce: bool = False,
                     scheduled: bool = False) -> VmRecord:
        """Place VM ``vm_id`` on host ``host_id`` and start its prolog.

        Args:
            enforce: refuse when the host lacks the capacity (``one.vm.deploy``'s flag).
            scheduled: the scheduler chose the host (only PENDING VMs qualify).

        Raises:
            NotFoundError: VM or host missing.
            IllegalActionError: the VM cannot be deployed in its state, or the
                host cannot take it.
            QuotaError: the owner's quota for the host's cluster is used up.
        """
        now = _now()

        def write(connection: Connection) -> Placement:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            if scheduled and vm.state is not VmState.PENDING:
                raise ConflictError(f"VM {vm_id} is no longer pending")
            host = host_pool.get_host(connection, host_id, with_usage=enforce)
            _check_host_takes(vm, host, enforce)
            # Per-cluster (per-site) quotas: the VM counts in its totals already.
            quota_pool.check_vm(connection, uid=vm.uid, gid=vm.gid, cpu=vm.cpu,
                                memory=vm.memory, running=True, cluster_id=host.cluster_id)
            prolog_position = lifecycle.apply(vm.position, Event.DEPLOY)
            # Cloud and dummy hosts have no images to transfer: the prolog ends
            # in the same transaction, so one write stores PROLOG's end (BOOT,
            # with PROLOG as the previous state) and journals the deploy.
            state, lcm_state = lifecycle.apply(prolog_position, Event.PROLOG_SUCCESS)
            seq = _current_seq(connection, vm_id) + 1
            vm_pool.insert_history(connection, HistoryRecord(
                vm_id=vm_id, seq=seq, host_id=host.id, hostname=host.name, vm_mad=host.vm_mad,
                tm_mad=host.tm_mad, stime=now, pstime=now, petime=now, rstime=now,
            ))
            booting = vm_pool.update_vm(
                connection, vm, state=state, lcm_state=lcm_state, prev_state=prolog_position[0],
                prev_lcm_state=prolog_position[1], host_id=host.id, sched_message="", error="",
                deploy_id="",
            )
            journal.start(connection, vm_id=vm_id, host_id=host.id, seq=seq, action="deploy",
                          token=token_for(self.install_id, vm_id, seq))
            prolog = replace(booting, state=prolog_position[0], lcm_state=prolog_position[1])
            return Placement(booting, host, seq, prolog)

        placement = await self.db.write(write)
        if placement.prolog is not None:
            self._logged(placement.prolog)
        self.files.log(vm_id, "I", f"Deploying on host {placement.host.name} "
                                   f"(id {host_id}, driver {placement.host.vm_mad})")
        self._logged(placement.vm)
        self.spawn(self._boot(placement.vm, placement.host, placement.seq,
                              token_for(self.install_id, vm_id, placement.seq)),
                   f"boot-{vm_id}")
        return placement.vm

    def _end_prolog(self, connection: Connection, vm: VmRecord, host: HostRecord,
                    seq: int) -> VmRecord:
        """PROLOG -> BOOT, journalling the deploy with its token (inside a write)."""
        now = _now()
        booting = _advance(connection, vm, Event.PROLOG_SUCCESS)
        vm_pool.update_history(connection, vm.id, seq, petime=now, rstime=now)
        journal.start(connection, vm_id=vm.id, host_id=host.id, seq=seq, action="deploy",
                      token=token_for(self.install_id, vm.id, seq))
        return booting

    async def _prolog(self, placement: Placement) -> None:
        """Finish a prolog that a restart interrupted, then boot."""
        vm, host, seq = placement.vm, placement.host, placement.seq

        def write(connection: Connection) -> VmRecord:
            return self._end_prolog(connection, vm, host, seq)

        try:
            booting = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d left PROLOG before it finished: %s", vm.id, exc)
            return
        await self._boot(booting, host, seq, token_for(self.install_id, vm.id, seq))

    async def _boot(self, vm: VmRecord, host: HostRecord, seq: int, token: str, *,
                    replay: bool = False) -> None:
        """Write the deployment file, call the driver's deploy, store the result."""
        try:
            path = await self.files.write_deployment(vm.id, seq, self.deployment_document(vm))
        except OSError as exc:
            await self._deploy_failed(vm.id, token, DriverError(
                f"Cannot write deployment file: {exc.strerror}"))
            return
        spec = self._deploy_spec(vm, host, path, token)
        driver = self.dispatcher.vm_driver(host.vm_mad)
        try:
            deploy_id = await self.dispatcher.run(
                "VM_MAD", host.vm_mad, "deploy", lambda: driver.deploy(spec))
            if not deploy_id.strip():
                raise DriverError("deploy: the driver returned an empty deploy id")
        except DriverError as exc:
            await self._deploy_failed(vm.id, token, exc, host_id=host.id, replay=replay)
            return
        await self.deploy_succeeded(vm, token, deploy_id.strip())

    async def deploy_succeeded(self, booting: VmRecord, token: str, deploy_id: str) -> None:
        """Store a deploy id: BOOT -> RUNNING, journal entry done."""
        vm_id = booting.id

        def write(connection: Connection) -> VmRecord:
            running = _advance(connection, booting, Event.DEPLOY_SUCCESS, deploy_id=deploy_id,
                               last_poll=_now())
            journal.finish_token(connection, token, "deploy", ok=True, result=deploy_id)
            return running

        try:
            vm = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            # The VM moved on while the driver worked (e.g. it was deleted):
            # the instance must not be left behind.
            log.warning("VM %d deployed as %s but is no longer booting (%s); cancelling it",
                        vm_id, deploy_id, exc)
            self.files.log(vm_id, "W", f"Deployed as {deploy_id} after leaving BOOT; cancelling")
            await self._cancel_stray(vm_id, deploy_id)
            return
        self.capacity_backoff.pop(vm_id, None)
        self.deploy_retries.pop(vm_id, None)
        self.files.log(vm_id, "I", f"Deployed: DEPLOY_ID={vm.deploy_id}")

    async def _deploy_failed(self, vm_id: int, token: str, error: DriverError,
                             host_id: int | None = None, *, replay: bool = False) -> None:
        """Store a failed deploy.

        No room at the site (:class:`CapacityError`), or a transient failure
        the driver promises created nothing (and this is not a replay after a
        restart, whose earlier try may have), sends the VM back to PENDING with
        that host skipped for a while (growing per try); anything else is
        BOOT_FAILURE, which ``recover`` and ``terminate`` get out of.
        """
        message = one_line(error.message)
        no_room = isinstance(error, CapacityError)
        retry = no_room or (isinstance(error, TransientDriverError) and error.nothing_created
                            and not replay)
        now = _now()

        def write(connection: Connection) -> VmRecord:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            journal.finish_token(connection, token, "deploy", ok=False, result=message)
            if retry:
                event = Event.DEPLOY_NO_CAPACITY if no_room else Event.DEPLOY_RETRY
                state, lcm_state = lifecycle.apply(vm.position, event)
                seq = _current_seq(connection, vm_id)
                why = "no capacity" if no_room else "nothing created"
                vm_pool.update_history(connection, vm_id, seq, etime=now, retime=now,
                                       reason=f"{why}: {message}")
                note = ("Host refused the VM (no capacity)" if no_room
                        else "Deploy failed before anything was created; will retry")
                return vm_pool.update_vm(
                    connection, vm, state=state, lcm_state=lcm_state, host_id=None,
                    sched_message=f"{note}: {message}")
            state, lcm_state = lifecycle.apply(vm.position, Event.DEPLOY_FAILURE)
            return vm_pool.update_vm(connection, vm, state=state, lcm_state=lcm_state,
                                     error=f"Error deploying virtual machine: {message}")

        try:
            vm = self._logged(await self.db.write(write))
        except IllegalActionError as exc:
            log.info("VM %d: deploy failure ignored, state moved on (%s)", vm_id, exc)
            return
        self.files.log(vm_id, "E", f"Error deploying virtual machine: {message}")
        if retry and host_id is not None:
            if no_room:
                delay = CAPACITY_BACKOFF
            else:
                tries = self.deploy_retries.get(vm_id, 0)
                self.deploy_retries[vm_id] = tries + 1
                delay = self.settings.driver_retry_delay * 2 ** min(tries, 5)
            self.capacity_backoff.setdefault(vm_id, {})[host_id] = time.monotonic() + delay
            self._on_capacity_freed()
            asyncio.get_running_loop().call_later(delay, self._on_capacity_freed)
        log.info("VM %d deploy failed: %s", vm.id, message)

    async def _cancel_stray(self, vm_id: int, deploy_id: str) -> None:
        host = await self._host_of(vm_id)
        if host is None:
            return
        driver = self.dispatcher.vm_driver(host.vm_mad)
        ref = VmRef(vm_id=vm_id, deploy_id=deploy_id, host=self.host_ref(host))
        try:
            await self.dispatcher.run("VM_MAD", host.vm_mad, "cancel", lambda: driver.cancel(ref))
        except DriverError as exc:
            self.files.log(vm_id, "E", f"Could not cancel stray instance {deploy_id}: {exc}")

    async def resume_prolog(self, vm: VmRecord) -> None:
        """Re-run a prolog interrupted by a restart."""
        host = await self._host_of(vm.id)
        if host is None:
            return
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)
        seq = await self.db.read(read)
        self.spawn(self._prolog(Placement(vm, host, seq)), f"prolog-{vm.id}")

    async def resume_boot(self, vm: VmRecord) -> None:
        """Reconcile a deploy whose result never arrived: find it, else replay it."""
        def read(connection: Connection) -> int:
            return _current_seq(connection, vm.id)

        seq = await self.db.read(read)
        token = token_for(self.install_id, vm.id, seq)
        host = await self._host_of(vm.id)
        if host is None:
            await self._deploy_failed(vm.id, token, DriverError("the host of the VM was deleted"))
            return
        found = await self._find_by_token(vm, host)
        if found:
            self.files.log(vm.id, "I", f"Recovered deploy after restart: found {found}")
            await self.deploy_succeeded(vm, token, found)
            return
        self.files.log(vm.id, "I", "Replaying deploy after restart with the same token")
        self.spawn(self._boot(vm, host, seq, token, replay=True), f"boot-{vm.id}")


def _check_host_takes(vm: VmRecord, host: HostRecord, enforce: bool) -> None:
    """Refuse a deploy the host cannot take (disabled, wrong cloud, or full)."""
    if host.state in (HostState.DISABLED, HostState.OFFLINE):
        raise IllegalActionError(f"Host {host.id} ({host.name}) is {host.state.name}")
    if host.is_public_cloud:
        types = {section.type.lower() for section in cloud_sections(vm.full_template())}
        if host.hypervisor.lower() not in types:
            raise ValidationError(
                f"VM {vm.id} has no PUBLIC_CLOUD (or EC2) section of TYPE {host.hypervisor} "
                f"for cloud host {host.name}")
    if enforce:
        cpu = cpu_share(vm.cpu)
        memory = vm.memory * 1024
        if host.max_cpu - host.cpu_usage < cpu or host.max_mem - host.mem_usage < memory:
            raise IllegalActionError(
                f"Host {host.id} ({host.name}) lacks capacity: needs CPU {cpu} and "
                f"MEMORY {memory} KB, has {host.max_cpu - host.cpu_usage} and "
                f"{host.max_mem - host.mem_usage} KB free")



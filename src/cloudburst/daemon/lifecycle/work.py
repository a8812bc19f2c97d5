"""The driver work the table starts, and what its result does.

:data:`RUNNERS` maps each driver :class:`~cloudburst.model.lifecycle.Work` to
one coroutine that calls the driver through the dispatcher and returns the
changes its ``SUCCESS`` writes (a deploy id, a new stay, a template
section). :meth:`Working.start_work` runs it; the result goes back through
:meth:`~cloudburst.daemon.lifecycle.base.ManagerBase.advance` as ``SUCCESS``
or ``FAILURE``, guarded by the position the work started in, so a result that
arrives after the VM moved on changes nothing (a late deploy id has its
instance cancelled instead).

Failure rules beyond ``FAILURE``: a deploy with no room (``CapacityError``)
or an outage before anything was created goes back to PENDING, that host
skipped for a while; a stop (shutdown, cancel, cleanup) that hit an outage
stays where it is and is tried again until the provider confirms the
instance gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from cloudburst.config.settings import Settings
from cloudburst.daemon.lifecycle.base import (
    Known,
    ManagerBase,
    WorkArgs,
    close_stay,
    current_seq,
    now,
)
from cloudburst.daemon.store_backoff import StoreBackoff
from cloudburst.drivers.base import DeploySpec, DeviceSpec, ResizeSpec, VmDriver, VmRef
from cloudburst.errors import (
    CapacityError,
    DriverError,
    IllegalActionError,
    LeaseLostError,
    NotFoundError,
    StoreLostError,
    StoreUnavailableError,
    TransientDriverError,
    UnsupportedActionError,
    one_line,
)
from cloudburst.model import lifecycle
from cloudburst.model.lifecycle import Event, Move, Work
from cloudburst.model.records import HistoryRecord, HostRecord, VmRecord
from cloudburst.store import backoffs, cooloffs, journal, vm_pool
from cloudburst.template import Template

log = logging.getLogger("cloudburst.daemon.lifecycle")


@dataclass(slots=True)
class Outcome:
    """What a successful work writes: column changes and, maybe, a stay change."""

    changes: dict[str, Any] = field(default_factory=dict)
    prepare: Callable[[Connection, VmRecord, Move], dict[str, Any]] | None = None
    #: ``prepare`` opens a new stay (the result's stay is then read, not the work's).
    opens_stay: bool = False


@dataclass(frozen=True, slots=True)
class Job:
    """One run of a work: the VM as it entered, its host, driver, token and inputs."""

    manager: ManagerBase
    vm: VmRecord
    host: HostRecord
    driver: VmDriver
    token: str
    args: WorkArgs
    replay: bool
    #: What the write that started the work knew of it (see :class:`Known`).
    known: Known | None = None

    @property
    def ref(self) -> VmRef:
        return self.manager.vm_ref(self.vm, self.host)

    async def run(self, action: str, call: Callable[[], Awaitable[Any]]) -> Any:
        self.manager.dispatcher.backlog.discard(self.host.id, self.vm.id)  # it has arrived
        return await self.manager.dispatcher.run("VM_MAD", self.host.vm_mad, action, call)


Runner = Callable[[Job], Awaitable[Outcome]]


# -- the runners ----------------------------------------------------------------------------


async def _deploy(job: Job) -> Outcome:
    manager, vm = job.manager, job.vm
    seq = await _seq_of(job)
    if job.replay:
        found = await _find(job, seq)
        if found is not None:
            spec, deploy_id = found
            manager.files.log(vm.id, "I", f"Recovered deploy after restart: found {deploy_id}")
            # Done once it meets the rule a fresh deploy's return meets (a partner VM
            # running), not as soon as it is found.
            resumed = await job.run("deploy", lambda: job.driver.resume_deploy(spec, deploy_id))
            return _deployed(resumed.strip() or deploy_id)
        manager.files.log(vm.id, "I", "Replaying deploy after restart with the same token")
    template = manager.deployment_template(vm)
    path = await _deployment_file(job, seq, template)
    spec = await manager.deploy_spec(vm, job.host, path, job.token, template=template,
                                     section=job.known.section if job.known else None)
    deploy_id = await job.run("deploy", lambda: job.driver.deploy(spec))
    if not deploy_id.strip():
        raise DriverError("deploy: the driver returned an empty deploy id")
    return _deployed(deploy_id.strip())


async def _seq_of(job: Job) -> int:
    """The VM's current stay: known from the write that started the work, else read."""
    if job.known is not None:
        return job.known.seq
    return await job.manager.db.read(lambda connection: current_seq(connection, job.vm.id))


def _deployed(deploy_id: str) -> Outcome:
    return Outcome({"deploy_id": deploy_id, "last_poll": now(), "error": ""})


async def _find(job: Job, seq: int) -> tuple[DeploySpec, str] | None:
    """The instance an earlier deploy with the job's token made (its spec and deploy
    id); ``None`` when there is none or the driver cannot tell."""
    try:
        spec = await job.manager.deploy_spec(
            job.vm, job.host, job.manager.files.deployment_path(job.vm.id, seq), job.token,
            section=job.known.section if job.known else None)
        found: str | None = await job.run("find", lambda: job.driver.find(spec))
    except DriverError:
        return None
    return (spec, found) if found else None


async def _shutdown(job: Job) -> Outcome:
    """Graceful shutdown, falling back to cancel when it fails or is missing."""
    if not job.vm.deploy_id:
        return Outcome()
    try:
        await job.run("shutdown", lambda: job.driver.shutdown(job.ref))
        return Outcome()
    except UnsupportedActionError:
        pass
    except DriverError as exc:
        job.manager.files.log(job.vm.id, "W", f"Graceful shutdown failed "
                                              f"({one_line(exc.message)}); cancelling")
    return await _cancel(job)


async def _cancel(job: Job) -> Outcome:
    if job.vm.deploy_id:
        await job.run("cancel", lambda: job.driver.cancel(job.ref))
    return Outcome()


async def _cleanup(job: Job) -> Outcome:
    """Cancel what the provider may hold, found by the deploy token when no id was stored."""
    deploy_id = job.vm.deploy_id
    if not deploy_id:
        seq = await job.manager.db.read(lambda connection: current_seq(connection, job.vm.id))
        entry = await job.manager.db.read(lambda connection: _deploy_entry(connection, job, seq))
        if entry is not None:
            finder = Job(job.manager, job.vm, job.host, job.driver, entry, job.args, True)
            found = await _find(finder, seq)
            deploy_id = found[1] if found is not None else ""
    if deploy_id:
        ref = job.manager.vm_ref(job.vm, job.host, deploy_id)
        await job.run("cancel", lambda: job.driver.cancel(ref))
    if job.vm.position == lifecycle.CLEANUP_RESUBMIT:
        return Outcome({"deploy_id": "", "host_id": None, "error": ""},
                       _end_stay("recreated"))
    return Outcome(prepare=_end_stay(""))


def _deploy_entry(connection: Connection, job: Job, seq: int) -> str | None:
    tokens = [entry.token for entry in journal.entries_for(connection, job.vm.id)
              if entry.action == "deploy" and entry.seq == seq]
    return tokens[-1] if tokens else None


async def _reboot(job: Job) -> Outcome:
    await job.run("reboot", lambda: job.driver.reboot(job.ref))
    return Outcome()


async def _reset(job: Job) -> Outcome:
    await job.run("reset", lambda: job.driver.reset(job.ref))
    return Outcome()


async def _poweroff(job: Job) -> Outcome:
    return await _power_off(job, hard=False)


async def _poweroff_hard(job: Job) -> Outcome:
    return await _power_off(job, hard=True)


#: Positions whose power-off is an undeploy: the VM leaves its host.
_LEAVING = frozenset({lifecycle.SHUTDOWN_UNDEPLOY, lifecycle.EPILOG_UNDEPLOY})


async def _power_off(job: Job, *, hard: bool) -> Outcome:
    """Power off; an undeploy also drops the VM's snapshots (as OpenNebula does),
    and one of a powered-off VM (in its epilog already) closes the stay."""
    leaving = job.vm.position in _LEAVING
    await job.run("poweroff", lambda: job.driver.poweroff(job.ref, hard=hard, leaving=leaving))
    if not leaving:
        return Outcome()
    closes = job.vm.position == lifecycle.EPILOG_UNDEPLOY

    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        if closes:
            close_stay(connection, vm.id, current_seq(connection, vm.id))
        template = vm.template.copy()
        template.remove("SNAPSHOT")
        return {"template": template} if template != vm.template else {}

    return Outcome(prepare=prepare)


async def _deployment_file(job: Job, seq: int, template: Template | None = None) -> Path:
    """Write the VM's deployment file (``template``, else the VM's deployment); a
    failure names the file and launched nothing.

    Raises:
        TransientDriverError: the file cannot be written (``nothing_created``: the VM
            goes back to PENDING and is tried again later, not to a failure state).
    """
    manager, vm = job.manager, job.vm
    try:
        document = (manager.deployment_document(vm) if template is None
                    else template.to_xml("TEMPLATE", plain=True))
        return await manager.files.write_deployment(vm.id, seq, document)
    except OSError as exc:
        raise TransientDriverError(
            f"Cannot write the deployment file {exc.filename2 or exc.filename}: "
            f"{exc.strerror or exc}", nothing_created=True) from None


async def _poweron(job: Job) -> Outcome:
    manager, vm = job.manager, job.vm
    seq = await manager.db.read(lambda connection: current_seq(connection, vm.id))
    path = await _deployment_file(job, seq)
    spec = await manager.deploy_spec(vm, job.host, path, job.token)
    deploy_id = await job.run("poweron", lambda: job.driver.poweron(job.ref, spec))
    return _deployed(deploy_id or vm.deploy_id)


async def _save(job: Job) -> Outcome:
    checkpoint = job.manager.files.checkpoint_path(job.vm.id)
    leaving = job.vm.position == lifecycle.SAVE_STOP
    await job.run("save", lambda: job.driver.save(job.ref, checkpoint, leaving=leaving))
    return Outcome()


async def _restore(job: Job) -> Outcome:
    checkpoint = job.manager.files.checkpoint_path(job.vm.id)
    deploy_id = await job.run("restore", lambda: job.driver.restore(job.ref, checkpoint))
    return _deployed(deploy_id or job.vm.deploy_id)


async def _migrate(job: Job) -> Outcome:
    destination = await job.manager.host(int(job.args["host_id"]))
    if destination is None:
        raise DriverError(f"migrate: host {job.args['host_id']} no longer exists")
    live = job.vm.position == lifecycle.MIGRATE
    target = job.manager.host_ref(destination)
    deploy_id = await job.run("migrate", lambda: job.driver.migrate(job.ref, target, live=live))
    code = lifecycle.HISTORY_ACTIONS[Event.MIGRATE_LIVE if live else Event.MIGRATE]
    return Outcome({"deploy_id": deploy_id or job.vm.deploy_id, "host_id": destination.id},
                   _new_stay(destination, code), opens_stay=True)


def _new_stay(host: HostRecord, code: int) -> Callable[[Connection, VmRecord, Move],
                                                       dict[str, Any]]:
    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        stamp = now()
        seq = current_seq(connection, vm.id)
        vm_pool.update_history(connection, vm.id, seq, etime=stamp, retime=stamp, action=code)
        vm_pool.insert_history(connection, HistoryRecord(
            vm_id=vm.id, seq=seq + 1, host_id=host.id, hostname=host.name, vm_mad=host.vm_mad,
            tm_mad=host.tm_mad, stime=stamp, pstime=stamp, petime=stamp, rstime=stamp,
            cluster_id=host.cluster_id))
        return {}

    return prepare


async def _resize(job: Job) -> Outcome:
    """The driver resizes the instance; when it fails, the VM gets back the capacity it
    had (``args["before"]``: ``CPU``/``VCPU``/``MEMORY`` as they were), since its
    instance kept it."""
    if job.vm.deploy_id:
        try:
            spec = ResizeSpec(cpu=job.vm.cpu, vcpu=int(job.vm.template.get("VCPU") or 1),
                              memory_mb=job.vm.memory, template=job.vm.full_template(),
                              section=await job.manager.section_on(job.vm, job.host))
            await job.run("resize", lambda: job.driver.resize(job.ref, spec))
        except DriverError:
            before: dict[str, str | None] = dict(job.args.get("before") or {})
            if before:
                await job.manager.db.write(lambda connection: _capacity_back(
                    connection, job.vm.id, before))
            raise
    return Outcome()


def _capacity_back(connection: Connection, vm_id: int, before: dict[str, str | None]) -> None:
    vm = vm_pool.get_vm(connection, vm_id, with_history=False)
    template = vm.template.copy()
    for name, value in before.items():
        if value is None:
            template.remove(name)
        else:
            template.set(name, value)
    vm_pool.update_vm(connection, vm, template=template,
                      cpu=float(before.get("CPU") or vm.cpu),
                      memory=int(before.get("MEMORY") or vm.memory))


async def _snapshot_create(job: Job) -> Outcome:
    snapshot_id, name = int(job.args["snapshot_id"]), str(job.args["name"])
    provider_name = await job.run(
        "snapshot_create", lambda: job.driver.snapshot_create(job.ref, snapshot_id, name))

    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        template = vm.template.copy()
        # SYSTEM_DISK_SIZE (MB) is what the snapshot holds on the system datastore: the
        # VM's memory, as oned records it for a system snapshot.
        template.append("SNAPSHOT", {"SNAPSHOT_ID": str(snapshot_id), "NAME": name,
                                     "HYPERVISOR_ID": provider_name, "TIME": str(now()),
                                     "SYSTEM_DISK_SIZE": str(vm.memory)})
        return {"template": template}

    return Outcome(prepare=prepare)


async def _snapshot_revert(job: Job) -> Outcome:
    provider_name = str(job.args["hypervisor_id"])
    await job.run("snapshot_revert", lambda: job.driver.snapshot_revert(job.ref, provider_name))
    return Outcome()


async def _snapshot_delete(job: Job) -> Outcome:
    provider_name = str(job.args["hypervisor_id"])
    await job.run("snapshot_delete", lambda: job.driver.snapshot_delete(job.ref, provider_name))
    return Outcome(prepare=_without("SNAPSHOT", "SNAPSHOT_ID", int(job.args["snapshot_id"])))


async def _reconfigure(job: Job) -> Outcome:
    """The running guest gets the VM's configuration as stored (the deployment file of
    the stay is written again from it, as the next boot will use); a driver that
    cannot reach a running guest leaves it for the next deploy, and the log says so."""
    manager, vm = job.manager, job.vm
    template = manager.deployment_template(vm)
    path = await _deployment_file(job, await _seq_of(job), template)
    spec = await manager.deploy_spec(vm, job.host, path, job.token, template=template)
    if await job.run("reconfigure", lambda: job.driver.reconfigure(job.ref, spec)):
        manager.files.log(vm.id, "I", "VM configuration updated in the running guest")
    else:
        manager.files.log(vm.id, "I", f"VM configuration stored: driver {job.host.vm_mad} "
                                      "cannot change a running guest's, it applies at the "
                                      "next deploy")
    return Outcome()


def _device(job: Job, section: str) -> DeviceSpec:
    attributes: dict[str, str] = dict(job.args["attributes"])
    return DeviceSpec(id=int(job.args["device_id"]), target=attributes.get("TARGET", ""),
                      attributes=attributes)


async def _attach_disk(job: Job) -> Outcome:
    disk = _device(job, "DISK")
    await job.run("attach_disk", lambda: job.driver.attach_disk(job.ref, disk))
    return Outcome(prepare=_with("DISK", {**disk.attributes, "DISK_ID": str(disk.id)}))


async def _detach_disk(job: Job) -> Outcome:
    disk = _device(job, "DISK")
    await job.run("detach_disk", lambda: job.driver.detach_disk(job.ref, disk))
    return Outcome(prepare=_without("DISK", "DISK_ID", disk.id))


async def _attach_nic(job: Job) -> Outcome:
    nic = _device(job, "NIC")
    await job.run("attach_nic", lambda: job.driver.attach_nic(job.ref, nic))
    return Outcome(prepare=_with("NIC", {**nic.attributes, "NIC_ID": str(nic.id)}))


async def _detach_nic(job: Job) -> Outcome:
    nic = _device(job, "NIC")
    await job.run("detach_nic", lambda: job.driver.detach_nic(job.ref, nic))
    return Outcome(prepare=_without("NIC", "NIC_ID", nic.id))


def _with(section: str, values: dict[str, str]) -> Callable[[Connection, VmRecord, Move],
                                                            dict[str, Any]]:
    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        template = vm.template.copy()
        template.append(section, values)
        return {"template": template}

    return prepare


def _without(section: str, id_key: str, item: int) -> Callable[[Connection, VmRecord, Move],
                                                               dict[str, Any]]:
    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        return {"template": without_item(vm.template, section, id_key, item)}

    return prepare


def without_item(template: Template, section: str, id_key: str, item: int) -> Template:
    """``template`` without the ``section`` vector whose ``id_key`` is ``item``."""
    return Template((name, value) for name, value in template
                    if not (name == section and isinstance(value, dict)
                            and value.get(id_key) == str(item)))


RUNNERS: dict[Work, Runner] = {
    Work.DEPLOY: _deploy, Work.SHUTDOWN: _shutdown, Work.CANCEL: _cancel,
    Work.CLEANUP: _cleanup, Work.REBOOT: _reboot, Work.RESET: _reset,
    Work.POWEROFF: _poweroff, Work.POWEROFF_HARD: _poweroff_hard, Work.POWERON: _poweron,
    Work.SAVE: _save, Work.RESTORE: _restore, Work.MIGRATE: _migrate,
    Work.MIGRATE_LIVE: _migrate, Work.RESIZE: _resize,
    Work.SNAPSHOT_CREATE: _snapshot_create, Work.SNAPSHOT_REVERT: _snapshot_revert,
    Work.SNAPSHOT_DELETE: _snapshot_delete, Work.ATTACH_DISK: _attach_disk,
    Work.DETACH_DISK: _detach_disk, Work.ATTACH_NIC: _attach_nic, Work.DETACH_NIC: _detach_nic,
    Work.RECONFIGURE: _reconfigure,
}

#: Work that is safe to run again after a restart (idempotent at the provider).
REPLAYABLE: frozenset[Work] = frozenset({
    Work.DEPLOY, Work.SHUTDOWN, Work.CANCEL, Work.CLEANUP, Work.POWEROFF, Work.POWEROFF_HARD,
    Work.POWERON, Work.SAVE, Work.RESTORE, Work.MIGRATE, Work.MIGRATE_LIVE, Work.RECONFIGURE,
})

_STOPS = frozenset({Work.SHUTDOWN, Work.CANCEL, Work.CLEANUP})

#: How a failed work is worded on the VM (OpenNebula's phrases where it has them).
_ERRORS: dict[Work, str] = {
    Work.DEPLOY: "Error deploying virtual machine", Work.SHUTDOWN: "Error shutting down VM",
    Work.CANCEL: "Error shutting down VM", Work.CLEANUP: "Error cleaning up VM",
    Work.REBOOT: "Error rebooting VM", Work.RESET: "Error resetting VM",
    Work.POWEROFF: "Error powering off VM", Work.POWEROFF_HARD: "Error powering off VM",
    Work.POWERON: "Error booting VM", Work.SAVE: "Error saving VM state",
    Work.RESTORE: "Error restoring VM", Work.MIGRATE: "Error migrating VM",
    Work.MIGRATE_LIVE: "Error live-migrating VM", Work.RESIZE: "Error resizing VM",
    Work.SNAPSHOT_CREATE: "Error creating snapshot",
    Work.SNAPSHOT_REVERT: "Error reverting snapshot",
    Work.SNAPSHOT_DELETE: "Error deleting snapshot", Work.ATTACH_DISK: "Error attaching disk",
    Work.DETACH_DISK: "Error detaching disk", Work.ATTACH_NIC: "Error attaching NIC",
    Work.DETACH_NIC: "Error detaching NIC",
    Work.RECONFIGURE: "Error updating the configuration of the running VM",
}


class Working(ManagerBase):
    """Runs the work of entered states and applies its result."""

    def start_work(self, vm: VmRecord, work: Work, token: str, args: WorkArgs, *,
                   replay: bool = False, delay: float = 0.0, known: Known | None = None
                   ) -> None:
        if delay <= 0:
            self.spawn(self._work(vm, work, token, args, replay, known),
                       f"{work.label}-{vm.id}")
            return

        async def later() -> None:
            await asyncio.sleep(delay)
            current = await self.current(vm.id)
            if current is not None and current.position == vm.position:
                await self._work(current, work, token, args, replay)

        self.spawn(later(), f"{work.label}-retry-{vm.id}")

    async def _work(self, vm: VmRecord, work: Work, token: str, args: WorkArgs,
                    replay: bool, known: Known | None = None) -> None:
        # Batching drivers hold their batch open while work is on its way to them.
        backlog, host_id = self.dispatcher.backlog, vm.host_id
        if host_id is not None:
            backlog.add(host_id, work.label, vm.id)
        try:
            await self._run_work(vm, work, token, args, replay, known)
        finally:
            if host_id is not None:
                backlog.discard(host_id, vm.id)

    async def _run_work(self, vm: VmRecord, work: Work, token: str, args: WorkArgs,
                        replay: bool, known: Known | None) -> None:
        host = known.host if known is not None else await self.host_of(vm.id)
        if host is None:
            if work in _STOPS:  # nothing can be left on a deleted host
                await self._recorded(vm.id, work, lambda: self._result(vm, work, Outcome(),
                                                                       token))
            else:
                error = DriverError("the host of the VM was deleted")
                await self._recorded(vm.id, work, lambda: self._failed(
                    vm, work, error, token, args, None, replay))
            return
        job = Job(self, vm, host, self.dispatcher.vm_driver(host.vm_mad), token, args, replay,
                  known)
        try:
            outcome = await RUNNERS[work](job)
        except LeaseLostError as exc:
            # The driver was not called; the leader that takes over resumes the work.
            log.info("VM %d: %s left to the next leader (%s)", vm.id, work.label, exc.message)
            return
        except DriverError as exc:
            failure = exc
        except (OSError, KeyError, ValueError) as exc:
            failure = DriverError(f"{work.label}: {exc}")
        else:
            await self._recorded(vm.id, work, lambda: self._result(
                vm, work, outcome, token, None if known is None else known.seq))
            return
        await self._recorded(vm.id, work, lambda: self._failed(vm, work, failure, token, args,
                                                               host, replay))

    async def _recorded(self, vm_id: int, work: Work,
                        record: Callable[[], Awaitable[None]]) -> None:
        """Record the driver's answer, waiting out store faults (busy, full, read-only):
        the driver has acted, so its answer must land once the store takes writes
        again, or an accepted action would be lost. A lost store ends the wait."""
        backoff = StoreBackoff(f"recording the {work.label} result of VM {vm_id}", log)
        while True:
            try:
                await record()
                return
            except StoreLostError:
                raise
            except StoreUnavailableError as exc:
                await backoff.wait(exc)

    async def _result(self, vm: VmRecord, work: Work, outcome: Outcome, token: str,
                      seq: int | None = None) -> None:
        """Write a work's success; ``seq``: the VM's stay when the work started, if known
        (it is the result's too unless the outcome opens a stay)."""
        if not lifecycle.is_legal(vm.position, Event.SUCCESS):  # in-place work (reboot...)
            self.files.log(vm.id, "I", f"VM {work.label} done")
            if outcome.changes or outcome.prepare:
                await self._write_in_place(vm.id, outcome)
            await self._finish_journal(vm.id, work, True, "")
            return
        try:
            await self.advance(vm.id, Event.SUCCESS, expect=vm.position,
                               changes=outcome.changes, prepare=outcome.prepare,
                               finish=(work.label, True, outcome.changes.get("deploy_id", "")),
                               seq=None if outcome.opens_stay else seq)
        except (IllegalActionError, NotFoundError) as exc:
            log.info("VM %d: %s result ignored (%s)", vm.id, work.label, exc)
            await self._finish_journal(vm.id, work, True, "result arrived late")
            deploy_id = outcome.changes.get("deploy_id")
            if work is Work.DEPLOY and deploy_id:
                # The VM moved on while the driver worked (e.g. it was deleted):
                # the instance must not be left behind.
                self.files.log(vm.id, "W", f"Deployed as {deploy_id} after leaving BOOT; "
                                           "cancelling")
                await self._cancel_stray(vm.id, deploy_id)
            return
        if work is Work.DEPLOY:
            self.files.log(vm.id, "I", f"Deployed: DEPLOY_ID={outcome.changes['deploy_id']}")

    async def _failed(self, vm: VmRecord, work: Work, error: DriverError, token: str,
                      args: WorkArgs, host: HostRecord | None, replay: bool) -> None:
        message = one_line(error.message)
        if work in _STOPS and isinstance(error, TransientDriverError):
            await self._retry_later(vm, work, token, args, message)
            return
        event = Event.FAILURE
        changes: dict[str, Any] = {}
        prepare = None
        skip: _HostSkip | None = None
        if work is Work.DEPLOY:
            no_room = isinstance(error, CapacityError)
            if no_room or (isinstance(error, TransientDriverError) and error.nothing_created
                           and not replay):
                event = Event.NO_CAPACITY if no_room else Event.RETRY
                changes["host_id"] = None
                note = ("Host refused the VM (no capacity)" if no_room
                        else "Deploy failed before anything was created; will retry")
                changes["sched_message"] = f"{note}: {message}"
                prepare = _end_stay(f"{'no capacity' if no_room else 'nothing created'}: "
                                    f"{message}")
                if isinstance(error, CapacityError) and host is not None:
                    prepare = _cooling_off(prepare, host.id, error.instance_type,
                                           time.time() + self.settings.capacity_cooloff, message)
                if host is not None:
                    skip = _HostSkip(host.id, no_room, self.settings)
                    prepare = skip.wrap(prepare)
            else:
                changes["error"] = f"{_ERRORS[work]}: {message}"
        else:
            changes["error"] = f"{_ERRORS[work]}: {message}"
        self.files.log(vm.id, "E", changes.get("error") or f"{_ERRORS[work]}: {message}")
        if not lifecycle.is_legal(vm.position, event):
            await self.set_error(vm.id, changes.get("error", message))
            await self._finish_journal(vm.id, work, False, message)
            return
        try:
            await self.advance(vm.id, event, expect=vm.position, changes=changes,
                               prepare=prepare, finish=(work.label, False, message))
        except (IllegalActionError, NotFoundError) as exc:
            log.info("VM %d: %s failure ignored, state moved on (%s)", vm.id, work.label, exc)
            await self._finish_journal(vm.id, work, False, message)
            return
        if skip is not None:
            # The scheduler of this leader looks again when the host may take the VM;
            # another leader reads the skip from the store.
            asyncio.get_running_loop().call_later(skip.delay, self._on_capacity_freed)

    async def _retry_later(self, vm: VmRecord, work: Work, token: str, args: WorkArgs,
                           message: str) -> None:
        """Run ``work`` again after a growing delay, unless the VM moved on meanwhile.

        The delay and the count of tries are in the store: a new leader that
        takes the VM over waits out the same delay and keeps counting.
        """
        error = f"{_ERRORS[work]}, retrying: {message}"
        base = self.settings.driver_retry_delay

        def write(connection: Connection) -> float | None:
            current = vm_pool.get_vm(connection, vm.id, with_history=False)
            if current.position != vm.position:
                return None  # moved on (e.g. recovered by hand): nothing to retry
            tries = backoffs.tries(connection, vm.id, backoffs.STOP)
            delay = base * float(2 ** min(tries, 5))
            backoffs.record(connection, vm.id, backoffs.STOP, vm.host_id or -1, tries=tries + 1,
                            until=time.time() + delay)
            vm_pool.update_vm(connection, current, error=error)
            return delay

        try:
            delay = await self.db.write(write)
        except (IllegalActionError, NotFoundError):
            return
        if delay is None:
            return
        self.files.log(vm.id, "W", f"{work.label} failed ({message}); the instance is not "
                                   f"confirmed gone, trying again in {delay:g} s")
        self.start_work(vm, work, token, args, delay=delay)

    async def _write_in_place(self, vm_id: int, outcome: Outcome) -> None:
        def write(connection: Connection) -> None:
            vm = vm_pool.get_vm(connection, vm_id, with_history=False)
            changes = dict(outcome.changes)
            if outcome.prepare is not None:
                changes.update(outcome.prepare(connection, vm, lifecycle.Move(vm.position)))
            vm_pool.update_vm(connection, vm, **changes)

        await self.db.write(write)

    async def _finish_journal(self, vm_id: int, work: Work, ok: bool, result: str) -> None:
        def write(connection: Connection) -> None:
            journal.finish_started(connection, vm_id, (work.label,), ok=ok, result=result)

        await self.db.write(write)

    async def _cancel_stray(self, vm_id: int, deploy_id: str) -> None:
        host = await self.host_of(vm_id)
        if host is None:
            return
        driver = self.dispatcher.vm_driver(host.vm_mad)
        ref = VmRef(vm_id=vm_id, deploy_id=deploy_id, host=self.host_ref(host))
        try:
            await self.dispatcher.run("VM_MAD", host.vm_mad, "cancel", lambda: driver.cancel(ref))
        except DriverError as exc:
            self.files.log(vm_id, "E", f"Could not cancel stray instance {deploy_id}: {exc}")


class _HostSkip:
    """Keeps a VM whose deploy failed off the host for a while, recorded in the store.

    No room: ``CAPACITY_COOLOFF`` seconds. Nothing created: ``DRIVER_RETRY_DELAY``
    doubled for each such failure in a row (at most 32 times).
    """

    def __init__(self, host_id: int, no_room: bool, settings: Settings) -> None:
        self.host_id = host_id
        self.no_room = no_room
        self.settings = settings
        #: Seconds the host is skipped (known once the write ran).
        self.delay = 0.0

    def wrap(self, then: Callable[[Connection, VmRecord, Move], dict[str, Any]]
             ) -> Callable[[Connection, VmRecord, Move], dict[str, Any]]:
        def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
            tries = backoffs.tries(connection, vm.id, backoffs.DEPLOY)
            if self.no_room:
                self.delay = self.settings.capacity_cooloff
            else:
                self.delay = self.settings.driver_retry_delay * 2 ** min(tries, 5)
                tries += 1
            now = time.time()
            backoffs.record(connection, vm.id, backoffs.DEPLOY, self.host_id, tries=tries,
                            until=now + self.delay)
            backoffs.purge(connection, now)
            return then(connection, vm, moved)

        return prepare


def _cooling_off(then: Callable[[Connection, VmRecord, Move], dict[str, Any]], host_id: int,
                 instance_type: str, until: float, reason: str
                 ) -> Callable[[Connection, VmRecord, Move], dict[str, Any]]:
    """``then``, after recording the host's capacity cool-off for ``instance_type``."""
    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        cooloffs.record(connection, host_id, instance_type, until, reason)
        return then(connection, vm, moved)

    return prepare


def _end_stay(reason: str) -> Callable[[Connection, VmRecord, Move], dict[str, Any]]:
    def prepare(connection: Connection, vm: VmRecord, moved: Move) -> dict[str, Any]:
        stamp = now()
        seq = current_seq(connection, vm.id)
        if seq >= 0:
            extra: dict[str, Any] = {"reason": reason} if reason else {}
            vm_pool.update_history(connection, vm.id, seq, etime=stamp, retime=stamp, **extra)
        return {}

    return prepare

"""``one_vmm_one``: run our VMs as VMs of a partner OpenNebula cloud.

**The VM section** ``PUBLIC_CLOUD = [ TYPE = "one", ... ]`` names the
partner's template or carries an inline one (:mod:`.sections`).

**Never twice.** Every partner VM carries, in its USER_TEMPLATE,
``CLOUDBURST_ORIGIN = "<our installation id>:<our VM id>"``,
``CLOUDBURST_TOKEN = <the deploy's idempotency token>`` and
``CLOUDBURST_HOST = <our host id>``. A retried or replayed deploy first looks
for a VM with its token (or a live one with its VM's origin) in a pool
listing taken *after* the earlier attempt ended, and ``find`` does the same
after a restart; only when none exists is another created (:mod:`.attempts`).
A deploy found after a restart is done only once its partner VM runs, under
the same ``BOOT_TIMEOUT`` rule as a deploy (``resume_deploy``).

**Deploy** returns once the partner VM is RUNNING (deploy id ``one-<remote
id>``); if the partner leaves it pending for ``BOOT_TIMEOUT`` seconds it is
terminated there and the deploy fails with a capacity error, so our scheduler
places the VM elsewhere; a partner VM that fails is terminated and its error
reported (:mod:`.waits`).

**Poll** is bulk: one ``one.vmpool.infoextended`` per round whatever the number of
VMs (shared with every deploy or shutdown waiting at the same time,
:mod:`.pool`). Remote states map to ``a``, ``p``, ``d``, ``e`` or ``-`` as
:mod:`.partner_vms` says. The partner's address (its monitoring
``IP``/``GUEST_IP``, else the first NIC's ``IP``) is reported as ``IP``;
``PARTNER_VM_ID`` and ``PARTNER_STATE`` show where the VM is.

**Optional actions** (poweroff/poweron, save/restore, resize, snapshots)
are mapped to the partner's own (:mod:`.actions`); ``poweron`` of a VM
whose partner VM was deleted over there deploys a new one.

**Shutdown/cancel** send ``terminate``/``terminate-hard`` and return when the
partner VM is DONE or gone (success when it already is). **Sweep**: partner VMs
with our installation's tag for this host whose VM is no longer live are
reported, and terminated once two sweeps have seen them and they are older
than the grace period (:mod:`cloudburst.drivers.orphans`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final

from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    HostRef,
    PollResult,
    PollState,
    ResizeSpec,
    SweepReport,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.one.actions import PartnerActions
from cloudburst.drivers.one.attempts import DeployAttempts
from cloudburst.drivers.one.client import PartnerClient, WrongStateError
from cloudburst.drivers.one.config import ConfigCache, PartnerConfig, rc_path
from cloudburst.drivers.one.documents import RemoteVm
from cloudburst.drivers.one.partner_vms import (
    CLOUD_TYPE,
    deploy_id_of,
    poll_info,
    poll_state,
    remote_id,
)
from cloudburst.drivers.one.pool import PoolSnapshots
from cloudburst.drivers.one.sections import (
    check_section,
    create_call,
    partner_sections,
)
from cloudburst.drivers.one.waits import until_gone, until_running
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import (
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
)
from cloudburst.model.states import VmState
from cloudburst.template import Template

#: How old a pool listing the sweep may reuse, in seconds.
_SWEEP_LISTING_AGE: Final = 10.0
#: Seconds kept from the daemon's action time limit for reporting the outcome.
_TIMEOUT_MARGIN: Final = 2.0


class OneVmDriver(VmDriver):
    """``one_vmm_one``: VMs as partner-cloud VMs over XML-RPC (see the module docstring).

    Only transient failures (partner unreachable, timeouts, 5xx) are retried
    by the dispatcher; a deploy retry is safe because of the token lookup.
    """

    retryable: tuple[type[Exception], ...] = (TransientDriverError,)
    capabilities = frozenset({"poweroff", "save", "restore", "resize", "snapshot_create",
                              "snapshot_revert", "snapshot_delete"})

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._configs = ConfigCache(rc_path(context))
        self._client = PartnerClient(min(32, context.options.threads + 1), context.name,
                                     context.cloud_api)
        self._actions = PartnerActions(self._client)
        self._snapshots: dict[tuple[str, str, float], PoolSnapshots] = {}
        self._attempts = DeployAttempts()
        #: Partner VM ids of orphans, per our host.
        self._warned: set[str] = set()

    # -- plumbing --------------------------------------------------------------------

    def _config(self) -> PartnerConfig:
        """The rc file (re-read when it changed); warns once per unknown key."""
        config = self._configs.get()
        for key in config.unknown_keys:
            if key not in self._warned:
                self._warned.add(key)
                self.context.logger.warning("%s: unknown key %s ignored", config.path, key)
        return config

    def _pool(self, config: PartnerConfig) -> PoolSnapshots:
        """The shared pool listings of the partner ``config`` names."""
        key = (config.endpoint, config.session, config.timeout)
        snapshots = self._snapshots.get(key)
        if snapshots is None:
            self._snapshots.clear()  # the configuration changed: start afresh
            snapshots = self._snapshots[key] = PoolSnapshots(
                lambda: self._client.vm_pool(config))
        return snapshots

    # -- deploy ----------------------------------------------------------------------

    def check_template(self, template: Template) -> None:
        for section in partner_sections(template):
            check_section(section)

    async def deploy(self, spec: DeploySpec) -> str:
        config = self._config()
        deployment = spec.template
        section = spec.section
        if section is None:
            raise DriverError(f"VM {spec.vm_id}: no PUBLIC_CLOUD section of "
                              f"TYPE={CLOUD_TYPE} was chosen for partner host {spec.host.name}")
        pool = self._pool(config)
        origin = self._origin(spec.vm_id)
        remote = await self._attempts.earlier(pool, spec.token, origin)
        if remote is not None:
            self.context.logger.info("VM %d: partner VM %d from an earlier attempt found by "
                                     "its tags", spec.vm_id, remote)
        else:
            remote = await self._attempts.create(
                origin, self._create(config, spec, deployment, section))
            self.context.logger.info("VM %d: created partner VM %d", spec.vm_id, remote)
        await until_running(self._client, config, pool, remote, self._boot_limit(config),
                            self.context.logger)
        self._attempts.forget(origin)
        return deploy_id_of(remote)

    def _origin(self, vm_id: int) -> str:
        """The ``CLOUDBURST_ORIGIN`` tag of our VM ``vm_id``."""
        return f"{self.context.install_id}:{vm_id}"

    def _boot_limit(self, config: PartnerConfig) -> float:
        """``BOOT_TIMEOUT``, within the daemon's time limit for the action."""
        limit = config.boot_timeout
        if self.context.options.timeout is not None:
            limit = max(1.0, min(limit, self.context.options.timeout - _TIMEOUT_MARGIN))
        return limit

    async def _create(self, config: PartnerConfig, spec: DeploySpec, deployment: Template,
                      section: Mapping[str, str]) -> int:
        """Create the partner VM; its id at the partner."""
        call = create_call(section, deployment, spec, self.context.install_id)
        value = await self._client.call(config, call.method, *call.params)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DriverError(f"{config.label} answered the allocation without a VM id")
        return value

    async def find(self, spec: DeploySpec) -> str | None:
        config = self._config()
        found = await self._attempts.find(self._pool(config), spec.token,
                                          self._origin(spec.vm_id))
        return None if found is None else deploy_id_of(found)

    async def resume_deploy(self, spec: DeploySpec, deploy_id: str) -> str:
        """Wait for the found partner VM to run, within ``BOOT_TIMEOUT``, as ``deploy``
        does (the partner's scheduler may still hold it pending); the same failures."""
        config = self._config()
        await until_running(self._client, config, self._pool(config), remote_id(deploy_id),
                            self._boot_limit(config), self.context.logger)
        self._attempts.forget(self._origin(spec.vm_id))
        return deploy_id

    # -- stop and other actions -----------------------------------------------------------

    async def shutdown(self, vm: VmRef) -> None:
        await self._terminate(vm, "terminate")

    async def cancel(self, vm: VmRef) -> None:
        await self._terminate(vm, "terminate-hard")

    async def _terminate(self, vm: VmRef, action: str) -> None:
        config = self._config()
        remote = remote_id(vm.deploy_id)
        await until_gone(self._client, config, self._pool(config), remote, action)

    async def reboot(self, vm: VmRef) -> None:
        await self._simple(vm, "reboot")

    async def reset(self, vm: VmRef) -> None:
        await self._simple(vm, "reboot-hard")

    async def _simple(self, vm: VmRef, action: str) -> None:
        """Send ``action``; nothing to wait for."""
        config = self._config()
        remote = remote_id(vm.deploy_id)
        try:
            await self._client.vm_action(config, action, remote)
        except InstanceNotFoundError:
            raise InstanceNotFoundError(f"partner VM {remote} no longer exists") from None

    # -- optional actions (see .actions) ---------------------------------------------------

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        """The partner VM's ``poweroff``, or its ``undeploy`` when ``leaving``."""
        config = self._config()
        await self._actions.poweroff(config, self._pool(config), remote_id(vm.deploy_id), hard,
                                     leaving)

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        config = self._config()
        remote = remote_id(vm.deploy_id)
        try:
            await self._actions.resume(config, self._pool(config), remote)
        except InstanceNotFoundError:
            self.context.logger.info("VM %d: partner VM %d is gone; deploying a new one",
                                     spec.vm_id, remote)
            return await self.deploy(spec)
        return vm.deploy_id

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        config = self._config()
        await self._actions.suspend(config, self._pool(config), remote_id(vm.deploy_id))

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        config = self._config()
        await self._actions.resume(config, self._pool(config), remote_id(vm.deploy_id))
        return vm.deploy_id

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        await self._actions.resize(self._config(), remote_id(vm.deploy_id), spec)

    async def reconfigure(self, vm: VmRef, spec: DeploySpec) -> bool:
        """Forward the new CONTEXT to the partner VM (``one.vm.updateconf``)."""
        context = spec.template.get_vector("CONTEXT")
        if context is None:
            return False
        config = self._config()
        await self._actions.update_context(config, self._pool(config), remote_id(vm.deploy_id),
                                           context)
        return True

    async def snapshot_create(self, vm: VmRef, snapshot_id: int, name: str) -> str:
        config = self._config()
        return await self._actions.snapshot_create(config, self._pool(config),
                                                   remote_id(vm.deploy_id),
                                                   name or f"snapshot-{snapshot_id}")

    async def snapshot_revert(self, vm: VmRef, provider_name: str) -> None:
        config = self._config()
        await self._actions.snapshot_revert(config, self._pool(config), remote_id(vm.deploy_id),
                                            provider_name)

    async def snapshot_delete(self, vm: VmRef, provider_name: str) -> None:
        config = self._config()
        await self._actions.snapshot_delete(config, self._pool(config), remote_id(vm.deploy_id),
                                            provider_name)

    # -- monitoring --------------------------------------------------------------------

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        """One pool listing for every VM (see the module docstring)."""
        config = self._config()
        snapshot = await self._pool(config).get(time.monotonic())
        install_id = self.context.install_id
        results: dict[int, PollResult] = {}
        for ref in vms:
            try:
                remote = remote_id(ref.deploy_id)
            except DriverError as exc:
                results[ref.vm_id] = PollResult(PollState.UNKNOWN, {"ERROR": str(exc)})
                continue
            found = snapshot.find(remote)
            if found is not None and found.origin and found.origin_of(install_id) != ref.vm_id:
                found = None  # the id now belongs to a VM that is not ours
            results[ref.vm_id] = PollResult(poll_state(found), poll_info(found, remote))
        return results

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float, sightings: OrphanSightings) -> SweepReport:
        config = self._config()
        snapshot = await self._pool(config).get(time.monotonic() - _SWEEP_LISTING_AGE)
        found = {deploy_id_of(vm.id): vm.id for vm in snapshot.vms
                 if self._is_orphan(vm, host, live_vm_ids)}
        ages = sightings.observe(found, time.time())
        terminated: list[str] = []
        for deploy_id in sightings.due(ages, grace_period):
            remote = found[deploy_id]
            try:
                await self._client.vm_action(config, "terminate-hard", remote)
            except (InstanceNotFoundError, WrongStateError):
                pass
            except DriverError as exc:
                self.context.logger.warning("could not terminate orphaned partner VM %d: %s",
                                            remote, exc)
                continue
            terminated.append(deploy_id)
            sightings.forget(deploy_id)
        return SweepReport(orphans=ages, terminated=tuple(terminated))

    def _is_orphan(self, vm: RemoteVm, host: HostRef, live_vm_ids: frozenset[int]) -> bool:
        """Whether ``vm`` is tagged as one of our VMs that is no longer live, is not
        DONE, and was created for ``host`` (or before VMs were tagged with a host)."""
        ours = vm.origin_of(self.context.install_id)
        if ours is None or ours in live_vm_ids or vm.state == VmState.DONE:
            return False
        return not vm.host_tag or vm.host_tag == str(host.id)

    async def close(self) -> None:
        self._client.close()

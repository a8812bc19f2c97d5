"""``one_vmm_one``: run our VMs as VMs of a partner OpenNebula cloud.

**The VM section.** A VM goes to the partner through
``PUBLIC_CLOUD = [ TYPE = "one", ... ]``:

* ``TEMPLATE_ID = 7``: instantiate the partner's template 7
  (``one.template.instantiate``); the tags and our ``CPU``/``MEMORY`` are
  given as the extra template, so both clouds account the same size;
* otherwise an inline template is allocated (``one.vm.allocate``): our
  ``NAME``, ``CPU``, ``MEMORY`` (and ``VCPU``) plus every other key of the
  section (``DISK_IMAGE``, ``SCHED_REQUIREMENTS``, ... are copied as written);
* ``NAME`` names the partner VM (default: our VM's name); ``CLOUD``/``HOST``
  pick one partner when there are several (as for EC2 sites).

``CPU``, ``MEMORY`` and ``CLOUDBURST_*`` keys are refused in the section when
the VM is created (:meth:`OneVmDriver.check_template`).

**Never twice.** Every partner VM carries, in its USER_TEMPLATE,
``CLOUDBURST_ORIGIN = "<our installation id>:<our VM id>"``,
``CLOUDBURST_TOKEN = <the deploy's idempotency token>`` and
``CLOUDBURST_HOST = <our host id>``. A retried or replayed deploy first looks
for a VM with its token in a pool listing taken *after* the earlier attempt
ended (:class:`~cloudburst.drivers.one.client.PoolSnapshots`), and ``find``
does the same after a restart; only when none exists is another created.

**Deploy** returns once the partner VM is RUNNING (deploy id ``one-<remote
id>``); if the partner leaves it pending for ``BOOT_TIMEOUT`` seconds it is
terminated there and the deploy fails with a capacity error, so our scheduler
places the VM elsewhere; a partner VM that fails is terminated and its error
reported.

**Poll** is bulk: one ``one.vmpool.info`` per round whatever the number of
VMs (shared with every deploy or shutdown waiting at the same time). Remote
states map to ``a`` (RUNNING), ``p`` (SUSPENDED), ``d`` (DONE, missing,
POWEROFF, STOPPED, UNDEPLOYED), ``e`` (FAILED and the ``*_FAILURE`` states)
and ``-`` (pending, booting, shutting down: no change). The partner's address
(its monitoring ``IP``/``GUEST_IP``, else the first NIC's ``IP``) is reported
as ``IP``; ``PARTNER_VM_ID`` and ``PARTNER_STATE`` show where the VM is.

**Shutdown/cancel** send ``terminate``/``terminate-hard`` and return when the
partner VM is DONE or gone (success when it already is). **Sweep**: partner VMs
with our installation's tag for this host whose VM is no longer live are
reported, and terminated once older than the grace period.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from typing import Final

from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    HostRef,
    PollResult,
    PollState,
    SweepReport,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.one.client import (
    HOST_TAG,
    ORIGIN_TAG,
    TOKEN_TAG,
    PartnerClient,
    PoolSnapshots,
    RemoteVm,
    WrongStateError,
    parse_vm_pool,
)
from cloudburst.drivers.one.config import ConfigCache, PartnerConfig, rc_path
from cloudburst.errors import (
    CapacityError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    ValidationError,
    one_line,
)
from cloudburst.model.states import LcmState, VmState, vm_short_state
from cloudburst.template import Template, parse_xml

#: The ``PUBLIC_CLOUD`` TYPE (and host ``HYPERVISOR``) of partner clouds.
CLOUD_TYPE: Final = "one"

#: Section keys with a meaning of their own (not copied to the partner template).
_SECTION_KEYS: Final = frozenset({"TYPE", "TEMPLATE_ID", "CLOUD", "HOST", "NAME"})
#: Section keys refused at creation (the VM's own values or our tags win).
_FORBIDDEN_KEYS: Final = frozenset({"CPU", "MEMORY", ORIGIN_TAG, TOKEN_TAG, HOST_TAG})

#: OpenNebula LCM states that are failures (oned 5.x-7.x numbering).
_FAILURE_LCM: Final = frozenset({36, 37, 38, 39, 40, 41, 42, 44, 46, 47, 48, 49, 50, 59})
#: LCM states of a VM on its way out (no need to repeat the terminate).
_LEAVING_LCM: Final = frozenset({10, 11, 12, 15, 18, 23, 29, 30})
_GONE_STATES: Final = frozenset({VmState.DONE, VmState.POWEROFF, VmState.STOPPED,
                                 VmState.UNDEPLOYED})
_FAILED_STATES: Final = frozenset({7, VmState.CLONING_FAILURE})
_WAITING_STATES: Final = frozenset({VmState.INIT, VmState.PENDING, VmState.HOLD,
                                    VmState.CLONING})

#: Seconds between two terminate requests for a VM that is not leaving yet.
_REISSUE_AFTER: Final = 5.0
#: First pause between two checks while waiting; grows to POLL_INTERVAL.
_FIRST_PAUSE: Final = 0.2
#: Monitoring keys of the partner VM copied into our poll when numeric.
_NUMERIC_MONITORING: Final = ("CPU", "MEMORY", "NETTX", "NETRX")
#: Tokens remembered for retries; older attempts are forgotten beyond this.
_MAX_ATTEMPTS: Final = 10_000


def remote_id(deploy_id: str) -> int:
    """The partner VM id of deploy id ``one-<id>`` (or a bare number).

    Raises:
        DriverError: not a partner deploy id.
    """
    text = deploy_id.strip()
    if text.startswith(f"{CLOUD_TYPE}-"):
        text = text[len(CLOUD_TYPE) + 1:]
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise DriverError(f"{deploy_id!r} is not a partner-cloud deploy id (one-<id>)")
    return value


def deploy_id_of(remote: int) -> str:
    return f"{CLOUD_TYPE}-{remote}"


def remote_label(vm: RemoteVm) -> str:
    """The partner VM's state as ``onevm list`` shows it (``runn``, ``pend``, ...)."""
    try:
        return vm_short_state(VmState(vm.state), LcmState(vm.lcm_state))
    except ValueError:
        return f"{vm.state}/{vm.lcm_state}"


def poll_state(vm: RemoteVm | None) -> PollState:
    """What a partner VM's state means for ours (see the module docstring)."""
    if vm is None:
        return PollState.GONE
    if vm.state == VmState.ACTIVE:
        if vm.lcm_state == LcmState.RUNNING:
            return PollState.ACTIVE
        return PollState.ERROR if vm.lcm_state in _FAILURE_LCM else PollState.UNKNOWN
    if vm.state == VmState.SUSPENDED:
        return PollState.PAUSED
    if vm.state in _GONE_STATES:
        return PollState.GONE
    if vm.state in _FAILED_STATES:
        return PollState.ERROR
    return PollState.UNKNOWN


def _failed(vm: RemoteVm) -> bool:
    return vm.state in _FAILED_STATES or (vm.state == VmState.ACTIVE
                                          and vm.lcm_state in _FAILURE_LCM)


def _running(vm: RemoteVm) -> bool:
    return vm.state == VmState.ACTIVE and vm.lcm_state == LcmState.RUNNING


def _leaving(vm: RemoteVm) -> bool:
    return vm.state == VmState.ACTIVE and vm.lcm_state in _LEAVING_LCM


def _number(value: float) -> str:
    return f"{value:g}"


def partner_sections(template: Template) -> list[dict[str, str]]:
    """The ``PUBLIC_CLOUD`` sections of TYPE ``one``, in template order."""
    return [dict(section) for section in template.vectors("PUBLIC_CLOUD")
            if section.get("TYPE", "").strip().lower() == CLOUD_TYPE]


def pick_section(sections: Sequence[Mapping[str, str]], host_name: str) -> Mapping[str, str]:
    """The section for ``host_name``: one naming it, else one naming no site, else the first."""
    def site(section: Mapping[str, str]) -> str:
        return (section.get("CLOUD") or section.get("HOST") or "").strip().lower()

    for section in sections:
        if site(section) == host_name.lower():
            return section
    for section in sections:
        if not site(section):
            return section
    return sections[0]


class OneVmDriver(VmDriver):
    """``one_vmm_one``: VMs as partner-cloud VMs over XML-RPC (see the module docstring).

    Only transient failures (partner unreachable, timeouts, 5xx) are retried
    by the dispatcher; a deploy retry is safe because of the token lookup.
    """

    retryable: tuple[type[Exception], ...] = (TransientDriverError,)

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._configs = ConfigCache(rc_path(context))
        self._client = PartnerClient(min(32, context.options.threads + 1), context.name)
        self._snapshots: dict[tuple[str, str, float], PoolSnapshots] = {}
        #: token -> when the latest create call (or lookup) for it ended: a later
        #: attempt lists the pool with a snapshot begun after that moment.
        self._attempted: dict[str, float] = {}
        #: token -> a create call still in flight.
        self._creating: dict[str, asyncio.Future[int]] = {}
        #: (our host id, partner VM id) -> when the sweep first saw it orphaned.
        self._orphans: dict[tuple[int, int], float] = {}
        self._warned: set[str] = set()

    # -- plumbing --------------------------------------------------------------------

    def _config(self) -> PartnerConfig:
        config = self._configs.get()
        for key in config.unknown_keys:
            if key not in self._warned:
                self._warned.add(key)
                self.context.logger.warning("%s: unknown key %s ignored", config.path, key)
        return config

    def _pool(self, config: PartnerConfig) -> PoolSnapshots:
        key = (config.endpoint, config.session, config.timeout)
        snapshots = self._snapshots.get(key)
        if snapshots is None:
            self._snapshots.clear()  # the configuration changed: start afresh

            async def fetch() -> list[RemoteVm]:
                # -3: the partner account's own VMs; -1: every state but DONE.
                return await self._client.call_parsed(
                    config, "one.vmpool.info", (-3, -1, -1, -1), parse_vm_pool)

            snapshots = self._snapshots[key] = PoolSnapshots(fetch)
        return snapshots

    async def _action(self, config: PartnerConfig, action: str, remote: int) -> None:
        await self._client.call(config, "one.vm.action", action, remote)

    def _remember_attempt(self, token: str, when: float) -> None:
        if len(self._attempted) >= _MAX_ATTEMPTS:
            for old in sorted(self._attempted, key=self._attempted.__getitem__)[
                    : _MAX_ATTEMPTS // 10]:
                del self._attempted[old]
        self._attempted[token] = when

    # -- deploy ----------------------------------------------------------------------

    def check_template(self, template: Template) -> None:
        for section in partner_sections(template):
            template_id = section.get("TEMPLATE_ID", "").strip()
            if template_id and not template_id.isdigit():
                raise ValidationError(
                    f"PUBLIC_CLOUD TYPE={CLOUD_TYPE}: TEMPLATE_ID must be the partner's "
                    f"template id (a whole number), not {template_id!r}")
            forbidden = sorted(set(section) & _FORBIDDEN_KEYS)
            if forbidden:
                raise ValidationError(
                    f"PUBLIC_CLOUD TYPE={CLOUD_TYPE}: {', '.join(forbidden)} cannot be set in "
                    "the section (the VM's own CPU and MEMORY are used, and the CLOUDBURST_* "
                    "tags are the driver's)")

    async def deploy(self, spec: DeploySpec) -> str:
        config = self._config()
        deployment = parse_xml(spec.deployment)
        sections = partner_sections(deployment)
        if not sections:
            raise DriverError(f"VM {spec.vm_id} has no PUBLIC_CLOUD section of "
                              f"TYPE={CLOUD_TYPE} for partner host {spec.host.name}")
        section = pick_section(sections, spec.host.name)
        pool = self._pool(config)
        found = await self._earlier(pool, spec.token)
        if found is not None:
            self.context.logger.info("VM %d: partner VM %d from an earlier attempt found by "
                                     "its token", spec.vm_id, found)
            return await self._until_running(config, pool, found, spec)
        self._remember_attempt(spec.token, time.monotonic())
        creating = asyncio.ensure_future(self._create(config, spec, deployment, section))
        self._creating[spec.token] = creating
        creating.add_done_callback(lambda task: self._created(spec.token, task))
        created = await asyncio.shield(creating)
        self.context.logger.info("VM %d: created partner VM %d", spec.vm_id, created)
        return await self._until_running(config, pool, created, spec)

    async def _earlier(self, pool: PoolSnapshots, token: str) -> int | None:
        """The partner VM an earlier attempt with ``token`` created, if any.

        An attempt whose call is still in flight (its coroutine was cancelled
        by the time limit, the thread was not) is waited for; otherwise the
        pool is listed with a snapshot begun after the earlier call ended.
        """
        creating = self._creating.get(token)
        if creating is not None:
            try:
                return await asyncio.shield(creating)
            except DriverError:
                pass
        ended = self._attempted.get(token)
        if ended is None:
            return None
        vm = _with_token((await pool.get(ended)).vms, token)
        return None if vm is None else vm.id

    def _created(self, token: str, task: asyncio.Future[int]) -> None:
        """A create call ended: later lookups must list the pool after this moment."""
        if self._creating.get(token) is task:
            del self._creating[token]
        if not task.cancelled():
            task.exception()  # retrieved here; the awaiting attempt reports it
        self._remember_attempt(token, time.monotonic())

    async def _create(self, config: PartnerConfig, spec: DeploySpec, deployment: Template,
                      section: Mapping[str, str]) -> int:
        name = (section.get("NAME") or deployment.get("NAME") or f"cloudburst-{spec.vm_id}")
        tags = [(ORIGIN_TAG, f"{self.context.install_id}:{spec.vm_id}"),
                (TOKEN_TAG, spec.token), (HOST_TAG, str(spec.host.id))]
        size = [("CPU", _number(spec.cpu)), ("MEMORY", str(spec.memory_mb))]
        vcpu = deployment.get("VCPU")
        if vcpu:
            size.append(("VCPU", vcpu))
        template_id = section.get("TEMPLATE_ID", "").strip()
        if template_id:
            extra = Template([*size, *tags])
            value = await self._client.call(config, "one.template.instantiate", int(template_id),
                                            name, False, extra.to_text(), False)
        else:
            copied = [(key, value) for key, value in section.items()
                      if key not in _SECTION_KEYS and key not in _FORBIDDEN_KEYS]
            template = Template([("NAME", name), *size, *copied, *tags])
            value = await self._client.call(config, "one.vm.allocate", template.to_text(), False)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DriverError(f"partner cloud {config.shown_endpoint} answered the allocation "
                              "without a VM id")
        return value

    async def _until_running(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                             spec: DeploySpec) -> str:
        """Wait until partner VM ``remote`` runs; fail (and remove it) if it cannot."""
        limit = config.boot_timeout
        if self.context.options.timeout is not None:
            limit = max(1.0, min(limit, self.context.options.timeout - 2.0))
        deadline = time.monotonic() + limit
        seen_after = time.monotonic()
        pause = _FIRST_PAUSE
        unreachable: DriverError | None = None
        vm: RemoteVm | None = None
        while True:
            # Pausing first lets the VMs created meanwhile share one listing.
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, config.poll_interval)
            try:
                snapshot = await pool.get(seen_after)
            except TransientDriverError as exc:
                unreachable = exc  # the partner VM exists: keep waiting for the partner
            else:
                unreachable = None
                seen_after = snapshot.started + 1e-6
                vm = snapshot.find(remote)
                if vm is None:
                    raise DriverError(f"partner VM {remote} ended before it ran")
                if _running(vm):
                    self._attempted.pop(spec.token, None)
                    return deploy_id_of(remote)
                if _failed(vm):
                    await self._discard(config, remote)
                    reason = vm.error or f"state {remote_label(vm)}"
                    raise DriverError(f"partner VM {remote} failed: {reason}; it was terminated")
            if time.monotonic() >= deadline:
                break
        if unreachable is not None or vm is None:
            raise unreachable or DriverError(f"partner VM {remote} cannot be observed")
        if _waiting(vm):
            await self._discard(config, remote)
            why = f": {vm.sched_message}" if vm.sched_message else ""
            raise CapacityError(f"partner cloud {config.shown_endpoint} did not start VM "
                                f"{remote} within {limit:g} s ({remote_label(vm)}{why}); "
                                "it was terminated there")
        raise DriverError(f"partner VM {remote} is still {remote_label(vm)} after {limit:g} s")

    async def _discard(self, config: PartnerConfig, remote: int) -> None:
        """Best-effort ``terminate-hard`` of a partner VM we give up on."""
        try:
            await self._action(config, "terminate-hard", remote)
        except InstanceNotFoundError:
            pass
        except DriverError as exc:
            self.context.logger.warning("could not terminate partner VM %d: %s", remote, exc)

    async def find(self, spec: DeploySpec) -> str | None:
        config = self._config()
        pool = self._pool(config)
        found = await self._earlier(pool, spec.token)
        if found is None:
            # A deploy replayed after this lookup must look again, even if it fails.
            now = time.monotonic()
            self._remember_attempt(spec.token, now)
            vm = _with_token((await pool.get(now)).vms, spec.token)
            found = None if vm is None else vm.id
        return None if found is None else deploy_id_of(found)

    # -- stop --------------------------------------------------------------------------

    async def shutdown(self, vm: VmRef) -> None:
        await self._terminate(vm, "terminate")

    async def cancel(self, vm: VmRef) -> None:
        await self._terminate(vm, "terminate-hard")

    async def _terminate(self, vm: VmRef, action: str) -> None:
        """Send ``action`` and wait until the partner VM is DONE or gone."""
        config = self._config()
        remote = remote_id(vm.deploy_id)
        pool = self._pool(config)
        deadline = time.monotonic() + config.shutdown_timeout
        pause = _FIRST_PAUSE
        issued = float("-inf")
        seen_after = time.monotonic()
        while True:
            if time.monotonic() - issued >= _REISSUE_AFTER:
                try:
                    await self._action(config, action, remote)
                except InstanceNotFoundError:
                    return
                except WrongStateError:
                    pass  # on its way out already, or DONE
                issued = seen_after = time.monotonic()
            # Pausing first lets the VMs stopped meanwhile share one listing.
            await asyncio.sleep(pause)
            pause = min(pause * 1.5, config.poll_interval)
            snapshot = await pool.get(seen_after)
            seen_after = snapshot.started + 1e-6
            current = snapshot.find(remote)
            if current is None or current.state == VmState.DONE:
                return
            if _leaving(current):
                issued = time.monotonic()  # no need to ask again while it leaves
            if time.monotonic() >= deadline:
                raise DriverError(f"partner VM {remote} is still {remote_label(current)} "
                                  f"{config.shutdown_timeout:g} s after {action}")

    # -- other actions -----------------------------------------------------------------

    async def reboot(self, vm: VmRef) -> None:
        await self._simple(vm, "reboot")

    async def reset(self, vm: VmRef) -> None:
        await self._simple(vm, "reboot-hard")

    async def _simple(self, vm: VmRef, action: str) -> None:
        config = self._config()
        remote = remote_id(vm.deploy_id)
        try:
            await self._action(config, action, remote)
        except InstanceNotFoundError:
            raise InstanceNotFoundError(f"partner VM {remote} no longer exists") from None

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
            results[ref.vm_id] = PollResult(poll_state(found), _poll_info(found))
        return results

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float) -> SweepReport:
        config = self._config()
        snapshot = await self._pool(config).get(time.monotonic() - 10.0)
        now = time.monotonic()
        orphans: dict[str, float] = {}
        terminated: list[str] = []
        current: set[tuple[int, int]] = set()
        for vm in snapshot.vms:
            ours = vm.origin_of(self.context.install_id)
            if ours is None or ours in live_vm_ids or vm.state == VmState.DONE:
                continue
            if vm.host_tag and vm.host_tag != str(host.id):
                continue
            key = (host.id, vm.id)
            current.add(key)
            repeated = key in self._orphans
            age = now - self._orphans.setdefault(key, now)
            orphans[deploy_id_of(vm.id)] = age
            if repeated and age >= grace_period:
                try:
                    await self._action(config, "terminate-hard", vm.id)
                except (InstanceNotFoundError, WrongStateError):
                    pass
                except DriverError as exc:
                    self.context.logger.warning("could not terminate orphaned partner VM %d: %s",
                                                vm.id, exc)
                    continue
                terminated.append(deploy_id_of(vm.id))
        for key in [key for key in self._orphans if key[0] == host.id and key not in current]:
            del self._orphans[key]
        return SweepReport(orphans=orphans, terminated=tuple(terminated))

    async def close(self) -> None:
        self._client.close()


def _with_token(vms: Sequence[RemoteVm], token: str) -> RemoteVm | None:
    for vm in vms:
        if vm.token == token and vm.state != VmState.DONE:
            return vm
    return None


def _waiting(vm: RemoteVm) -> bool:
    return vm.state in _WAITING_STATES


def _poll_info(vm: RemoteVm | None) -> dict[str, str]:
    if vm is None:
        return {}
    info = {"PARTNER_VM_ID": str(vm.id), "PARTNER_STATE": remote_label(vm)}
    if vm.ip:
        info["IP"] = vm.ip
    for key in _NUMERIC_MONITORING:
        value = vm.monitoring.get(key, "")
        try:
            float(value)
        except ValueError:
            continue
        info[key] = value
    if vm.error and _failed(vm):
        info["PARTNER_ERROR"] = one_line(vm.error, 200)
    return info

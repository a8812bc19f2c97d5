"""``one_vmm_ec2``: VMs on an EC2 site (one ``VM_MAD`` = one endpoint and account).

Actions and what they cost in API calls:

* ``deploy``: VMs deployed together for the same host with the same launch
  request share one ``RunInstances`` (up to ``EC2_BATCH_MAX``), tagged at
  creation and bound to their VMs by launch index; each member's batch is
  noted in its deploy journal entry before the call (:mod:`.run_instances`).
  1,000 VMs of one template cost 4 calls (0.004 per VM) where they cost 1,000.
  A deploy retried in this process looks its token up first; ``find`` (after
  a restart) reads the journal note and the site's listing. ``AUTHORIZED_PORTS``
  adds, once per port set and VPC, a security group of the driver's
  (``cloudburst-<installation>-tcp-<ports>``, :mod:`.security_groups`).
* ``poll``: one paginated ``DescribeInstances`` per site and call, whatever
  the number of VMs; concurrent polls of several hosts of a site share it
  (:mod:`.listing`). While launches are queued or in flight at the site the
  poll waits for them (at most 30 s): a VM is RUNNING from its launch's
  answer, and a listing amid a burst would cost the site as much as the
  launches and be stale at once. ``ELASTICIP`` is associated by the first poll that sees
  the instance running (:mod:`.elastic_ips`); a failure shows as the VM's
  monitoring error. The poll reports ``IP`` (public DNS name, else public
  address), ``PRIVATE_IP``, ``AWS_*`` details (:mod:`.instances`) and
  ``PRICE_PER_HOUR``: a spot instance's zone spot price (one
  ``DescribeSpotPriceHistory`` per site for the pairs not read in the last
  15 minutes, :mod:`.spot_prices`), which its stay's recorded price follows;
  else the on-demand price of its type in the host's offers.
* ``shutdown`` and ``cancel``: ``TerminateInstances``, with the ids of every
  termination under way at the host in one call (up to 1,000; the call stays
  open while the daemon has more terminations of the host on their way; an
  instance that is already gone is success); a known Elastic IP association
  is released first.
* ``poweroff`` (poweroff, undeploy): one ``StopInstances`` (``Force`` for the
  hard forms); ``poweron`` (resume): one ``StartInstances``, same instance id.
* ``save`` (suspend, stop): one ``StopInstances`` (graceful), then
  ``DescribeInstances`` of the instance until it is ``stopped`` (one call when
  it already is; more, at growing intervals, while it is ``stopping``): a
  SUSPENDED or STOPPED VM's instance is really stopped, its EBS volumes
  consistent, its id kept. EC2 keeps no memory image (hibernation must be
  chosen at launch), so the guest boots again on ``restore``: one
  ``StartInstances`` of the same instance (resume; a stopped VM that the
  scheduler places again goes back to a host of this driver). When a parked VM
  comes back on another host of this driver, ``restore`` and ``poweron`` first
  re-tag its instance with that host (one ``CreateTags``), so the former
  host's orphan sweep leaves it alone.
* ``resize`` (POWEROFF, UNDEPLOYED): the instance type the new ``CPU``/``VCPU``/
  ``MEMORY`` run as by the scheduler's rule (:mod:`.sizing`): one
  ``DescribeInstances`` (waiting for ``stopped`` as above) and, when the type
  changes, one ``ModifyInstanceAttribute`` ``InstanceType``. A section that
  names its ``INSTANCETYPE`` keeps it (refused when too small).
* ``migrate``: not offered. Hosts of one EC2 driver are one endpoint and
  account, so there is nowhere to move an instance to; ``onevm migrate`` is
  refused naming the action and the driver.
* ``reboot``: ``RebootInstances``. ``reset`` is also ``RebootInstances``: EC2
  has no power-cycle call, and a reboot that the guest ignores becomes a hard
  reboot after four minutes. Stop and start would be closer to a power cycle but
  changes the public address and takes minutes, so the driver does not do it.
* ``sweep``: reuses the poll's listing when recent; terminates orphans seen by
  two sweeps and older than the grace period, and deletes our security groups
  that no instance uses any more (:mod:`.sweep`).

Nothing of the credentials reaches a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Final

from cloudburst.drivers import context
from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    HostInfo,
    HostRef,
    PollResult,
    PollState,
    ResizeSpec,
    SweepReport,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.ec2 import launch, power, sizing, types
from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.coalesce import Coalescer
from cloudburst.drivers.ec2.config import SiteConfig, load_site_config
from cloudburst.drivers.ec2.defaults_file import load_defaults
from cloudburst.drivers.ec2.elastic_ips import ElasticIps
from cloudburst.drivers.ec2.instances import (
    TAG_HOST,
    TAG_HOST_NAME,
    TAG_VALUE_MAX,
    InstanceView,
    poll_result,
)
from cloudburst.drivers.ec2.listing import InstanceListings
from cloudburst.drivers.ec2.pricing import Catalogue
from cloudburst.drivers.ec2.run_instances import Launcher, parse_note
from cloudburst.drivers.ec2.security_groups import SecurityGroups
from cloudburst.drivers.ec2.spot_prices import SpotPrices
from cloudburst.drivers.ec2.sweep import OrphanSweep
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import DriverError, InstanceNotFoundError, ValidationError
from cloudburst.model import offers
from cloudburst.template import Template

#: Every EC2 driver of the process: a template passes when any site could deploy it.
_drivers: weakref.WeakSet[Ec2VmDriver] = weakref.WeakSet()

#: Deploy tokens remembered per driver (a repeated token is looked up first).
_TRIED_MAX: Final = 200_000
#: Most instance ids in one ``TerminateInstances`` (EC2 takes 1,000).
_TERMINATE_MAX: Final = 1000
#: Most seconds a poll waits for the site's launches in flight to answer.
_POLL_WAITS_FOR_LAUNCHES: Final = 30.0
#: The core's work labels that end in a termination here.
_STOP_WORK: Final = ("shutdown", "cancel", "cleanup")


class Ec2VmDriver(VmDriver):
    """The EC2 VM driver (see the module doc)."""

    self_paced = frozenset({"deploy", "shutdown", "cancel"})
    capabilities = frozenset({"poweroff", "save", "restore", "resize"})

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.config: SiteConfig = load_site_config(context)
        self.log = context.logger
        for note in self.config.notes:
            self.log.warning("%s: %s", context.name, note)
        if not context.install_id:
            self.log.warning("%s: no installation id; tagging instances with 'cloudburst'",
                             context.name)
        self.install_id = context.install_id or "cloudburst"
        types.warm_up()  # load the type names now, not during a VM's creation
        self.site = Site(self.config, context.cloud_api)
        self.listings = InstanceListings(self.site, self.install_id)
        self.catalogue = Catalogue(self.site)
        self.spot_prices = SpotPrices(self.site, self.log)
        self.groups = SecurityGroups(self.site, self.install_id, self.config.ingress_cidr,
                                     self.log)
        backlog = context.backlog
        self.launcher = Launcher(self.site, self.install_id, self.groups, self.log,
                                 batch_max=self.config.batch_max,
                                 window=self.config.batch_window, backlog=backlog)

        def stops_coming(host_id: int) -> int:  # terminations of the host on their way
            return 0 if backlog is None else backlog.waiting(host_id, _STOP_WORK)

        self.terminations: Coalescer[int, str, None] = Coalescer(
            self._terminate_batch, window=self.config.batch_window,
            max_size=_TERMINATE_MAX,
            ready_in=lambda: self.site.limiter.ready_in("TerminateInstances"),
            more=stops_coming)
        #: Deploy tokens this process has sent (insertion-ordered, bounded).
        self._tried: dict[str, None] = {}
        self.elastic_ips = ElasticIps(self.site, self.log)
        self.orphan_sweep = OrphanSweep(self.site, self.listings, self.groups,
                                        self._terminating, self.config.listing_reuse_seconds,
                                        self.log)
        _drivers.add(self)

    def __repr__(self) -> str:
        return (f"Ec2VmDriver(name={self.name!r}, endpoint={self.config.endpoint_label!r}, "
                f"region={self.config.region!r})")

    # -- templates -----------------------------------------------------------------

    def defaults(self) -> dict[str, str]:
        """The defaults file's section (re-read when the file changes)."""
        return load_defaults(self.config.defaults_path)

    def check_template(self, template: Template) -> None:
        """Refuse EC2 sections that no EC2 driver could deploy (AMI, KEYPAIR, type, ...).

        A section passes when, with the defaults of some EC2 driver of this
        daemon merged in, nothing is missing or wrong; so a key defaulted for
        one site only is enough, as it is for that site's VMs. The message
        gives this driver's objections.
        """
        sections = launch.sections_of(template)
        if not sections:
            return
        problems = context.check_context(template)
        if problems:
            raise ValidationError("; ".join(problems))
        drivers = [self, *(driver for driver in list(_drivers) if driver is not self)]
        for index, section in enumerate(sections, start=1):
            first: list[str] | None = None
            for driver in drivers:
                merged = launch.add_context(launch.merge(section, driver.defaults()), template)
                problems = launch.problems_of(merged)
                if not problems:
                    break
                first = first if first is not None else problems
            else:
                label = launch.section_label(section, index, len(sections))
                raise ValidationError(f"{label}: {'; '.join(first or [])}")

    def _request(self, spec: DeploySpec) -> launch.LaunchRequest:
        template = spec.template
        section = launch.deployment_section(spec)
        merged = launch.merge(section, self.defaults())
        chosen = sizing.deploy_type(spec.vm_id, spec.host, template, section, cpu=spec.cpu,
                                    memory_mb=spec.memory_mb)
        if chosen is not None:
            merged["INSTANCETYPE"] = chosen
        launch.add_context(merged, template)
        request = launch.build_request(merged)
        if isinstance(request, list):
            raise DriverError(f"VM {spec.vm_id}: EC2 section: {'; '.join(request)}")
        return request

    # -- the site's offers -------------------------------------------------------------

    async def site_report(self, host: HostRef, info: HostInfo) -> HostInfo:
        """The offers of ``info`` (``INSTANCE_TYPES``) sized by the site's catalogue
        (``DescribeInstanceTypes``, cached); types the site lacks are dropped. When
        the catalogue cannot be read the report stays as the information driver made it.
        """
        listed = offers.offers_of(info.attributes)
        if not listed:
            return info
        try:
            corrected = await self.catalogue.correct(listed)
        except DriverError as exc:
            self.log.info("%s: catalogue of %s not read (%s); instance sizes from the static "
                          "table", self.name, self.site.label, exc.message)
            return info
        return replace(info, attributes={**info.attributes,
                                         offers.ATTRIBUTE: offers.format_offers(corrected)})

    # -- deploy ----------------------------------------------------------------------

    async def deploy(self, spec: DeploySpec) -> str:
        request = self._request(spec)
        if spec.token in self._tried:  # a retry: the last try may have launched it
            found = await self.find(spec)
            if found is not None:
                self.log.info("VM %d: deploy token already launched %s; not launching again",
                              spec.vm_id, found)
                return found
        self._note_tried(spec.token)
        instance_id = await self.launcher.launch(spec, request)
        self.listings.note_launch(instance_id)
        self.log.info("VM %d: launched %s (%s, %s) at %s", spec.vm_id, instance_id,
                      request.instance_type, request.ami, self.site.label)
        return instance_id

    def _note_tried(self, token: str) -> None:
        self._tried[token] = None
        while len(self._tried) > _TRIED_MAX:
            del self._tried[next(iter(self._tried))]

    async def find(self, spec: DeploySpec) -> str | None:
        """The live instance of ``spec``'s deploy: by the batch its journal note
        names and the launch index, else by its token tag (in a fresh listing).
        A later ``deploy`` of the token looks it up again before launching.

        Should a deploy have several (launched behind our back), the oldest is
        the one; the orphan sweep removes the others.
        """
        self._note_tried(spec.token)
        note = None
        if spec.notes is not None:
            note = parse_note((await spec.notes.read([spec.token])).get(spec.token))
        listing = await self.listings.current(since=time.monotonic())
        found = sorted((view for view in listing.instances.values() if view.live and (
            view.token == spec.token if note is None
            else (view.batch, view.launch_index) == note)),
            key=lambda view: (view.launch_time is None, view.launch_time, view.id))
        if len(found) > 1:
            self.log.warning("VM %d: token %s has %d instances (%s); using %s, the sweep "
                             "removes the others", spec.vm_id, spec.token, len(found),
                             ", ".join(view.id for view in found), found[0].id)
        return found[0].id if found else None

    # -- poll --------------------------------------------------------------------------

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        if not vms:
            return {}
        # A listing taken amid a burst of launches is stale at once and costs the
        # site (and our parser) as much as the launches: it waits for them.
        await self.launcher.batches.settled(_POLL_WAITS_FOR_LAUNCHES)
        listing = await self.listings.current()
        now = time.monotonic()
        spot = await self.spot_prices.prices(
            (instance.instance_type, instance.zone) for vm in vms
            if (instance := listing.instances.get(vm.deploy_id)) is not None
            and instance.market == "spot" and instance.live)
        results: dict[int, PollResult] = {}
        associations: list[tuple[VmRef, InstanceView]] = []
        for vm in vms:
            self.orphan_sweep.note_polled(vm)
            instance = listing.instances.get(vm.deploy_id)
            if instance is None and self.listings.just_launched(vm.deploy_id, now):
                results[vm.vm_id] = PollResult(PollState.UNKNOWN, {"AWS_STATE": "launching"})
            elif instance is not None and self.elastic_ips.pending(instance):
                associations.append((vm, instance))
            else:
                results[vm.vm_id] = _polled(vm, instance, spot)
        if associations:
            done = await asyncio.gather(*(self.elastic_ips.associate(instance)
                                          for _, instance in associations))
            for (vm, instance), (address, error) in zip(associations, done, strict=True):
                results[vm.vm_id] = _polled(vm, instance, spot, elastic_ip=address, error=error)
        return results

    # -- stop, reboot ------------------------------------------------------------------

    def _terminating(self) -> None:
        """Called before every ``TerminateInstances``: listings taken before it no
        longer tell which security groups are free, and a clean-up becomes due."""
        self.listings.note_termination()
        self.groups.note_termination()

    async def _terminate(self, vm: VmRef) -> None:
        if not vm.deploy_id:
            return
        await self.elastic_ips.release(vm.deploy_id, self.listings.known(vm.deploy_id))
        await self.terminations.submit(vm.host.id, vm.deploy_id)
        self.listings.forget_launch(vm.deploy_id)
        self.elastic_ips.forget(vm.deploy_id)

    async def _terminate_batch(self, _: int, instance_ids: list[str]) -> list[None]:
        """One ``TerminateInstances`` for ``instance_ids``; gone instances are a success.

        One unknown id fails the whole call, so such a batch is split up.
        """
        self._terminating()
        try:
            await self.site.call("TerminateInstances", {"InstanceIds": instance_ids},
                                 resources=len(instance_ids))
        except InstanceNotFoundError:
            if len(instance_ids) == 1:
                self.log.info("instance %s is already gone", instance_ids[0])
            else:
                await asyncio.gather(*(self._terminate_batch(_, [one])
                                       for one in instance_ids))
        return [None] * len(instance_ids)

    async def shutdown(self, vm: VmRef) -> None:
        await self._terminate(vm)

    async def cancel(self, vm: VmRef) -> None:
        await self._terminate(vm)

    async def poweroff(self, vm: VmRef, *, hard: bool, leaving: bool) -> None:
        """``StopInstances`` (``Force`` when ``hard``): the instance and its disks stay.

        The same when ``leaving`` (undeploy): a stopped instance holds no host
        capacity, and ``poweron`` starts it from any host of this driver."""
        await power.stop(self.site, vm.deploy_id, force=hard)

    async def poweron(self, vm: VmRef, spec: DeploySpec) -> str:
        """``StartInstances``; the instance keeps its id (its public address may change)."""
        await self._home(vm)
        await power.start(self.site, vm.deploy_id)
        return vm.deploy_id

    async def _home(self, vm: VmRef) -> None:
        """Tag the instance with ``vm.host`` when it comes back on another host of this
        driver than the one it was launched for (an undeployed or stopped VM placed
        elsewhere): that host's orphan sweep would take it for an orphan. One
        ``CreateTags``, only then or when no listing of this process has seen it."""
        known = self.listings.known(vm.deploy_id)
        if known is not None and known.host_id == vm.host.id:
            return
        await self.site.call("CreateTags", {"Resources": [vm.deploy_id], "Tags": [
            {"Key": TAG_HOST, "Value": str(vm.host.id)},
            {"Key": TAG_HOST_NAME, "Value": vm.host.name[:TAG_VALUE_MAX]}]})

    async def save(self, vm: VmRef, checkpoint: Path, *, leaving: bool) -> None:
        """``StopInstances``, returning once EC2 reports the instance ``stopped``
        (``checkpoint`` is unused: the instance's volumes are the saved state,
        whether the VM stays on its host or ``leaving`` it)."""
        await power.stop(self.site, vm.deploy_id, force=False)
        await power.wait_stopped(self.site, vm.deploy_id, just_stopped=True)

    async def restore(self, vm: VmRef, checkpoint: Path) -> str:
        """``StartInstances`` of the instance ``save`` stopped; same id."""
        await self._home(vm)
        await power.start(self.site, vm.deploy_id)
        return vm.deploy_id

    async def resize(self, vm: VmRef, spec: ResizeSpec) -> None:
        """Change the stopped instance's type to the one the new capacity runs as.

        Raises:
            DriverError: no type fits, the section's named type is too small, the
                site lists no types, or the instance is not stopped.
        """
        template = spec.template if spec.template is not None else Template()
        section = launch.normalize(spec.section or {})
        wanted = sizing.resized_type(vm.vm_id, vm.host, template, section, cpu=spec.cpu,
                                     memory_mb=spec.memory_mb)
        instance = await power.wait_stopped(self.site, vm.deploy_id, just_stopped=False)
        if instance.instance_type.lower() == wanted:
            return
        await power.change_type(self.site, vm.deploy_id, wanted)
        self.log.info("VM %d: %s resized from %s to %s", vm.vm_id, vm.deploy_id,
                      instance.instance_type, wanted)

    async def reboot(self, vm: VmRef) -> None:
        await self.site.call("RebootInstances", {"InstanceIds": [vm.deploy_id]})

    async def reset(self, vm: VmRef) -> None:
        await self.site.call("RebootInstances", {"InstanceIds": [vm.deploy_id]})

    # -- orphans ---------------------------------------------------------------------------

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float, sightings: OrphanSightings) -> SweepReport | None:
        return await self.orphan_sweep.sweep(host, live_vm_ids, grace_period, sightings)

    def took_over(self, quiet: float) -> None:
        self.site.limiter.drained(quiet)

    async def close(self) -> None:
        _drivers.discard(self)
        await self.launcher.close()
        await self.terminations.close()
        await self.site.close()


def _polled(vm: VmRef, instance: InstanceView | None, spot: Mapping[tuple[str, str], float],
            *, elastic_ip: str | None = None, error: str | None = None) -> PollResult:
    """``instance``'s poll, priced: a spot instance at its zone's spot price (``spot``),
    else (on-demand, or no spot price known) its type's price in the host's offers."""
    if instance is None:
        return poll_result(None)
    spot_price = spot.get((instance.instance_type, instance.zone))
    if instance.market == "spot" and spot_price is not None:
        return poll_result(instance, elastic_ip=elastic_ip, error=error, price=spot_price,
                           spot_price=True)
    price = offers.price_of(offers.offers_of(vm.host.attributes), instance.instance_type)
    return poll_result(instance, elastic_ip=elastic_ip, error=error, price=price)

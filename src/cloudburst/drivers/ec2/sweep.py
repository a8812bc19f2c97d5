"""The orphan sweep of an EC2 site: instances of ours that no live VM owns.

The sweep uses the poll's listing when it is at most
``EC2_LISTING_REUSE_SECONDS`` old (no extra call), and lists again when
there is none or something was terminated since it was taken. Orphans of a
host are the live instances tagged for it whose VM is not live, and second
instances of a VM that is polled with another one (e.g. a lost launch retried
by someone without our tags' help). An orphan is terminated once two sweeps
have seen it and it has been orphaned for the grace period
(:mod:`cloudburst.drivers.orphans`), at most :data:`TERMINATE_BATCH` per
``TerminateInstances``. Our security groups that no instance uses any more
are deleted here too (:mod:`.security_groups`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Final

from cloudburst.drivers.base import HostRef, SweepReport, VmRef
from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.instances import InstanceView
from cloudburst.drivers.ec2.listing import InstanceListings, Listing
from cloudburst.drivers.ec2.security_groups import SecurityGroups
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import DriverError

#: Most instance ids in one ``TerminateInstances`` call.
TERMINATE_BATCH: Final = 1000


class OrphanSweep:
    """Finds and terminates one site's orphans, host by host.

    ``terminating`` is called before every ``TerminateInstances`` the sweep
    sends (the driver counts terminations for the listing and the groups).
    """

    def __init__(self, site: Site, listings: InstanceListings, groups: SecurityGroups,
                 terminating: Callable[[], None], listing_reuse_seconds: float,
                 log: logging.Logger) -> None:
        self.site = site
        self.listings = listings
        self.groups = groups
        self.terminating = terminating
        self.listing_reuse_seconds = listing_reuse_seconds
        self.log = log
        #: vm id -> (host id, deploy id) of the latest poll
        self._polled: dict[int, tuple[int, str]] = {}

    def note_polled(self, vm: VmRef) -> None:
        """A poll saw ``vm`` with its instance (another instance of it is an orphan)."""
        self._polled[vm.vm_id] = (vm.host.id, vm.deploy_id)

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float, sightings: OrphanSightings) -> SweepReport:
        """Report the host's orphans and terminate those due; clean our groups up."""
        listing = self.listings.recent(self.listing_reuse_seconds)
        if listing is None or (self.groups.cleanup_due
                               and self.listings.predates_termination(listing)):
            listing = await self.listings.current()
        found = [instance.id for instance in listing.instances.values()
                 if instance.live and instance.host_id == host.id
                 and self._is_orphan(instance, listing, live_vm_ids)]
        ages = sightings.observe(found, time.time())
        for vm_id in [key for key, (owner, _) in self._polled.items()
                      if owner == host.id and key not in live_vm_ids]:
            del self._polled[vm_id]
        terminated = await self._terminate(sightings.due(ages, grace_period))
        if self.groups.cleanup_due and not self.listings.predates_termination(listing):
            try:
                await self.groups.collect(listing)
            except DriverError as exc:
                self.log.warning("cleaning security groups up failed: %s", exc.message)
        for instance_id in terminated:
            sightings.forget(instance_id)
        return SweepReport(orphans=ages, terminated=terminated)

    def _is_orphan(self, instance: InstanceView, listing: Listing,
                   live_vm_ids: frozenset[int]) -> bool:
        if instance.vm_id is None or instance.vm_id not in live_vm_ids:
            return True
        polled = self._polled.get(instance.vm_id, (None, ""))[1]
        if not polled or polled == instance.id:
            return False
        current = listing.instances.get(polled)
        return current is not None and current.live

    async def _terminate(self, instance_ids: list[str]) -> list[str]:
        """Terminate in batches; the ids whose batch EC2 accepted."""
        terminated: list[str] = []
        for start in range(0, len(instance_ids), TERMINATE_BATCH):
            batch = instance_ids[start:start + TERMINATE_BATCH]
            self.terminating()
            try:
                await self.site.call("TerminateInstances", {"InstanceIds": batch},
                                     resources=len(batch))
            except DriverError as exc:
                self.log.warning("terminating orphans %s failed: %s", ", ".join(batch),
                                 exc.message)
                continue
            terminated += batch
        return terminated

"""The listing of a site's instances that polls and sweeps share.

One paginated ``DescribeInstances``, filtered on the installation tag
(``MaxResults=1000``), lists every instance of ours at the site whatever the
number of VMs; concurrent callers share the call in flight. The latest
listing stays available (:attr:`InstanceListings.latest`) for the orphan
sweep, which reuses it while it is recent.

EC2's listings are eventually consistent: an instance launched moments ago
may be missing. :meth:`InstanceListings.just_launched` tells a poll to wait
rather than call such an instance gone.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.instances import TAG_INSTALL, InstanceView, views

#: Seconds after launch during which an instance missing from a listing is
#: not yet "gone".
LAUNCH_VISIBILITY_GRACE: Final = 120.0


def installation_filter(install_id: str) -> dict[str, Any]:
    """The EC2 filter that keeps what carries installation ``install_id``'s tag."""
    return {"Name": f"tag:{TAG_INSTALL}", "Values": [install_id]}


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing of the site's instances carrying our installation tag.

    ``started`` and ``finished`` are ``time.monotonic()`` values.
    ``terminations`` is the termination counter when the listing started: a
    listing taken before a termination is not used to decide that a security
    group is free.
    """

    started: float
    finished: float
    terminations: int
    instances: Mapping[str, InstanceView]


class InstanceListings:
    """Lists one site's instances of one installation; remembers launches and terminations.

    Attributes:
        latest: the most recent listing, ``None`` before the first one.
        terminations: how many termination requests (of single instances or
            batches) have been sent so far; see :attr:`Listing.terminations`.
    """

    def __init__(self, site: Site, install_id: str) -> None:
        self.site = site
        self.install_id = install_id
        self.latest: Listing | None = None
        self.terminations = 0
        self._in_flight: asyncio.Future[Listing] | None = None
        self._in_flight_started = 0.0
        #: instance id -> monotonic launch time (this process)
        self._launched: dict[str, float] = {}

    async def current(self, since: float | None = None) -> Listing:
        """A listing started now, or the one in flight (concurrent calls share one).

        ``since`` (``time.monotonic()``): only a listing started at or after it
        will do; one in flight that started earlier is waited for, then a new one
        is started (and shared by everyone who waited).
        """
        while True:
            task = self._in_flight
            if task is None or task.done():
                self._in_flight_started = time.monotonic()
                task = asyncio.ensure_future(self._fetch())
                # Every waiter may be gone (cancelled) when it fails: retrieve the error.
                task.add_done_callback(lambda done: done.cancelled() or done.exception())
                self._in_flight = task
            elif since is not None and self._in_flight_started < since:
                await asyncio.wait([task])
                continue
            return await asyncio.shield(task)

    async def _fetch(self) -> Listing:
        started = time.monotonic()
        terminations = self.terminations
        reservations = await self.site.paginate("DescribeInstances", {
            "Filters": [installation_filter(self.install_id)],
            "MaxResults": 1000,
        })
        listing = Listing(started, time.monotonic(), terminations,
                          {view.id: view for view in views(reservations)})
        self.latest = listing
        cutoff = time.monotonic() - LAUNCH_VISIBILITY_GRACE
        self._launched = {key: when for key, when in self._launched.items() if when > cutoff}
        return listing

    def recent(self, max_age: float) -> Listing | None:
        """The latest listing if it finished at most ``max_age`` seconds ago."""
        latest = self.latest
        if latest is None or time.monotonic() - latest.finished > max_age:
            return None
        return latest

    def predates_termination(self, listing: Listing) -> bool:
        """Whether something was terminated after ``listing`` started."""
        return listing.terminations != self.terminations

    def known(self, instance_id: str) -> InstanceView | None:
        """The instance as the latest listing saw it."""
        return self.latest.instances.get(instance_id) if self.latest else None

    def note_launch(self, instance_id: str) -> None:
        """The instance was just launched (listings may miss it for a while)."""
        self._launched[instance_id] = time.monotonic()

    def just_launched(self, instance_id: str, now: float) -> bool:
        """Whether the instance was launched too recently to be missing for good."""
        return now - self._launched.get(instance_id, -1e9) < LAUNCH_VISIBILITY_GRACE

    def note_termination(self) -> None:
        """Count a termination request (sent or about to be)."""
        self.terminations += 1

    def forget_launch(self, instance_id: str) -> None:
        """The instance is terminated: a missing instance is gone at once."""
        self._launched.pop(instance_id, None)

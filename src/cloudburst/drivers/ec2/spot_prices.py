"""Current spot prices of a site, per instance type and availability zone.

A spot instance is billed at the zone's spot price for its type, not at the
on-demand price of the site's price table. :class:`SpotPrices` asks
``DescribeSpotPriceHistory`` (Linux/UNIX, ``StartTime`` = now: the price in
force) for the (type, zone) pairs a poll needs that it has not read within
:data:`SPOT_PRICE_SECONDS`, all of them in one paginated call, and keeps the
answers (a pair the site does not price too: it is not asked again before
then). A site that cannot answer costs one warning line (again only when the
reason changes); the pairs it lacks are left out, so the caller falls back to
the on-demand price; the next try waits :data:`RETRY_SECONDS`.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Iterable
from typing import Final

from cloudburst.drivers.ec2.client import Site
from cloudburst.errors import DriverError

#: How long a zone's spot price is trusted (AWS changes them at most every few minutes).
SPOT_PRICE_SECONDS: Final = 900.0
#: How long after a failed read the site is asked again.
RETRY_SECONDS: Final = 300.0
#: The product whose price is read (both of AWS's spellings of it).
PRODUCTS: Final = ("Linux/UNIX", "Linux/UNIX (Amazon VPC)")

Pair = tuple[str, str]


class SpotPrices:
    """A site's current spot prices (see the module doc)."""

    def __init__(self, site: Site, log: logging.Logger | logging.LoggerAdapter[logging.Logger],
                 ttl: float = SPOT_PRICE_SECONDS) -> None:
        self.site = site
        self.log = log
        self.ttl = ttl
        #: (type, zone) -> (US$ per hour or None when the site gave none, when read)
        self._known: dict[Pair, tuple[float | None, float]] = {}
        self._failed_at = -math.inf
        self._last_failure = ""

    async def prices(self, pairs: Iterable[Pair]) -> dict[Pair, float]:
        """``{(type, zone): US$ per hour}`` for the ``pairs`` whose price is known.

        Never raises for the site's sake: a failed read is logged once and the
        cached prices (or none) are returned.
        """
        wanted = {(kind, zone) for kind, zone in pairs if kind and zone}
        now = time.monotonic()
        stale = sorted(pair for pair in wanted
                       if pair not in self._known or now - self._known[pair][1] > self.ttl)
        if stale and now - self._failed_at > RETRY_SECONDS:
            await self._read(stale)
        found = {pair: self._known.get(pair, (None, 0.0))[0] for pair in wanted}
        return {pair: price for pair, price in found.items() if price is not None}

    async def _read(self, pairs: list[Pair]) -> None:
        try:
            items = await self.site.paginate("DescribeSpotPriceHistory", {
                "InstanceTypes": sorted({kind for kind, _ in pairs}),
                "ProductDescriptions": list(PRODUCTS),
                "StartTime": datetime.datetime.now(datetime.UTC),
                "Filters": [{"Name": "availability-zone",
                             "Values": sorted({zone for _, zone in pairs})}],
            }, items="SpotPriceHistory")
        except DriverError as exc:
            self._failed_at = time.monotonic()
            if exc.message != self._last_failure:
                self._last_failure = exc.message
                self.log.warning("%s: spot prices unavailable, spot VMs show their on-demand "
                                 "price: %s", self.site.label, exc.message)
            return
        self._last_failure = ""
        newest: dict[Pair, tuple[datetime.datetime | None, float]] = {}
        for item in items:
            pair = (str(item.get("InstanceType") or ""), str(item.get("AvailabilityZone") or ""))
            try:
                price = float(item.get("SpotPrice") or "")
            except ValueError:
                continue
            stamp = item.get("Timestamp")
            stamp = stamp if isinstance(stamp, datetime.datetime) else None
            if not (math.isfinite(price) and price >= 0):
                continue
            known = newest.get(pair)
            if known is None or (stamp is not None and (known[0] is None or stamp > known[0])):
                newest[pair] = (stamp, price)
        read_at = time.monotonic()
        for pair in pairs:  # a pair the site did not price is not asked again at once
            self._known[pair] = (newest[pair][1] if pair in newest else None, read_at)

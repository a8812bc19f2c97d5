"""Prices of EC2 instance types (US$ per hour, on-demand) and a site's offers.

**Price table** of a site, later sources winning per type:

1. the file ``PRICES_FILE`` of ``im_ec2.conf`` names (relative to ``etc/``),
   default ``im_ec2/ec2_prices.conf``: the shipped table (us-east-1, dated and
   sourced in its header), copied to ``etc/`` at first start; a home without
   the copy reads the package's own;
2. ``PRICE_<TYPE>=N`` lines of ``im_ec2.conf`` (``PRICE_M5_LARGE=0.096``);
3. the host's own ``PRICE_<TYPE>`` attributes (``onehost update``).

**Offers** (:mod:`cloudburst.model.offers`): the types the site may run (a
``CAPACITY`` limit above 0) that have a price, with their sizes: first from
the static table of :mod:`.types`, then corrected by the site's own catalogue
(:class:`Catalogue`, ``DescribeInstanceTypes``, cached) when the VM driver
completes the host's report; a type the catalogue does not list is dropped.
"""

from __future__ import annotations

import importlib.resources
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Final

from cloudburst.drivers.config_files import ParsedFiles
from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.env_file import read_env_file
from cloudburst.errors import ConfigError
from cloudburst.model.offers import Offer

log = logging.getLogger(__name__)

#: Key prefix of a price (``PRICE_M5_LARGE``).
PRICE_PREFIX: Final = "PRICE_"
#: A site's one price for every instance (:mod:`cloudburst.model.cost`), not a type's.
FLAT_PRICE: Final = "PRICE_PER_HOUR"
#: How long a site's catalogue is trusted before it is read again.
CATALOGUE_SECONDS: Final = 6 * 3600.0
#: Most type names per ``DescribeInstanceTypes`` filter.
_NAMES_PER_CALL: Final = 100


def default_price_file() -> Path:
    """The shipped price table (inside the installed package)."""
    share = importlib.resources.files("cloudburst") / "share" / "etc" / "im_ec2"
    return Path(str(share / "ec2_prices.conf"))


def prices_from(values: Mapping[str, str], error: Callable[[str, str], ConfigError]
                ) -> tuple[dict[str, float], list[str]]:
    """``PRICE_<TYPE>`` keys -> ``{type: price}``, and the keys naming no known type.

    Other keys are ignored, ``PRICE_PER_HOUR`` too (a site's flat price, read by
    :mod:`cloudburst.model.cost`, not a type's).

    Raises:
        ConfigError: from ``error(key, problem)``, for a price that is not a number >= 0.
    """
    prices: dict[str, float] = {}
    unknown: list[str] = []
    for key, raw in values.items():
        if not key.startswith(PRICE_PREFIX) or key == FLAT_PRICE:
            continue
        kind = types.type_from_key(key[len(PRICE_PREFIX):])
        if kind is None:
            unknown.append(key)
            continue
        try:
            price = float(raw.strip())
        except ValueError:
            price = -1.0
        if not (math.isfinite(price) and price >= 0):
            raise error(key, "must be a price in US$ per hour (a number >= 0, e.g. 0.096), "
                             f"got {raw.strip()!r}")
        prices[kind] = price
    return prices, unknown


def _load_price_file(path: Path) -> dict[str, float]:
    env = read_env_file(path)
    prices, unknown = prices_from(env.values, env.error)
    if unknown:
        log.warning("%s: keys naming no known instance type ignored: %s", path,
                    ", ".join(sorted(unknown)))
    return prices


_price_files = ParsedFiles(_load_price_file)


def load_price_file(path: Path) -> dict[str, float]:
    """A price file's table (parsed again only when it changes); the caller's to change.

    Raises:
        ConfigError: unreadable or a bad price.
    """
    try:
        return dict(_price_files.get(path))
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None


def static_offers(allowed: Iterable[str], prices: Mapping[str, float]) -> list[Offer]:
    """Offers for the ``allowed`` types that have a price, sized by :mod:`.types` (0: unknown)."""
    offers: list[Offer] = []
    for kind in allowed:
        price = prices.get(kind)
        if price is None:
            continue
        size = types.size_of(kind)
        offers.append(Offer(kind, round(size.cores) if size else 0,
                            round(size.memory_gb * 1024) if size else 0, price))
    return offers


class Catalogue:
    """A site's instance types and their sizes, from ``DescribeInstanceTypes``.

    Only the types asked about are read (filtered by name, at most 100 per
    call), and each answer is kept for :data:`CATALOGUE_SECONDS`: a site's
    catalogue of about 1,000 types costs a dozen paginated calls otherwise.
    """

    def __init__(self, site: Site, ttl: float = CATALOGUE_SECONDS) -> None:
        self.site = site
        self.ttl = ttl
        #: type -> ((vcpus, memory MiB) or None when the site lacks it, when read)
        self._known: dict[str, tuple[tuple[int, int] | None, float]] = {}

    async def sizes(self, names: Iterable[str]) -> dict[str, tuple[int, int] | None]:
        """``name -> (vcpus, memory MiB)``, ``None`` for a type the site does not offer.

        Raises:
            DriverError: the site could not be asked (nothing cached is lost).
        """
        wanted = sorted({name.lower() for name in names})
        now = time.monotonic()
        stale = [name for name in wanted
                 if name not in self._known or now - self._known[name][1] > self.ttl]
        for start in range(0, len(stale), _NAMES_PER_CALL):
            chunk = stale[start:start + _NAMES_PER_CALL]
            items = await self.site.paginate("DescribeInstanceTypes", {
                "Filters": [{"Name": "instance-type", "Values": chunk}]}, items="InstanceTypes")
            found: dict[str, tuple[int, int]] = {}
            for item in items:
                name = str(item.get("InstanceType", "")).lower()
                vcpu = int((item.get("VCpuInfo") or {}).get("DefaultVCpus") or 0)
                memory = int((item.get("MemoryInfo") or {}).get("SizeInMiB") or 0)
                if name:
                    found[name] = (vcpu, memory)
            read_at = time.monotonic()
            for name in chunk:
                self._known[name] = (found.get(name), read_at)
        return {name: self._known[name][0] for name in wanted}

    async def correct(self, offers: Iterable[Offer]) -> list[Offer]:
        """``offers`` with the site's own sizes; types the site does not offer are dropped.

        Raises:
            DriverError: the catalogue could not be read.
        """
        listed = list(offers)
        sizes = await self.sizes(offer.name for offer in listed)
        corrected: list[Offer] = []
        for offer in listed:
            size = sizes.get(offer.name)
            if size is not None:
                corrected.append(Offer(offer.name, size[0], size[1], offer.price))
        return corrected


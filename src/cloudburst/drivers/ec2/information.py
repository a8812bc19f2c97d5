"""``one_im_ec2``: an EC2 site's capacity, from ``im_ec2.conf`` (no API call).

As in OpenNebula 3.x the information driver does not talk to EC2: a site's
size is what the operator allows it (``SMALL_INSTANCES=4`` ...), and what runs
there is known from the VM pool. The report:

* ``HYPERVISOR=ec2``, ``PUBLIC_CLOUD=YES``, ``PRIORITY=-1``, ``HOSTNAME``,
  ``CPUSPEED=1000``;
* ``TOTALCPU`` / ``TOTALMEMORY`` (KB) summed over the limits and the type sizes
  (:mod:`.types`): 5 small instances are ``TOTALCPU=500`` and
  ``TOTALMEMORY=8912896``; ``FREE*`` = ``TOTAL*`` and ``USED*`` = 0 (3.x);
* ``CAPACITY`` (:attr:`HostInfo.capacity`): instances allowed per type; the
  scheduler never places more VMs of a type on the site, so with
  ``SMALL_INSTANCES=4`` a fifth ``m1.small`` VM stays pending;
* ``DEFAULT_INSTANCE_TYPE``: the type of VMs whose EC2 section names none
  and that give no size the site's offers can fit (see below);
* ``INSTANCE_TYPES`` (:mod:`cloudburst.model.offers`): the types the site may
  run (limit above 0) that have a price (:mod:`.pricing`), with vCPUs, memory
  and US$ per hour, e.g. ``"m1.small:1:1741:0.044 m1.large:4:7680:0.175"``.
  A VM whose section names no ``INSTANCETYPE`` runs as the cheapest one that
  fits its ``VCPU`` (or ``CPU``) and ``MEMORY``. The sizes here come from a
  static table; the site's VM driver corrects them from the site's catalogue
  (``DescribeInstanceTypes``) before the report is stored.

With ``PRICES_REFRESH`` in ``im_ec2.conf`` the table is fetched again from the
AWS Price List API when it is older than that (:mod:`.price_refresh`, in the
background; only the leading daemon monitors).

The file is the driver's argument (``im_ec2/im_ec2.conf``, relative to
``etc/``), re-read when it changes. A host's own template attributes override
it for that site: ``SMALL_INSTANCES``, ``LARGE_INSTANCES``,
``EXTRALARGE_INSTANCES``, ``INSTANCES_<TYPE>``, ``PRICE_<TYPE>`` and
``EC2_DEFAULT_INSTANCE_TYPE`` (``onehost update``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from cloudburst.drivers.base import DriverContext, HostInfo, HostRef, InformationDriver
from cloudburst.drivers.config_files import ParsedFiles
from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.defaults_file import load_defaults
from cloudburst.drivers.ec2.im_config import (
    ErrorFor,
    ImConfig,
    is_limit_key,
    limits_from,
    load_im_config,
)
from cloudburst.drivers.ec2.launch import normalize
from cloudburst.drivers.ec2.price_refresh import PriceRefresher
from cloudburst.drivers.ec2.pricing import (
    default_price_file,
    load_price_file,
    prices_from,
    static_offers,
)
from cloudburst.errors import ConfigError, DriverError
from cloudburst.model.offers import ATTRIBUTE, format_offers

_CPUSPEED = "1000"

T = TypeVar("T")


class Ec2InformationDriver(InformationDriver):
    """Reports EC2 sites (see the module doc)."""

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        if context.arguments:
            self.path = context.resolve(context.arguments[-1])
        elif context.default is not None:
            self.path = context.default
        else:
            self.path = context.etc_dir / "im_ec2" / "im_ec2.conf"
        self._configs = ParsedFiles(load_im_config)
        self.prices = PriceRefresher(context.etc_dir)

    def _config(self) -> ImConfig:
        """``im_ec2.conf``, read again only when it changed."""
        try:
            return self._configs.get(self.path)
        except OSError as exc:
            raise DriverError(f"cannot read {self.path}: {exc.strerror}") from None
        except ConfigError as exc:
            raise DriverError(exc.message) from None

    def _default_type(self, config: ImConfig, host: HostRef) -> str:
        """The host's ``EC2_DEFAULT_INSTANCE_TYPE``, else the file's, else the defaults file's."""
        chosen = host.attributes.get("EC2_DEFAULT_INSTANCE_TYPE", "").strip().lower()
        if chosen:
            if not types.is_known(chosen):
                raise DriverError(f"host {host.name}: EC2_DEFAULT_INSTANCE_TYPE {chosen!r} is "
                                  "not a known instance type")
            return chosen
        if config.default_instance_type:
            return config.default_instance_type
        defaults_file = self.context.resolve(config.vmm_defaults or "vmm_ec2/vmm_ec2.conf")
        try:
            defaults = normalize(load_defaults(defaults_file))
        except ConfigError:
            defaults = {}
        kind = defaults.get("INSTANCETYPE", "").strip().lower()
        return kind if kind and types.is_known(kind) else types.DEFAULT_INSTANCE_TYPE

    def _price_table(self, config: ImConfig) -> Path:
        """The file the site's prices are read from and refreshed into."""
        return self.context.resolve(config.price_file or "im_ec2/ec2_prices.conf")

    def _prices(self, config: ImConfig, host: HostRef) -> dict[str, float]:
        """The site's price table: the price file, then ``im_ec2.conf``, then the host."""
        path = self._price_table(config)
        if not config.price_file and not path.is_file():
            path = default_price_file()  # the home predates the file: the packaged copy
        try:
            prices = load_price_file(path)
        except ConfigError as exc:
            raise DriverError(exc.message) from None
        prices.update(config.prices)
        prices.update(_host_values(host, prices_from, "PRICE_M5_LARGE=0.096"))
        return prices

    async def monitor(self, host: HostRef) -> HostInfo:
        config = self._config()
        self.prices.consider(self._price_table(config), config.prices_refresh,
                             config.prices_endpoint)
        limits = dict(config.limits)
        limits.update(_host_values(
            host, lambda values, error: limits_from(
                {key: value for key, value in values.items() if is_limit_key(key)}, error),
            "INSTANCES_T3_MICRO=2"))
        cpu = memory = 0
        for kind, count in limits.items():
            size = types.size_of(kind)
            if size is not None and count > 0:
                cpu += count * size.cpu
                memory += round(count * size.memory_gb * 1024 * 1024)
        attributes = {
            "HYPERVISOR": "ec2",
            "PUBLIC_CLOUD": "YES",
            "PRIORITY": "-1",
            "HOSTNAME": host.name,
            "CPUSPEED": _CPUSPEED,
            "TOTALCPU": str(cpu),
            "TOTALMEMORY": str(memory),
            "FREECPU": str(cpu),
            "FREEMEMORY": str(memory),
            "USEDCPU": "0",
            "USEDMEMORY": "0",
            "DEFAULT_INSTANCE_TYPE": self._default_type(config, host),
            ATTRIBUTE: format_offers(static_offers(
                (kind for kind, count in limits.items() if count > 0),
                self._prices(config, host))),
        }
        return HostInfo(attributes=attributes, capacity=limits)

    async def close(self) -> None:
        await self.prices.close()


def _host_values(host: HostRef, read: Callable[[Mapping[str, str], ErrorFor],
                                               tuple[dict[str, T], list[str]]],
                 example: str) -> dict[str, T]:
    """``read`` applied to the host's own attributes (limits or prices).

    Raises:
        DriverError: a bad value, or a key naming no known type.
    """
    where = f"host {host.name}"
    try:
        found, unknown = read(host.attributes,
                              lambda key, problem: ConfigError(where, f"{key}: {problem}"))
    except ConfigError as exc:
        raise DriverError(exc.message) from None
    if unknown:
        raise DriverError(f"{where}: {unknown[0]} names no known instance type "
                          f"(e.g. {example})")
    return found

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
* ``DEFAULT_INSTANCE_TYPE``: the type of VMs whose EC2 section names none.

The file is the driver's argument (``im_ec2/im_ec2.conf``, relative to
``etc/``), re-read when it changes. A host's own template attributes override
it for that site: ``SMALL_INSTANCES``, ``LARGE_INSTANCES``,
``EXTRALARGE_INSTANCES``, ``INSTANCES_<TYPE>`` and
``EC2_DEFAULT_INSTANCE_TYPE`` (``onehost update``).
"""

from __future__ import annotations

from cloudburst.drivers.base import DriverContext, HostInfo, HostRef, InformationDriver
from cloudburst.drivers.config_files import ParsedFiles
from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.defaults_file import load_defaults
from cloudburst.drivers.ec2.im_config import ImConfig, is_limit_key, limits_from, load_im_config
from cloudburst.drivers.ec2.launch import normalize
from cloudburst.errors import ConfigError, DriverError

_CPUSPEED = "1000"


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

    async def monitor(self, host: HostRef) -> HostInfo:
        config = self._config()
        limits = dict(config.limits)
        overrides = {key: value for key, value in host.attributes.items() if is_limit_key(key)}
        if overrides:
            where = f"host {host.name}"
            try:
                extra, unknown = limits_from(
                    overrides, lambda key, problem: ConfigError(where, f"{key}: {problem}"))
            except ConfigError as exc:
                raise DriverError(exc.message) from None
            if unknown:
                raise DriverError(f"host {host.name}: {unknown[0]} names no known instance "
                                  "type (e.g. INSTANCES_T3_MICRO=2)")
            limits.update(extra)
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
        }
        return HostInfo(attributes=attributes, capacity=limits)

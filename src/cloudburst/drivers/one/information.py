"""``one_im_one``: a partner cloud's capacity, as the host that stands for it.

Each monitoring makes two calls, in parallel: ``one.hostpool.info`` (the
partner's own report) and ``one.vmpool.info`` (what our VMs use there). The
capacity offered to us is what the partner's usable hosts (monitored, not
themselves cloud sites) have free plus what our VMs already hold there, capped
by the quota of the rc file (``TOTALCPU``, ``TOTALMEMORY``): the smaller wins.
A partner account not allowed to list hosts is sized by the quota alone.

Reported: ``HYPERVISOR=one``, ``PUBLIC_CLOUD=YES``, ``TOTALCPU``/``TOTALMEMORY``,
``USEDCPU``/``USEDMEMORY`` (our VMs there), ``FREECPU``/``FREEMEMORY``,
``PARTNER_ENDPOINT`` (without credentials), ``PARTNER_HOSTS`` (usable partner
hosts), ``PARTNER_VMS`` (our VMs there) and ``CAPACITY_LIMIT`` (``quota`` or
``partner``: which one sized the host). A partner that does not answer fails
the monitoring, which puts the host in ``ERROR`` until it answers again.
"""

from __future__ import annotations

import asyncio

from cloudburst.drivers.base import DriverContext, HostInfo, HostRef, InformationDriver
from cloudburst.drivers.one.client import PartnerClient
from cloudburst.drivers.one.config import ConfigCache, rc_path
from cloudburst.drivers.one.documents import RemoteHost
from cloudburst.drivers.one.partner_vms import CLOUD_TYPE
from cloudburst.errors import DriverAuthError
from cloudburst.model.states import HostState, VmState

#: Partner host states whose capacity counts.
_USABLE_HOSTS = frozenset({HostState.MONITORED, HostState.MONITORING_MONITORED})
#: Partner VM states that hold capacity on a partner host.
_HOLDING = frozenset({VmState.ACTIVE, VmState.POWEROFF})


class OneInformationDriver(InformationDriver):
    """Reports a partner cloud's capacity (see the module docstring)."""

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._configs = ConfigCache(rc_path(context))
        self._client = PartnerClient(2, context.name)

    async def monitor(self, host: HostRef) -> HostInfo:
        config = self._configs.get()
        hosts_result, vms = await asyncio.gather(
            self._client.host_pool(config), self._client.vm_pool(config),
            return_exceptions=True)
        if isinstance(vms, BaseException):
            raise vms
        hosts: list[RemoteHost] | None
        if isinstance(hosts_result, DriverAuthError) and config.total_cpu is not None \
                and config.total_memory is not None:
            hosts = None  # not allowed to see hosts: the quota alone sizes the site
        elif isinstance(hosts_result, BaseException):
            raise hosts_result
        else:
            hosts = hosts_result
        mine = [vm for vm in vms if vm.origin_of(self.context.install_id) is not None
                and vm.host_tag in ("", str(host.id))]
        used_cpu = round(sum(vm.cpu for vm in mine if vm.state in _HOLDING) * 100)
        used_mem = sum(vm.memory_mb for vm in mine if vm.state in _HOLDING) * 1024
        attributes = {
            "HYPERVISOR": CLOUD_TYPE,
            "PUBLIC_CLOUD": "YES",
            "PARTNER_ENDPOINT": config.shown_endpoint,
            "PARTNER_VMS": str(len(mine)),
        }
        total_cpu, total_mem, limit = self._capacity(config.total_cpu, config.total_memory,
                                                     hosts, used_cpu, used_mem, attributes)
        attributes.update({
            "TOTALCPU": str(total_cpu),
            "TOTALMEMORY": str(total_mem),
            "USEDCPU": str(used_cpu),
            "USEDMEMORY": str(used_mem),
            "FREECPU": str(max(0, total_cpu - used_cpu)),
            "FREEMEMORY": str(max(0, total_mem - used_mem)),
            "CAPACITY_LIMIT": limit,
        })
        return HostInfo(attributes=attributes)

    @staticmethod
    def _capacity(quota_cpu: int | None, quota_mem: int | None,
                  hosts: list[RemoteHost] | None, used_cpu: int, used_mem: int,
                  attributes: dict[str, str]) -> tuple[int, int, str]:
        """Total CPU and memory offered to us, and which limit set them."""
        if hosts is None:
            assert quota_cpu is not None and quota_mem is not None
            attributes["PARTNER_HOSTS"] = "unknown (the account may not list hosts)"
            return quota_cpu, quota_mem, "quota"
        usable = [h for h in hosts if h.state in _USABLE_HOSTS and not h.public_cloud]
        attributes["PARTNER_HOSTS"] = str(len(usable))
        partner_cpu = sum(max(0, h.max_cpu - h.cpu_usage) for h in usable) + used_cpu
        partner_mem = sum(max(0, h.max_mem - h.mem_usage) for h in usable) + used_mem
        cpu = partner_cpu if quota_cpu is None else min(quota_cpu, partner_cpu)
        mem = partner_mem if quota_mem is None else min(quota_mem, partner_mem)
        quota_wins = (quota_cpu is not None and quota_cpu <= partner_cpu) or (
            quota_mem is not None and quota_mem <= partner_mem)
        return cpu, mem, "quota" if quota_wins else "partner"

    async def close(self) -> None:
        self._client.close()


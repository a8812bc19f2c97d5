"""``one_im_one``: a partner cloud's capacity, as the host that stands for it.

Each monitoring makes two calls, in parallel: ``one.hostpool.info`` (the
partner's own report) and ``one.vmpool.infoextended`` (what our VMs use
there, told by their tags). The capacity offered to us is what the partner's
usable hosts (monitored, not themselves cloud sites) have free plus what our
VMs already hold there, capped by the rc file's ``TOTALCPU``/``TOTALMEMORY``:
the smaller wins.

An ordinary (non-oneadmin) account sees no hosts: a real oned answers it an
empty host pool (and some servers refuse the call). The site is then sized
by the account itself: a third call, ``one.user.info``, gives its VM quotas
and usage; what the quotas leave it plus what our VMs hold there is offered,
again capped by the rc file. An account limited by neither a quota nor the
rc file cannot be sized: the monitoring fails with a message saying to set
``TOTALCPU`` and ``TOTALMEMORY``.

Reported: ``HYPERVISOR=one``, ``PUBLIC_CLOUD=YES``, ``TOTALCPU``/``TOTALMEMORY``,
``USEDCPU``/``USEDMEMORY`` (our VMs there), ``FREECPU``/``FREEMEMORY``,
``PARTNER_ENDPOINT`` (without credentials), ``PARTNER_HOSTS`` (usable partner
hosts, or why they are not known), ``PARTNER_VMS`` (our VMs there) and
``CAPACITY_LIMIT`` (``quota``: the rc file; ``account``: the account's quotas;
``partner``: the partner's hosts). A partner that does not answer fails the
monitoring, which puts the host in ``ERROR`` until it answers again.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from cloudburst.drivers.base import DriverContext, HostInfo, HostRef, InformationDriver
from cloudburst.drivers.one.client import PartnerClient
from cloudburst.drivers.one.config import ConfigCache, PartnerConfig, rc_path
from cloudburst.drivers.one.documents import RemoteHost
from cloudburst.drivers.one.partner_vms import CLOUD_TYPE
from cloudburst.errors import DriverAuthError, DriverError
from cloudburst.model.states import HostState, VmState

#: Partner host states whose capacity counts.
_USABLE_HOSTS = frozenset({HostState.MONITORED, HostState.MONITORING_MONITORED})
#: Partner VM states that hold capacity on a partner host.
_HOLDING = frozenset({VmState.ACTIVE, VmState.POWEROFF})


@dataclass(frozen=True, slots=True)
class _Size:
    """A capacity: CPU in percent of a core, memory in KB, and what set it."""

    cpu: int
    memory: int
    limit: str


class OneInformationDriver(InformationDriver):
    """Reports a partner cloud's capacity (see the module docstring)."""

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self._configs = ConfigCache(rc_path(context))
        self._client = PartnerClient(3, context.name, context.cloud_api)

    async def monitor(self, host: HostRef) -> HostInfo:
        config = self._configs.get()
        hosts_result, vms = await asyncio.gather(
            self._client.host_pool(config), self._client.vm_pool(config),
            return_exceptions=True)
        if isinstance(vms, BaseException):
            raise vms
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
        if isinstance(hosts_result, DriverAuthError) or (
                isinstance(hosts_result, list) and not hosts_result):
            attributes["PARTNER_HOSTS"] = "unknown (the account may not list hosts)"
            size = await self._account_size(config, used_cpu, used_mem)
        elif isinstance(hosts_result, BaseException):
            raise hosts_result
        else:
            size = self._partner_size(config, hosts_result, used_cpu, used_mem, attributes)
        attributes.update({
            "TOTALCPU": str(size.cpu),
            "TOTALMEMORY": str(size.memory),
            "USEDCPU": str(used_cpu),
            "USEDMEMORY": str(used_mem),
            "FREECPU": str(max(0, size.cpu - used_cpu)),
            "FREEMEMORY": str(max(0, size.memory - used_mem)),
            "CAPACITY_LIMIT": size.limit,
        })
        return HostInfo(attributes=attributes)

    async def _account_size(self, config: PartnerConfig, used_cpu: int,
                            used_mem: int) -> _Size:
        """The site sized by the account's quotas (and the rc file's cap).

        Raises:
            DriverError: neither a quota nor the rc file limits the account,
                or the account could not be read and the rc file sets no cap.
        """
        capped = config.total_cpu is not None and config.total_memory is not None
        try:
            room = await self._client.account_room(config)
        except DriverError:
            if not capped:
                raise
            room = None
        account_cpu = account_mem = None
        if room is not None and room.cpu is not None:
            account_cpu = used_cpu + max(0, round(room.cpu * 100))
        if room is not None and room.memory_mb is not None:
            account_mem = used_mem + max(0, round(room.memory_mb * 1024))
        cpu = _smaller(config.total_cpu, account_cpu)
        memory = _smaller(config.total_memory, account_mem)
        if cpu is None or memory is None:
            raise DriverError(
                f"{config.label}: the account sees no hosts and no VM quota limits its "
                f"{'CPU' if cpu is None else 'memory'}: set TOTALCPU and TOTALMEMORY in "
                f"{config.path}")
        account_wins = (account_cpu is not None and account_cpu == cpu
                        and cpu != config.total_cpu) or (
            account_mem is not None and account_mem == memory and memory != config.total_memory)
        return _Size(cpu, memory, "account" if account_wins else "quota")

    @staticmethod
    def _partner_size(config: PartnerConfig, hosts: list[RemoteHost], used_cpu: int,
                      used_mem: int, attributes: dict[str, str]) -> _Size:
        """The site sized by the partner's usable hosts (and the rc file's cap)."""
        usable = [h for h in hosts if h.state in _USABLE_HOSTS and not h.public_cloud]
        attributes["PARTNER_HOSTS"] = str(len(usable))
        partner_cpu = sum(max(0, h.max_cpu - h.cpu_usage) for h in usable) + used_cpu
        partner_mem = sum(max(0, h.max_mem - h.mem_usage) for h in usable) + used_mem
        quota_cpu, quota_mem = config.total_cpu, config.total_memory
        quota_wins = (quota_cpu is not None and quota_cpu <= partner_cpu) or (
            quota_mem is not None and quota_mem <= partner_mem)
        return _Size(_smaller(quota_cpu, partner_cpu) or 0, _smaller(quota_mem, partner_mem) or 0,
                     "quota" if quota_wins else "partner")

    async def close(self) -> None:
        self._client.close()


def _smaller(first: int | None, second: int | None) -> int | None:
    """The smaller of two limits, ``None`` meaning "no limit"."""
    if first is None:
        return second
    return first if second is None else min(first, second)

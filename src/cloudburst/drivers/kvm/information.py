"""``one_im_kvm``: a kvm host's capacity, usage and running domains, from libvirt.

Reported (OpenNebula's names): ``HYPERVISOR=kvm``, ``HOSTNAME``, ``ARCH``,
``MODELNAME`` (CPU vendor and model), ``CPUSPEED`` (MHz), ``TOTALCPU``
(cores x 100, less ``RESERVED_CPU``), ``USEDCPU``/``FREECPU`` (from the
host's CPU time since the previous monitoring), ``TOTALMEMORY`` (KB, less
``RESERVED_MEM``), ``USEDMEMORY``/``FREEMEMORY`` (free counts buffers and
cache), ``LIBVIRT_VERSION``, ``HYPERVISOR_VERSION``, ``EMULATION`` (``kvm``
or ``qemu``: the domain type new VMs get), and a ``VM`` entry per running
domain: ours (named ``one-<id>`` without foreign metadata) with their VM id,
any other as a "wild" VM (``ID=-1``).
"""

from __future__ import annotations

import threading
import time
from typing import Any, Final

from cloudburst.drivers.base import (
    DriverContext,
    HostInfo,
    HostRef,
    InformationDriver,
    ReportedVm,
)
from cloudburst.drivers.kvm.connection import LibvirtPool, error_details
from cloudburst.drivers.kvm.domain_xml import vm_id_of
from cloudburst.drivers.kvm.domains import (
    CpuMeter,
    DomainSample,
    poll_result,
    read_identity,
    sample_domains,
)
from cloudburst.drivers.kvm.host_caps import CapabilitiesError, choose_platform, cpu_model
from cloudburst.drivers.kvm.settings import HostSettings

#: Seconds between the two CPU samples of a host's first monitoring.
FIRST_SAMPLE_GAP: Final = 0.2

_NO_SUPPORT_CODES: Final = frozenset({3, 84})

_CpuTimes = tuple[int, int]  # (busy ns, total ns)


def version_text(number: int) -> str:
    """libvirt's packed version (``major*1e6 + minor*1e3 + release``) as ``"9.0.0"``."""
    return f"{number // 1_000_000}.{number // 1000 % 1000}.{number % 1000}"


def _cpu_times(connection: Any) -> _CpuTimes | None:
    try:
        stats = connection.getCPUStats(-1, 0)
    except Exception as exc:
        if error_details(exc)[0] in _NO_SUPPORT_CODES:
            return None
        raise
    idle = int(stats.get("idle", 0)) + int(stats.get("iowait", 0))
    busy = int(stats.get("user", 0)) + int(stats.get("kernel", 0))
    return busy, busy + idle


def _memory_kb(connection: Any, info: list[Any]) -> tuple[int, int]:
    """``(total, free)`` in KB; free includes buffers and page cache."""
    try:
        stats = connection.getMemoryStats(-1, 0)
    except Exception as exc:
        if error_details(exc)[0] not in _NO_SUPPORT_CODES:
            raise
        total = int(info[1]) * 1024
        return total, min(total, int(connection.getFreeMemory()) // 1024)
    total = int(stats.get("total", 0))
    free = sum(int(stats.get(key, 0)) for key in ("free", "buffers", "cached"))
    return total, min(total, free)


class KvmInformationDriver(InformationDriver):
    """Monitors kvm hosts through libvirt (see the module docs)."""

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.pool = LibvirtPool(context.name, context.options.threads)
        self._cpu = CpuMeter()
        self._host_cpu: dict[str, _CpuTimes] = {}
        self._lock = threading.Lock()

    async def monitor(self, host: HostRef) -> HostInfo:
        settings = HostSettings.of(host)
        install_id = self.context.install_id

        def work(connection: Any) -> tuple[dict[str, str], list[ReportedVm]]:
            attributes = self._host_figures(connection, settings)
            samples = sample_domains(connection, active_only=True)
            cpu = self._cpu.measure(settings.uri, samples)
            vms = [ReportedVm(_owner(sample, install_id), sample.name,
                              poll_result(sample, cpu.get(sample.uuid))) for sample in samples]
            return attributes, vms

        attributes, vms = await self.pool.call(settings.uri, f"monitor {host.name}", work)
        return HostInfo(attributes, tuple(vms))

    def _host_figures(self, connection: Any, settings: HostSettings) -> dict[str, str]:
        info = connection.getInfo()  # [arch, memory MB, cpus, MHz, nodes, sockets, cores, threads]
        cpus = int(info[2])
        capabilities = self.pool.capabilities(settings.uri, connection)
        total_memory, free_memory = _memory_kb(connection, info)
        used_memory = total_memory - free_memory
        used_cpu = round(self._busy_fraction(connection, settings.uri) * cpus * 100)
        total_cpu = cpus * 100 - settings.reserved_cpu
        max_memory = total_memory - settings.reserved_memory
        try:
            emulation = choose_platform(capabilities,
                                        domain_type=settings.domain_type).domain_type
        except CapabilitiesError as exc:
            emulation = f"none ({exc})"
        figures = {
            "HYPERVISOR": "kvm",
            "HOSTNAME": str(connection.getHostname()),
            "ARCH": str(info[0]),
            "MODELNAME": cpu_model(capabilities) or str(info[0]),
            "CPUSPEED": str(int(info[3])),
            "TOTALCPU": str(total_cpu),
            "USEDCPU": str(used_cpu),
            "FREECPU": str(max(0, total_cpu - used_cpu)),
            "TOTALMEMORY": str(max_memory),
            "USEDMEMORY": str(used_memory),
            "FREEMEMORY": str(max(0, max_memory - used_memory)),
            "LIBVIRT_VERSION": version_text(int(connection.getLibVersion())),
            "HYPERVISOR_VERSION": version_text(int(connection.getVersion())),
            "EMULATION": emulation,
        }
        return figures

    def _busy_fraction(self, connection: Any, uri: str) -> float:
        """Share of the host's CPU time spent busy since the previous monitoring.

        The first monitoring of a URI takes two samples :data:`FIRST_SAMPLE_GAP` apart.
        """
        current = _cpu_times(connection)
        if current is None:
            return 0.0
        with self._lock:
            previous = self._host_cpu.get(uri)
        if previous is None:
            time.sleep(FIRST_SAMPLE_GAP)
            previous, current = current, _cpu_times(connection) or current
        with self._lock:
            self._host_cpu[uri] = current
        busy, total = current[0] - previous[0], current[1] - previous[1]
        if total <= 0 or busy < 0:
            return 0.0
        return min(1.0, busy / total)

    async def close(self) -> None:
        await self.pool.close()


def _owner(sample: DomainSample, install_id: str) -> int:
    """The VM id a running domain belongs to, or -1 for a wild one."""
    vm_id = vm_id_of(sample.name)
    if vm_id is None:
        return -1
    found = read_identity(sample.handle)
    if found is not None and found.install_id != install_id:
        return -1  # another installation's one-<id>
    return vm_id

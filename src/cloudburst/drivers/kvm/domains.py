"""Observing many domains at once, and turning what was seen into poll results.

:func:`sample_domains` reads every domain of a host in **one** libvirt call
(``virConnectGetAllDomainStats``: state, CPU time, balloon, interfaces,
block devices); hypervisors without it are listed and asked one by one.
Runs on a pool thread.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from xml.etree import ElementTree

from cloudburst.drivers.base import PollResult, PollState
from cloudburst.drivers.kvm.connection import error_details, is_libvirt_error, libvirt_module
from cloudburst.drivers.kvm.domain_xml import (
    METADATA_NS,
    METADATA_PREFIX,
    Identity,
    identity_element,
    parse_identity,
)
from cloudburst.drivers.kvm.states import poll_state

_NO_SUPPORT_CODES: Final = frozenset({3, 84})
_NO_DOMAIN: Final = 42
_NO_DOMAIN_METADATA: Final = 80


@dataclass(frozen=True, slots=True)
class DomainSample:
    """One domain as seen by one sampling.

    Counters are ``None`` when the hypervisor did not report them.
    """

    name: str
    uuid: str
    state: int
    cpu_time: int | None = None
    memory_kb: int | None = None
    net_rx: int | None = None
    net_tx: int | None = None
    disk_read: int | None = None
    disk_write: int | None = None
    #: The ``virDomain`` object, for further calls (metadata).
    handle: Any = field(default=None, compare=False, repr=False)

    @property
    def active(self) -> bool:
        return poll_state(self.state) is not PollState.GONE


def _total(stats: Mapping[str, Any], group: str, counter: str) -> int | None:
    count = stats.get(f"{group}.count")
    if count is None:
        return None
    values = [stats.get(f"{group}.{index}.{counter}") for index in range(int(count))]
    known = [int(value) for value in values if value is not None]
    return sum(known) if known else None


def _optional(value: Any) -> int | None:
    return None if value is None else int(value)


def _from_stats(domain: Any, stats: Mapping[str, Any]) -> DomainSample:
    return DomainSample(
        name=str(domain.name()), uuid=str(domain.UUIDString()),
        state=int(stats.get("state.state", 0)),
        cpu_time=_optional(stats.get("cpu.time")),
        memory_kb=_optional(stats.get("balloon.current")),
        net_rx=_total(stats, "net", "rx.bytes"), net_tx=_total(stats, "net", "tx.bytes"),
        disk_read=_total(stats, "block", "rd.bytes"),
        disk_write=_total(stats, "block", "wr.bytes"),
        handle=domain,
    )


def _from_info(domain: Any) -> DomainSample | None:
    try:
        state, _max_memory, memory, _vcpus, cpu_time = domain.info()
    except Exception as exc:
        if error_details(exc)[0] == _NO_DOMAIN:
            return None  # it went away between listing and asking
        raise
    return DomainSample(name=str(domain.name()), uuid=str(domain.UUIDString()),
                        state=int(state), cpu_time=int(cpu_time), memory_kb=int(memory),
                        handle=domain)


def sample_domains(connection: Any, *, active_only: bool = False) -> list[DomainSample]:
    """Every domain of the host (only running ones when ``active_only``)."""
    libvirt = libvirt_module()
    groups = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL
              | libvirt.VIR_DOMAIN_STATS_BALLOON | libvirt.VIR_DOMAIN_STATS_INTERFACE
              | libvirt.VIR_DOMAIN_STATS_BLOCK)
    flags = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE if active_only else 0
    try:
        records = connection.getAllDomainStats(groups, flags)
    except Exception as exc:
        if not is_libvirt_error(exc) or error_details(exc)[0] not in _NO_SUPPORT_CODES:
            raise
    else:
        return [_from_stats(domain, stats) for domain, stats in records]
    list_flags = libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE if active_only else 0
    samples = (_from_info(domain) for domain in connection.listAllDomains(list_flags))
    return [sample for sample in samples if sample is not None]


def read_identity(domain: Any) -> Identity | None:
    """The identity our metadata gives ``domain``; ``None`` when it has none (or is gone)."""
    libvirt = libvirt_module()
    try:
        text = domain.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS, 0)
    except Exception as exc:
        if error_details(exc)[0] in (_NO_DOMAIN_METADATA, _NO_DOMAIN):
            return None
        raise
    return parse_identity(str(text))


def write_identity(domain: Any, identity: Identity) -> None:
    """Record ``identity`` in ``domain``'s metadata (running guest and definition)."""
    libvirt = libvirt_module()
    flags = libvirt.VIR_DOMAIN_AFFECT_CONFIG if domain.isPersistent() else 0
    if domain.isActive():
        flags |= libvirt.VIR_DOMAIN_AFFECT_LIVE
    domain.setMetadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT,
                       ElementTree.tostring(identity_element(identity, namespaced=False),
                                           encoding="unicode"),
                       METADATA_PREFIX, METADATA_NS, flags)


def lookup(connection: Any, deploy_id: str) -> Any | None:
    """The domain named (or with the UUID) ``deploy_id``; ``None`` when there is none."""
    try:
        if _is_uuid(deploy_id):
            return connection.lookupByUUIDString(deploy_id)
        return connection.lookupByName(deploy_id)
    except Exception as exc:
        if error_details(exc)[0] == _NO_DOMAIN:
            return None
        raise


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


class CpuMeter:
    """CPU use of domains between two samplings, in percent of one core."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], tuple[int, float]] = {}
        self._lock = threading.Lock()

    def measure(self, uri: str, samples: Iterable[DomainSample],
                now: float | None = None) -> dict[str, float]:
        """CPU percent per domain UUID of ``uri`` since its previous sampling.

        Domains seen for the first time (or without CPU time) get no figure;
        domains no longer seen are forgotten.
        """
        now = time.monotonic() if now is None else now
        result: dict[str, float] = {}
        with self._lock:
            seen: set[tuple[str, str]] = set()
            for sample in samples:
                if sample.cpu_time is None or not sample.active:
                    continue
                key = (uri, sample.uuid)
                seen.add(key)
                previous = self._last.get(key)
                self._last[key] = (sample.cpu_time, now)
                if previous is not None and now > previous[1]:
                    used = max(0, sample.cpu_time - previous[0]) / 1e9
                    result[sample.uuid] = round(100.0 * used / (now - previous[1]), 2)
            for key in [key for key in self._last if key[0] == uri and key not in seen]:
                del self._last[key]
        return result


def poll_result(sample: DomainSample, cpu_percent: float | None = None) -> PollResult:
    """What a poll reports for ``sample``: its state, and for a live guest its usage.

    ``info`` keys are OpenNebula's: ``CPU`` (percent of a core), ``MEMORY``
    (KB), ``NETRX``/``NETTX`` and ``DISKRDBYTES``/``DISKWRBYTES`` (bytes).
    """
    state = poll_state(sample.state)
    info: dict[str, str] = {}
    if state is not PollState.GONE:
        for key, value in (("MEMORY", sample.memory_kb), ("NETRX", sample.net_rx),
                           ("NETTX", sample.net_tx), ("DISKRDBYTES", sample.disk_read),
                           ("DISKWRBYTES", sample.disk_write)):
            if value is not None:
                info[key] = str(value)
        if cpu_percent is not None:
            info["CPU"] = f"{cpu_percent:g}"
    return PollResult(state, info)

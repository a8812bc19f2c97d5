"""Per-host settings of the kvm driver, read from the host's template.

See :mod:`cloudburst.drivers.kvm` for the attributes. A wrong value fails the
action on that host with a message naming the attribute; other hosts are not
affected.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from cloudburst.drivers.base import HostRef
from cloudburst.drivers.kvm.connection import is_remote, resolve_uri
from cloudburst.errors import DriverError

#: Where cold migration writes a guest's memory when the source host has no
#: ``CHECKPOINT_DIR`` (sticky and writable by every hypervisor user).
MIGRATE_DIR: Final = "/var/tmp"
#: The storage pool a remote hypervisor's context CD-ROMs go to without ``CONTEXT_POOL``.
DEFAULT_CONTEXT_POOL: Final = "default"

#: Seconds between the ACPI power-off request and the hard stop, by default.
DEFAULT_SHUTDOWN_TIMEOUT: Final = 90.0

_DOMAIN_TYPES: Final = frozenset({"kvm", "qemu"})


@dataclass(frozen=True, slots=True)
class HostSettings:
    """What the driver needs to know about one host.

    Attributes:
        uri: the libvirt URI.
        domain_type: forced domain type, or ``None`` to choose automatically.
        console_log_dir: where serial consoles are logged on the host, if anywhere.
        shutdown_timeout: seconds before a graceful shutdown becomes a destroy.
        reserved_cpu: percent of a core kept from the scheduler.
        reserved_memory: KB kept from the scheduler.
        context_dir: where context CD-ROMs are written (``None``: each VM's directory).
        context_pool: the storage pool context CD-ROMs are uploaded into (``CONTEXT_POOL``;
            ``default`` for a hypervisor on another machine; ``None``: written as files).
        checkpoint_dir: where stop and cold migration write guests' memory
            (``None``: the core's checkpoint path for stop, :data:`MIGRATE_DIR` for
            cold migration).
    """

    uri: str
    domain_type: str | None = None
    console_log_dir: str | None = None
    shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
    reserved_cpu: int = 0
    reserved_memory: int = 0
    context_dir: str | None = None
    checkpoint_dir: str | None = None
    context_pool: str | None = None

    @classmethod
    def of(cls, host: HostRef, default_shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT
           ) -> HostSettings:
        """Read ``host``'s attributes.

        Raises:
            DriverError: an attribute has a wrong value.
        """
        attributes = host.attributes
        domain_type = (attributes.get("LIBVIRT_DOMAIN_TYPE") or "").strip().lower() or None
        if domain_type is not None and domain_type not in _DOMAIN_TYPES:
            raise DriverError(f"host {host.name}: LIBVIRT_DOMAIN_TYPE must be kvm or qemu, "
                              f"got {domain_type!r}")
        console = _directory(host, "CONSOLE_LOG_DIR")
        context_dir = _directory(host, "CONTEXT_DIR")
        timeout = default_shutdown_timeout
        if (attributes.get("SHUTDOWN_TIMEOUT") or "").strip():
            timeout = _seconds(attributes["SHUTDOWN_TIMEOUT"], f"host {host.name}: "
                                                               "SHUTDOWN_TIMEOUT")
        uri = resolve_uri(host)
        pool = (attributes.get("CONTEXT_POOL") or "").strip() or None
        if pool is None and is_remote(uri):
            pool = DEFAULT_CONTEXT_POOL
        return cls(
            uri=uri, domain_type=domain_type, console_log_dir=console, context_pool=pool,
            shutdown_timeout=timeout,
            reserved_cpu=_whole(host, "RESERVED_CPU"), reserved_memory=_whole(host, "RESERVED_MEM"),
            context_dir=context_dir, checkpoint_dir=_directory(host, "CHECKPOINT_DIR"),
        )

    def console_log(self, name: str) -> str | None:
        """The console log file of domain ``name``, if consoles are logged."""
        if self.console_log_dir is None:
            return None
        return posixpath.join(self.console_log_dir, f"{name}.log")


def _directory(host: HostRef, name: str) -> str | None:
    """Attribute ``name`` of ``host``: an absolute path, or ``None`` when unset."""
    value = (host.attributes.get(name) or "").strip() or None
    if value is not None and not posixpath.isabs(value):
        raise DriverError(f"host {host.name}: {name} must be an absolute path, got {value!r}")
    return value


def _seconds(text: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise DriverError(f"{what} must be a number of seconds >= 0, got {text!r}")
    return value


def _whole(host: HostRef, name: str) -> int:
    text = (host.attributes.get(name) or "").strip()
    if not text:
        return 0
    try:
        return int(float(text))
    except ValueError:
        raise DriverError(f"host {host.name}: {name} must be a number, got {text!r}") from None


def shutdown_timeout_argument(arguments: Sequence[str]) -> float:
    """``--shutdown-timeout N`` (or ``=N``) from a VM driver's ``ARGUMENTS``.

    Other words (OpenNebula's trailing ``kvm``, for one) are ignored.

    Raises:
        ValueError: the option has no value or a wrong one (the dispatcher
            reports it as a configuration error).
    """
    timeout = DEFAULT_SHUTDOWN_TIMEOUT
    index = 0
    while index < len(arguments):
        word = arguments[index]
        if word == "--shutdown-timeout":
            if index + 1 >= len(arguments):
                raise ValueError("option --shutdown-timeout needs a value")
            index += 1
            word = f"--shutdown-timeout={arguments[index]}"
        if word.startswith("--shutdown-timeout="):
            try:
                timeout = _seconds(word.partition("=")[2], "option --shutdown-timeout")
            except DriverError as exc:
                raise ValueError(exc.message) from None
        index += 1
    return timeout

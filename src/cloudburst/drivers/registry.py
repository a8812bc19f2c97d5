"""Which implementation serves a driver section of ``oned.conf``.

An ``IM_MAD`` or ``VM_MAD`` section names its implementation with
``EXECUTABLE``. The built-in names are OpenNebula's (``one_vmm_sh``,
``one_im_dummy``, ...); each maps to a ``"module:Class"`` string that is
imported only when a driver is built, so a missing optional SDK (boto3) only
matters to the sections that use it. Any other ``EXECUTABLE`` of the form
``"package.module:Class"`` names a third-party driver.

``ARGUMENTS`` carries the dispatcher settings (``-t``, ``-r``, ``-w``) mixed
with driver-specific words; :func:`parse_driver_arguments` separates them.
"""

from __future__ import annotations

import importlib
import math
import shlex
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Final

from cloudburst.drivers.base import DriverContext, DriverOptions, InformationDriver, VmDriver

_DUMMY: Final = "cloudburst.drivers.dummy"
_SCRIPT: Final = "cloudburst.drivers.script"

#: ``IM_MAD`` executables. ``ssh``/``exec`` run locally too: cloudburst has no
#: remote hypervisor hosts to copy probes to.
INFORMATION_DRIVERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "one_im_dummy": f"{_DUMMY}:DummyInformationDriver",
        "one_im_sh": f"{_SCRIPT}:ScriptInformationDriver",
        "one_im_exec": f"{_SCRIPT}:ScriptInformationDriver",
        "one_im_ssh": f"{_SCRIPT}:ScriptInformationDriver",
        "one_im_ec2": "cloudburst.drivers.ec2.information:Ec2InformationDriver",
        "one_im_kvm": "cloudburst.drivers.kvm.information:KvmInformationDriver",
        "kvm": "cloudburst.drivers.kvm.information:KvmInformationDriver",
        "one_im_one": "cloudburst.drivers.one.information:OneInformationDriver",
    }
)

#: ``VM_MAD`` executables; the script names run locally as ``one_vmm_sh`` does.
VM_DRIVERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        "one_vmm_dummy": f"{_DUMMY}:DummyVmDriver",
        "one_vmm_sh": f"{_SCRIPT}:ScriptVmDriver",
        "one_vmm_exec": f"{_SCRIPT}:ScriptVmDriver",
        "one_vmm_ssh": f"{_SCRIPT}:ScriptVmDriver",
        "one_vmm_ec2": "cloudburst.drivers.ec2.vm:Ec2VmDriver",
        "one_vmm_kvm": "cloudburst.drivers.kvm.vm:KvmVmDriver",
        "kvm": "cloudburst.drivers.kvm.vm:KvmVmDriver",
        "one_vmm_one": "cloudburst.drivers.one.vm:OneVmDriver",
    }
)


def _whole_number(flag: str, what: str, minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value: int | None = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise ValueError(
                f"option {flag} ({what}) must be a whole number >= {minimum}, got {text!r}"
            )
        return value

    return parse


def _seconds(text: str) -> float:
    try:
        value: float | None = float(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"option -w (timeout) must be a number of seconds > 0, got {text!r}")
    return value


_OPTION_PARSERS: Final[Mapping[str, Callable[[str], int | float]]] = MappingProxyType(
    {
        "-t": _whole_number("-t", "threads", 1),
        "-r": _whole_number("-r", "retries", 0),
        "-w": _seconds,
    }
)


def _options(settings: Mapping[str, int | float]) -> DriverOptions:
    defaults = DriverOptions()
    return DriverOptions(
        threads=int(settings.get("-t", defaults.threads)),
        retries=int(settings.get("-r", defaults.retries)),
        timeout=float(settings["-w"]) if "-w" in settings else defaults.timeout,
    )


def parse_driver_arguments(arguments: str) -> tuple[DriverOptions, tuple[str, ...]]:
    """Split a section's ``ARGUMENTS`` into dispatcher options and driver words.

    ``-t N`` (threads, at least 1), ``-r N`` (retries, at least 0) and ``-w N``
    (timeout in seconds, above 0) are taken from anywhere in the string; a later
    occurrence wins. Every other word, including other flags such as ``-u URL``
    or ``-p``, is returned in order.

    Raises:
        ValueError: unbalanced quotes, a missing value or a bad number; the
            message names the option and the value, for the config loader to
            prefix with the file and line.
    """
    try:
        words = shlex.split(arguments)
    except ValueError as exc:
        raise ValueError(f"ARGUMENTS cannot be split into words: {exc}") from exc
    settings: dict[str, int | float] = {}
    rest: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word not in _OPTION_PARSERS:
            rest.append(word)
        elif index + 1 < len(words):
            index += 1
            settings[word] = _OPTION_PARSERS[word](words[index])
        else:
            raise ValueError(f"option {word} needs a value")
        index += 1
    return _options(settings), tuple(rest)


def known_executables() -> Mapping[str, tuple[str, ...]]:
    """The built-in ``EXECUTABLE`` names, keyed by section (``IM_MAD``, ``VM_MAD``)."""
    return {
        "IM_MAD": tuple(sorted(INFORMATION_DRIVERS)),
        "VM_MAD": tuple(sorted(VM_DRIVERS)),
    }


def build_information_driver(context: DriverContext) -> InformationDriver:
    """Build the ``IM_MAD`` implementation that ``context.executable`` names.

    Raises:
        LookupError: unknown executable (the message lists the known ones), or
            its module or class cannot be imported.
        TypeError: the named object is not an :class:`InformationDriver` class.
    """
    cls = _driver_class(context.executable, "IM_MAD", INFORMATION_DRIVERS)
    if not issubclass(cls, InformationDriver):
        raise _wrong_kind(context.executable, "IM_MAD", cls, InformationDriver)
    return cls(context)


def build_vm_driver(context: DriverContext) -> VmDriver:
    """Build the ``VM_MAD`` implementation that ``context.executable`` names.

    Raises:
        LookupError: unknown executable (the message lists the known ones), or
            its module or class cannot be imported.
        TypeError: the named object is not a :class:`VmDriver` class.
    """
    cls = _driver_class(context.executable, "VM_MAD", VM_DRIVERS)
    if not issubclass(cls, VmDriver):
        raise _wrong_kind(context.executable, "VM_MAD", cls, VmDriver)
    return cls(context)


def _driver_class(executable: str, section: str, table: Mapping[str, str]) -> type:
    target = _target(executable, section, table)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise LookupError(
            f'{section} EXECUTABLE "{executable}": cannot import {module_name}: {exc}'
        ) from exc
    found = getattr(module, attribute, None)
    if found is None:
        raise LookupError(f'{section} EXECUTABLE "{executable}": {module_name} has no {attribute}')
    if not isinstance(found, type):
        raise TypeError(f'{section} EXECUTABLE "{executable}": {target} is not a class')
    return found


def _wrong_kind(executable: str, section: str, cls: type, base: type) -> TypeError:
    return TypeError(
        f'{section} EXECUTABLE "{executable}": {cls.__module__}:{cls.__qualname__} '
        f"is not a subclass of {base.__name__}"
    )


def _target(executable: str, section: str, table: Mapping[str, str]) -> str:
    # oned.conf may give the executable as a path (/usr/lib/one/mads/one_vmm_sh).
    name = PurePosixPath(executable).name
    if name in table:
        return table[name]
    module, _, attribute = executable.partition(":")
    if module and attribute:
        return executable
    known = ", ".join(sorted(table))
    raise LookupError(
        f'unknown {section} EXECUTABLE "{executable}"; known: {known}, '
        'or a "package.module:Class" path'
    )

"""A VM's devices as OpenNebula numbers and completes them: one rule for allocate and attach.

What oned 6.10 writes into a VM's TEMPLATE, learnt from the peer (cloudburst
has no datastores, images or virtual networks, so only what applies without
them):

* every ``DISK`` gets ``DISK_ID`` by position (0, 1, ...; a given one is
  replaced); a *volatile* disk (``TYPE`` ``fs`` or ``swap``, made empty on the
  host) also gets ``DEV_PREFIX`` (default ``sd``), ``TARGET`` (the prefix and
  the first free letter), ``DISK_TYPE = FILE`` and ``FORMAT`` (default ``raw``)
  with ``DRIVER`` equal to it. Other disks (a ``SOURCE`` on a kvm host) keep
  what was given: the driver places them (kvm: the next free ``hd`` letter);
* every ``NIC`` gets ``NIC_ID`` by position and ``NAME = NIC<id>`` unless
  named; a ``NIC_ALIAS`` continues the numbering, is named
  ``<parent>_ALIAS<id>`` and records ``ALIAS_ID`` (its rank under the parent)
  and ``PARENT_ID``; the parent lists its aliases in ``ALIAS_IDS``;
* ``CONTEXT`` gets ``DISK_ID`` (after the disks), ``TARGET`` (the CD-ROM's:
  the first free ``hd`` letter, after the disks a driver places itself) and,
  with ``NETWORK = YES``, the ``ETH<nic id>_*`` variables of each NIC and
  ``ETH<parent id>_ALIAS<alias id>_*`` of each alias (``MAC``, ``IP``, ``IP6``
  from the device, the rest empty: they come from virtual networks).

Not copied: oned's ``GRAPHICS`` ``PORT`` (5900 + the VM id when none is given).
cloudburst leaves the port to the host (libvirt picks a free one), so two
installations or other services on one host never collide on it.

A device hot-plugged later (:func:`attached`) gets the next id after the
highest in use and the same defaults, on a target no other disk holds.
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from typing import Final

from cloudburst.template import Template, Vector

__all__ = ["CDROM_PREFIX", "DEFAULT_DEVICE_PREFIX", "attached", "network_context", "next_id",
           "numbered"]

#: oned.conf's DEFAULT_DEVICE_PREFIX: a disk's bus when the template names none.
DEFAULT_DEVICE_PREFIX: Final = "sd"
#: The prefix of CD-ROMs (the context disk) and of disks a driver places itself.
CDROM_PREFIX: Final = "hd"
_VOLATILE: Final = frozenset({"fs", "swap"})
#: The context variables of each NIC (``ETH<id>_<name>``) when CONTEXT has NETWORK = YES.
_ETH_VARIABLES: Final = (
    "DNS", "EXTERNAL", "GATEWAY", "IP", "IP6", "IP6_GATEWAY", "IP6_METHOD", "IP6_METRIC",
    "IP6_PREFIX_LENGTH", "IP6_ULA", "MAC", "MASK", "METHOD", "METRIC", "MTU", "NETWORK",
    "SEARCH_DOMAIN", "VLAN_ID", "VROUTER_IP", "VROUTER_IP6", "VROUTER_MANAGEMENT")
#: The NIC attribute each ETH variable copies (the others need a virtual network).
_ETH_FROM_NIC: Final = {"MAC": "MAC", "IP": "IP", "IP6": "IP6"}


def numbered(template: Template) -> Template:
    """``template`` (a new VM's system template) with its devices numbered and completed
    as oned does at allocation (see the module docs)."""
    disks = template.vectors("DISK")
    nics = template.vectors("NIC")
    aliases = template.vectors("NIC_ALIAS")
    context = template.get_vector("CONTEXT")
    taken = {target for disk in disks if (target := disk.get("TARGET", ""))}
    if context is not None and context.get("TARGET"):
        taken.add(context["TARGET"])
    # Disks a driver places itself take the first hd letters, as the kvm driver gives them.
    taken.update(_placed_by_driver(disks, taken))
    if context is not None:
        context["DISK_ID"] = str(len(disks))
        if not context.get("TARGET"):
            context["TARGET"] = _free_target(taken, CDROM_PREFIX)
            taken.add(context["TARGET"])
    disks = [_disk(disk, disk_id, taken) for disk_id, disk in enumerate(disks)]
    nics = [_nic(nic, nic_id) for nic_id, nic in enumerate(nics)]
    aliases = [_alias(alias, len(nics) + rank, nics) for rank, alias in enumerate(aliases)]
    if context is not None and context.get("NETWORK", "").upper() == "YES":
        context.update(_network_variables(nics, aliases))
    replacements = {"DISK": iter(disks), "NIC": iter(nics), "NIC_ALIAS": iter(aliases)}
    result = Template()
    for name, value in template:
        if isinstance(value, dict) and name in replacements:
            result.append(name, next(replacements[name]))
        elif name == "CONTEXT" and isinstance(value, dict) and context is not None:
            result.append(name, context)
            context = None  # only the first CONTEXT is the VM's
        else:
            result.append(name, value)
    return result


def network_context(template: Template) -> dict[str, str]:
    """The ``ETH*`` context variables of the VM's numbered NICs and aliases (what a
    ``CONTEXT`` with ``NETWORK = YES`` gets; :func:`numbered` adds them at allocation)."""
    return _network_variables([nic for nic in template.vectors("NIC") if "NIC_ID" in nic],
                              template.vectors("NIC_ALIAS"))


def next_id(template: Template, section: str) -> int:
    """The id a ``DISK`` or ``NIC`` hot-plugged into the VM gets: one more than the
    highest in use (NIC aliases share the NICs' numbering)."""
    id_key = f"{section}_ID"
    sections = (section, "NIC_ALIAS") if section == "NIC" else (section,)
    ids = [int(vector[id_key]) for name in sections for vector in template.vectors(name)
           if vector.get(id_key, "").isdigit()]
    return max(ids, default=-1) + 1


def attached(template: Template, section: str, attributes: Vector, device_id: int) -> Vector:
    """The ``DISK`` or ``NIC`` ``attributes`` hot-plugged into the VM whose template is
    ``template``, as oned records it: id ``device_id`` and the defaults of allocation."""
    if section == "NIC":
        return _nic(attributes, device_id)
    taken = {target for disk in template.vectors("DISK") if (target := disk.get("TARGET"))}
    context = template.get_vector("CONTEXT")
    if context is not None and context.get("TARGET"):
        taken.add(context["TARGET"])
    return _disk(attributes, device_id, taken)


def _placed_by_driver(disks: Iterable[Vector], taken: set[str]) -> list[str]:
    """The targets a driver gives the non-volatile disks that name none."""
    placed: list[str] = []
    for disk in disks:
        if not disk.get("TARGET") and not _volatile(disk):
            placed.append(_free_target({*taken, *placed}, CDROM_PREFIX))
    return placed


def _volatile(disk: Vector) -> bool:
    return disk.get("TYPE", "").strip().lower() in _VOLATILE


def _disk(disk: Vector, disk_id: int, taken: set[str]) -> Vector:
    """``disk`` with its id and, when volatile, oned's defaults (``taken`` gains its target)."""
    completed = {**disk, "DISK_ID": str(disk_id)}
    if not _volatile(disk):
        return completed
    prefix = disk.get("DEV_PREFIX", "").strip() or DEFAULT_DEVICE_PREFIX
    target = disk.get("TARGET", "").strip() or _free_target(taken, prefix)
    taken.add(target)
    disk_format = disk.get("FORMAT", "").strip() or "raw"
    return {**completed, "DEV_PREFIX": prefix, "TARGET": target, "DISK_TYPE": "FILE",
            "FORMAT": disk_format, "DRIVER": disk_format}


def _nic(nic: Vector, nic_id: int) -> Vector:
    return {**nic, "NIC_ID": str(nic_id), "NAME": nic.get("NAME") or f"NIC{nic_id}"}


def _alias(alias: Vector, nic_id: int, nics: list[Vector]) -> Vector:
    """A NIC_ALIAS numbered after the NICs; its parent (named by ``PARENT``) lists it."""
    completed = {**alias, "NIC_ID": str(nic_id)}
    parent = next((nic for nic in nics if nic["NAME"] == alias.get("PARENT")), None)
    if parent is None:
        return completed
    ids = [item for item in parent.get("ALIAS_IDS", "").split(",") if item]
    completed.update({"NAME": alias.get("NAME") or f"{parent['NAME']}_ALIAS{nic_id}",
                      "ALIAS_ID": str(len(ids)), "PARENT_ID": parent["NIC_ID"]})
    parent["ALIAS_IDS"] = ",".join([*ids, str(nic_id)])
    return completed


def _network_variables(nics: Iterable[Vector], aliases: Iterable[Vector]) -> dict[str, str]:
    """``ETH<nic id>_*`` for each NIC, ``ETH<parent id>_ALIAS<alias id>_*`` for each alias."""
    prefixes = [(f"ETH{nic['NIC_ID']}", nic) for nic in nics]
    prefixes += [(f"ETH{alias['PARENT_ID']}_ALIAS{alias['ALIAS_ID']}", alias)
                 for alias in aliases if "PARENT_ID" in alias]
    return {f"{prefix}_{name}": device.get(_ETH_FROM_NIC.get(name, ""), "")
            for prefix, device in prefixes for name in _ETH_VARIABLES}


def _free_target(taken: Iterable[str], prefix: str) -> str:
    """``<prefix><letter>``, the first letter no disk holds (``z`` again when all do:
    the driver then refuses the VM, naming the disk)."""
    used = set(taken)
    for letter in string.ascii_lowercase:
        if prefix + letter not in used:
            return prefix + letter
    return prefix + "z"

"""Validate a submitted VM template and split it the way oned does.

``CPU`` (a number > 0, at most :data:`MAX_CPU`) and ``MEMORY`` (a whole
number of MB > 0, at most :data:`MAX_MEMORY`) are mandatory;
``REQUIREMENTS``/``RANK`` must parse. Well-known attributes go to
``TEMPLATE``, everything else (including ``EC2`` and ``PUBLIC_CLOUD``
sections) to ``USER_TEMPLATE`` (spec/pyone.md 6.3). ``$VARIABLE`` references
in ``CONTEXT`` must be well formed; :func:`expand_context` expands them once
the VM has its id (:mod:`cloudburst.template.variables`).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Final

from cloudburst.errors import ExpressionError, ValidationError
from cloudburst.model.records import SYSTEM_TEMPLATE_ATTRIBUTES, GroupRecord, UserRecord
from cloudburst.scheduler.demand import check_expressions
from cloudburst.template import Template
from cloudburst.template.limits import check_name
from cloudburst.template.variables import Scope, expand_vector, references

#: The sections ``one.vm.updateconf`` changes (oned's list less what needs its disks
#: and networks; its BACKUP_CONFIG goes to backups, which cloudburst does not keep).
CONF_SECTIONS: Final = ("OS", "FEATURES", "INPUT", "GRAPHICS", "VIDEO", "RAW", "CPU_MODEL",
                        "CONTEXT")
#: The context CD-ROM's keys, kept when ``one.vm.updateconf`` replaces CONTEXT.
_CD_KEYS: Final = ("DISK_ID", "TARGET")
#: Largest CPU a VM may ask for (physical CPUs).
MAX_CPU: Final = 1_000_000.0
#: Largest MEMORY a VM may ask for, in MB (what a 32-bit counter holds: 2 PB).
MAX_MEMORY: Final = 2**31 - 1


@dataclass(frozen=True, slots=True)
class PreparedVm:
    """A validated template, split, with its numbers read."""

    name: str | None
    cpu: float
    memory: int
    template: Template
    user_template: Template


def prepare(template: Template) -> PreparedVm:
    """Validate and split ``template``.

    Raises:
        ValidationError: a mandatory attribute is missing or has a bad value,
            or an expression does not parse; the message names the attribute.
    """
    cpu = _positive_number(template, "CPU", MAX_CPU)
    memory = int(_positive_number(template, "MEMORY", MAX_MEMORY, whole=True))
    try:
        check_expressions(template)
    except ExpressionError as exc:
        raise ValidationError(exc.message) from None
    for context in template.vectors("CONTEXT"):
        for key, text in context.items():
            references(text, f"CONTEXT/{key}")
    system = Template()
    user = Template()
    for name, value in template:
        (system if name in SYSTEM_TEMPLATE_ATTRIBUTES else user).append(name, value)
    raw_name = template.get("NAME") or ""
    given_name = check_name("VM", raw_name) if raw_name.strip() else None
    user.remove("NAME")
    return PreparedVm(name=given_name, cpu=cpu, memory=memory, template=system, user_template=user)


def refers_in_context(template: Template) -> bool:
    """Whether ``template``'s ``CONTEXT`` has a ``$VARIABLE`` reference (else
    :func:`expand_context` returns it as it is, and needs neither owner nor group)."""
    return any("$" in value for context in template.vectors("CONTEXT")
               for value in context.values())


def expand_context(template: Template, user_template: Template, *, vm_id: int, name: str,
                   owner: UserRecord | None, group: GroupRecord | None,
                   document: Callable[[], str] | None = None) -> Template:
    """``template`` with the ``$VARIABLE`` references of its ``CONTEXT`` expanded.

    ``template`` and ``user_template`` are the VM's (as :func:`prepare`
    split them, ``VMID`` set); ``owner`` and ``group`` its owner's user and
    group (``None``: unknown, their ids and names expand to nothing);
    ``document`` renders the VM's XML document as it stands with ``template``
    (called only for a ``$TEMPLATE`` reference, which is that document in
    base64, as oned gives it; without it ``$TEMPLATE`` expands to nothing).
    """
    if not refers_in_context(template):
        return template
    contexts = template.vectors("CONTEXT")
    names = {"NAME": name, "VMID": str(vm_id),
             "UID": str(owner.id) if owner else "",
             "UNAME": owner.name if owner else "",
             "GID": str(group.id) if group else "",
             "GNAME": group.name if group else ""}
    if document is not None and any(
            reference.name == "TEMPLATE" and reference.key is None
            for context in contexts for key, value in context.items() if "$" in value
            for reference in references(value, f"CONTEXT/{key}")):
        names["TEMPLATE"] = base64.b64encode(document().encode()).decode()
    scope = Scope(template=template, user_template=user_template,
                  owner_template=owner.template if owner else Template(), names=names)
    return Template((attribute, expand_vector(value, scope, "CONTEXT")
                     if attribute == "CONTEXT" and isinstance(value, dict) else value)
                    for attribute, value in template)


def reconfigured(template: Template, new: Template, *, merge: bool) -> Template:
    """``template`` (a VM's system template) with ``one.vm.updateconf``'s ``new`` applied,
    as the OpenNebula 6.10 peer does.

    Only :data:`CONF_SECTIONS` change; anything else in ``new`` is ignored.
    Replacing (not ``merge``): each section ``new`` has replaces the VM's, each
    it lacks is removed, except ``CONTEXT``, which stays unless ``new`` gives
    one; the new ``CONTEXT`` keeps the CD-ROM's ``DISK_ID`` and ``TARGET``.
    Merging: the keys of each section ``new`` has replace or join the VM's.
    ``CONTEXT``'s new values are returned as written: expand them with
    :func:`expand_context` (and keep only those from its result).

    Raises:
        ValidationError: ``new`` gives a section as a single value (or twice), or a
            CONTEXT to a VM that has none (as oned, whatever the state: a running
            guest could not get a context CD-ROM hot-plugged).
    """
    if new.get_all("CONTEXT") and template.get_vector("CONTEXT") is None:
        raise ValidationError("Virtual machine does not have context, cannot add a new one.")
    result = template.copy()
    for section in CONF_SECTIONS:
        given = new.get_all(section)
        first = given[0] if given else None
        if len(given) > 1 or isinstance(first, str):
            raise ValidationError(f"{section} must be given once, as a vector "
                                  f"({section} = [ ... ])")
        old = template.get_vector(section)
        if first is not None:
            vector = dict(first)
            if merge and old is not None:
                vector = {**old, **vector}
            elif section == "CONTEXT" and old is not None:
                vector = {**{key: old[key] for key in _CD_KEYS if key in old}, **vector}
            result.set(section, vector)
        elif not merge and section != "CONTEXT":
            result.remove(section)
    return result


def check_raw(template: Template, vm_mads: Collection[str]) -> None:
    """Each ``RAW`` section's ``TYPE`` names a configured VM driver (case aside), as
    oned checks it at allocation and ``one.vm.updateconf``.

    Raises:
        ValidationError: a RAW section without TYPE, or with another one.
    """
    known = {name.lower() for name in vm_mads}
    for raw in template.vectors("RAW"):
        if raw.get("TYPE", "").strip().lower() not in known:
            raise ValidationError("Invalid RAW section: unsupported TYPE")


def _positive_number(template: Template, name: str, limit: float, *,
                     whole: bool = False) -> float:
    """``name``'s value: a number > 0 and <= ``limit`` (a whole one if ``whole``)."""
    raw = template.get(name)
    kind = "a whole number of MB" if whole else "a positive number"
    if raw is None or not raw.strip():
        raise ValidationError(f"{name} attribute is missing; it must be {kind}")
    try:
        value = float(raw)
    except (ValueError, OverflowError):
        raise ValidationError(f"{name} attribute must be {kind}, not {raw[:40]!r}") from None
    if not value > 0 or value != value:
        raise ValidationError(f"{name} attribute must be {kind}, not {raw[:40]!r}")
    if value > limit:
        raise ValidationError(f"{name} attribute is out of range: {raw[:40]} is more than "
                              f"{limit:g}")
    if whole and value != int(value):
        raise ValidationError(f"{name} attribute must be {kind}, not {value:g}")
    return value

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

from dataclasses import dataclass
from typing import Final

from cloudburst.errors import ExpressionError, ValidationError
from cloudburst.model.records import SYSTEM_TEMPLATE_ATTRIBUTES, GroupRecord, UserRecord
from cloudburst.scheduler.demand import check_expressions
from cloudburst.template import Template
from cloudburst.template.limits import check_name
from cloudburst.template.variables import Scope, expand_vector, references

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


def expand_context(template: Template, user_template: Template, *, vm_id: int, name: str,
                   owner: UserRecord | None, group: GroupRecord | None) -> Template:
    """``template`` with the ``$VARIABLE`` references of its ``CONTEXT`` expanded.

    ``template`` and ``user_template`` are the new VM's (as :func:`prepare`
    split them, ``VMID`` set); ``owner`` and ``group`` its owner's user and
    group (``None``: unknown, their ids and names expand to nothing).
    """
    if not any("$" in value for context in template.vectors("CONTEXT")
               for value in context.values()):
        return template
    scope = Scope(template=template, user_template=user_template,
                  owner_template=owner.template if owner else Template(),
                  names={"NAME": name, "VMID": str(vm_id),
                         "UID": str(owner.id) if owner else "",
                         "UNAME": owner.name if owner else "",
                         "GID": str(group.id) if group else "",
                         "GNAME": group.name if group else ""})
    return Template((attribute, expand_vector(value, scope, "CONTEXT")
                     if attribute == "CONTEXT" and isinstance(value, dict) else value)
                    for attribute, value in template)


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

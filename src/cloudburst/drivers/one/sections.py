"""The ``PUBLIC_CLOUD = [ TYPE = "one", ... ]`` section and the partner call it becomes.

* ``TEMPLATE_ID = 7``: instantiate the partner's template 7
  (``one.template.instantiate``); the tags and our ``CPU``/``MEMORY`` are
  given as the extra template, so both clouds account the same size;
* otherwise an inline template is allocated (``one.vm.allocate``): our
  ``NAME``, ``CPU``, ``MEMORY`` (and ``VCPU``) plus every other key of the
  section (``DISK_IMAGE``, ``SCHED_REQUIREMENTS``, ... are copied as written);
* ``NAME`` names the partner VM (default: our VM's name); ``HOST``/``CLOUD``
  pick one partner when there are several, as for EC2 sites (the core decides
  which section applies, :mod:`cloudburst.model.cloud_sections`);
* the VM's ``CONTEXT`` vector goes along as written (in the extra template
  for ``TEMPLATE_ID``), so the partner contextualizes the VM as we would.

``CPU``, ``MEMORY`` and ``CLOUDBURST_*`` keys are refused in the section when
the VM is created (:func:`check_section`): the VM's own size and the driver's
tags (:mod:`.documents`) win.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from cloudburst.drivers.base import DeploySpec
from cloudburst.drivers.one.documents import HOST_TAG, ORIGIN_TAG, TOKEN_TAG
from cloudburst.drivers.one.partner_vms import CLOUD_TYPE
from cloudburst.errors import ValidationError
from cloudburst.template import Template

#: Section keys with a meaning of their own (not copied to the partner template).
_SECTION_KEYS: Final = frozenset({"TYPE", "TEMPLATE_ID", "CLOUD", "HOST", "NAME"})
#: Section keys refused at creation (the VM's own values or our tags win).
_FORBIDDEN_KEYS: Final = frozenset({"CPU", "MEMORY", ORIGIN_TAG, TOKEN_TAG, HOST_TAG})


def partner_sections(template: Template) -> list[dict[str, str]]:
    """The ``PUBLIC_CLOUD`` sections of TYPE ``one``, in template order."""
    return [dict(section) for section in template.vectors("PUBLIC_CLOUD")
            if section.get("TYPE", "").strip().lower() == CLOUD_TYPE]


def check_section(section: Mapping[str, str]) -> None:
    """Refuse a section no partner could be asked for.

    Raises:
        ValidationError: a ``TEMPLATE_ID`` that is not a whole number, or a
            key the VM or the driver sets itself.
    """
    template_id = section.get("TEMPLATE_ID", "").strip()
    if template_id and not template_id.isdigit():
        raise ValidationError(
            f"PUBLIC_CLOUD TYPE={CLOUD_TYPE}: TEMPLATE_ID must be the partner's "
            f"template id (a whole number), not {template_id!r}")
    forbidden = sorted(set(section) & _FORBIDDEN_KEYS)
    if forbidden:
        raise ValidationError(
            f"PUBLIC_CLOUD TYPE={CLOUD_TYPE}: {', '.join(forbidden)} cannot be set in "
            "the section (the VM's own CPU and MEMORY are used, and the CLOUDBURST_* "
            "tags are the driver's)")


@dataclass(frozen=True, slots=True)
class CreateCall:
    """The XML-RPC call that creates the partner VM (the session not included)."""

    method: str
    params: tuple[object, ...]


def create_call(section: Mapping[str, str], deployment: Template, spec: DeploySpec,
                install_id: str) -> CreateCall:
    """The call creating ``spec``'s VM at the partner, tagged as ours (see the module doc)."""
    name = (section.get("NAME") or deployment.get("NAME") or f"cloudburst-{spec.vm_id}")
    tags = [(ORIGIN_TAG, f"{install_id}:{spec.vm_id}"),
            (TOKEN_TAG, spec.token), (HOST_TAG, str(spec.host.id))]
    carried: list[tuple[str, str | dict[str, str]]] = [
        ("CPU", f"{spec.cpu:g}"), ("MEMORY", str(spec.memory_mb))]
    vcpu = deployment.get("VCPU")
    if vcpu:
        carried.append(("VCPU", vcpu))
    context = deployment.get_vector("CONTEXT")
    if context is not None:
        carried.append(("CONTEXT", dict(context)))
    template_id = section.get("TEMPLATE_ID", "").strip()
    if template_id:
        extra = Template([*carried, *tags])
        return CreateCall("one.template.instantiate",
                          (int(template_id), name, False, extra.to_text(), False))
    copied = [(key, value) for key, value in section.items()
              if key not in _SECTION_KEYS and key not in _FORBIDDEN_KEYS]
    template = Template([("NAME", name), *carried, *copied, *tags])
    return CreateCall("one.vm.allocate", (template.to_text(), False))

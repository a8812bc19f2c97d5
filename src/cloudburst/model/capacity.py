"""Per-instance-type capacity limits of cloud sites: one rule for every reader and writer.

A limit says how many instances of one type a site may run. Probes report
limits, the monitor stores them in the host template, the scheduler honours
them; all of them go through this module.

**Forms** (probe output, host templates; both may be mixed):

* exact, any type name: one vector per type,
  ``CAPACITY = [ INSTANCE_TYPE = "u-6tb1.metal", LIMIT = 4 ]``. This is the
  form the monitor stores, so ``onehost show`` and the scheduler see the type
  exactly as the site names it (``e2-standard-2``, ``u-6tb1.metal``,
  ``Standard_D2s_v3``);
* OpenNebula 5.4's, ``CAPACITY = [ M1_SMALL = 4, T3_MICRO = 2 ]``: template
  keys can only hold ``[A-Z0-9_]``, so each type is written as its
  :func:`capacity_key`. Such a limit keeps that key as its name.

**Matching** (:func:`capacity_key`): an instance type and a limit are for the
same type when their keys are equal (upper case, ``.`` and ``-`` as ``_``).
So ``m1.small`` meets both ``m1.small`` and ``M1_SMALL``, and
``u-6tb1.metal`` both ``u-6tb1.metal`` and ``U_6TB1_METAL``. A key is never
turned back into a name: that guess (lower case, ``_`` as ``.``) is what made
``e2-standard-2`` and ``u-6tb1.metal`` miss their limits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from cloudburst.template import Template, Vector

__all__ = ["ATTRIBUTE", "capacity_key", "limits_from_vectors", "limits_of", "set_limits"]

#: The host attribute holding a site's limits.
ATTRIBUTE: Final = "CAPACITY"
#: The keys of the exact form.
_TYPE_KEY: Final = "INSTANCE_TYPE"
_LIMIT_KEY: Final = "LIMIT"


def capacity_key(instance_type: str) -> str:
    """``m1.small`` -> ``M1_SMALL``, ``u-6tb1.metal`` -> ``U_6TB1_METAL`` (idempotent)."""
    return instance_type.strip().upper().replace(".", "_").replace("-", "_")


def _count(text: str) -> int:
    """A limit's count (negative counts are 0).

    Raises:
        ValueError: not a whole number.
    """
    return max(0, int(text.strip()))


def limits_from_vectors(vectors: Iterable[Vector],
                        bad: list[str] | None = None) -> dict[str, int]:
    """``{type name: count}`` from ``CAPACITY`` vectors of either form (see the module
    doc). Entries whose count is not a whole number are left out and described in ``bad``.
    """
    limits: dict[str, int] = {}
    for vector in vectors:
        name = (vector.get(_TYPE_KEY) or "").strip()
        entries = [(name, vector.get(_LIMIT_KEY, ""))] if name else list(vector.items())
        for kind, count in entries:
            try:
                limits[kind] = _count(count)
            except ValueError:
                if bad is not None:
                    bad.append(f"CAPACITY {kind}={count!r} is not a whole number")
    return limits


def limits_of(template: Template) -> dict[str, int]:
    """The limits a host template holds (``{}``: the site has none)."""
    return limits_from_vectors(template.vectors(ATTRIBUTE))


def set_limits(template: Template, limits: Mapping[str, int]) -> None:
    """Store ``limits`` in ``template`` in the exact form (none: the attribute is removed)."""
    template.remove(ATTRIBUTE)
    for kind, count in sorted(limits.items()):
        template.append(ATTRIBUTE, {_TYPE_KEY: kind, _LIMIT_KEY: str(count)})

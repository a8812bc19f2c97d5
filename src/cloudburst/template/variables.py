r"""``$VARIABLE`` references in a VM's ``CONTEXT`` and their expansion.

OpenNebula expands them once, when the VM is created (``one.vm.allocate``;
``onevm show`` shows the result). What the OpenNebula 6.10 peer does, and
this module with it:

* ``$NAME`` names a single attribute: the VM's name for ``NAME``, the
  owner's and group's ids and names for ``UID``, ``GID``, ``UNAME``,
  ``GNAME``, else the first single attribute of that name in the VM's
  ``TEMPLATE``, then its ``USER_TEMPLATE`` (``$MEMORY``, ``$VMID``, a
  user's own ``$FOO``);
* ``$NIC[IP]`` names a key of the first vector of that name in ``TEMPLATE``
  (vectors of ``USER_TEMPLATE`` are not looked at); ``$NIC[IP, NETWORK_ID=1]``
  takes the first such vector whose ``NETWORK_ID`` is ``1``;
* ``$USER[SSH_PUBLIC_KEY]`` names an attribute of the owner's user template
  (a condition is ignored there);
* names and keys are case-insensitive; a reference that finds nothing
  (an unknown name, a vector that has no such key, a condition no vector
  meets) becomes the empty string;
* a ``$`` that starts no reference (``$``, ``$$``, ``${NAME}``, ``$ NAME``),
  an unclosed ``[``, a ``]``, ``,`` or ``=`` right after a reference, and a
  letter, digit, ``_`` or ``[`` right after a ``$NAME[KEY]`` are errors (the
  peer's grammar reads them as its own tokens): the VM is not created;
* ``$TEMPLATE`` is the whole VM document (``one.vm.info``'s ``VM``, its
  ``CONTEXT`` not yet expanded) in base64; the caller renders it
  (:attr:`Scope.names`);
* ``\$`` is kept as written and not expanded.

Difference from the peer: ``$NETWORK[...]``/``$IMAGE[...]`` find nothing
(there are no virtual network or image pools here). What the caller
resolves is given as a :class:`Scope`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from cloudburst.errors import ValidationError
from cloudburst.template.syntax import Template, Vector

__all__ = ["Reference", "Scope", "expand", "expand_vector", "references"]

_NAME: Final = r"[A-Za-z0-9_]+"
_REFERENCE: Final = re.compile(
    rf"\$(?P<name>{_NAME})"
    rf"(?:\[\s*(?P<key>{_NAME})\s*"
    rf"(?:,\s*(?P<cond>{_NAME})\s*=\s*(?:\"(?P<quoted>[^\"]*)\"|(?P<bare>[^\]\s,\"]+))\s*)?\])?")
_OPEN_BRACKET: Final = re.compile(rf"\$(?:{_NAME})\[")
_WORD: Final = re.compile(_NAME)


@dataclass(frozen=True, slots=True)
class Reference:
    """One ``$NAME``, ``$NAME[KEY]`` or ``$NAME[KEY, COND=VALUE]`` (upper-case names)."""

    name: str
    key: str | None = None
    condition: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class Scope:
    """What references resolve against (see the module doc).

    Attributes:
        template: the VM's ``TEMPLATE`` (system attributes, vectors included).
        user_template: the VM's ``USER_TEMPLATE``.
        owner_template: the owner's user template (``$USER[...]``).
        names: fixed single names, upper-case (``NAME``, ``UID``, ``UNAME``, ...).
    """

    template: Template
    user_template: Template = field(default_factory=Template)
    owner_template: Template = field(default_factory=Template)
    names: Mapping[str, str] = field(default_factory=dict)

    def resolve(self, reference: Reference) -> str:
        """The value ``reference`` stands for; ``""`` when it finds nothing."""
        if reference.key is None:
            fixed = self.names.get(reference.name)
            if fixed is not None:
                return fixed
            for template in (self.template, self.user_template):
                value = template.get(reference.name)
                if value is not None:
                    return value
            return ""
        if reference.name == "USER":
            return self.owner_template.get(reference.key) or ""
        for vector in self.template.vectors(reference.name):
            if reference.condition is None or _meets(vector, reference.condition):
                return vector.get(reference.key, "")
        return ""


def _meets(vector: Vector, condition: tuple[str, str]) -> bool:
    return vector.get(condition[0]) == condition[1]


def _tokens(value: str, what: str) -> list[str | Reference]:
    """``value`` as literal text and references, in order.

    Raises:
        ValidationError: a ``$`` starts no reference, or a ``[`` is not closed.
    """
    parts: list[str | Reference] = []
    pos = 0
    literal_from = 0
    while True:
        pos = value.find("$", pos)
        if pos < 0:
            break
        if pos > 0 and value[pos - 1] == "\\":
            pos += 1
            continue
        match = _REFERENCE.match(value, pos)
        if match is None:
            raise ValidationError(f"{what}: '$' at character {pos + 1} of {value[:60]!r} "
                                  "starts no variable ($NAME, $NAME[KEY] or "
                                  "$NAME[KEY, ATTRIBUTE=VALUE])")
        if match["key"] is None and _OPEN_BRACKET.match(value, pos):
            raise ValidationError(f"{what}: the '[' after {match.group(0)!r} in "
                                  f"{value[:60]!r} is not a closed [KEY] or "
                                  "[KEY, ATTRIBUTE=VALUE]")
        follows = value[match.end():match.end() + 1]
        if follows and (follows in "],=" or (match["key"] is not None
                                             and (follows == "[" or _WORD.match(follows)))):
            raise ValidationError(f"{what}: {follows!r} right after {match.group(0)!r} in "
                                  f"{value[:60]!r} (separate it with a space or a '-')")
        if pos > literal_from:
            parts.append(value[literal_from:pos])
        condition = None
        if match["cond"] is not None:
            condition = (match["cond"].upper(),
                         match["quoted"] if match["quoted"] is not None else match["bare"])
        parts.append(Reference(match["name"].upper(),
                               match["key"].upper() if match["key"] else None, condition))
        pos = literal_from = match.end()
    if literal_from < len(value):
        parts.append(value[literal_from:])
    return parts


def references(value: str, what: str = "value") -> list[Reference]:
    """The references in ``value``, in order (``what`` names it in errors).

    Raises:
        ValidationError: a malformed reference (see the module doc).
    """
    return [part for part in _tokens(value, what) if isinstance(part, Reference)]


def expand(value: str, scope: Scope, what: str = "value") -> str:
    """``value`` with every reference replaced by what ``scope`` resolves it to.

    Raises:
        ValidationError: a malformed reference (see the module doc).
    """
    if "$" not in value:
        return value
    return "".join(part if isinstance(part, str) else scope.resolve(part)
                   for part in _tokens(value, what))


def expand_vector(vector: Vector, scope: Scope, what: str) -> Vector:
    """Every value of ``vector`` expanded (``what``: the vector's name, for errors).

    Raises:
        ValidationError: a malformed reference, named with its key.
    """
    return {key: expand(value, scope, f"{what}/{key}") for key, value in vector.items()}

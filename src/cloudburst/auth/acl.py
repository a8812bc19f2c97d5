"""OpenNebula's ACL rules: the string syntax, the numeric form and matching.

A rule reads ``USER RESOURCES/ID RIGHTS [ZONE]``, e.g. ``@1 VM+TEMPLATE/* CREATE *``
or ``#4 VM/@1 USE #0``. Each part has a numeric form (what ``one.acl.addrule``
takes as hex strings and ``one.aclpool.info`` returns): the high bits say how
the id is meant (``#`` one object, ``@`` a group, ``%`` a cluster, ``*`` all),
the low 32 bits carry the id, and the resource part also carries one bit per
resource type.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cloudburst.errors import CloudburstError

INDIVIDUAL: Final = 0x100000000
GROUP: Final = 0x200000000
ALL: Final = 0x400000000
CLUSTER: Final = 0x800000000
_ID_MASK: Final = 0xFFFFFFFF
_KIND_MASK: Final = INDIVIDUAL | GROUP | ALL | CLUSTER

#: Resource types in the order of ``oneacl list``'s RES_VHNIUTGDCOZSvRMAPtB column.
RESOURCES: Final[dict[str, int]] = {
    "VM": 0x1000000000,
    "HOST": 0x2000000000,
    "NET": 0x4000000000,
    "IMAGE": 0x8000000000,
    "USER": 0x10000000000,
    "TEMPLATE": 0x20000000000,
    "GROUP": 0x40000000000,
    "DATASTORE": 0x100000000000,
    "CLUSTER": 0x200000000000,
    "DOCUMENT": 0x400000000000,
    "ZONE": 0x800000000000,
    "SECGROUP": 0x1000000000000,
    "VDC": 0x2000000000000,
    "VROUTER": 0x4000000000000,
    "MARKETPLACE": 0x8000000000000,
    "MARKETPLACEAPP": 0x10000000000000,
    "VMGROUP": 0x20000000000000,
    "VNTEMPLATE": 0x40000000000000,
    "BACKUPJOB": 0x100000000000000,
}
RESOURCE_LETTERS: Final = "VHNIUTGDCOZSvRMAPtB"
_TYPE_MASK: Final = sum(RESOURCES.values())

#: Rights, in the order of the OPE_UMAC column.
RIGHTS: Final[dict[str, int]] = {"USE": 0x1, "MANAGE": 0x2, "ADMIN": 0x4, "CREATE": 0x8}

#: The only zone: ``#0``.
ZONE_ID: Final = 0


class AclError(CloudburstError):
    """A rule that cannot be parsed or is malformed (oned answers INTERNAL)."""


@dataclass(frozen=True, slots=True)
class AclRule:
    """One rule in numeric form."""

    id: int
    user: int
    resource: int
    rights: int
    zone: int

    def __str__(self) -> str:
        return to_string(self.user, self.resource, self.rights, self.zone)


# -- text -> numbers ----------------------------------------------------------------------


def _id_part(text: str, *, what: str, cluster_ok: bool) -> int:
    if text == "*":
        return ALL
    prefixes = {"#": INDIVIDUAL, "@": GROUP} | ({"%": CLUSTER} if cluster_ok else {})
    kind = prefixes.get(text[:1])
    if kind is None or not text[1:].isdigit() or int(text[1:]) > _ID_MASK:
        allowed = ", ".join([*prefixes, "*"])
        raise AclError(f"Wrong {what} {text!r}: use one of {allowed} followed by an id, or *")
    return kind | int(text[1:])


def parse(text: str) -> tuple[int, int, int, int]:
    """The numeric ``(user, resource, rights, zone)`` of a rule string.

    Raises:
        AclError: the text names what is wrong.
    """
    parts = text.split()
    if len(parts) not in (3, 4):
        raise AclError(f"Wrong ACL rule {text!r}: expected 'USER RESOURCES/ID RIGHTS [ZONE]'")
    user = _id_part(parts[0], what="user", cluster_ok=False)
    types, slash, target = parts[1].partition("/")
    if not slash:
        raise AclError(f"Wrong resource {parts[1]!r}: expected TYPE[+TYPE...]/ID")
    resource = _id_part(target, what="resource id", cluster_ok=True)
    for name in types.upper().split("+"):
        if name not in RESOURCES:
            raise AclError(f"Wrong resource type {name!r}: use {', '.join(RESOURCES)}")
        resource |= RESOURCES[name]
    rights = 0
    for name in parts[2].upper().split("+"):
        if name not in RIGHTS:
            raise AclError(f"Wrong right {name!r}: use {', '.join(RIGHTS)}")
        rights |= RIGHTS[name]
    zone = _id_part(parts[3], what="zone", cluster_ok=False) if len(parts) == 4 else (
        INDIVIDUAL | ZONE_ID)
    return user, resource, rights, zone


def parse_hex(user: str, resource: str, rights: str, zone: str | None) -> tuple[int, ...]:
    """``one.acl.addrule``'s hex strings as numbers, checked as oned checks them.

    Raises:
        AclError: oned's "Rule ... is malformed: ..." naming every problem.
    """
    try:
        values = [int(part, 16) for part in (user, resource, rights, zone or "0")]
    except ValueError:
        values = [0, 0, 0, 0]
    number_user, number_resource, number_rights, number_zone = values
    if zone is None:
        number_zone = INDIVIDUAL | ZONE_ID
    problems = []
    if not number_user & (INDIVIDUAL | GROUP | ALL):
        problems.append("[user] is missing one of the INDIVIDUAL, GROUP or ALL bits")
    if not number_resource & _KIND_MASK:
        problems.append("[resource] is missing one of the INDIVIDUAL, GROUP, CLUSTER or "
                        "ALL bits")
    if not number_resource & _TYPE_MASK:
        problems.append("[resource] type is missing")
    if number_rights == 0 or number_rights & ~0xF:
        problems.append("wrong [rights], it cannot be 0")
    if number_zone & ~(_KIND_MASK | _ID_MASK) or not number_zone & (INDIVIDUAL | ALL):
        problems.append("[zone] is missing one of the INDIVIDUAL or ALL bits")
    if problems:
        shown = to_string(number_user, number_resource, number_rights, number_zone)
        raise AclError(f"Rule {shown} is malformed: {'; '.join(problems)}")
    return number_user, number_resource, number_rights, number_zone


# -- numbers -> text ----------------------------------------------------------------------


def _id_text(value: int, *, cluster_ok: bool) -> str:
    if value & ALL:
        return "*"
    number = value & _ID_MASK
    if value & INDIVIDUAL:
        return f"#{number}"
    if value & GROUP:
        return f"@{number}"
    if cluster_ok and value & CLUSTER:
        return f"%{number}"
    return "??"


def to_string(user: int, resource: int, rights: int, zone: int) -> str:
    """The rule's text, as ``oneacl list`` and ``STRING`` in the pool show it."""
    types = "+".join(name for name, bit in RESOURCES.items() if resource & bit)
    names = "+".join(name for name, bit in RIGHTS.items() if rights & bit)
    return (f"{_id_text(user, cluster_ok=False)} {types}/{_id_text(resource, cluster_ok=True)} "
            f"{names} {_id_text(zone, cluster_ok=False)}")


# -- matching -----------------------------------------------------------------------------


def matches(rule: AclRule, *, uid: int, groups: frozenset[int], right: int, kind: str,
            oid: int, gid: int, clusters: frozenset[int]) -> bool:
    """Whether ``rule`` grants ``right`` on object ``kind`` ``oid`` (group ``gid``, in
    ``clusters``) to user ``uid`` of ``groups``. ``oid`` -1 is an object being created."""
    if not rule.rights & right or not rule.resource & RESOURCES[kind]:
        return False
    if not (rule.zone & ALL or (rule.zone & INDIVIDUAL and rule.zone & _ID_MASK == ZONE_ID)):
        return False
    user_id = rule.user & _ID_MASK
    if not (rule.user & ALL or (rule.user & INDIVIDUAL and user_id == uid)
            or (rule.user & GROUP and user_id in groups)):
        return False
    target = rule.resource & _ID_MASK
    return bool(rule.resource & ALL
                or (rule.resource & INDIVIDUAL and oid >= 0 and target == oid)
                or (rule.resource & GROUP and target == gid)
                or (rule.resource & CLUSTER and target in clusters))

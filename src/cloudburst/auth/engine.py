"""The authorization decision: may this caller perform this operation on this object?

OpenNebula's rules, in order: members of the ``oneadmin`` group (0) may do
anything; otherwise the object's permissions (owner, group, other digits) may
grant the right; otherwise an ACL rule may. Rights are independent: MANAGE
does not imply USE.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import IntEnum

from cloudburst.auth import acl, permissions
from cloudburst.errors import AuthorizationError

#: The ``oneadmin`` group: its members are not checked.
ADMIN_GROUP = 0


class Operation(IntEnum):
    """OpenNebula's auth operations (the ACL rights bits)."""

    USE = 0x1
    MANAGE = 0x2
    ADMIN = 0x4
    CREATE = 0x8


@dataclass(frozen=True, slots=True)
class Caller:
    """Who makes a call: the user, the primary group and every group they belong to."""

    uid: int
    gid: int
    groups: frozenset[int]
    name: str = ""

    @property
    def is_admin(self) -> bool:
        return ADMIN_GROUP in self.groups or self.uid == 0


@dataclass(frozen=True, slots=True)
class Target:
    """What a call acts on.

    Attributes:
        kind: an ACL resource type (``VM``, ``HOST``, ``TEMPLATE``, ``USER``,
            ``GROUP``, ``CLUSTER``) or ``ACL``/``AUDIT`` (oneadmin only).
        oid: the object's id; -1 for an object being created.
        uid, gid: its owner and group (for CREATE: the caller's).
        perms: its ``UUU GGG OOO`` bits; None for objects without them
            (hosts, users, groups, clusters: ACL rules only).
        clusters: the clusters it is in (ACL ``%`` rules).
    """

    kind: str
    oid: int = -1
    uid: int = -1
    gid: int = -1
    perms: int | None = None
    clusters: frozenset[int] = field(default_factory=frozenset)

    def __str__(self) -> str:
        return self.kind if self.oid < 0 else f"{self.kind} [{self.oid}]"


def allowed(caller: Caller, operation: Operation, target: Target,
            rules: Iterable[acl.AclRule]) -> bool:
    """Whether ``caller`` may perform ``operation`` on ``target`` under ``rules``."""
    if caller.is_admin:
        return True
    if target.kind not in acl.RESOURCES:
        return False
    if target.perms is not None and operation is not Operation.CREATE and permissions.grants(
            target.perms, int(operation), owner=caller.uid == target.uid,
            in_group=target.gid in caller.groups):
        return True
    return any(acl.matches(rule, uid=caller.uid, groups=caller.groups, right=int(operation),
                           kind=target.kind, oid=target.oid, gid=target.gid,
                           clusters=target.clusters) for rule in rules)


def denied(caller: Caller, *refused: tuple[Operation, Target]) -> AuthorizationError:
    """oned's refusal naming every check that failed:
    ``User [3] : Not authorized to perform USE VM [0]; Not authorized to perform ...``."""
    reasons = "; ".join(f"Not authorized to perform {operation.name} {target}"
                        for operation, target in refused)
    return AuthorizationError(f"User [{caller.uid}] : {reasons}.")

"""The operation every ``one.*`` method needs, on which object: OpenNebula's rules as data.

:meth:`cloudburst.service.access.AccessService.require` applies these checks
before any handler runs (the XML-RPC dispatch calls it for every method), so
no handler checks anything itself. A
method missing from :data:`CHECKS` is refused to everyone but oneadmin's
group (a test keeps the table complete). Pool listings have no check: they
keep only what the caller may USE (``AccessService.visible``).

A :class:`Check` names the object by the position of its id among the
parameters after the session (``None``: an object being created, or a
system-wide object such as the ACL pool). ``USER_BY_NAME`` reads a user
name instead of an id. ``skip`` ids (-1) mean "unchanged" or "the caller".
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from cloudburst.auth.checks import USER_BY_NAME, Check
from cloudburst.auth.engine import Operation

USE, MANAGE, ADMIN, CREATE = Operation.USE, Operation.MANAGE, Operation.ADMIN, Operation.CREATE

#: VM actions oned.conf's VM_ADMIN_OPERATIONS puts under ADMIN; the rest are MANAGE.
_ADMIN_ACTIONS: Final = frozenset({"resched", "unresched", "migrate", "recover", "retry",
                                   "deploy", "delete"})
def _action_operation(params: Sequence[object]) -> Operation:
    action = params[0] if params else None
    # An unhashable parameter (array, struct) is the handler's to refuse, not a crash here.
    return ADMIN if isinstance(action, str) and action in _ADMIN_ACTIONS else MANAGE


def _sets_admin_bits(params: Sequence[object]) -> bool:
    """Whether a chmod grants an ADMIN right (owner_a, group_a or other_a = 1)."""
    return any(len(params) > i and params[i] == 1 for i in (3, 6, 9))


def _object(kind: str) -> dict[str, tuple[Check, ...]]:
    """The checks shared by VMs and templates: chmod and chown."""
    prefix = "one.vm" if kind == "VM" else "one.template"
    return {
        f"{prefix}.chmod": (Check(MANAGE, kind, 0),
                            Check(ADMIN, kind, 0, when=_sets_admin_bits, stage=1)),
        f"{prefix}.chown": (Check(MANAGE, kind, 0), Check(MANAGE, "USER", 1, skip=-1, stage=1),
                            Check(USE, "GROUP", 2, skip=-1, stage=1)),
    }


_NONE: Final[tuple[Check, ...]] = ()

CHECKS: Final[dict[str, tuple[Check, ...]]] = {
    "one.system.version": _NONE,
    "one.system.config": _NONE,
    # users
    "one.user.info": (Check(USE, "USER", 0, skip=-1),),
    "one.userpool.info": _NONE,
    "one.user.allocate": (Check(CREATE, "USER"),),
    "one.user.delete": (Check(ADMIN, "USER", 0),),
    "one.user.passwd": (Check(MANAGE, "USER", 0),),
    "one.user.login": (Check(MANAGE, USER_BY_NAME, 0),),
    "one.user.update": (Check(MANAGE, "USER", 0),),
    "one.user.enable": (Check(ADMIN, "USER", 0),),
    "one.user.chgrp": (Check(MANAGE, "USER", 0), Check(USE, "GROUP", 1)),
    "one.user.addgroup": (Check(MANAGE, "USER", 0), Check(USE, "GROUP", 1)),
    "one.user.delgroup": (Check(MANAGE, "USER", 0), Check(USE, "GROUP", 1)),
    "one.user.quota": (Check(ADMIN, "USER", 0),),
    "one.userquota.info": _NONE,
    "one.userquota.update": (Check(ADMIN, "QUOTA"),),
    # groups
    "one.group.info": (Check(USE, "GROUP", 0, skip=-1),),
    "one.grouppool.info": _NONE,
    "one.group.allocate": (Check(CREATE, "GROUP"),),
    "one.group.delete": (Check(ADMIN, "GROUP", 0),),
    "one.group.update": (Check(MANAGE, "GROUP", 0),),
    "one.group.addadmin": (Check(MANAGE, "GROUP", 0), Check(MANAGE, "USER", 1)),
    "one.group.deladmin": (Check(MANAGE, "GROUP", 0), Check(MANAGE, "USER", 1)),
    "one.group.quota": (Check(ADMIN, "GROUP", 0),),
    "one.groupquota.info": _NONE,
    "one.groupquota.update": (Check(ADMIN, "QUOTA"),),
    # clusters
    "one.cluster.info": (Check(USE, "CLUSTER", 0),),
    "one.cluster.quota": (Check(ADMIN, "CLUSTER", 0),),
    "one.clusterpool.info": _NONE,
    "one.cluster.allocate": (Check(CREATE, "CLUSTER"),),
    "one.cluster.delete": (Check(ADMIN, "CLUSTER", 0),),
    "one.cluster.update": (Check(MANAGE, "CLUSTER", 0),),
    "one.cluster.rename": (Check(MANAGE, "CLUSTER", 0),),
    "one.cluster.addhost": (Check(ADMIN, "CLUSTER", 0), Check(ADMIN, "HOST", 1)),
    "one.cluster.delhost": (Check(ADMIN, "CLUSTER", 0), Check(ADMIN, "HOST", 1)),
    # ACL rules and the audit trail
    "one.acl.addrule": (Check(MANAGE, "ACL"),),
    "one.acl.delrule": (Check(MANAGE, "ACL"),),
    "one.acl.info": (Check(MANAGE, "ACL"),),
    "one.audit.info": (Check(MANAGE, "AUDIT"),),
    # hosts
    "one.host.allocate": (Check(CREATE, "HOST"),),
    "one.host.info": (Check(USE, "HOST", 0),),
    "one.hostpool.info": _NONE,
    "one.host.delete": (Check(ADMIN, "HOST", 0),),
    "one.host.status": (Check(ADMIN, "HOST", 0),),
    "one.host.update": (Check(ADMIN, "HOST", 0),),
    "one.host.rename": (Check(ADMIN, "HOST", 0),),
    # VMs
    "one.vm.allocate": (Check(CREATE, "VM"),),
    "one.vm.info": (Check(USE, "VM", 0),),
    "one.vm.deploy": (Check(ADMIN, "VM", 0), Check(MANAGE, "HOST", 1)),
    "one.vm.action": (Check(_action_operation, "VM", 1),),
    "one.vm.update": (Check(MANAGE, "VM", 0),),
    "one.vm.updateconf": (Check(MANAGE, "VM", 0),),
    "one.vm.rename": (Check(MANAGE, "VM", 0),),
    "one.vm.migrate": (Check(ADMIN, "VM", 0), Check(MANAGE, "HOST", 1)),
    "one.vm.recover": (Check(ADMIN, "VM", 0),),
    **{f"one.vm.{name}": (Check(MANAGE, "VM", 0),) for name in (
        "resize", "lock", "unlock", "attach", "detach", "diskattach", "diskdetach",
        "attachnic", "detachnic", "nicattach", "nicdetach", "snapshotcreate",
        "snapshotrevert", "snapshotdelete")},
    "one.vmpool.info": _NONE,
    "one.vmpool.infoextended": _NONE,
    "one.vmpool.infoset": _NONE,
    **_object("VM"),
    # templates
    "one.template.allocate": (Check(CREATE, "TEMPLATE"),),
    "one.template.info": (Check(USE, "TEMPLATE", 0),),
    "one.template.instantiate": (Check(USE, "TEMPLATE", 0), Check(CREATE, "VM")),
    "one.template.clone": (Check(USE, "TEMPLATE", 0), Check(CREATE, "TEMPLATE")),
    "one.template.delete": (Check(MANAGE, "TEMPLATE", 0),),
    "one.template.update": (Check(MANAGE, "TEMPLATE", 0),),
    "one.template.rename": (Check(MANAGE, "TEMPLATE", 0),),
    "one.templatepool.info": _NONE,
    **_object("TEMPLATE"),
}

#: Methods that change nothing (not recorded in the audit trail).
READ_ONLY: Final = frozenset(
    name for name in CHECKS
    if name.endswith((".info", ".infoextended", ".infoset", ".version", ".config")))


def target_of(method: str, params: Sequence[object]) -> str:
    """What a call acts on, for the audit trail: ``VM [5]``, ``USER`` (a creation), ""."""
    for check in CHECKS.get(method, ()):
        if check.param is None:
            return check.kind
        value = params[check.param] if len(params) > check.param else None
        kind = "USER" if check.kind == USER_BY_NAME else check.kind
        return f"{kind} [{value}]"
    return ""

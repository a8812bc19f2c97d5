"""The one authorization hook: ``authorize(caller, operation, target)``.

Every call is checked here before it acts: :meth:`AccessService.require` with
the call's OpenNebula method name and parameters (``service/access_table.py``
gives the operation and object of each). The XML-RPC API calls it for every
method; other front ends (the dashboard) must call it the same way. The decision itself is
:func:`cloudburst.auth.engine.allowed`; this service gathers what it needs
from the store: the caller's groups, the object's owner, group, permissions
and clusters, and the ACL rules. It also owns the ACL rule pool.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

from sqlalchemy import Connection

from cloudburst.auth import acl, permissions
from cloudburst.auth.checks import USER_BY_NAME, Check
from cloudburst.auth.engine import Caller, Operation, Target, allowed, denied
from cloudburst.errors import NotFoundError
from cloudburst.model.records import UserRecord
from cloudburst.service import access_table
from cloudburst.store import acl_pool, group_pool, ownership, user_pool
from cloudburst.store.database import Database
from cloudburst.store.ownership import OwnedRead, Ownership

T = TypeVar("T")


def caller_of(user: UserRecord) -> Caller:
    """The identity a call is checked with."""
    return Caller(uid=user.id, gid=user.gid, groups=frozenset(user.groups or (user.gid,)),
                  name=user.name)


def _target(connection: Connection, kind: str, oid: int) -> Target:
    """The object ``kind`` ``oid`` as the engine sees it. Raises: NotFoundError."""
    return _owned(kind, oid, ownership.ownership(connection, kind, oid))


def _owned(kind: str, oid: int, owner: Ownership) -> Target:
    return Target(kind, oid, owner.uid, owner.gid, owner.perms, owner.clusters)


def _target_of(connection: Connection, caller: Caller, check: Check,
               params: Sequence[object]) -> Target | None:
    """The object ``check`` names in ``params``; None when there is none to check.

    Raises:
        NotFoundError: the object does not exist.
    """
    if check.param is None:
        return Target(check.kind, -1, caller.uid, caller.gid)
    value = params[check.param] if len(params) > check.param else None
    if check.kind == USER_BY_NAME:
        if not isinstance(value, str) or value == caller.name:
            return None
        user = user_pool.find_user(connection, value)
        if user is None:
            raise NotFoundError(f"USER named {value} does not exist")
        return _target(connection, "USER", user.id)
    if not isinstance(value, int) or isinstance(value, bool) or value == check.skip:
        return None  # the handler refuses a wrong type before acting
    return _target(connection, check.kind, value)


def _decide(caller: Caller, wanted: Sequence[tuple[Operation, Target]],
            rules: Sequence[acl.AclRule]) -> None:
    """Return if ``caller`` may do every ``(operation, target)`` under ``rules``.

    Raises:
        AuthorizationError: naming every one that is not, as oned does.
    """
    if caller.is_admin:
        return
    refused = [(operation, target) for operation, target in wanted
               if not allowed(caller, operation, target, rules)]
    if refused:
        raise denied(caller, *refused)


class AccessService:
    """Authorization decisions and the ACL rule pool."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def target(self, kind: str, oid: int) -> Target:
        """The object ``kind`` ``oid`` as the engine sees it.

        Raises:
            NotFoundError: no such object.
        """
        return await self.db.lookup(lambda c: _target(c, kind, oid))

    async def authorize(self, caller: Caller, operation: Operation, target: Target) -> None:
        """Return if ``caller`` may perform ``operation`` on ``target``.

        Raises:
            AuthorizationError: oned's "Not authorized to perform ..." message.
        """
        await self.authorize_all(caller, [(operation, target)])

    async def authorize_all(self, caller: Caller, wanted: Sequence[tuple[Operation, Target]]
                            ) -> None:
        """Return if every ``(operation, target)`` is allowed.

        Raises:
            AuthorizationError: naming every one that is not, as oned does.
        """
        if caller.is_admin or not wanted:
            return
        _decide(caller, wanted, await self.db.lookup(acl_pool.list_rules))

    async def visible(self, caller: Caller, kind: str
                      ) -> Callable[[int, int, int, int | None], bool]:
        """A test ``(oid, uid, gid, perms) -> bool``: may the caller USE that object?

        Pool listings keep only what it accepts (one rule read per listing).
        """
        test = await self.pool_filter(caller, kind)
        return (lambda _oid, _uid, _gid, _perms: True) if test is None else test

    async def pool_filter(self, caller: Caller, kind: str
                          ) -> Callable[[int, int, int, int | None], bool] | None:
        """As :meth:`visible`, but None when the caller may USE every object of ``kind``
        (then a listing needs no filter, and the store can page it)."""
        if caller.is_admin:
            return None
        rules = await self.db.lookup(acl_pool.list_rules)
        return lambda oid, uid, gid, perms: allowed(
            caller, Operation.USE, Target(kind, oid, uid, gid, perms), rules)

    async def require(self, user: UserRecord, method: str, params: Sequence[object], *,
                      read: OwnedRead[T] | None = None) -> T | None:
        """Authorize ``user`` to call OpenNebula method ``method`` with ``params``
        (those after the session), e.g. ``require(user, "one.vm.action", ["terminate", 5])``.

        A method missing from the table is refused to all but oneadmin's group.

        ``read``: how to read the object the method's first check names, whole (a
        call that shows it): the check takes its ownership from that read instead
        of reading it alone, and returns what ``read`` read (None without ``read``).

        Raises:
            NotFoundError: an object named by the call does not exist.
            AuthorizationError: the caller may not.
        """
        checks = access_table.CHECKS.get(method, (Check(Operation.ADMIN, "SYSTEM"),))
        return await self.check_call(caller_of(user), checks, params, read=read)

    async def check_call(self, caller: Caller, checks: Sequence[Check],
                         params: Sequence[object], *, read: OwnedRead[T] | None = None
                         ) -> T | None:
        """Authorize one API call by its method's checks (``service/access_table.py``).

        The objects the call names and the ACL rules are read in one lookup; the
        object of ``checks[0]`` by ``read`` when given (see :meth:`require`).

        Raises:
            NotFoundError: an object named by the call does not exist.
            AuthorizationError: a check failed.
        """
        wanted = [check for check in checks if check.when is None or check.when(params)]
        if read is not None and (not wanted or wanted[0] is not checks[0]
                                 or checks[0].param is None):
            raise ValueError("read= needs a first check that names an object")
        if not wanted:
            return None

        def lookup(connection: Connection
                   ) -> tuple[dict[int, list[tuple[Operation, Target]]], list[acl.AclRule],
                              T | None]:
            # Every object is looked up before any is authorized, as oned does: an unknown
            # object is "Error getting ..." even for a caller who may not touch the other.
            stages: dict[int, list[tuple[Operation, Target]]] = {}
            subject: T | None = None
            for check in wanted:
                if read is not None and check is checks[0]:
                    subject, owner = read(connection)
                    oid = params[check.param] if check.param is not None else None
                    target: Target | None = _owned(
                        check.kind, oid if isinstance(oid, int) else -1, owner)
                else:
                    target = _target_of(connection, caller, check, params)
                if target is not None:
                    stages.setdefault(check.stage, []).append(
                        (check.operation_for(params), target))
            rules = acl_pool.list_rules(connection) if stages and not caller.is_admin else []
            return stages, rules, subject

        stages, rules, subject = await self.db.lookup(lookup)
        for stage in sorted(stages):
            _decide(caller, stages[stage], rules)
        return subject

    # -- ownership and permissions of VMs and templates ---------------------------------

    async def chmod(self, kind: str, oid: int, values: list[int]) -> None:
        """Apply ``one.*.chmod``'s nine values (-1 keeps a bit)."""
        def write(connection: Connection) -> None:
            current = ownership.ownership(connection, kind, oid).perms
            assert current is not None
            ownership.change(connection, kind, oid, perms=permissions.chmod(current, values))

        await self.db.write(write)

    async def chown(self, kind: str, oid: int, uid: int, gid: int) -> None:
        """Give the object to user ``uid`` and/or group ``gid`` (-1 keeps either)."""
        def write(connection: Connection) -> None:
            ownership.ownership(connection, kind, oid)
            if uid >= 0:
                user_pool.get_user(connection, uid)
            if gid >= 0:
                group_pool.get_group(connection, gid)
            ownership.change(connection, kind, oid, uid=uid if uid >= 0 else None,
                             gid=gid if gid >= 0 else None)

        await self.db.write(write)

    # -- the ACL rule pool --------------------------------------------------------------

    async def rules(self) -> list[acl.AclRule]:
        return await self.db.read(acl_pool.list_rules)

    async def add_rule(self, user: str, resource: str, rights: str, zone: str | None) -> int:
        """``one.acl.addrule``'s hex strings. Raises: AclError: malformed or duplicate."""
        numbers = acl.parse_hex(user, resource, rights, zone)

        def write(connection: Connection) -> int:
            return acl_pool.add_rule(connection, *numbers)

        return await self.db.write(write)

    async def delete_rule(self, rule_id: int) -> None:
        """Raises: AclError: no such rule."""
        await self.db.write(lambda c: acl_pool.delete_rule(c, rule_id))

"""The dashboard's authorization: the XML-RPC API's own checks, asked by method name.

Every JSON API route is the twin of a ``one.*`` method (``GET /vms/{id}`` is
``one.vm.info(id)``, ``POST /vms/{id}/action`` is ``one.vm.action(action,
id)``...). :class:`Guard` asks the access service with that method's checks
(``AccessService.require`` over :mod:`cloudburst.service.access_table`), and
records state-changing calls in the audit trail under the same method name, so
both APIs allow, refuse and record alike. Listings keep what ``AccessService.visible`` lets the
caller USE, as the ``one.*pool.info`` methods do.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from cloudburst.errors import CloudburstError
from cloudburst.events import Change
from cloudburst.model.records import UserRecord
from cloudburst.service.access import AccessService, caller_of
from cloudburst.service.access_table import READ_ONLY, target_of
from cloudburst.service.audit import AuditService

log = logging.getLogger(__name__)

__all__ = ["Guard", "Test"]

T = TypeVar("T")

#: ``(oid, uid, gid, perms) -> may the caller USE it``.
Test = Callable[[int, int, int, int | None], bool]


class Guard:
    """Authorization and audit of the JSON API (see the module docstring)."""

    def __init__(self, access: AccessService, audit: AuditService) -> None:
        self.access = access
        self.audit = audit

    @staticmethod
    def is_admin(user: UserRecord) -> bool:
        return caller_of(user).is_admin

    async def check(self, user: UserRecord, method: str, params: Sequence[object]) -> None:
        """Refuse what ``method(params)`` would refuse to ``user`` over XML-RPC.

        Raises:
            AuthorizationError: not allowed (oned's message).
            NotFoundError: an object the call names does not exist.
        """
        await self.access.require(user, method, params)

    async def act(self, user: UserRecord, method: str, params: Sequence[object],
                  run: Callable[[], Awaitable[T]]) -> T:
        """Check, run and audit a state-changing call, as ``one.*`` dispatch does."""
        try:
            await self.check(user, method, params)
            result = await run()
        except CloudburstError as exc:
            await self._audit(user, method, params, False, exc.message)
            raise
        await self._audit(user, method, params, True,
                          str(result) if isinstance(result, int) else "")
        return result

    async def visible(self, user: UserRecord, kind: str) -> Test:
        """Which objects of ``kind`` the caller may USE (one ACL read)."""
        return await self.access.visible(caller_of(user), kind)

    async def change_filter(self, user: UserRecord) -> Callable[[Change], bool]:
        """Which live changes the caller may see: the VMs and hosts it may USE."""
        vms = await self.visible(user, "VM")
        hosts = await self.visible(user, "HOST")

        def sees(change: Change) -> bool:
            data = change.data
            if change.topic == "vm":
                return vms(change.object_id, _int(data.get("uid")), _int(data.get("gid")),
                           _int(data.get("perms")))
            if change.topic == "host":
                return hosts(change.object_id, 0, 0, None)
            return False

        return sees

    async def _audit(self, user: UserRecord, method: str, params: Sequence[object],
                     success: bool, message: str) -> None:
        if method in READ_ONLY:
            return
        try:
            await self.audit.record(uid=user.id, uname=user.name, method=method,
                                    target=target_of(method, params), success=success,
                                    message=message)
        except Exception:
            log.exception("%s: the audit record could not be written", method)


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1

"""The ``one.user.*``, ``one.userpool.*`` and ``one.userquota.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; who may call them is decided
before they run (``service/access_table.py``).
"""

from __future__ import annotations

from typing import Final

from cloudburst.api import tenancy_documents as docs
from cloudburst.api.calls import Call, Handler, update_type
from cloudburst.auth import permissions
from cloudburst.errors import ApiArgumentError
from cloudburst.model.records import UserRecord
from cloudburst.service.access import caller_of

#: ``one.user.allocate``'s default groups (none besides the primary one; never changed).
_NO_GROUPS: Final[list[object]] = []


async def _document(call: Call, user: UserRecord) -> str:
    daemon = call.daemon
    return docs.user_document(
        user, gname=await call.group_names(),
        tokens=await daemon.users.tokens(user.id),
        limits=await daemon.quotas.limits("user", user.id),
        usage=await daemon.quotas.usage("user", user.id),
        defaults=await daemon.quotas.limits("user", -1))


async def user_info(call: Call, id: int, decrypt: bool = False) -> object:
    """``one.user.info(id [, decrypt])``; id -1 is the caller (with all its groups,
    also on a group-scoped token)."""
    user = await call.daemon.users.info(call.user.id if id == -1 else id)
    return await _document(call, user)


async def userpool_info(call: Call) -> object:
    """``one.userpool.info()``: the users the caller may use (itself at least)."""
    daemon = call.daemon
    visible = await daemon.access.visible(caller_of(call.user), "USER")
    users = [user for user in await daemon.users.pool()
             if visible(user.id, user.id, user.gid, permissions.USER_SELF)]
    limits = await daemon.quotas.all_limits("user")
    return docs.user_pool_document(
        [(user, limits.get(user.id, {}), await daemon.quotas.usage("user", user.id))
         for user in users],
        gname=await call.group_names(),
        defaults=await daemon.quotas.limits("user", -1))


async def user_allocate(call: Call, name: str, password: str, driver: str = "core",
                        groups: list[object] = _NO_GROUPS) -> object:
    """``one.user.allocate(name, password, driver [, groups])``: the new user's id."""
    group_ids = [g for g in groups if isinstance(g, int) and not isinstance(g, bool)]
    if len(group_ids) != len(groups):
        raise ApiArgumentError("Wrong type of parameter 4 (groups): expected an array of "
                               "integers")
    return await call.daemon.users.allocate(name, password, driver, group_ids)


async def user_delete(call: Call, id: int) -> object:
    await call.daemon.users.delete(id)
    return id


async def user_passwd(call: Call, id: int, password: str) -> object:
    await call.daemon.users.passwd(id, password)
    return id


async def user_login(call: Call, name: str, token: str, expire: int,
                     egid: int = -1) -> object:
    """``one.user.login(name, token, expire [, egid])``: the token."""
    return await call.daemon.users.login(name, token, expire, egid, caller=call.user)


async def user_update(call: Call, id: int, template: str, type: int = 0) -> object:
    await call.daemon.users.update(id, template, merge=update_type(type))
    return id


async def user_enable(call: Call, id: int, enable: bool) -> object:
    await call.daemon.users.enable(id, enable)
    return id


async def user_chgrp(call: Call, id: int, group_id: int) -> object:
    await call.daemon.users.chgrp(id, group_id)
    return id


async def user_addgroup(call: Call, id: int, group_id: int) -> object:
    await call.daemon.users.addgroup(id, group_id)
    return id


async def user_delgroup(call: Call, id: int, group_id: int) -> object:
    await call.daemon.users.delgroup(id, group_id)
    return id


async def user_quota(call: Call, id: int, template: str) -> object:
    """``one.user.quota(id, template)``: set the user's limits."""
    await call.daemon.users.info(id)
    await call.daemon.quotas.set("user", id, template)
    return id


async def userquota_info(call: Call) -> object:
    """``one.userquota.info()``: the default user quotas."""
    return docs.quota_defaults_document("DEFAULT_USER_QUOTAS",
                                        await call.daemon.quotas.limits("user", -1))


async def userquota_update(call: Call, template: str) -> object:
    """``one.userquota.update(template)``: set the default user quotas."""
    await call.daemon.quotas.set("user", -1, template)
    return docs.quota_defaults_document("DEFAULT_USER_QUOTAS",
                                        await call.daemon.quotas.limits("user", -1))


METHODS: Final[dict[str, Handler]] = {
    "one.user.info": user_info,
    "one.userpool.info": userpool_info,
    "one.user.allocate": user_allocate,
    "one.user.delete": user_delete,
    "one.user.passwd": user_passwd,
    "one.user.login": user_login,
    "one.user.update": user_update,
    "one.user.enable": user_enable,
    "one.user.chgrp": user_chgrp,
    "one.user.addgroup": user_addgroup,
    "one.user.delgroup": user_delgroup,
    "one.user.quota": user_quota,
    "one.userquota.info": userquota_info,
    "one.userquota.update": userquota_update,
}

"""The ``one.system.*`` and ``one.user.*`` methods: version, configuration, users.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

from cloudburst.api import documents
from cloudburst.api.calls import Call
from cloudburst.daemon.app import VERSION

__all__ = ["system_config", "system_version", "user_info", "userpool_info"]


# -- one.system ---------------------------------------------------------------------------


async def system_version(call: Call) -> object:
    """``one.system.version()``: the version string."""
    call.params.end()
    return VERSION


async def system_config(call: Call) -> object:
    """``one.system.config()``: the configuration document."""
    call.params.end()
    return documents.config_document(call.daemon.settings)


# -- one.user -----------------------------------------------------------------------------


async def user_info(call: Call) -> object:
    """``one.user.info(id [, decrypt])``; id -1 is the caller."""
    user_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    user = call.user if user_id == -1 else await call.daemon.users.info(user_id)
    return documents.user_document(user)


async def userpool_info(call: Call) -> object:
    """``one.userpool.info()``: every user."""
    call.params.end()
    return documents.user_pool_document(await call.daemon.users.pool())

"""The ``one.template.*`` and ``one.templatepool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

import asyncio

from cloudburst.api import documents
from cloudburst.api.calls import Call, render, update_type
from cloudburst.api.pool_query import Owned, pool_query
from cloudburst.model.records import TemplateRecord
from cloudburst.service.access import caller_of

__all__ = [
    "template_allocate",
    "template_chmod",
    "template_chown",
    "template_clone",
    "template_delete",
    "template_info",
    "template_instantiate",
    "template_rename",
    "template_update",
    "templatepool_info",
]


async def template_allocate(call: Call, template: str) -> object:
    """``one.template.allocate(template)``: the new template's id, owned by the caller."""
    return await call.daemon.templates.allocate(template, uid=call.user.id, gid=call.user.gid)


async def template_info(call: Call, id: int, extended: bool = False,
                        decrypt: bool = False) -> object:
    """``one.template.info(id [, extended [, decrypt]])``: the template document."""
    record = await call.daemon.templates.info(id)
    return documents.template_document(record, uname=await call.user_name(record.uid),
                                       gname=await call.group_name(record.gid))


async def template_instantiate(call: Call, id: int, name: str, hold: bool = False,
                               extra_template: str = "", persistent: bool = False) -> object:
    """``one.template.instantiate(id, name [, hold [, extra [, persistent]]])``: the VM id."""
    return await call.daemon.templates.instantiate(id, name, hold=hold, extra=extra_template,
                                                   persistent=persistent, uid=call.user.id,
                                                   gid=call.user.gid)


async def template_clone(call: Call, id: int, name: str, recursive: bool = False) -> object:
    """``one.template.clone(id, name [, recursive])``: the copy's id, owned by the caller.

    ``recursive`` (clone the images too) is accepted; cloudburst templates
    reference no images of their own.
    """
    return await call.daemon.templates.clone(id, name, uid=call.user.id, gid=call.user.gid)


async def template_delete(call: Call, id: int, recursive: bool = False) -> object:
    """``one.template.delete(id [, recursive])``; recursive is accepted, unused."""
    return await call.daemon.templates.delete(id)


async def template_update(call: Call, id: int, template: str, type: int = 0) -> object:
    """``one.template.update(id, template [, type])``: type 0 replaces, 1 merges."""
    return await call.daemon.templates.update(id, template, merge=update_type(type))


async def template_rename(call: Call, id: int, name: str) -> object:
    """``one.template.rename(id, name)``."""
    return await call.daemon.templates.rename(id, name)


async def template_chmod(call: Call, id: int, owner_u: int, owner_m: int, owner_a: int,
                         group_u: int, group_m: int, group_a: int, other_u: int, other_m: int,
                         other_a: int) -> object:
    """``one.template.chmod(id, owner_u, ..., other_a)``; -1 keeps a bit."""
    await call.daemon.access.chmod("TEMPLATE", id, [owner_u, owner_m, owner_a, group_u,
                                                    group_m, group_a, other_u, other_m,
                                                    other_a])
    return id


async def template_chown(call: Call, id: int, uid: int, gid: int) -> object:
    """``one.template.chown(id, uid, gid)``; -1 keeps the owner or the group."""
    await call.daemon.access.chown("TEMPLATE", id, uid, gid)
    return id


async def templatepool_info(call: Call, filter: int, start: int, end: int) -> object:
    """``one.templatepool.info(filter, start, end)``."""
    visible = await call.daemon.access.pool_filter(caller_of(call.user), "TEMPLATE")
    query = pool_query(call.user, filter, start, end, visible=visible)
    records = await call.daemon.templates.pool(
        uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit, descending=True)
    selected = query.select(records, _template_owner)
    uname, gname = await asyncio.gather(call.user_names(), call.group_names())
    return await render(lambda: documents.template_pool_document(selected, uname=uname,
                                                                 gname=gname), len(selected))


def _template_owner(record: TemplateRecord) -> Owned:
    return record.id, record.uid, record.gid, record.perms, record.name

"""The ``one.template.*`` and ``one.templatepool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

from cloudburst.api import documents
from cloudburst.api.calls import Call, render, update_type
from cloudburst.api.methods_vm import chmod, chown
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


async def template_allocate(call: Call) -> object:
    """``one.template.allocate(template)``: the new template's id, owned by the caller."""
    text = call.params.string("template")
    call.params.end()
    return await call.daemon.templates.allocate(text, uid=call.user.id, gid=call.user.gid)


async def template_info(call: Call) -> object:
    """``one.template.info(id [, extended [, decrypt]])``: the template document."""
    template_id = call.params.integer("id")
    call.params.boolean("extended", False)
    call.params.boolean("decrypt", False)
    call.params.end()
    record = await call.daemon.templates.info(template_id)
    return documents.template_document(record, uname=await call.user_name(record.uid),
                                       gname=await call.group_name(record.gid))


async def template_instantiate(call: Call) -> object:
    """``one.template.instantiate(id, name [, hold [, extra [, persistent]]])``: the VM id."""
    params = call.params
    template_id, name = params.integer("id"), params.string("name")
    hold = params.boolean("hold", False)
    extra = params.string("extra_template", "")
    persistent = params.boolean("persistent", False)
    params.end()
    return await call.daemon.templates.instantiate(template_id, name, hold=hold, extra=extra,
                                                   persistent=persistent, uid=call.user.id,
                                                   gid=call.user.gid)


async def template_clone(call: Call) -> object:
    """``one.template.clone(id, name [, recursive])``: the copy's id, owned by the caller.

    ``recursive`` (clone the images too) is accepted; cloudburst templates
    reference no images of their own.
    """
    template_id, name = call.params.integer("id"), call.params.string("name")
    call.params.boolean("recursive", False)
    call.params.end()
    return await call.daemon.templates.clone(template_id, name, uid=call.user.id,
                                             gid=call.user.gid)


async def template_delete(call: Call) -> object:
    """``one.template.delete(id [, recursive])``; recursive is accepted, unused."""
    template_id = call.params.integer("id")
    call.params.boolean("recursive", False)
    call.params.end()
    return await call.daemon.templates.delete(template_id)


async def template_update(call: Call) -> object:
    """``one.template.update(id, template [, type])``: type 0 replaces, 1 merges."""
    template_id, text = call.params.integer("id"), call.params.string("template")
    merge = update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.templates.update(template_id, text, merge=merge)


async def template_rename(call: Call) -> object:
    """``one.template.rename(id, name)``."""
    template_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.templates.rename(template_id, name)


async def template_chmod(call: Call) -> object:
    """``one.template.chmod(id, owner_u, ..., other_a)``; -1 keeps a bit."""
    return await chmod(call, "TEMPLATE")


async def template_chown(call: Call) -> object:
    """``one.template.chown(id, uid, gid)``; -1 keeps the owner or the group."""
    return await chown(call, "TEMPLATE")


async def templatepool_info(call: Call) -> object:
    """``one.templatepool.info(filter, start, end)``."""
    params = call.params
    flag, start, end = params.integer("filter"), params.integer("start"), params.integer("end")
    visible = await call.daemon.access.visible(caller_of(call.user), "TEMPLATE")
    query = pool_query(call.user, flag, start, end, visible=visible)
    params.end()
    records = await call.daemon.templates.pool(
        uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit, descending=True)
    selected = query.select(records, _template_owner)
    uname, gname = await call.user_names(), await call.group_names()
    return await render(lambda: documents.template_pool_document(selected, uname=uname,
                                                                 gname=gname))


def _template_owner(record: TemplateRecord) -> Owned:
    return record.id, record.uid, record.gid, record.perms, record.name

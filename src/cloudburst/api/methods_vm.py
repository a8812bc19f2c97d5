"""The ``one.vm.*`` and ``one.vmpool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

from collections.abc import Awaitable

from cloudburst.api import documents
from cloudburst.api.calls import Call, CallFailure, update_type
from cloudburst.api.pool_query import Owned, name_filter, pool_query
from cloudburst.api.vm_pool_cache import cache_of
from cloudburst.auth import permissions
from cloudburst.errors import (
    ApiArgumentError,
    CloudburstError,
    ErrorCode,
    LockedError,
    NotFoundError,
    QuotaError,
    StateRefusedError,
    ValidationError,
)
from cloudburst.service.access import caller_of
from cloudburst.store.vm_pool import VmStamp

__all__ = [
    "chmod",
    "chown",
    "vm_action",
    "vm_allocate",
    "vm_attach",
    "vm_attachnic",
    "vm_chmod",
    "vm_chown",
    "vm_deploy",
    "vm_detach",
    "vm_detachnic",
    "vm_info",
    "vm_lock",
    "vm_migrate",
    "vm_recover",
    "vm_rename",
    "vm_resize",
    "vm_snapshotcreate",
    "vm_snapshotdelete",
    "vm_snapshotrevert",
    "vm_unlock",
    "vm_update",
    "vmpool_info",
    "vmpool_infoextended",
]


async def vm_allocate(call: Call) -> object:
    """``one.vm.allocate(template [, hold])``: the new VM's id, owned by the caller.

    A template that fails its checks (CPU, MEMORY, VCPU, NAME, the
    expressions) is answered with code 0x2000, as oned answers it here
    (``one.template.instantiate`` answers the same checks with 0x4000).
    """
    text = call.params.string("template")
    hold = call.params.boolean("hold", False)
    call.params.end()
    return await _bad_values_as(ErrorCode.INTERNAL, call.daemon.vms.allocate(
        text, hold=hold, uid=call.user.id, gid=call.user.gid))


async def vm_info(call: Call) -> object:
    """``one.vm.info(id [, decrypt])``: the full VM document."""
    vm_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    vm = await call.daemon.vms.info(vm_id)
    return documents.vm_document(vm, uname=await call.user_name(vm.uid),
                                 gname=await call.group_name(vm.gid))


async def vm_deploy(call: Call) -> object:
    """``id, host_id [, enforce [, ds_id [, extra]]]``; ds_id and extra are accepted, unused.

    cloudburst has no datastores and no NIC scheduling, so the system
    datastore and the extra template change nothing.
    """
    params = call.params
    vm_id, host_id = params.integer("id"), params.integer("host_id")
    enforce = params.boolean("enforce", False)
    params.integer("ds_id", -1)
    params.string("extra_template", "")
    params.end()
    return await _refused_as_action("deploy",
                                    call.daemon.vms.deploy(vm_id, host_id, enforce=enforce))


async def vm_action(call: Call) -> object:
    """``one.vm.action(action, id)``; a refusal reads ``Error performing action "..."``."""
    action, vm_id = call.params.string("action"), call.params.integer("id")
    call.params.end()
    return await _refused_as_action(action, call.daemon.vms.action(action, vm_id))


async def vm_migrate(call: Call) -> object:
    """``one.vm.migrate(id, host_id [, live [, enforce [, ds_id [, type]]]])``.

    ``ds_id`` and the migration type (0 save, 1 poweroff, 2 poweroff-hard) are
    accepted; cloudburst has no datastores and migrates by saving (or live).
    """
    params = call.params
    vm_id, host_id = params.integer("id"), params.integer("host_id")
    live = params.boolean("live", False)
    enforce = params.boolean("enforce", False)
    params.integer("ds_id", -1)
    params.integer("migration_type", 0)
    params.end()
    return await _refused_as_action(
        "migrate", call.daemon.vms.migrate(vm_id, host_id, live=live, enforce=enforce))


async def vm_recover(call: Call) -> object:
    """``one.vm.recover(id, operation)``: 0 failure, 1 success, 2 retry, 3 delete,
    4 recreate, 5 delete-db; an unknown operation is 0x0800, as oned answers it."""
    vm_id, operation = call.params.integer("id"), call.params.integer("operation")
    call.params.end()
    return await _refused_as_action("recover", _bad_values_as(
        ErrorCode.ACTION, call.daemon.vms.recover(vm_id, operation)))


async def vm_resize(call: Call) -> object:
    """``one.vm.resize(id, template [, enforce])``: new CPU, VCPU and/or MEMORY; a bad
    value is 0x2000, as oned answers it."""
    vm_id, text = call.params.integer("id"), call.params.string("template")
    call.params.boolean("enforce", False)
    call.params.end()
    return await _refused_as_action("resize", _bad_values_as(
        ErrorCode.INTERNAL, call.daemon.vms.resize(vm_id, text)))


async def vm_lock(call: Call) -> object:
    """``one.vm.lock(id, level [, test])``: 1 use, 2 manage, 3 admin, 4 all; an unknown
    level is 0x0800, as oned answers it."""
    vm_id, level = call.params.integer("id"), call.params.integer("level")
    test = call.params.boolean("test", False)
    call.params.end()
    return await _bad_values_as(ErrorCode.ACTION, call.daemon.vms.lock(
        vm_id, level, owner=call.user.id, test=test))


async def vm_unlock(call: Call) -> object:
    """``one.vm.unlock(id)``."""
    vm_id = call.params.integer("id")
    call.params.end()
    return await call.daemon.vms.unlock(vm_id)


async def vm_attach(call: Call) -> object:
    """``one.vm.attach(id, template)`` (also ``one.vm.diskattach``): hot-plug a DISK."""
    vm_id, text = call.params.integer("id"), call.params.string("template")
    call.params.end()
    return await _refused_as_action("disk-attach", call.daemon.vms.attach(vm_id, "DISK", text))


async def vm_detach(call: Call) -> object:
    """``one.vm.detach(id, disk_id)`` (also ``one.vm.diskdetach``)."""
    vm_id, disk_id = call.params.integer("id"), call.params.integer("disk_id")
    call.params.end()
    return await _refused_as_action("disk-detach",
                                    call.daemon.vms.detach(vm_id, "DISK", disk_id))


async def vm_attachnic(call: Call) -> object:
    """``one.vm.attachnic(id, template)`` (also ``one.vm.nicattach``): hot-plug a NIC."""
    vm_id, text = call.params.integer("id"), call.params.string("template")
    call.params.end()
    return await _refused_as_action("nic-attach", call.daemon.vms.attach(vm_id, "NIC", text))


async def vm_detachnic(call: Call) -> object:
    """``one.vm.detachnic(id, nic_id)`` (also ``one.vm.nicdetach``)."""
    vm_id, nic_id = call.params.integer("id"), call.params.integer("nic_id")
    call.params.end()
    return await _refused_as_action("nic-detach", call.daemon.vms.detach(vm_id, "NIC", nic_id))


async def vm_snapshotcreate(call: Call) -> object:
    """``one.vm.snapshotcreate(id, name)``: the new snapshot's id."""
    vm_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await _refused_as_action("snapshot-create",
                                    call.daemon.vms.snapshot_create(vm_id, name))


async def vm_snapshotrevert(call: Call) -> object:
    """``one.vm.snapshotrevert(id, snapshot_id)``."""
    vm_id, snapshot_id = call.params.integer("id"), call.params.integer("snapshot_id")
    call.params.end()
    return await _refused_as_action("snapshot-revert",
                                    call.daemon.vms.snapshot_revert(vm_id, snapshot_id))


async def vm_snapshotdelete(call: Call) -> object:
    """``one.vm.snapshotdelete(id, snapshot_id)``."""
    vm_id, snapshot_id = call.params.integer("id"), call.params.integer("snapshot_id")
    call.params.end()
    return await _refused_as_action("snapshot-delete",
                                    call.daemon.vms.snapshot_delete(vm_id, snapshot_id))


async def _bad_values_as(code: ErrorCode, work: Awaitable[int]) -> int:
    """Await ``work``; a value it refuses (:class:`ApiArgumentError`,
    :class:`ValidationError`: the message names it) is answered with ``code``, the
    code oned gives that method's bad values."""
    try:
        return await work
    except (ApiArgumentError, ValidationError) as exc:
        raise CallFailure(exc.message, code) from exc


async def _refused_as_action(action: str, work: Awaitable[int]) -> int:
    """Await ``work``; a refusal reads ``Error performing action "..."`` as oned words it
    (a quota refusal is worded as it is, as oned does). A state with no such move
    reads ``This action is not available for state RUNNING``, as in oned's
    ``one.vm.action`` refusals (every lifecycle method here words it that way)."""
    try:
        return await work
    except (NotFoundError, ApiArgumentError, LockedError, QuotaError):
        raise
    except StateRefusedError as exc:
        raise CallFailure(f'Error performing action "{action}": This action is not '
                          f"available for state {exc.state}", exc.code) from exc
    except CloudburstError as exc:
        raise CallFailure(f'Error performing action "{action}": {exc.message}',
                          exc.code) from exc


async def vm_update(call: Call) -> object:
    """``one.vm.update(id, template [, type])``: type 0 replaces, 1 merges."""
    vm_id, text = call.params.integer("id"), call.params.string("template")
    merge = update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.vms.update(vm_id, text, merge=merge)


async def vm_rename(call: Call) -> object:
    """``one.vm.rename(id, name)``."""
    vm_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.vms.rename(vm_id, name)


async def vm_chmod(call: Call) -> object:
    """``one.vm.chmod(id, owner_u, owner_m, owner_a, group_u, ..., other_a)``; -1 keeps."""
    return await chmod(call, "VM")


async def vm_chown(call: Call) -> object:
    """``one.vm.chown(id, uid, gid)``; -1 keeps the owner or the group."""
    return await chown(call, "VM")


async def chmod(call: Call, kind: str) -> int:
    """``one.vm.chmod``/``one.template.chmod``: the object's id."""
    oid = call.params.integer("id")
    values = [call.params.integer(name.lower()) for name in permissions.NAMES]
    call.params.end()
    await call.daemon.access.chmod(kind, oid, values)
    return oid


async def chown(call: Call, kind: str) -> int:
    """``one.vm.chown``/``one.template.chown``: the object's id."""
    oid, uid, gid = (call.params.integer(name) for name in ("id", "uid", "gid"))
    call.params.end()
    await call.daemon.access.chown(kind, oid, uid, gid)
    return oid


async def vmpool_info(call: Call) -> object:
    """``one.vmpool.info(filter, start, end, state [, query])``: short VM documents."""
    return await _vm_pool(call, extended=False)


async def vmpool_infoextended(call: Call) -> object:
    """``one.vmpool.infoextended``: as :func:`vmpool_info`, with full VM documents."""
    return await _vm_pool(call, extended=True)


async def _vm_pool(call: Call, *, extended: bool) -> str:
    """The vmpool document for ``filter, start, end, state [, query]``."""
    params = call.params
    flag, start, end = params.integer("filter"), params.integer("start"), params.integer("end")
    state = params.integer("state")
    visible = await call.daemon.access.visible(caller_of(call.user), "VM")
    query = pool_query(call.user, flag, start, end, name_filter(params.string("query", "")),
                       visible=visible)
    params.end()
    stamps = await call.daemon.vms.pool_stamps(
        state=state, uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit, descending=True)
    selected = query.select(stamps, _stamp_owner)
    return await cache_of(call.daemon).document(
        call.daemon, selected, extended=extended, uname=await call.user_names(),
        gname=await call.group_names())


def _stamp_owner(stamp: VmStamp) -> Owned:
    return stamp.id, stamp.uid, stamp.gid, stamp.perms, stamp.name

"""The ``one.vm.*`` and ``one.vmpool.*`` methods.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from typing import Final

from cloudburst.api import documents
from cloudburst.api.calls import Call, CallFailure, shown_name, update_type
from cloudburst.api.encoded import EncodedText
from cloudburst.api.pool_query import Owned, name_filter, pool_query
from cloudburst.api.vm_pool_cache import cache_of
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
from cloudburst.store.vm_pool import NamedVm, VmStamp

#: An id at the start of an item of ``one.vmpool.infoset``'s list.
_LEADING_NUMBER: Final = re.compile(r"-?\d+")

__all__ = [
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
    "vm_updateconf",
    "vmpool_info",
    "vmpool_infoextended",
    "vmpool_infoset",
]


async def vm_allocate(call: Call, template: str, hold: bool = False) -> object:
    """``one.vm.allocate(template [, hold])``: the new VM's id, owned by the caller.

    A template that fails its checks (CPU, MEMORY, VCPU, NAME, the
    expressions) is answered with code 0x2000, as oned answers it here
    (``one.template.instantiate`` answers the same checks with 0x4000).
    """
    return await _bad_values_as(ErrorCode.INTERNAL, call.daemon.vms.allocate(
        template, hold=hold, uid=call.user.id, gid=call.user.gid))


async def vm_info(call: Call, id: int, decrypt: bool = False) -> object:
    """``one.vm.info(id [, decrypt])``: the full VM document (of the VM its access check
    read: :data:`~cloudburst.api.xmlrpc.SUBJECT_READS`)."""
    assert isinstance(call.subject, NamedVm)
    vm, uname, gname, _ = call.subject
    return documents.vm_document(vm, uname=shown_name(uname, vm.uid),
                                 gname=shown_name(gname, vm.gid))


async def vm_deploy(call: Call, id: int, host_id: int, enforce: bool = False, ds_id: int = -1,
                    extra_template: str = "") -> object:
    """``id, host_id [, enforce [, ds_id [, extra]]]``; ds_id and extra are accepted, unused.

    cloudburst has no datastores and no NIC scheduling, so the system
    datastore and the extra template change nothing.
    """
    return await _refused_as_action("deploy",
                                    call.daemon.vms.deploy(id, host_id, enforce=enforce))


async def vm_action(call: Call, action: str, id: int) -> object:
    """``one.vm.action(action, id)``; a refusal reads ``Error performing action "..."``."""
    return await _refused_as_action(action, call.daemon.vms.action(action, id))


async def vm_migrate(call: Call, id: int, host_id: int, live: bool = False,
                     enforce: bool = False, ds_id: int = -1,
                     migration_type: int = 0) -> object:
    """``one.vm.migrate(id, host_id [, live [, enforce [, ds_id [, type]]]])``.

    ``ds_id`` and the migration type (0 save, 1 poweroff, 2 poweroff-hard) are
    accepted; cloudburst has no datastores and migrates by saving (or live).
    """
    return await _refused_as_action(
        "migrate", call.daemon.vms.migrate(id, host_id, live=live, enforce=enforce))


async def vm_recover(call: Call, id: int, operation: int) -> object:
    """``one.vm.recover(id, operation)``: 0 failure, 1 success, 2 retry, 3 delete,
    4 recreate, 5 delete-db; an unknown operation is 0x0800, as oned answers it."""
    return await _refused_as_action("recover", _bad_values_as(
        ErrorCode.ACTION, call.daemon.vms.recover(id, operation)))


async def vm_resize(call: Call, id: int, template: str, enforce: bool = False) -> object:
    """``one.vm.resize(id, template [, enforce])``: new CPU, VCPU and/or MEMORY; a bad
    value is 0x2000, as oned answers it."""
    return await _refused_as_action("resize", _bad_values_as(
        ErrorCode.INTERNAL, call.daemon.vms.resize(id, template)))


async def vm_lock(call: Call, id: int, level: int, test: bool = False) -> object:
    """``one.vm.lock(id, level [, test])``: 1 use, 2 manage, 3 admin, 4 all; an unknown
    level is 0x0800, as oned answers it."""
    return await _bad_values_as(ErrorCode.ACTION, call.daemon.vms.lock(
        id, level, owner=call.user.id, test=test))


async def vm_unlock(call: Call, id: int) -> object:
    """``one.vm.unlock(id)``."""
    return await call.daemon.vms.unlock(id)


async def vm_attach(call: Call, id: int, template: str) -> object:
    """``one.vm.attach(id, template)`` (also ``one.vm.diskattach``): hot-plug a DISK."""
    return await _refused_as_action("disk-attach", call.daemon.vms.attach(id, "DISK", template))


async def vm_detach(call: Call, id: int, disk_id: int) -> object:
    """``one.vm.detach(id, disk_id)`` (also ``one.vm.diskdetach``)."""
    return await _refused_as_action("disk-detach", call.daemon.vms.detach(id, "DISK", disk_id))


async def vm_attachnic(call: Call, id: int, template: str) -> object:
    """``one.vm.attachnic(id, template)`` (also ``one.vm.nicattach``): hot-plug a NIC."""
    return await _refused_as_action("nic-attach", call.daemon.vms.attach(id, "NIC", template))


async def vm_detachnic(call: Call, id: int, nic_id: int) -> object:
    """``one.vm.detachnic(id, nic_id)`` (also ``one.vm.nicdetach``)."""
    return await _refused_as_action("nic-detach", call.daemon.vms.detach(id, "NIC", nic_id))


async def vm_snapshotcreate(call: Call, id: int, name: str) -> object:
    """``one.vm.snapshotcreate(id, name)``: the new snapshot's id."""
    return await _refused_as_action("snapshot-create", call.daemon.vms.snapshot_create(id, name))


async def vm_snapshotrevert(call: Call, id: int, snapshot_id: int) -> object:
    """``one.vm.snapshotrevert(id, snapshot_id)``."""
    return await _refused_as_action("snapshot-revert",
                                    call.daemon.vms.snapshot_revert(id, snapshot_id))


async def vm_snapshotdelete(call: Call, id: int, snapshot_id: int) -> object:
    """``one.vm.snapshotdelete(id, snapshot_id)``."""
    return await _refused_as_action("snapshot-delete",
                                    call.daemon.vms.snapshot_delete(id, snapshot_id))


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


async def vm_update(call: Call, id: int, template: str, type: int = 0) -> object:
    """``one.vm.update(id, template [, type])``: type 0 replaces, 1 merges."""
    return await call.daemon.vms.update(id, template, merge=update_type(type))


async def vm_updateconf(call: Call, id: int, template: str, type: int = 0) -> object:
    """``one.vm.updateconf(id, template [, type])``: type 0 replaces, 1 merges. Its
    refusals (a state, a value) are answered 0x2000, as oned answers them."""
    try:
        return await _bad_values_as(ErrorCode.INTERNAL, call.daemon.vms.update_conf(
            id, template, merge=update_type(type)))
    except StateRefusedError as exc:
        raise CallFailure(exc.message, ErrorCode.INTERNAL) from exc


async def vm_rename(call: Call, id: int, name: str) -> object:
    """``one.vm.rename(id, name)``."""
    return await call.daemon.vms.rename(id, name)


async def vm_chmod(call: Call, id: int, owner_u: int, owner_m: int, owner_a: int,
                   group_u: int, group_m: int, group_a: int, other_u: int, other_m: int,
                   other_a: int) -> object:
    """``one.vm.chmod(id, owner_u, owner_m, owner_a, group_u, ..., other_a)``; -1 keeps."""
    await call.daemon.access.chmod("VM", id, [owner_u, owner_m, owner_a, group_u, group_m,
                                              group_a, other_u, other_m, other_a])
    return id


async def vm_chown(call: Call, id: int, uid: int, gid: int) -> object:
    """``one.vm.chown(id, uid, gid)``; -1 keeps the owner or the group."""
    await call.daemon.access.chown("VM", id, uid, gid)
    return id


async def vmpool_info(call: Call, filter: int, start: int, end: int, state: int,
                      query: str = "") -> object:
    """``one.vmpool.info(filter, start, end, state [, query])``: short VM documents."""
    return await _vm_pool(call, (filter, start, end, state, query), extended=False)


async def vmpool_infoextended(call: Call, filter: int, start: int, end: int, state: int,
                              query: str = "") -> object:
    """``one.vmpool.infoextended``: as :func:`vmpool_info`, with full VM documents."""
    return await _vm_pool(call, (filter, start, end, state, query), extended=True)


async def vmpool_infoset(call: Call, ids: str, extended: bool = False) -> object:
    """``one.vmpool.infoset(ids [, extended])``: the VMs a comma-separated id list names
    that the caller may use, highest id first (short or, with ``extended``, full
    documents). As oned reads the list, each item counts by its leading number ("3",
    " 3", "3x"); an item without one, or a VM that does not exist, is left out."""
    wanted = {int(match.group()) for item in ids.split(",")
              if (match := _LEADING_NUMBER.match(item.lstrip()))}
    if not wanted:
        return "<VM_POOL></VM_POOL>"
    visible = await call.daemon.access.visible(caller_of(call.user), "VM")
    stamps = await call.daemon.vms.pool_stamps(state=-2, first_id=min(wanted),
                                               last_id=max(wanted), descending=True)
    selected = pool_query(call.user, -2, -1, -1, visible=visible).select(
        [stamp for stamp in stamps if stamp.id in wanted], _stamp_owner)
    return await cache_of(call.daemon).document(call.daemon, selected, extended=extended)


async def _vm_pool(call: Call, arguments: tuple[int, int, int, int, str], *,
                   extended: bool) -> EncodedText:
    """The vmpool document for ``filter, start, end, state, query``."""
    flag, start, end, state, text = arguments
    visible = await call.daemon.access.pool_filter(caller_of(call.user), "VM")
    query = pool_query(call.user, flag, start, end, name_filter(text), visible=visible)
    stamps = await call.daemon.vms.pool_stamps(
        state=state, uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit, descending=True)
    selected = query.select(stamps, _stamp_owner)
    return await cache_of(call.daemon).document(call.daemon, selected, extended=extended)


def _stamp_owner(stamp: VmStamp) -> Owned:
    return stamp.id, stamp.uid, stamp.gid, stamp.perms, stamp.name

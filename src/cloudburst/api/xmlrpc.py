"""The ``one.*`` methods: argument checking, calls into the services, oned's replies.

:func:`dispatch` authenticates the session (every method, ``one.system.version``
included), checks the parameters against the 6.x/7.x signatures of
spec/pyone.md section 5 (optional trailing parameters accepted) and returns
oned's reply array: ``[True, value, 0]`` or ``[False, "[method] message", code]``.
Messages follow oned's wording (``src/rm/Request.cc``), e.g.
``[one.vm.info] Error getting virtual machine [5].``

Large pool documents are rendered on a worker thread so the event loop keeps
serving other clients meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from cloudburst.api import documents
from cloudburst.daemon.app import VERSION, Daemon
from cloudburst.errors import (
    ApiArgumentError,
    CloudburstError,
    ErrorCode,
    NotFoundError,
    one_line,
)
from cloudburst.model.records import TemplateRecord, UserRecord, VmRecord

log = logging.getLogger(__name__)

__all__ = ["METHODS", "UnknownMethodError", "dispatch"]

Reply = list[object]
T = TypeVar("T")


class UnknownMethodError(Exception):
    """No such ``one.*`` method; the server answers with an XML-RPC fault."""


class _Failure(Exception):
    """A failed call whose final message (without the method prefix) is decided."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


#: oned's names for the objects of "Error getting <object> [<id>]."
_OBJECT_NAMES: Final = {
    "VM": "virtual machine",
    "HOST": "host",
    "TEMPLATE": "virtual machine template",
    "USER": "user",
}
_NOT_FOUND_RE: Final = re.compile(r"(VM|HOST|TEMPLATE|USER) (-?\d+) does not exist")

_MISSING: Final = object()
#: XML-RPC ``<int>`` is 32-bit; ``<i8>`` values beyond it are refused, as by oned.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_TYPE_NAMES: Final = {int: "an integer", str: "a string", bool: "a boolean"}


# -- parameters ---------------------------------------------------------------------------


class Params:
    """The parameters after the session, read in order with their types checked.

    Each reader takes the next parameter; with a default it is optional (and
    only trailing parameters may be). :meth:`end` refuses surplus parameters.
    Errors are :class:`~cloudburst.errors.ApiArgumentError` (0x1000).
    """

    def __init__(self, values: Sequence[object]) -> None:
        self._values = values
        self._next = 0

    def _take(self, kind: type[T], name: str, default: object) -> T:
        position = self._next + 1
        if self._next >= len(self._values):
            if default is _MISSING:
                raise ApiArgumentError(f"Missing parameter {position} ({name}): expected "
                                       f"{_TYPE_NAMES[kind]}")
            self._next += 1
            return default  # type: ignore[return-value]
        value = self._values[self._next]
        self._next += 1
        # bool is an int in Python but not in XML-RPC: keep them apart.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ApiArgumentError(
                f"Wrong type of parameter {position} ({name}): expected {_TYPE_NAMES[kind]}, "
                f"got {_describe(value)}")
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise ApiArgumentError(f"Parameter {position} ({name}) is out of range: {value} "
                                   "does not fit in 32 bits")
        return value

    def integer(self, name: str, default: int | object = _MISSING) -> int:
        return self._take(int, name, default)

    def string(self, name: str, default: str | object = _MISSING) -> str:
        return self._take(str, name, default)

    def boolean(self, name: str, default: bool | object = _MISSING) -> bool:
        return self._take(bool, name, default)

    def rest(self) -> Sequence[object]:
        """The parameters not read yet."""
        return self._values[self._next:]

    def end(self) -> None:
        """Refuse parameters beyond those read."""
        if len(self._values) > self._next:
            raise ApiArgumentError(
                f"Too many parameters: expected at most {self._next}, got {len(self._values)}")


def _describe(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, float):
        return "a double"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a struct"
    return f"a {type(value).__name__}"


# -- call context -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated call: who makes it and with what."""

    daemon: Daemon
    user: UserRecord
    params: Params

    async def user_names(self) -> Callable[[int], str]:
        """A lookup from uid to user name (the number when the user is gone)."""
        names = {user.id: user.name for user in await self.daemon.users.pool()}
        return lambda uid: names.get(uid, str(uid))

    async def user_name(self, uid: int) -> str:
        if uid == self.user.id:
            return self.user.name
        return (await self.user_names())(uid)


Handler = Callable[[Call], Awaitable[object]]

METHODS: dict[str, Handler] = {}


def _method(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        METHODS[name] = handler
        return handler

    return register


async def _render(function: Callable[[], str]) -> str:
    """Build a (possibly large) document on a worker thread."""
    return await asyncio.get_running_loop().run_in_executor(None, function)


def _update_type(value: int) -> bool:
    """``one.*.update``'s type: 0 replace, 1 merge; returns whether to merge."""
    if value not in (0, 1):
        raise ApiArgumentError(f"Wrong update type {value}: use 0 (replace) or 1 (merge)")
    return value == 1


# -- pools --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PoolQuery:
    """oned's pool arguments turned into store filters.

    ``uid`` is applied by the store; ``keep`` (owner and group tests the store
    cannot express, and the name query) by Python, in which case the offset and
    limit are applied after it too.
    """

    uid: int | None
    first_id: int | None
    last_id: int | None
    offset: int
    limit: int | None
    keep: Callable[[int, int, str], bool] | None

    def select(self, records: Sequence[T], owner: Callable[[T], tuple[int, int, str]]) -> list[T]:
        """Apply the Python-side part of the query to what the store returned."""
        if self.keep is None:
            return list(records)
        keep = self.keep
        kept = [record for record in records if keep(*owner(record))]
        end = None if self.limit is None else self.offset + self.limit
        return kept[self.offset:end]

    @property
    def store_offset(self) -> int:
        return self.offset if self.keep is None else 0

    @property
    def store_limit(self) -> int | None:
        return self.limit if self.keep is None else None


def pool_query(user: UserRecord, flag: int, start: int, end: int, name_part: str = "") -> PoolQuery:
    """Translate ``filter, start, end`` (spec/pyone.md section 5).

    filter: -2 all, -3 the caller's, -1 the caller's and its group's, -4 its
    group's, >= 0 that user's. start/end: -1,-1 everything; ``end < -1`` is a
    page of ``-end`` objects from offset ``start``; otherwise ids from
    ``start`` (when not -1) to ``end`` (when not -1).

    Raises:
        ApiArgumentError: filter < -4 or start < -1.
    """
    if flag < -4:
        raise ApiArgumentError("Incorrect filter_flag")
    if start < -1:
        raise ApiArgumentError(f"Incorrect start index {start}")
    uid: int | None = None
    tests: list[Callable[[int, int, str], bool]] = []
    if flag >= 0:
        uid = flag
    elif flag == -3:
        uid = user.id
    elif flag == -1:
        tests.append(lambda owner, group, _name: owner == user.id or group == user.gid)
    elif flag == -4:
        tests.append(lambda _owner, group, _name: group == user.gid)
    if name_part:
        tests.append(lambda _owner, _group, name: name_part in name)
    first_id = last_id = limit = None
    offset = 0
    if end < -1:
        offset, limit = max(start, 0), -end
    elif start != -1:
        first_id = start
        last_id = None if end == -1 else end
    keep = None
    if tests:
        keep = lambda owner, group, name: all(test(owner, group, name) for test in tests)  # noqa: E731
    return PoolQuery(uid=uid, first_id=first_id, last_id=last_id, offset=offset, limit=limit,
                     keep=keep)


def name_filter(query: str) -> str:
    """The NAME substring a vmpool ``KEY=VAL&...`` query asks for ("" when none).

    ``NAME`` and ``VM.NAME`` keys (any case) are honoured; other keys are
    ignored, as they would need oned's JSON body search.
    """
    wanted = ""
    for pair in query.split("&"):
        key, equals, value = pair.partition("=")
        if equals and key.strip().upper() in ("NAME", "VM.NAME"):
            wanted = value
    return wanted


def _vm_owner(vm: VmRecord) -> tuple[int, int, str]:
    return vm.uid, vm.gid, vm.name


def _template_owner(record: TemplateRecord) -> tuple[int, int, str]:
    return record.uid, record.gid, record.name


# -- one.system ---------------------------------------------------------------------------


@_method("one.system.version")
async def _system_version(call: Call) -> object:
    call.params.end()
    return VERSION


@_method("one.system.config")
async def _system_config(call: Call) -> object:
    call.params.end()
    return documents.config_document(call.daemon.settings)


# -- one.user -----------------------------------------------------------------------------


@_method("one.user.info")
async def _user_info(call: Call) -> object:
    user_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    user = call.user if user_id == -1 else await call.daemon.users.info(user_id)
    return documents.user_document(user)


@_method("one.userpool.info")
async def _userpool_info(call: Call) -> object:
    call.params.end()
    return documents.user_pool_document(await call.daemon.users.pool())


# -- one.host -----------------------------------------------------------------------------


@_method("one.host.allocate")
async def _host_allocate(call: Call) -> object:
    """6.x ``name, im, vmm, cluster`` and the older forms the seeds use.

    3.0 ``name, im, vmm, tm``; 3.2 ``name, im, vmm, tm, vnm``; 3.4-4.x
    ``name, im, vmm, vnm, cluster``. The cluster may be -1 (default) or 0.
    """
    params = call.params
    name, im_mad = params.string("hostname"), params.string("im_mad")
    vm_mad = params.string("vmm_mad")
    rest = params.rest()
    kinds = tuple(type(value) for value in rest)
    tm_mad = vn_mad = "dummy"
    cluster_id = -1
    if kinds == (int,):
        cluster_id = params.integer("cluster_id")
    elif kinds == (str,):
        tm_mad = params.string("tm_mad")
    elif kinds == (str, str):
        tm_mad, vn_mad = params.string("tm_mad"), params.string("vnm_mad")
    elif kinds == (str, int):
        vn_mad, cluster_id = params.string("vnm_mad"), params.integer("cluster_id")
    elif rest:
        raise ApiArgumentError(
            "Wrong parameters: use hostname, im_mad, vmm_mad, cluster_id (int); or the 3.x/4.x "
            "forms hostname, im_mad, vmm_mad, tm_mad [, vnm_mad] and hostname, im_mad, vmm_mad, "
            "vnm_mad, cluster_id")
    params.end()
    if cluster_id not in (-1, 0):
        raise _Failure(f"Error getting cluster [{cluster_id}].", ErrorCode.NO_EXISTS)
    return await call.daemon.hosts.allocate(name, im_mad, vm_mad, tm_mad=tm_mad, vn_mad=vn_mad,
                                            cluster_id=cluster_id)


@_method("one.host.info")
async def _host_info(call: Call) -> object:
    host_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    return documents.host_document(await call.daemon.hosts.info(host_id))


@_method("one.hostpool.info")
async def _hostpool_info(call: Call) -> object:
    call.params.end()
    hosts = await call.daemon.hosts.pool()
    return await _render(lambda: documents.host_pool_document(hosts))


@_method("one.host.delete")
async def _host_delete(call: Call) -> object:
    host_id = call.params.integer("id")
    call.params.end()
    return await call.daemon.hosts.delete(host_id)


@_method("one.host.status")
async def _host_status(call: Call) -> object:
    host_id, status = call.params.integer("id"), call.params.integer("status")
    call.params.end()
    return await call.daemon.hosts.status(host_id, status)


@_method("one.host.update")
async def _host_update(call: Call) -> object:
    host_id, text = call.params.integer("id"), call.params.string("template")
    merge = _update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.hosts.update(host_id, text, merge=merge)


@_method("one.host.rename")
async def _host_rename(call: Call) -> object:
    host_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.hosts.rename(host_id, name)


# -- one.vm -------------------------------------------------------------------------------


@_method("one.vm.allocate")
async def _vm_allocate(call: Call) -> object:
    text = call.params.string("template")
    hold = call.params.boolean("hold", False)
    call.params.end()
    return await call.daemon.vms.allocate(text, hold=hold, uid=call.user.id, gid=call.user.gid)


@_method("one.vm.info")
async def _vm_info(call: Call) -> object:
    vm_id = call.params.integer("id")
    call.params.boolean("decrypt", False)
    call.params.end()
    vm = await call.daemon.vms.info(vm_id)
    return documents.vm_document(vm, uname=await call.user_name(vm.uid),
                                 gname=documents.group_name(vm.gid))


@_method("one.vm.deploy")
async def _vm_deploy(call: Call) -> object:
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
    return await call.daemon.vms.deploy(vm_id, host_id, enforce=enforce)


@_method("one.vm.action")
async def _vm_action(call: Call) -> object:
    action, vm_id = call.params.string("action"), call.params.integer("id")
    call.params.end()
    try:
        return await call.daemon.vms.action(action, vm_id)
    except NotFoundError:
        raise
    except CloudburstError as exc:
        raise _Failure(f'Error performing action "{action}": {exc.message}', exc.code) from exc


@_method("one.vm.update")
async def _vm_update(call: Call) -> object:
    vm_id, text = call.params.integer("id"), call.params.string("template")
    merge = _update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.vms.update(vm_id, text, merge=merge)


@_method("one.vm.rename")
async def _vm_rename(call: Call) -> object:
    vm_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.vms.rename(vm_id, name)


async def _vm_pool(call: Call, *, extended: bool) -> str:
    params = call.params
    flag, start, end = params.integer("filter"), params.integer("start"), params.integer("end")
    state = params.integer("state")
    query = pool_query(call.user, flag, start, end, name_filter(params.string("query", "")))
    params.end()
    vms = await call.daemon.vms.pool(
        state=state, uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit)
    selected = query.select(vms, _vm_owner)
    names = await call.user_names()
    return await _render(
        lambda: documents.vm_pool_document(selected, extended=extended, uname=names))


@_method("one.vmpool.info")
async def _vmpool_info(call: Call) -> object:
    return await _vm_pool(call, extended=False)


@_method("one.vmpool.infoextended")
async def _vmpool_infoextended(call: Call) -> object:
    return await _vm_pool(call, extended=True)


# -- one.template -------------------------------------------------------------------------


@_method("one.template.allocate")
async def _template_allocate(call: Call) -> object:
    text = call.params.string("template")
    call.params.end()
    return await call.daemon.templates.allocate(text, uid=call.user.id, gid=call.user.gid)


@_method("one.template.info")
async def _template_info(call: Call) -> object:
    template_id = call.params.integer("id")
    call.params.boolean("extended", False)
    call.params.boolean("decrypt", False)
    call.params.end()
    record = await call.daemon.templates.info(template_id)
    return documents.template_document(record, uname=await call.user_name(record.uid))


@_method("one.template.instantiate")
async def _template_instantiate(call: Call) -> object:
    params = call.params
    template_id, name = params.integer("id"), params.string("name")
    hold = params.boolean("hold", False)
    extra = params.string("extra_template", "")
    params.boolean("persistent", False)
    params.end()
    return await call.daemon.templates.instantiate(template_id, name, hold=hold, extra=extra,
                                                   uid=call.user.id, gid=call.user.gid)


@_method("one.template.delete")
async def _template_delete(call: Call) -> object:
    template_id = call.params.integer("id")
    call.params.boolean("recursive", False)
    call.params.end()
    return await call.daemon.templates.delete(template_id)


@_method("one.template.update")
async def _template_update(call: Call) -> object:
    template_id, text = call.params.integer("id"), call.params.string("template")
    merge = _update_type(call.params.integer("type", 0))
    call.params.end()
    return await call.daemon.templates.update(template_id, text, merge=merge)


@_method("one.template.rename")
async def _template_rename(call: Call) -> object:
    template_id, name = call.params.integer("id"), call.params.string("name")
    call.params.end()
    return await call.daemon.templates.rename(template_id, name)


@_method("one.templatepool.info")
async def _templatepool_info(call: Call) -> object:
    params = call.params
    flag, start, end = params.integer("filter"), params.integer("start"), params.integer("end")
    query = pool_query(call.user, flag, start, end)
    params.end()
    records = await call.daemon.templates.pool(
        uid=query.uid, first_id=query.first_id, last_id=query.last_id,
        offset=query.store_offset, limit=query.store_limit)
    selected = query.select(records, _template_owner)
    names = await call.user_names()
    return await _render(lambda: documents.template_pool_document(selected, uname=names))


# -- dispatch -----------------------------------------------------------------------------


def _not_found_message(error: NotFoundError) -> str:
    """oned's "Error getting <object> [<id>]." for the store's "<KIND> <id> does not exist"."""
    match = _NOT_FOUND_RE.fullmatch(error.message)
    if match is None:
        return error.message
    return f"Error getting {_OBJECT_NAMES[match.group(1)]} [{match.group(2)}]."


def _id_hint(params: Sequence[object]) -> str:
    """The integer parameters of a call, for the log (never strings: templates, passwords)."""
    return ",".join(str(value) for value in params
                    if isinstance(value, int) and not isinstance(value, bool))


async def dispatch(daemon: Daemon, method: str, params: Sequence[object]) -> Reply:
    """Run ``method`` with ``params`` (the session first) and return oned's reply.

    Raises:
        UnknownMethodError: no such method (the caller answers with a fault).
    """
    handler = METHODS.get(method)
    if handler is None:
        raise UnknownMethodError(method)
    log.debug("call %s (%s)", method, _id_hint(params[1:]))
    try:
        if not params:
            raise ApiArgumentError("Missing parameter 0 (session)")
        user = await daemon.users.authenticate(params[0])
        value = await handler(Call(daemon, user, Params(params[1:])))
    except _Failure as exc:
        return _failed(method, exc.message, exc.code)
    except NotFoundError as exc:
        return _failed(method, _not_found_message(exc), exc.code)
    except CloudburstError as exc:
        if exc.code is ErrorCode.AUTHENTICATION:
            log.info("%s: authentication failed", method)
        return _failed(method, exc.message, exc.code)
    except Exception:
        log.exception("%s (%s): internal error", method, _id_hint(params[1:]))
        return _failed(method, "Internal error", ErrorCode.INTERNAL)
    return [True, value, 0]


def _failed(method: str, message: str, code: int) -> Reply:
    return [False, f"[{method}] {one_line(message, limit=2048)}", int(code)]

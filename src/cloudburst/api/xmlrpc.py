"""The ``one.*`` methods: the dispatch table, authentication and oned's replies.

:func:`dispatch` authenticates the session (every method, ``one.system.version``
included), checks every parameter against the method's 6.x/7.x signature of
spec/pyone.md section 5 as its handler declares it (optional trailing parameters
accepted; see :class:`~cloudburst.api.calls.Signature`) before it authorizes the
call, runs the handler and returns oned's reply
array: ``[True, value, 0]`` or, as oned 6.10 sends it, five items
``[False, "[method] message", code, object id, -1]`` (the id of the object
that was not found, else -1; the last item is oned's replication index).
Messages follow oned's wording (``src/rm/Request.cc``), e.g.
``[one.vm.info] Error getting virtual machine [5].`` Two kinds of calls get an
XML-RPC fault instead (:class:`CallFault`), as oned's XML-RPC layer answers them:
an unknown method (-506) and a missing or wrongly typed parameter (-501, the
message naming the parameter: ``Wrong type of parameter 1 (id): expected an
integer, got a string``; like oned's faults it carries no ``[method]`` prefix).

The handlers live in one module per pool (``methods_system`` for
``one.system`` and ``one.user``, ``methods_host``, ``methods_vm``,
``methods_template``); :data:`METHODS` names them all. Large pool documents
are rendered on a worker thread so the event loop keeps serving other clients
meanwhile.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from typing import Final

from cloudburst.api import (
    methods_group,
    methods_host,
    methods_system,
    methods_template,
    methods_user,
    methods_vm,
)
from cloudburst.api.calls import (
    PARAMETER_FAULT,
    Call,
    CallFailure,
    Handler,
    ParameterFault,
    Signature,
    session_of,
)
from cloudburst.errors import (
    CloudburstError,
    ErrorCode,
    NotFoundError,
    StoreUnavailableError,
    one_line,
)
from cloudburst.model.records import UserRecord
from cloudburst.service import access_table
from cloudburst.service.facade import Services
from cloudburst.store.ownership import OwnedRead

log = logging.getLogger(__name__)

__all__ = ["METHODS", "METHOD_NOT_FOUND", "SIGNATURES", "CallFault", "UnknownMethodError",
           "dispatch"]

Reply = list[object]


#: The XML-RPC fault code oned (xmlrpc-c) answers an unknown method with.
METHOD_NOT_FOUND: Final = -506


class CallFault(Exception):
    """The call is answered with XML-RPC fault ``code`` and ``message``, not a reply array."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class UnknownMethodError(CallFault):
    """No such ``one.*`` method: fault -506 ``Method 'one.x.y' not defined``, as oned."""

    def __init__(self, method: str) -> None:
        super().__init__(METHOD_NOT_FOUND, f"Method {one_line(method, 200)!r} not defined")


#: Every ``one.*`` method, by its XML-RPC name.
METHODS: Final[dict[str, Handler]] = {
    "one.system.version": methods_system.system_version,
    "one.system.config": methods_system.system_config,
    **methods_user.METHODS,
    **methods_group.METHODS,
    "one.host.allocate": methods_host.host_allocate,
    "one.host.info": methods_host.host_info,
    "one.hostpool.info": methods_host.hostpool_info,
    "one.host.delete": methods_host.host_delete,
    "one.host.status": methods_host.host_status,
    "one.host.update": methods_host.host_update,
    "one.host.rename": methods_host.host_rename,
    "one.vm.allocate": methods_vm.vm_allocate,
    "one.vm.info": methods_vm.vm_info,
    "one.vm.deploy": methods_vm.vm_deploy,
    "one.vm.action": methods_vm.vm_action,
    "one.vm.update": methods_vm.vm_update,
    "one.vm.updateconf": methods_vm.vm_updateconf,
    "one.vm.migrate": methods_vm.vm_migrate,
    "one.vm.recover": methods_vm.vm_recover,
    "one.vm.resize": methods_vm.vm_resize,
    "one.vm.lock": methods_vm.vm_lock,
    "one.vm.unlock": methods_vm.vm_unlock,
    "one.vm.attach": methods_vm.vm_attach,
    "one.vm.detach": methods_vm.vm_detach,
    "one.vm.diskattach": methods_vm.vm_attach,
    "one.vm.diskdetach": methods_vm.vm_detach,
    "one.vm.attachnic": methods_vm.vm_attachnic,
    "one.vm.detachnic": methods_vm.vm_detachnic,
    "one.vm.nicattach": methods_vm.vm_attachnic,
    "one.vm.nicdetach": methods_vm.vm_detachnic,
    "one.vm.snapshotcreate": methods_vm.vm_snapshotcreate,
    "one.vm.snapshotrevert": methods_vm.vm_snapshotrevert,
    "one.vm.snapshotdelete": methods_vm.vm_snapshotdelete,
    "one.vm.rename": methods_vm.vm_rename,
    "one.vm.chmod": methods_vm.vm_chmod,
    "one.vm.chown": methods_vm.vm_chown,
    "one.vmpool.info": methods_vm.vmpool_info,
    "one.vmpool.infoextended": methods_vm.vmpool_infoextended,
    "one.vmpool.infoset": methods_vm.vmpool_infoset,
    "one.template.allocate": methods_template.template_allocate,
    "one.template.info": methods_template.template_info,
    "one.template.instantiate": methods_template.template_instantiate,
    "one.template.clone": methods_template.template_clone,
    "one.template.delete": methods_template.template_delete,
    "one.template.update": methods_template.template_update,
    "one.template.rename": methods_template.template_rename,
    "one.template.chmod": methods_template.template_chmod,
    "one.template.chown": methods_template.template_chown,
    "one.templatepool.info": methods_template.templatepool_info,
}


#: Each method's parameters, as its handler declares them (checked before authorization).
SIGNATURES: Final[dict[str, Signature]] = {
    method: Signature.of(handler) for method, handler in METHODS.items()}

#: Methods that show the one object they are authorized on, and how to read it from
#: their arguments: the access check reads it whole and takes its owner from the same
#: row (one statement, not two), and the handler gets it as :attr:`Call.subject`.
SUBJECT_READS: Final[dict[str, Callable[[Services, list[object]], OwnedRead[object]]]] = {
    "one.vm.info": lambda daemon, arguments: daemon.vms.info_read(_int(arguments[0])),
}


def _int(value: object) -> int:
    assert isinstance(value, int)  # the signature checked it
    return value


async def dispatch(daemon: Services, method: str, params: Sequence[object], *,
                   client: str = "") -> Reply:
    """Run ``method`` with ``params`` (the session first) and return oned's reply.

    ``client`` is the caller's address (failed logins are throttled per address).

    Raises:
        CallFault: no such method, or a parameter missing or of the wrong type (the
            caller answers with the fault).
    """
    handler = METHODS.get(method)
    if handler is None:
        raise UnknownMethodError(method)
    log.debug("call %s (%s)", method, _id_hint(params[1:]))
    if method in access_table.READ_ONLY:
        # One hop for the whole call on a networked store: authentication, the access
        # check and the handler's reads all run in an API read lane.
        return await daemon.db.in_read_lane(
            lambda: _answer(daemon, handler, method, params, client))
    return await _answer(daemon, handler, method, params, client)


async def _answer(daemon: Services, handler: Handler, method: str, params: Sequence[object],
                  client: str) -> Reply:
    """:func:`dispatch` once ``method`` is known to be ``handler``."""
    user: UserRecord | None = None
    fault: ParameterFault | None = None
    try:
        user = await daemon.users.authenticate(session_of(params), client=client)
        # Every parameter is typed before the call is authorized, as oned does: a wrongly
        # typed one is the fault even for a caller who may not touch the object.
        arguments = SIGNATURES[method].parse(params[1:])
        read = SUBJECT_READS.get(method)
        subject = await daemon.access.require(
            user, method, params[1:], read=None if read is None else read(daemon, arguments))
        value = await handler(Call(daemon, user, subject), *arguments)
    except ParameterFault as exc:
        fault = exc
        reply = _failed(method, exc.message, exc.code)
    except CallFailure as exc:
        reply = _failed(method, exc.message, exc.code)
    except NotFoundError as exc:
        reply = _failed(method, _not_found_message(exc), exc.code, _not_found_id(exc))
    except CloudburstError as exc:
        if exc.code is ErrorCode.AUTHENTICATION:
            log.info("%s: authentication failed", method)
        reply = _failed(method, exc.message, exc.code)
    except Exception:
        log.exception("%s (%s): internal error", method, _id_hint(params[1:]))
        reply = _failed(method, "Internal error", ErrorCode.INTERNAL)
    else:
        reply = [True, value, 0]
    if user is not None and method not in access_table.READ_ONLY:
        await _audit(daemon, user, method, access_table.target_of(method, params[1:]), reply)
    if fault is not None:
        raise CallFault(PARAMETER_FAULT, one_line(fault.message, limit=2048)) from None
    return reply


async def _audit(daemon: Services, user: UserRecord, method: str, target: str,
                 reply: Reply) -> None:
    """Record a state-changing call; the result is kept only when it is an id."""
    ok, value = bool(reply[0]), reply[1]
    message = str(value) if not ok or (isinstance(value, int) and not isinstance(
        value, bool)) else ""
    try:
        await daemon.audit.record(uid=user.id, uname=user.name, method=method, target=target,
                                  success=ok, message=message)
    except StoreUnavailableError as exc:
        log.warning("%s: the audit record could not be written: %s", method, exc.message)
    except Exception:
        log.exception("%s: the audit record could not be written", method)


# -- error mapping ------------------------------------------------------------------------

#: oned's names for the objects of "Error getting <object> [<id>]."
_OBJECT_NAMES: Final = {
    "VM": "virtual machine",
    "HOST": "host",
    "TEMPLATE": "virtual machine template",
    "USER": "user",
    "GROUP": "group",
    "CLUSTER": "cluster",
}
_NOT_FOUND_RE: Final = re.compile(r"(VM|HOST|TEMPLATE|USER|GROUP|CLUSTER) (-?\d+) does not exist")


def _not_found_message(error: NotFoundError) -> str:
    """oned's "Error getting <object> [<id>]." for the store's "<KIND> <id> does not exist"."""
    match = _NOT_FOUND_RE.fullmatch(error.message)
    if match is None:
        return error.message
    return f"Error getting {_OBJECT_NAMES[match.group(1)]} [{match.group(2)}]."


def _not_found_id(error: NotFoundError) -> int:
    """The id of the object that does not exist (-1 when the message names none)."""
    match = _NOT_FOUND_RE.fullmatch(error.message)
    return -1 if match is None else int(match.group(2))


def _id_hint(params: Sequence[object]) -> str:
    """The integer parameters of a call, for the log (never strings: templates, passwords)."""
    return ",".join(str(value) for value in params
                    if isinstance(value, int) and not isinstance(value, bool))


def _failed(method: str, message: str, code: int, object_id: int = -1) -> Reply:
    """oned's failure reply: the method in brackets, then the message on one line, the
    code, the object concerned (-1: none) and oned's replication index (-1: none)."""
    return [False, f"[{method}] {one_line(message, limit=2048)}", int(code), object_id, -1]

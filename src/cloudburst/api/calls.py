"""What a ``one.*`` method handler gets and may raise.

A :data:`Handler` receives one authenticated :class:`Call` and the call's
parameters as its own typed Python parameters: its :class:`Signature` is read
from the handler itself, and :meth:`Signature.parse` checks a call's arguments
against it (types, missing and surplus ones) before the call is authorized. It
returns the reply value. To fail it raises a
:class:`~cloudburst.errors.CloudburstError` (the message and code go into
oned's reply) or a :class:`CallFailure` when it words the message itself.
:func:`cloudburst.api.xmlrpc.dispatch` turns either into the reply array. A
parameter that is missing or of the wrong XML-RPC type is a :class:`ParameterFault`:
oned's XML-RPC layer answers that with fault -501 instead of a reply array, and so
does cloudburst (with a message naming the parameter).
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final

from cloudburst.errors import ApiArgumentError
from cloudburst.model.records import UserRecord
from cloudburst.service.facade import Services

__all__ = ["PARAMETER_FAULT", "Call", "CallFailure", "Handler", "Parameter", "ParameterFault",
           "Signature", "render", "session_of", "shown_name",
           "update_type"]


_MISSING: Final = object()
#: XML-RPC ``<int>`` is 32-bit; ``<i8>`` values beyond it are refused, as by oned.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_TYPE_NAMES: Final = {int: "an integer", str: "a string", bool: "a boolean",
                      list: "an array"}
#: The XML-RPC fault code oned (xmlrpc-c) answers a missing or wrongly typed parameter with.
PARAMETER_FAULT: Final = -501


class CallFailure(Exception):
    """A failed call whose final message (without the method prefix) is decided.

    :func:`~cloudburst.api.xmlrpc.dispatch` replies with ``message`` and
    ``code`` as they are, where a :class:`~cloudburst.errors.NotFoundError`
    would have its message reworded the way oned words it.
    """

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.message = message
        self.code = code


class ParameterFault(ApiArgumentError):
    """A parameter is missing or of the wrong XML-RPC type (the message names it).

    The call is answered with XML-RPC fault :data:`PARAMETER_FAULT`, not a
    reply array, as oned answers it: pyone raises ``OneException`` with the
    message, OpenNebula's Ruby OCA returns it as an ``OpenNebula::Error``.
    """


# -- parameters ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parameter:
    """One parameter of a method's signature: its name, XML-RPC type and default."""

    name: str
    kind: type
    default: object = _MISSING


@dataclass(frozen=True, slots=True)
class Signature:
    """A method's parameters after the session, read from its handler's own signature.

    A handler is ``async def handler(call, id: int, name: str, hold: bool = False)``:
    each parameter after ``call`` is an XML-RPC parameter of that type (``int``,
    ``str``, ``bool``, ``list[object]``), with a default it is optional, and a
    ``*rest: object`` takes any further ones as they come. :meth:`parse` is the one
    place where a call's arguments are checked, all of them before the call is
    authorized, as oned does.
    """

    parameters: tuple[Parameter, ...]
    rest: bool = False

    @classmethod
    def of(cls, handler: Callable[..., Awaitable[object]]) -> Signature:
        """The signature ``handler`` declares (see the class docs)."""
        declared = list(inspect.signature(handler, eval_str=True).parameters.values())[1:]
        parameters = tuple(
            Parameter(item.name, _xmlrpc_type(item.annotation, item.name),
                      _MISSING if item.default is inspect.Parameter.empty else item.default)
            for item in declared if item.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD)
        return cls(parameters, rest=any(item.kind is inspect.Parameter.VAR_POSITIONAL
                                        for item in declared))

    def parse(self, values: Sequence[object]) -> list[object]:
        """The handler's arguments for ``values`` (the parameters after the session).

        Raises:
            ParameterFault: a parameter is missing or of the wrong XML-RPC type.
            ApiArgumentError: more parameters than the signature takes, or an
                integer beyond 32 bits.
        """
        arguments: list[object] = []
        for position, parameter in enumerate(self.parameters, start=1):
            if position > len(values):
                if parameter.default is _MISSING:
                    raise ParameterFault(f"Missing parameter {position} ({parameter.name}): "
                                         f"expected {_TYPE_NAMES[parameter.kind]}")
                arguments.append(parameter.default)
                continue
            arguments.append(_checked(values[position - 1], parameter, position))
        if len(values) > len(self.parameters):
            if not self.rest:
                raise ApiArgumentError(f"Too many parameters: expected at most "
                                       f"{len(self.parameters)}, got {len(values)}")
            arguments.extend(values[len(self.parameters):])
        return arguments


def _xmlrpc_type(annotation: object, name: str) -> type:
    """The XML-RPC type a handler's parameter annotation stands for."""
    kind = typing.get_origin(annotation) or annotation
    if kind not in _TYPE_NAMES:
        raise TypeError(f"parameter {name}: {annotation!r} is not an XML-RPC type")
    return kind


def _checked(value: object, parameter: Parameter, position: int) -> object:
    """``value`` if it has ``parameter``'s type (a bool is not an int in XML-RPC)."""
    kind = parameter.kind
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ParameterFault(
            f"Wrong type of parameter {position} ({parameter.name}): expected "
            f"{_TYPE_NAMES[kind]}, got {_describe(value)}")
    if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
        raise ApiArgumentError(f"Parameter {position} ({parameter.name}) is out of range: "
                               f"{value} does not fit in 32 bits")
    return value


def session_of(params: Sequence[object]) -> str:
    """The session string, parameter 0 of every call.

    Raises:
        ParameterFault: missing, or not a string.
    """
    if not params:
        raise ParameterFault("Missing parameter 0 (session): expected a string")
    if not isinstance(params[0], str):
        raise ParameterFault("Wrong type of parameter 0 (session): expected a string, got "
                             f"{_describe(params[0])}")
    return params[0]


def _describe(value: object) -> str:
    """The XML-RPC type of ``value``, for "got ..." in a wrong-type message."""
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


def update_type(value: int) -> bool:
    """``one.*.update``'s type: 0 replace, 1 merge; returns whether to merge.

    Raises:
        ApiArgumentError: any other value.
    """
    if value not in (0, 1):
        raise ApiArgumentError(f"Wrong update type {value}: use 0 (replace) or 1 (merge)")
    return value == 1


# -- call context -------------------------------------------------------------------------


def shown_name(name: str | None, number: int) -> str:
    """A user's or group's name as documents show it: the number when it is gone."""
    return str(number) if name is None else name



@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated call: who makes it and with what.

    ``subject``: the object the call's access check read whole for the handler (see
    :data:`cloudburst.api.xmlrpc.SUBJECT_READS`); None for other methods.
    """

    daemon: Services
    user: UserRecord
    subject: object = None

    async def user_names(self) -> Callable[[int], str]:
        """A lookup from uid to user name (the number when the user is gone)."""
        names = await self.daemon.users.names()
        return lambda uid: shown_name(names.get(uid), uid)

    async def group_names(self) -> Callable[[int], str]:
        """A lookup from gid to group name (the number when the group is gone)."""
        names = await self.daemon.groups.names()
        return lambda gid: shown_name(names.get(gid), gid)

    async def group_name(self, gid: int) -> str:
        """The name of group ``gid`` (the number when the group is gone)."""
        return shown_name(await self.daemon.groups.name(gid), gid)

    async def user_name(self, uid: int) -> str:
        """The name of user ``uid`` (the number when the user is gone)."""
        if uid == self.user.id:
            return self.user.name
        return shown_name(await self.daemon.users.name(uid), uid)


Handler = Callable[..., Awaitable[object]]
"""A ``one.*`` method: takes the call and its typed parameters (its :class:`Signature`),
returns the reply value (see module docs)."""


#: Documents of at most this many objects are rendered on the loop: a hop to a worker
#: thread and back costs more than rendering them (milliseconds on a loaded machine).
INLINE_RENDER: Final = 32


async def render(function: Callable[[], str], objects: int) -> str:
    """Build a document of ``objects`` objects; a large one on a worker thread.

    The event loop keeps serving other clients meanwhile.
    """
    if objects <= INLINE_RENDER:
        return function()
    return await asyncio.get_running_loop().run_in_executor(None, function)

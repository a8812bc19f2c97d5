"""What a ``one.*`` method handler gets and may raise.

A :data:`Handler` receives one authenticated :class:`Call`. It reads its
parameters in order from ``call.params`` (:class:`Params` checks their types
against the method's signature), calls :meth:`Params.end` to refuse surplus
ones, and returns the reply value. To fail it raises a
:class:`~cloudburst.errors.CloudburstError` (the message and code go into
oned's reply) or a :class:`CallFailure` when it words the message itself.
:func:`cloudburst.api.xmlrpc.dispatch` turns either into the reply array. A
parameter that is missing or of the wrong XML-RPC type is a :class:`ParameterFault`:
oned's XML-RPC layer answers that with fault -501 instead of a reply array, and so
does cloudburst (with a message naming the parameter).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Final, TypeVar

from cloudburst.errors import ApiArgumentError
from cloudburst.model.records import UserRecord
from cloudburst.service.facade import Services

__all__ = ["PARAMETER_FAULT", "Call", "CallFailure", "Handler", "ParameterFault", "Params",
           "render", "session_of", "update_type"]

T = TypeVar("T")

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


class Params:
    """The parameters after the session, read in order with their types checked.

    Each reader takes the next parameter; with a default it is optional (and
    only trailing parameters may be). :meth:`end` refuses surplus parameters.
    A missing or wrongly typed parameter is a :class:`ParameterFault`; other
    errors are :class:`~cloudburst.errors.ApiArgumentError` (0x1000).
    """

    def __init__(self, values: Sequence[object]) -> None:
        self._values = values
        self._next = 0

    def _take(self, kind: type[T], name: str, default: object) -> T:
        position = self._next + 1
        if self._next >= len(self._values):
            if default is _MISSING:
                raise ParameterFault(f"Missing parameter {position} ({name}): expected "
                                     f"{_TYPE_NAMES[kind]}")
            self._next += 1
            return default  # type: ignore[return-value]
        value = self._values[self._next]
        self._next += 1
        # bool is an int in Python but not in XML-RPC: keep them apart.
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ParameterFault(
                f"Wrong type of parameter {position} ({name}): expected {_TYPE_NAMES[kind]}, "
                f"got {_describe(value)}")
        if isinstance(value, int) and not _INT_MIN <= value <= _INT_MAX:
            raise ApiArgumentError(f"Parameter {position} ({name}) is out of range: {value} "
                                   "does not fit in 32 bits")
        return value

    def integer(self, name: str, default: int | object = _MISSING) -> int:
        """The next parameter, a 32-bit integer (not a boolean)."""
        return self._take(int, name, default)

    def string(self, name: str, default: str | object = _MISSING) -> str:
        """The next parameter, a string."""
        return self._take(str, name, default)

    def boolean(self, name: str, default: bool | object = _MISSING) -> bool:
        """The next parameter, a boolean."""
        return self._take(bool, name, default)

    def array(self, name: str, default: list[object] | object = _MISSING) -> list[object]:
        """The next parameter, an array."""
        return self._take(list, name, default)

    def rest(self) -> Sequence[object]:
        """The parameters not read yet."""
        return self._values[self._next:]

    def end(self) -> None:
        """Refuse parameters beyond those read."""
        if len(self._values) > self._next:
            raise ApiArgumentError(
                f"Too many parameters: expected at most {self._next}, got {len(self._values)}")


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


@dataclass(frozen=True, slots=True)
class Call:
    """One authenticated call: who makes it and with what."""

    daemon: Services
    user: UserRecord
    params: Params

    async def user_names(self) -> Callable[[int], str]:
        """A lookup from uid to user name (the number when the user is gone)."""
        names = {user.id: user.name for user in await self.daemon.users.pool()}
        return lambda uid: names.get(uid, str(uid))

    async def group_names(self) -> Callable[[int], str]:
        """A lookup from gid to group name (the number when the group is gone)."""
        names = await self.daemon.groups.names()
        return lambda gid: names.get(gid, str(gid))

    async def group_name(self, gid: int) -> str:
        """The name of group ``gid`` (the number when the group is gone)."""
        return (await self.group_names())(gid)

    async def user_name(self, uid: int) -> str:
        """The name of user ``uid`` (the number when the user is gone)."""
        if uid == self.user.id:
            return self.user.name
        return (await self.user_names())(uid)


Handler = Callable[[Call], Awaitable[object]]
"""A ``one.*`` method: takes the call, returns the reply value (see module docs)."""


async def render(function: Callable[[], str]) -> str:
    """Build a (possibly large) document on a worker thread.

    The event loop keeps serving other clients meanwhile.
    """
    return await asyncio.get_running_loop().run_in_executor(None, function)

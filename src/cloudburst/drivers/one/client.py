"""Talking to the partner: XML-RPC calls in a bounded thread pool.

Calls use the standard library's :mod:`xmlrpc.client` on worker threads, so
the daemon's event loop never blocks. Read-only calls reuse one kept-alive
connection per thread (and are sent once more if it turns out dead); calls
with side effects are sent exactly once, each on a connection of its own: a
lost reply surfaces as an error, and the caller looks the result up by its
tags instead of sending the request again.

Every failure becomes one :class:`~cloudburst.errors.DriverError` subclass with
a one-line message naming the partner by its endpoint (never by the
credentials):

* unreachable, timed out, HTTP 5xx/429: :class:`TransientDriverError`;
* refused credentials (``0x100``, HTTP 401/403): :class:`DriverAuthError`;
* no such object (``0x400``): :class:`InstanceNotFoundError`;
* wrong state for the action (``0x800``): :class:`WrongStateError`;
* quota or capacity refusals: :class:`CapacityError`;
* anything else: :class:`DriverError`.

Pool documents are parsed on the worker thread too (a partner may hold
thousands of VMs), by :mod:`.documents`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import http.client
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, TypeVar
from xml.etree import ElementTree

from cloudburst.drivers.base import UNOBSERVED, CloudApiEvent, CloudApiObserver
from cloudburst.drivers.one.config import PartnerConfig
from cloudburst.drivers.one.documents import (
    AccountRoom,
    RemoteHost,
    RemoteVm,
    parse_account_room,
    parse_host_pool,
    parse_vm_pool,
)
from cloudburst.errors import (
    CapacityError,
    DriverAuthError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    one_line,
)

T = TypeVar("T")

#: OpenNebula's error codes (``include/Request.h``).
AUTHENTICATION: Final = 0x100
AUTHORIZATION: Final = 0x200
NO_EXISTS: Final = 0x400
ACTION: Final = 0x800
ALLOCATE: Final = 0x4000

_CAPACITY_WORDS: Final = ("quota", "capacity", "not enough", "limit")


class WrongStateError(DriverError):
    """The partner refused an action in the VM's current state (``0x800``)."""


class _OneShotTransport(xmlrpc.client.Transport):
    """HTTP with a timeout and a single attempt per request: **no silent re-send**.

    The standard library sends a request a second time when the connection
    drops (meant for kept-alive connections gone cold). For
    ``one.vm.allocate`` that would create a second VM when the partner did
    create the first but its reply was lost; the driver decides itself what
    may be repeated (:data:`READ_ONLY_METHODS`).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, host: Any, handler: str, request_body: Any, verbose: bool = False) -> Any:
        try:
            # The transport keeps this connection: single_request sends on it.
            self.make_connection(host).timeout = self._timeout
            return self.single_request(host, handler, request_body, verbose)
        except BaseException:
            self.close()
            raise


class _OneShotSafeTransport(_OneShotTransport, xmlrpc.client.SafeTransport):
    """The same over HTTPS (``SafeTransport`` makes the connections)."""


def _proxy(config: PartnerConfig) -> xmlrpc.client.ServerProxy:
    transport: xmlrpc.client.Transport = (
        _OneShotSafeTransport(config.timeout) if config.endpoint.startswith("https:")
        else _OneShotTransport(config.timeout))
    return xmlrpc.client.ServerProxy(config.endpoint, transport=transport, allow_none=False)


class _Dropped(TransientDriverError):
    """The connection broke before a reply came (the request may have been acted on)."""


def reply_error(config: PartnerConfig, method: str, message: str, code: int) -> DriverError:
    """The error for a ``[false, message, code]`` reply."""
    text = one_line(config.scrub(message), 400) or "no message"
    where = config.label
    if code == AUTHENTICATION:
        return DriverAuthError(f"{where} refused the credentials of the rc file "
                               f"{config.path} ({method})")
    if code == NO_EXISTS:
        return InstanceNotFoundError(f"{where}: {text}")
    if code == ACTION:
        return WrongStateError(f"{where}: {text}")
    if code in (AUTHORIZATION, ALLOCATE) and any(word in text.lower()
                                                  for word in _CAPACITY_WORDS):
        return CapacityError(f"{where} has no room: {text}")
    if code == AUTHORIZATION:
        return DriverAuthError(f"{where}: not authorized: {text}")
    return DriverError(f"{where}: {text}")


#: Calls without side effects: sent again once, on a fresh connection, when a
#: kept-alive connection turns out to be dead. Every other call is sent once,
#: on a connection of its own.
READ_ONLY_METHODS: Final = frozenset({
    "one.vmpool.info", "one.vmpool.infoextended", "one.hostpool.info", "one.vm.info",
    "one.host.info", "one.system.version", "one.user.info", "one.template.info",
})


class _Throttled(TransientDriverError):
    """The partner answered HTTP 429 (too many requests)."""


class PartnerClient:
    """Runs XML-RPC calls against the partner on a bounded pool of threads.

    Every request is reported to ``observer`` under site ``name`` (the driver's
    section) and action = the XML-RPC method: each attempt (``call``, and its
    time), an HTTP 429 (``throttle``), a read-only call sent again on a fresh
    connection (``retry``), a call that fails for good, refusals by the partner
    included (``error``).
    """

    def __init__(self, workers: int, name: str,
                 observer: CloudApiObserver = UNOBSERVED) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers),
                                            thread_name_prefix=f"one-{name}")
        self._local = threading.local()
        self._observed = functools.partial(observer.cloud_api, name)
        self._timed = functools.partial(observer.cloud_api_seconds, name)

    def _kept_alive(self, config: PartnerConfig) -> xmlrpc.client.ServerProxy:
        """This thread's reusable connection to the partner (read-only calls)."""
        key = (config.endpoint, config.timeout)
        proxies: dict[tuple[str, float], xmlrpc.client.ServerProxy] | None = getattr(
            self._local, "proxies", None)
        if proxies is None:
            proxies = self._local.proxies = {}
        proxy = proxies.get(key)
        if proxy is None:
            proxy = proxies[key] = _proxy(config)
        return proxy

    def _forget(self, config: PartnerConfig) -> None:
        proxies = getattr(self._local, "proxies", None)
        if proxies is not None:
            proxy = proxies.pop((config.endpoint, config.timeout), None)
            if proxy is not None:
                _close(proxy)

    async def call(self, config: PartnerConfig, method: str, *params: object) -> object:
        """Call ``method`` (the session is prepended); returns the success value."""
        return await self.call_parsed(config, method, params, lambda value: value)

    async def call_parsed(self, config: PartnerConfig, method: str, params: Sequence[object],
                          parse: Callable[[object], T]) -> T:
        """Call ``method`` and run ``parse`` on its value, both on a worker thread.

        Raises:
            DriverError: see the module docstring for the subclasses.
        """
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._call_sync, config, method, tuple(params), parse)

    async def vm_action(self, config: PartnerConfig, action: str, remote: int) -> None:
        """``one.vm.action``: e.g. ``terminate-hard`` partner VM ``remote``.

        Raises:
            InstanceNotFoundError: no such VM; WrongStateError: not in this
                state; DriverError: as the module docstring says.
        """
        await self.call(config, "one.vm.action", action, remote)

    async def vm_pool(self, config: PartnerConfig) -> list[RemoteVm]:
        """The partner account's own VMs in every state but DONE, extended bodies.

        The extended listing, because a real OpenNebula's short one
        (``one.vmpool.info``) leaves the user template, and so our tags, out.

        Raises:
            DriverError: see the module docstring for the subclasses.
        """
        # -3: the account's own VMs; -1, -1: no id range; -1: every state but DONE.
        return await self.call_parsed(config, "one.vmpool.infoextended", (-3, -1, -1, -1),
                                      parse_vm_pool)

    async def account_room(self, config: PartnerConfig) -> AccountRoom:
        """What the account's VM quotas leave it (``one.user.info`` of itself).

        Raises:
            DriverError: see the module docstring for the subclasses.
        """
        return await self.call_parsed(config, "one.user.info", (-1,), parse_account_room)

    async def host_pool(self, config: PartnerConfig) -> list[RemoteHost]:
        """The partner's hosts (the account may not be allowed to list them).

        Raises:
            DriverError: see the module docstring for the subclasses.
        """
        return await self.call_parsed(config, "one.hostpool.info", (), parse_host_pool)

    def _call_sync(self, config: PartnerConfig, method: str, params: tuple[object, ...],
                   parse: Callable[[object], T]) -> T:
        try:
            reply = self._reply(config, method, params)
        except DriverError:
            self._observed(method, CloudApiEvent.ERROR)
            raise
        return parse(reply)

    def _reply(self, config: PartnerConfig, method: str, params: tuple[object, ...]) -> object:
        """The success value of one call (see :meth:`call_parsed`)."""
        if method not in READ_ONLY_METHODS:
            proxy = _proxy(config)
            try:
                reply = self._send(proxy, config, method, params)
            finally:
                _close(proxy)
        else:
            try:
                reply = self._send(self._kept_alive(config), config, method, params)
            except _Dropped:
                self._forget(config)  # a kept-alive connection went cold: once more
                self._observed(method, CloudApiEvent.RETRY)
                reply = self._send(self._kept_alive(config), config, method, params)
            except DriverError:
                self._forget(config)
                raise
        if not isinstance(reply, (list, tuple)) or len(reply) < 2:
            raise DriverError(f"{config.label}: {method}: the reply is not an OpenNebula "
                              "result array")
        if not reply[0]:
            code = reply[2] if len(reply) > 2 and isinstance(reply[2], int) else 0
            raise reply_error(config, method, str(reply[1]), code)
        return reply[1]

    def _send(self, proxy: xmlrpc.client.ServerProxy, config: PartnerConfig, method: str,
              params: tuple[object, ...]) -> object:
        """:func:`_send`, reported to the observer."""
        self._observed(method, CloudApiEvent.CALL)
        started = time.perf_counter()
        try:
            return _send(proxy, config, method, params)
        except _Throttled:
            self._observed(method, CloudApiEvent.THROTTLE)
            raise
        finally:
            self._timed(method, time.perf_counter() - started)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _close(proxy: xmlrpc.client.ServerProxy) -> None:
    with contextlib.suppress(Exception):
        proxy("close")()


def _send(proxy: xmlrpc.client.ServerProxy, config: PartnerConfig, method: str,
          params: tuple[object, ...]) -> object:
    """One XML-RPC request; transport failures become one-line driver errors."""
    where = config.label
    try:
        reply: object = getattr(proxy, method)(config.session, *params)
    except xmlrpc.client.Fault as fault:
        raise DriverError(f"{where}: {method}: fault {fault.faultCode}: "
                          f"{one_line(config.scrub(str(fault.faultString)), 300)}") from None
    except xmlrpc.client.ProtocolError as exc:
        if exc.errcode in (401, 403):
            raise DriverAuthError(f"{where} refused the request (HTTP {exc.errcode})") from None
        error = _Throttled if exc.errcode == 429 else \
            TransientDriverError if exc.errcode >= 500 else DriverError
        raise error(f"{where}: {method}: HTTP {exc.errcode} "
                    f"{one_line(config.scrub(str(exc.errmsg)), 100)}") from None
    except TimeoutError:
        raise TransientDriverError(f"{where} did not answer {method} within "
                                   f"{config.timeout:g} s") from None
    except (http.client.RemoteDisconnected, ConnectionResetError, ConnectionAbortedError,
            BrokenPipeError) as exc:
        raise _Dropped(f"{where} is unreachable: the connection broke during {method} "
                       f"({type(exc).__name__})") from None
    except (OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "strerror", None) or type(exc).__name__
        raise TransientDriverError(f"{where} is unreachable: {reason}") from None
    except (xmlrpc.client.ResponseError, ElementTree.ParseError, ValueError) as exc:
        raise TransientDriverError(f"{where}: {method}: unreadable reply "
                                   f"({type(exc).__name__})") from None
    return reply

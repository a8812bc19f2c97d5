"""Talking to the partner: XML-RPC calls in a bounded thread pool, and its documents.

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
thousands of VMs), into small immutable :class:`RemoteVm` / :class:`RemoteHost`
values.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import threading
import time
import xmlrpc.client
from collections.abc import Callable, Coroutine, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar
from xml.etree import ElementTree

from cloudburst.drivers.one.config import PartnerConfig
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

#: Tags written into every partner VM's USER_TEMPLATE.
ORIGIN_TAG: Final = "CLOUDBURST_ORIGIN"  # "<installation id>:<our VM id>"
TOKEN_TAG: Final = "CLOUDBURST_TOKEN"  # the deploy's idempotency token
HOST_TAG: Final = "CLOUDBURST_HOST"  # the id of our host that stands for the partner

_CAPACITY_WORDS: Final = ("quota", "capacity", "not enough", "limit")


class WrongStateError(DriverError):
    """The partner refused an action in the VM's current state (``0x800``)."""


@dataclass(frozen=True, slots=True)
class RemoteVm:
    """A VM of the partner's pool, reduced to what the drivers read."""

    id: int
    name: str
    state: int
    lcm_state: int
    cpu: float = 0.0
    memory_mb: int = 0
    ip: str = ""
    origin: str = ""
    token: str = ""
    host_tag: str = ""
    error: str = ""
    sched_message: str = ""
    monitoring: dict[str, str] = field(default_factory=dict)

    def origin_of(self, install_id: str) -> int | None:
        """Our VM id when the VM carries installation ``install_id``'s tag."""
        owner, colon, vm_id = self.origin.rpartition(":")
        if not colon or owner != install_id:
            return None
        try:
            return int(vm_id)
        except ValueError:
            return None


@dataclass(frozen=True, slots=True)
class RemoteHost:
    """A host of the partner's pool (capacity in OpenNebula units)."""

    id: int
    state: int
    max_cpu: int
    cpu_usage: int
    max_mem: int
    mem_usage: int
    public_cloud: bool


class _NoDoctype(ElementTree.TreeBuilder):
    """Refuses DOCTYPE declarations: partner documents never need entities."""

    def doctype(self, name: str, pubid: str | None, system: str | None) -> None:
        raise DriverError("the partner sent an XML document with a DOCTYPE; refused")


def _document(text: object, root: str) -> ElementTree.Element:
    if not isinstance(text, str) or not text.lstrip().startswith("<"):
        raise DriverError(f"the partner sent no {root} document")
    parser = ElementTree.XMLParser(target=_NoDoctype())
    try:
        parser.feed(text)
        element = parser.close()
    except ElementTree.ParseError as exc:
        raise DriverError(f"the partner sent a malformed {root} document: {exc}") from None
    if element.tag != root:
        raise DriverError(f"the partner sent a {element.tag} document instead of {root}")
    return element


def _int(element: ElementTree.Element, path: str, default: int = 0) -> int:
    value = element.findtext(path)
    try:
        return int(float(value)) if value is not None and value.strip() else default
    except ValueError:
        return default


def _float(element: ElementTree.Element, path: str) -> float:
    value = element.findtext(path)
    try:
        return float(value) if value is not None and value.strip() else 0.0
    except ValueError:
        return 0.0


def _text(element: ElementTree.Element, path: str) -> str:
    return (element.findtext(path) or "").strip()


def _ip(vm: ElementTree.Element, monitoring: dict[str, str]) -> str:
    """The address the partner reports: monitoring IP, guest IP, else the first NIC's."""
    for key in ("IP", "GUEST_IP", "PUBLIC_IP"):
        if monitoring.get(key):
            return monitoring[key]
    for path in ("TEMPLATE/NIC/IP", "TEMPLATE/NIC/EXTERNAL_IP", "TEMPLATE/NIC/IP6_GLOBAL"):
        found = _text(vm, path)
        if found:
            return found
    return ""


def parse_vm_pool(text: object) -> list[RemoteVm]:
    """A ``VM_POOL`` document (reduced or extended) as :class:`RemoteVm` values."""
    pool = _document(text, "VM_POOL")
    vms = []
    for vm in pool.findall("VM"):
        monitoring = {child.tag: (child.text or "").strip() for child in vm.findall("MONITORING/*")
                      if len(child) == 0}
        vms.append(RemoteVm(
            id=_int(vm, "ID", -1), name=_text(vm, "NAME"), state=_int(vm, "STATE", -1),
            lcm_state=_int(vm, "LCM_STATE", -1), cpu=_float(vm, "TEMPLATE/CPU"),
            memory_mb=_int(vm, "TEMPLATE/MEMORY"), ip=_ip(vm, monitoring),
            origin=_text(vm, f"USER_TEMPLATE/{ORIGIN_TAG}"),
            token=_text(vm, f"USER_TEMPLATE/{TOKEN_TAG}"),
            host_tag=_text(vm, f"USER_TEMPLATE/{HOST_TAG}"),
            error=one_line(_text(vm, "USER_TEMPLATE/ERROR"), 300),
            sched_message=one_line(_text(vm, "USER_TEMPLATE/SCHED_MESSAGE"), 300),
            monitoring=monitoring,
        ))
    return vms


def parse_host_pool(text: object) -> list[RemoteHost]:
    """A ``HOST_POOL`` document as :class:`RemoteHost` values."""
    pool = _document(text, "HOST_POOL")
    return [
        RemoteHost(
            id=_int(host, "ID", -1), state=_int(host, "STATE", -1),
            max_cpu=_int(host, "HOST_SHARE/MAX_CPU"), cpu_usage=_int(host, "HOST_SHARE/CPU_USAGE"),
            max_mem=_int(host, "HOST_SHARE/MAX_MEM"), mem_usage=_int(host, "HOST_SHARE/MEM_USAGE"),
            public_cloud=_text(host, "TEMPLATE/PUBLIC_CLOUD").upper() == "YES",
        )
        for host in pool.findall("HOST")
    ]


def _single_shot(transport: xmlrpc.client.Transport, host: Any, handler: str,
                 request_body: Any, verbose: bool) -> Any:
    """``Transport.request`` with a single attempt: **no silent re-send**.

    The standard library sends a request a second time when the connection
    drops (meant for kept-alive connections gone cold). For
    ``one.vm.allocate`` that would create a second VM when the partner did
    create the first but its reply was lost; the driver decides itself what
    may be repeated (:data:`READ_ONLY_METHODS`).
    """
    try:
        return transport.single_request(host, handler, request_body, verbose)
    except BaseException:
        transport.close()
        raise


class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, host: Any, handler: str, request_body: Any, verbose: bool = False) -> Any:
        return _single_shot(self, host, handler, request_body, verbose)

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _SafeTimeoutTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def request(self, host: Any, handler: str, request_body: Any, verbose: bool = False) -> Any:
        return _single_shot(self, host, handler, request_body, verbose)

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


def _proxy(config: PartnerConfig) -> xmlrpc.client.ServerProxy:
    transport: xmlrpc.client.Transport = (
        _SafeTimeoutTransport(config.timeout) if config.endpoint.startswith("https:")
        else _TimeoutTransport(config.timeout))
    return xmlrpc.client.ServerProxy(config.endpoint, transport=transport, allow_none=False)


class _Dropped(TransientDriverError):
    """The connection broke before a reply came (the request may have been acted on)."""


def reply_error(config: PartnerConfig, method: str, message: str, code: int) -> DriverError:
    """The error for a ``[false, message, code]`` reply."""
    text = one_line(config.scrub(message), 400) or "no message"
    where = f"partner cloud {config.shown_endpoint}"
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


class PartnerClient:
    """Runs XML-RPC calls against the partner on a bounded pool of threads."""

    def __init__(self, workers: int, name: str) -> None:
        self._executor = ThreadPoolExecutor(max_workers=max(1, workers),
                                            thread_name_prefix=f"one-{name}")
        self._local = threading.local()

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

    def _call_sync(self, config: PartnerConfig, method: str, params: tuple[object, ...],
                   parse: Callable[[object], T]) -> T:
        if method not in READ_ONLY_METHODS:
            proxy = _proxy(config)
            try:
                reply = _send(proxy, config, method, params)
            finally:
                _close(proxy)
        else:
            try:
                reply = _send(self._kept_alive(config), config, method, params)
            except _Dropped:
                self._forget(config)  # a kept-alive connection went cold: once more
                reply = _send(self._kept_alive(config), config, method, params)
            except DriverError:
                self._forget(config)
                raise
        where = f"partner cloud {config.shown_endpoint}"
        if not isinstance(reply, (list, tuple)) or len(reply) < 2:
            raise DriverError(f"{where}: {method}: the reply is not an OpenNebula result array")
        if not reply[0]:
            code = reply[2] if len(reply) > 2 and isinstance(reply[2], int) else 0
            raise reply_error(config, method, str(reply[1]), code)
        return parse(reply[1])

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def _close(proxy: xmlrpc.client.ServerProxy) -> None:
    with contextlib.suppress(Exception):
        proxy("close")()


def _send(proxy: xmlrpc.client.ServerProxy, config: PartnerConfig, method: str,
          params: tuple[object, ...]) -> object:
    """One XML-RPC request; transport failures become one-line driver errors."""
    where = f"partner cloud {config.shown_endpoint}"
    try:
        reply: object = getattr(proxy, method)(config.session, *params)
    except xmlrpc.client.Fault as fault:
        raise DriverError(f"{where}: {method}: fault {fault.faultCode}: "
                          f"{one_line(config.scrub(str(fault.faultString)), 300)}") from None
    except xmlrpc.client.ProtocolError as exc:
        if exc.errcode in (401, 403):
            raise DriverAuthError(f"{where} refused the request (HTTP {exc.errcode})") from None
        error = TransientDriverError if exc.errcode >= 500 or exc.errcode == 429 else \
            DriverError
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


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The partner account's VMs (DONE excluded) as one listing saw them.

    ``started`` is the ``time.monotonic()`` at which the listing was requested:
    everything the partner had committed before then is in it.
    """

    started: float
    vms: tuple[RemoteVm, ...]

    def find(self, vm_id: int) -> RemoteVm | None:
        for vm in self.vms:
            if vm.id == vm_id:
                return vm
        return None


class PoolSnapshots:
    """Coalesces ``one.vmpool.info`` calls: one listing serves every waiter.

    :meth:`get` returns a snapshot *requested* no earlier than ``newer_than``
    (a ``time.monotonic()`` value), joining a listing in flight when that one
    qualifies. So a deploy that must see what an earlier attempt created asks
    for a snapshot newer than the moment that attempt's call ended, and a
    hundred VMs waiting for their partner VMs to boot share one call per round.
    """

    def __init__(self, fetch: Callable[[], Coroutine[Any, Any, list[RemoteVm]]]) -> None:
        self._fetch = fetch
        self._last: Snapshot | None = None
        self._flight: asyncio.Task[Snapshot] | None = None
        self._flight_started = float("-inf")

    async def _listing(self, started: float) -> Snapshot:
        snapshot = Snapshot(started, tuple(await self._fetch()))
        if self._last is None or started >= self._last.started:
            self._last = snapshot
        return snapshot

    async def get(self, newer_than: float) -> Snapshot:
        """A snapshot requested at or after ``newer_than``.

        Raises:
            DriverError: the listing failed.
        """
        if self._last is not None and self._last.started >= newer_than:
            return self._last
        flight = self._flight
        if flight is None or flight.done() or self._flight_started < newer_than:
            started = time.monotonic()
            flight = asyncio.ensure_future(self._listing(started))
            flight.add_done_callback(_retrieve)
            self._flight, self._flight_started = flight, started
        return await asyncio.shield(flight)


def _retrieve(task: asyncio.Future[Snapshot]) -> None:
    """Mark a listing's failure as seen (its waiters report it; none may be left)."""
    if not task.cancelled():
        task.exception()

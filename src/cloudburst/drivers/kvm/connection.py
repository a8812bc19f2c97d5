"""Reaching libvirt: URIs per host, reused connections, a bounded thread pool.

libvirt's Python binding blocks, so every call runs on a thread pool the
driver owns, sized by the driver's ``-t`` (at most :data:`MAX_THREADS`). A
connection is opened once per URI and reused by all threads (libvirt
connections are thread-safe); one found dead, or that failed with a
connection-level error, is dropped and reopened by the next call.

libvirt errors are translated here, once, into the driver error tree:
connection and RPC failures are transient, a missing domain is
:class:`~cloudburst.errors.InstanceNotFoundError`, refused credentials
:class:`~cloudburst.errors.DriverAuthError`, out-of-memory
:class:`~cloudburst.errors.CapacityError`, unsupported operations
:class:`~cloudburst.errors.UnsupportedActionError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import sys
import threading
import urllib.parse
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Final, TypeVar

from cloudburst.drivers.base import HostRef
from cloudburst.errors import (
    CapacityError,
    DriverAuthError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    UnsupportedActionError,
    one_line,
)

T = TypeVar("T")

#: Upper bound of a driver's thread pool, whatever its ``-t``.
MAX_THREADS: Final = 32

#: URI of a host named ``localhost`` without ``LIBVIRT_URI``, when the daemon runs as root.
LOCAL_URI: Final = "qemu:///system"
#: The same for a daemon run by another user: that user's own libvirtd.
LOCAL_SESSION_URI: Final = "qemu:///session"

# virErrorNumber values (stable ABI), so translation needs no libvirt import.
_NO_SUPPORT: Final = 3
_NO_MEMORY: Final = 2
_NO_DOMAIN: Final = 42
_OPERATION_UNSUPPORTED: Final = 84
_AUTH_CODES: Final = frozenset({45, 79, 94})  # AUTH_FAILED, AUTH_CANCELLED, AUTH_UNAVAILABLE
#: NO_CONNECT, INVALID_CONN, SYSTEM_ERROR, RPC, OPERATION_TIMEOUT, AGENT_UNRESPONSIVE,
#: RESOURCE_BUSY
_TRANSIENT_CODES: Final = frozenset({5, 6, 38, 39, 68, 86, 87})
#: virErrorDomain values of the RPC layer and the remote driver.
_TRANSIENT_DOMAINS: Final = frozenset({7, 13})

_module: ModuleType | None = None
_module_lock = threading.Lock()


def resolve_uri(host: HostRef) -> str:
    """The libvirt URI of ``host``.

    The host attribute ``LIBVIRT_URI`` when set, else for a host named
    ``localhost`` libvirt's own default for this process (``LIBVIRT_DEFAULT_URI``
    when set, else :data:`LOCAL_URI` as root, :data:`LOCAL_SESSION_URI`
    otherwise: the libvirtd that ``scripts/run`` starts), else
    ``qemu+ssh://<name>/system``.
    """
    uri = (host.attributes.get("LIBVIRT_URI") or "").strip()
    if uri:
        return uri
    if host.name == "localhost":
        default = os.environ.get("LIBVIRT_DEFAULT_URI", "").strip()
        return default or (LOCAL_URI if os.geteuid() == 0 else LOCAL_SESSION_URI)
    return f"qemu+ssh://{host.name}/system"


def is_remote(uri: str) -> bool:
    """Whether ``uri`` reaches a hypervisor on another machine (it names a host other
    than this one): files of the daemon's machine are not there."""
    host = (urllib.parse.urlsplit(uri).hostname or "").lower()
    return host not in ("", "localhost", "127.0.0.1", "::1")


def libvirt_module() -> ModuleType:
    """The ``libvirt`` module, imported on first use (it is an optional dependency).

    Raises:
        DriverError: libvirt-python is not installed.
    """
    global _module
    if _module is not None:
        return _module
    with _module_lock:
        if _module is None:
            try:
                module = importlib.import_module("libvirt")
            except ImportError as exc:
                raise DriverError(
                    "libvirt-python missing: run ./scripts/run to install it (or apt-get "
                    "install libvirt-dev pkg-config gcc python3-dev, then pip install "
                    f"'cloudburst[kvm]') ({exc})"
                ) from None
            # libvirt prints every error on stderr by default; we raise them instead.
            module.registerErrorHandler(lambda _context, _error: None, None)
            _module = module
    return _module


def is_libvirt_error(exc: BaseException) -> bool:
    """Whether ``exc`` is a ``libvirt.libvirtError`` (without importing libvirt)."""
    module = _module or sys.modules.get("libvirt")
    return module is not None and isinstance(exc, module.libvirtError)


def error_details(exc: BaseException) -> tuple[int | None, int | None, str]:
    """``(virErrorNumber, virErrorDomain, message)`` of a libvirt error.

    Any other exception gives ``(None, None, str(exc))``.
    """
    if not is_libvirt_error(exc):
        return None, None, str(exc)
    error: Any = exc
    code, domain = error.get_error_code(), error.get_error_domain()
    message = error.get_error_message()
    return (None if code is None else int(code), None if domain is None else int(domain),
            str(message or exc))


def translate(exc: BaseException, what: str) -> DriverError:
    """The driver error for libvirt error ``exc`` raised while doing ``what``."""
    code, domain, raw = error_details(exc)
    message = one_line(f"{what}: {raw}")
    if code == _NO_DOMAIN:
        return InstanceNotFoundError(message)
    if code in _AUTH_CODES:
        return DriverAuthError(message)
    if code in (_NO_SUPPORT, _OPERATION_UNSUPPORTED):
        return UnsupportedActionError(message)
    if code == _NO_MEMORY or "cannot allocate memory" in message.lower():
        return CapacityError(message)
    if code in _TRANSIENT_CODES or domain in _TRANSIENT_DOMAINS:
        return TransientDriverError(message)
    return DriverError(message)


#: What libvirt says when no daemon listens on the socket it tries.
_NO_DAEMON_SIGNS: Final = ("No such file or directory", "Connection refused")


def _connect_failure(uri: str, exc: BaseException) -> str:
    """The start of the message for a failed ``open(uri)``: what to do, when we know."""
    _code, _domain, raw = error_details(exc)
    if "Failed to connect socket" in raw and any(sign in raw for sign in _NO_DAEMON_SIGNS):
        return (f"start 'libvirtd -d' (./scripts/run does) for {uri}, or set the host's "
                "LIBVIRT_URI; no libvirtd answers")
    return f"cannot connect to {uri}"


class LibvirtPool:
    """One driver's connections (one per URI) and its thread pool."""

    def __init__(self, name: str, threads: int) -> None:
        self.name = name
        self.threads = max(1, min(threads, MAX_THREADS))
        self._executor: ThreadPoolExecutor | None = None
        self._connections: dict[str, Any] = {}
        self._capabilities: dict[str, str] = {}
        self._lock = threading.Lock()

    async def call(self, uri: str, what: str, work: Callable[[Any], T]) -> T:
        """Run ``work(connection)`` on the pool with the connection to ``uri``.

        Raises:
            DriverError: translated from the libvirt error (message starts with
                ``what``), or raised by ``work`` itself.
        """
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self.threads,
                                                thread_name_prefix=f"libvirt-{self.name}")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._run, uri, what, work)

    async def call_pair(self, uris: tuple[str, str], what: str,
                        work: Callable[[Any, Any], T]) -> T:
        """Run ``work(first, second)`` on the pool with the connections to both ``uris``
        (a migration between two hypervisors); errors as for :meth:`call`."""
        return await self.call(uris[0], what, lambda first: work(
            first, self._connection(uris[1]) if uris[1] != uris[0] else first))

    def _run(self, uri: str, what: str, work: Callable[[Any], T]) -> T:
        libvirt_module()
        connection = self._connection(uri)
        try:
            return work(connection)
        except Exception as exc:
            if not is_libvirt_error(exc):
                raise
            error = translate(exc, what)
            if isinstance(error, TransientDriverError):
                self._forget(uri, connection)
            raise error from None

    def _connection(self, uri: str) -> Any:
        with self._lock:
            connection = self._connections.get(uri)
            if connection is not None:
                try:
                    if connection.isAlive():
                        return connection
                except Exception as exc:
                    if not is_libvirt_error(exc):
                        raise
                self._drop(uri)
            try:
                connection = libvirt_module().open(uri)
            except Exception as exc:
                if not is_libvirt_error(exc):
                    raise
                raise translate(exc, _connect_failure(uri, exc)) from None
            self._connections[uri] = connection
            return connection

    def capabilities(self, uri: str, connection: Any) -> str:
        """The host's capabilities XML, fetched once per connection (on a pool thread)."""
        cached = self._capabilities.get(uri)
        if cached is None:
            cached = str(connection.getCapabilities())
            self._capabilities[uri] = cached
        return cached

    def _forget(self, uri: str, connection: Any) -> None:
        with self._lock:
            if self._connections.get(uri) is connection:
                self._drop(uri)

    def _drop(self, uri: str) -> None:
        connection = self._connections.pop(uri, None)
        self._capabilities.pop(uri, None)
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()

    async def close(self) -> None:
        """Close every connection and stop the threads (in-flight calls finish alone)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            for uri in list(self._connections):
                self._drop(uri)

"""Bounds on what clients may hold of the API server: connections and file descriptors.

:class:`ConnectionGuard` wraps the HTTP protocol of every accepted connection.
It keeps the open connections below a total cap and a cap per client address;
when a cap is reached, the oldest connection *not serving a request* (idle
keep-alive, or still sending its request head) is closed to make room, and the
new connection is refused only when every connection is busy. Idle and
half-sent connections also time out (aiohttp's keep-alive timeout, which
runs from the opening of the connection, is set to the header timeout), so a
client holding sockets can delay nobody for long.

The total cap stays below the process's open-file limit minus a reserve kept
for the store, the logs and the drivers (``oned`` lifts the soft limit to the
hard one at start; :func:`connection_cap` derives the cap).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
from collections import Counter
from collections.abc import Callable
from typing import Final

log = logging.getLogger(__name__)

__all__ = ["ConnectionGuard", "accept_batch", "connection_cap", "file_limit",
           "listening_socket"]

#: Fewest connections the API keeps, however low the file limit.
_MIN_CONNECTIONS: Final = 8
#: Connections the kernel queues before the daemon accepts them.
LISTEN_BACKLOG: Final = 512


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (the first address ``host`` resolves to).

    Raises:
        OSError: the address cannot be resolved or bound (e.g. the port is taken).
    """
    family, kind, proto, _, address = socket.getaddrinfo(
        host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
        sock.listen(LISTEN_BACKLOG)
    except BaseException:
        sock.close()
        raise
    return sock


def file_limit() -> int:
    """The soft open-file limit in force."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def accept_batch(reserve: int) -> int:
    """The listen backlog, well inside ``reserve``.

    asyncio accepts up to ``backlog`` connections in one go before any protocol
    sees them (and before an eviction frees a descriptor); a batch larger than
    the reserve would run the process out of files, and asyncio then stops
    accepting for a second.
    """
    return max(4, min(32, reserve // 8))


def connection_cap(configured: int, file_limit: int, reserve: int) -> int:
    """The total connection cap: ``configured``, lowered to fit ``file_limit - reserve``."""
    return max(_MIN_CONNECTIONS, min(configured, file_limit - reserve))


class _Connection(asyncio.Protocol):
    """Forwards a transport's events to aiohttp's protocol and tells the guard."""

    def __init__(self, guard: ConnectionGuard, inner: asyncio.Protocol) -> None:
        self._guard = guard
        self._inner = inner
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        if not self._guard.admit(transport):
            transport.abort()
            return
        self._transport = transport
        self._inner.connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is None:
            return
        self._guard.release(self._transport)
        self._transport = None
        self._inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._transport is not None:
            self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._transport is not None else None

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()


class ConnectionGuard:
    """Counts open connections, total and per client address, and enforces the caps.

    Args:
        max_total: open connections at most.
        max_per_client: open connections from one client address at most.
    """

    def __init__(self, max_total: int, max_per_client: int) -> None:
        self.max_total = max_total
        self.max_per_client = min(max_per_client, max_total)
        #: Open connections in opening order (oldest first), with their client address.
        self._open: dict[asyncio.Transport, str] = {}
        self._per_client: Counter[str] = Counter()
        #: Connections serving a request now (never closed to make room).
        self._busy: Counter[asyncio.Transport] = Counter()
        self.refused = 0
        self.evicted = 0

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]
                         ) -> Callable[[], asyncio.Protocol]:
        """A factory for ``loop.create_server`` wrapping ``inner``'s protocols."""
        return lambda: _Connection(self, inner())

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, transport: asyncio.Transport) -> bool:
        """Register a new connection; close another or refuse this one if a cap is reached."""
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) and peer else "?"
        if self._per_client[client] >= self.max_per_client:
            if not self._make_room(client):
                return self._refuse(client, "MAX_CONNECTIONS_PER_CLIENT", self.max_per_client)
        elif len(self._open) >= self.max_total and not self._make_room(None):
            return self._refuse(client, "MAX_CONNECTIONS", self.max_total)
        self._open[transport] = client
        self._per_client[client] += 1
        return True

    def release(self, transport: asyncio.Transport) -> None:
        """Forget a closed connection."""
        client = self._open.pop(transport, None)
        if client is not None:
            self._per_client[client] -= 1
            if self._per_client[client] <= 0:
                del self._per_client[client]
        self._busy.pop(transport, None)

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        if isinstance(transport, asyncio.Transport):
            self._busy[transport] += 1

    def request_finished(self, transport: asyncio.BaseTransport | None) -> None:
        if isinstance(transport, asyncio.Transport) and transport in self._busy:
            self._busy[transport] -= 1
            if self._busy[transport] <= 0:
                del self._busy[transport]

    def _make_room(self, client: str | None) -> bool:
        """Close the oldest idle connection (of ``client`` when given); False if none is.

        Idle: not serving a request and with no reply left to send.
        """
        for transport, owner in self._open.items():
            if transport in self._busy or (client is not None and owner != client) \
                    or transport.get_write_buffer_size():
                continue
            self.evicted += 1
            log.warning("connection limit reached: closing the oldest idle connection "
                        "(from %s) for a new one", owner)
            self.release(transport)
            transport.abort()
            return True
        return False

    def _refuse(self, client: str, setting: str, limit: int) -> bool:
        self.refused += 1
        log.warning("refused a connection from %s: %d connections serving requests "
                    "(%s = %d)", client, limit, setting, limit)
        return False

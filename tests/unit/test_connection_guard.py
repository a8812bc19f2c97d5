"""ConnectionGuard on real loopback sockets: the caps, which connection makes room, and
that one serving a request is never closed for a newcomer (issue 15, finding 1)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from cloudburst.api.connections import ConnectionGuard

#: Seconds allowed for a connection to be seen (or closed) on a loaded machine.
SETTLE = 30.0


class _Recorder(asyncio.Protocol):
    """The server's inner protocol: remembers its transport, in arrival order."""

    def __init__(self, arrived: list[asyncio.Transport]) -> None:
        self._arrived = arrived

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._arrived.append(transport)


@asynccontextmanager
async def _server(guard: ConnectionGuard) -> AsyncIterator[tuple[int, list[asyncio.Transport]]]:
    arrived: list[asyncio.Transport] = []
    loop = asyncio.get_running_loop()
    server = await loop.create_server(guard.protocol_factory(lambda: _Recorder(arrived)),
                                      "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], arrived
    finally:
        server.close()
        await server.wait_closed()


async def _until(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + SETTLE
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "not within the settle time"
        await asyncio.sleep(0.01)


async def _connect(port: int, source: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _closed(reader: asyncio.StreamReader) -> bool:
    """Whether the server closed this client's connection (EOF or reset)."""
    try:
        return await asyncio.wait_for(reader.read(1), SETTLE) == b""
    except ConnectionError:
        return True


def test_the_oldest_idle_connection_makes_room_and_a_busy_one_never_does() -> None:
    async def scenario() -> None:
        guard = ConnectionGuard(max_total=3, max_per_client=2)
        async with _server(guard) as (port, arrived):
            first = await _connect(port, "127.0.0.1")
            second = await _connect(port, "127.0.0.1")
            await _until(lambda: guard.open_connections == 2)
            # A third from the same address: its own oldest idle connection goes.
            third = await _connect(port, "127.0.0.1")
            assert await _closed(first[0])
            await _until(lambda: guard.evicted == 1 and guard.open_connections == 2)
            # Another address may still come in up to the total cap.
            other = await _connect(port, "127.0.0.2")
            await _until(lambda: guard.open_connections == 3)
            # Every connection busy: a newcomer is refused, nobody else is closed.
            for transport in arrived[1:]:
                guard.request_started(transport)
            late = await _connect(port, "127.0.0.3")
            assert await _closed(late[0])
            await _until(lambda: guard.refused == 1)
            assert guard.open_connections == 3 and guard.evicted == 1
            # One request ends: that connection is idle again and makes room.
            guard.request_finished(arrived[1])  # the second connection's
            newcomer = await _connect(port, "127.0.0.3")
            assert await _closed(second[0])
            await _until(lambda: guard.evicted == 2 and guard.open_connections == 3)
            for reader_writer in (first, second, third, other, late, newcomer):
                reader_writer[1].close()
            await _until(lambda: guard.open_connections == 0)

    asyncio.run(scenario())

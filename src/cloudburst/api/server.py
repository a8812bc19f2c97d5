"""The XML-RPC endpoint: an aiohttp server in the daemon's event loop.

``POST /RPC2`` (and ``POST /``) takes an XML-RPC ``methodCall`` and answers
with a ``methodResponse`` holding oned's reply array (see
:mod:`cloudburst.api.xmlrpc`). Requests that are not a well-formed call get an
XML-RPC fault instead, never a dropped connection:

* body over ``MAX_REQUEST_BYTES``: fault -32600 (the rest of the body is
  drained by aiohttp, so the client still reads the answer);
* a DOCTYPE or ENTITY declaration, or a body that is not UTF-8: fault -32600
  (entity expansion is refused before any parsing);
* anything ``xmlrpc.client.loads`` cannot read: fault -32700 "parse error";
* an unknown method: fault -506 "Method 'one.x.y' not defined", and a
  missing or wrongly typed parameter: fault -501 naming it, as oned (xmlrpc-c)
  answers them (:class:`~cloudburst.api.xmlrpc.CallFault`);
* a body not received within ``REQUEST_BODY_TIMEOUT``: fault -32600, and the
  connection is closed.

Connections are bounded (:mod:`cloudburst.api.connections`): a connection
that sends no complete request head within ``REQUEST_HEADER_TIMEOUT`` is
closed, and the open connections stay below caps derived from the open-file
limit.
"""

from __future__ import annotations

import asyncio
import logging
import re
import xmlrpc.client
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final

from aiohttp import web

from cloudburst.api import metrics_http
from cloudburst.api.connections import (
    LISTEN_BACKLOG,
    ConnectionGuard,
    accept_batch,
    connection_cap,
    file_limit,
    listening_socket,
)
from cloudburst.api.encoded import EncodedText
from cloudburst.api.vm_pool_cache import cache_of
from cloudburst.api.xmlrpc import CallFault, dispatch
from cloudburst.errors import ErrorCode, one_line
from cloudburst.web import install as install_dashboard

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

log = logging.getLogger(__name__)

__all__ = ["ApiServer"]

#: XML-RPC fault codes (the "specification for fault code interoperability").
PARSE_ERROR: Final = -32700
INVALID_REQUEST: Final = -32600

#: Bodies and replies above this size are parsed or serialised on a worker thread.
_OFFLOAD_BYTES: Final = 256 * 1024
_ALLOWED_ENCODINGS: Final = frozenset({"utf-8", "utf8", "us-ascii", "ascii"})
_DECLARED_ENCODING_RE: Final = re.compile(rb"""^\s*<\?xml[^>]*?encoding\s*=\s*["']([^"']+)["']""")
_CONTENT_TYPE: Final = "text/xml"


class _Rejected(Exception):
    """A request answered with an XML-RPC fault."""

    def __init__(self, code: int, message: str, *, close: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        #: Close the connection after the answer (the rest of the request is unread).
        self.close = close


class ApiServer:
    """Serves the ``one.*`` API of ``daemon`` on ``LISTEN_ADDRESS:PORT``."""

    def __init__(self, daemon: Services) -> None:
        self.daemon = daemon
        self.settings = daemon.settings
        self._runner: web.AppRunner | None = None
        self._server: asyncio.base_events.Server | None = None
        #: Renders pool entries ahead of the listings (:mod:`cloudburst.api.vm_pool_cache`).
        self._warmer: asyncio.Task[None] | None = None
        #: The port actually bound (differs from the setting when that is 0).
        self.port = self.settings.port
        limits = self.settings.api
        self.guard = ConnectionGuard(
            connection_cap(limits.max_connections, file_limit(), limits.file_reserve),
            limits.max_connections_per_client)

    async def start(self) -> None:
        """Bind and start serving; returns once the socket listens.

        Raises:
            OSError: the address cannot be bound (e.g. the port is taken).
        """
        app = web.Application(middlewares=[self._track_requests])
        app.router.add_post("/RPC2", self._handle)
        app.router.add_post("/", self._handle)
        install_dashboard(app, self.daemon)
        metrics_http.install(app, self.daemon)
        # aiohttp's keep-alive timer also runs from a connection's opening and closes a
        # connection still waiting for a complete request head: the header timeout.
        runner = web.AppRunner(app, access_log=None,
                               keepalive_timeout=self.settings.api.header_timeout)
        await runner.setup()
        loop = asyncio.get_running_loop()
        assert runner.server is not None
        try:
            sock = listening_socket(self.settings.listen_address, self.settings.port)
            # asyncio accepts ``backlog`` connections per turn of the loop: keep that batch
            # small (see accept_batch), then restore the kernel's longer queue.
            self._server = await loop.create_server(
                self.guard.protocol_factory(runner.server), sock=sock,
                backlog=accept_batch(self.settings.api.file_reserve))
            sock.listen(LISTEN_BACKLOG)
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(sock.getsockname()[1])
        self._warmer = asyncio.create_task(cache_of(self.daemon).keep_warm(self.daemon),
                                           name="vm-pool-warmer")
        log.info("XML-RPC API and dashboard on http://%s:%d/ (at most %d connections, %d per "
                 "client)",
                 self.settings.listen_address, self.port, self.guard.max_total,
                 self.guard.max_per_client)

    async def stop(self) -> None:
        """Stop listening and close open connections."""
        if self._warmer is not None:
            warmer, self._warmer = self._warmer, None
            warmer.cancel()
            try:
                await warmer
            except asyncio.CancelledError:
                pass
            except Exception:
                log.exception("the pool entry warmer had failed")
        if self._server is not None:
            server, self._server = self._server, None
            server.close()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @web.middleware
    async def _track_requests(
            self, request: web.Request,
            handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        """Mark the connection busy while it serves a request (it is then never evicted)."""
        self.guard.request_started(request.transport)
        try:
            return await handler(request)
        finally:
            self.guard.request_finished(request.transport)

    async def _handle(self, request: web.Request) -> web.Response:
        loop = asyncio.get_running_loop()
        try:
            try:
                body = await self._read_body(request)
            except ConnectionError:
                # Nobody is left to answer: one line, not aiohttp's traceback.
                log.info("a client from %s disconnected before its request was read",
                         request.remote)
                return web.Response(status=400)
            method, params = await self._parse(body, loop)
            try:
                reply = await dispatch(self.daemon, method, params,
                                       client=request.remote or "")
            except CallFault as fault:
                raise _Rejected(fault.code, fault.message) from None
            payload = await self._serialise(method, reply, loop)
        except _Rejected as rejected:
            # A parse error may quote the body (and so a session): keep it out of the log.
            reason = "malformed XML-RPC" if rejected.code == PARSE_ERROR else rejected.message
            log.info("rejected a request from %s: %s", request.remote, reason)
            answer = xmlrpc.client.dumps(xmlrpc.client.Fault(rejected.code, rejected.message),
                                         methodresponse=True)
            response = web.Response(body=answer.encode("utf-8"), content_type=_CONTENT_TYPE,
                                    charset="utf-8")
            if rejected.close:
                # Answer, then close at once: aiohttp would otherwise linger reading the
                # rest of a body the client is not sending.
                response.force_close()
                await response.prepare(request)
                await response.write_eof()
                if request.transport is not None:
                    request.transport.close()
            return response
        return web.Response(body=payload, content_type=_CONTENT_TYPE, charset="utf-8")

    async def _read_body(self, request: web.Request) -> bytes:
        """The request body, refused beyond ``max_request_bytes`` or ``body_timeout``."""
        timeout = self.settings.api.body_timeout
        try:
            async with asyncio.timeout(timeout):
                return await self._read_limited_body(request)
        except TimeoutError:
            raise _Rejected(INVALID_REQUEST, f"Request body not received within {timeout:g} s "
                                             "(REQUEST_BODY_TIMEOUT)", close=True) from None

    async def _read_limited_body(self, request: web.Request) -> bytes:
        limit = self.settings.max_request_bytes
        too_large = _Rejected(INVALID_REQUEST, f"Request body exceeds the limit of {limit} bytes "
                                               "(MAX_REQUEST_BYTES)")
        if request.content_length is not None and request.content_length > limit:
            raise too_large
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = await request.content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limit:
                raise too_large
            chunks.append(chunk)
        return b"".join(chunks)

    async def _parse(self, body: bytes,
                     loop: asyncio.AbstractEventLoop) -> tuple[str, tuple[object, ...]]:
        """``(method, params)`` of a safe, well-formed ``methodCall``."""
        if b"<!DOCTYPE" in body or b"<!ENTITY" in body:
            raise _Rejected(INVALID_REQUEST, "DOCTYPE and ENTITY declarations are not accepted")
        declared = _DECLARED_ENCODING_RE.match(body)
        if declared is not None and declared.group(1).decode("ascii", "replace").lower() \
                not in _ALLOWED_ENCODINGS:
            raise _Rejected(INVALID_REQUEST, "The request must be encoded in UTF-8")
        try:
            body.decode("utf-8")
        except UnicodeDecodeError:
            raise _Rejected(INVALID_REQUEST, "The request must be encoded in UTF-8") from None
        try:
            if len(body) > _OFFLOAD_BYTES:
                params, method = await loop.run_in_executor(None, xmlrpc.client.loads, body)
            else:
                params, method = xmlrpc.client.loads(body)
        except Exception as exc:
            raise _Rejected(PARSE_ERROR, f"parse error: {one_line(str(exc), 200)}") from None
        if method is None:
            raise _Rejected(INVALID_REQUEST, "The request is not an XML-RPC methodCall")
        return method, params

    @staticmethod
    async def _serialise(method: str, reply: list[object],
                         loop: asyncio.AbstractEventLoop) -> bytes:
        """The ``methodResponse``; a value XML-RPC cannot carry becomes an internal error."""
        value = reply[1]
        if isinstance(value, EncodedText):
            return b"".join([_ENCODED_HEAD, *value.parts, _ENCODED_TAIL])
        try:
            if isinstance(value, str) and len(value) > _OFFLOAD_BYTES:
                return await loop.run_in_executor(None, _dumps, reply)
            return _dumps(reply)
        except (OverflowError, TypeError):
            log.exception("%s: the reply cannot be sent over XML-RPC", method)
            return _dumps([False, f"[{method}] Internal error", int(ErrorCode.INTERNAL)])


def _dumps(reply: list[object]) -> bytes:
    return xmlrpc.client.dumps((reply,), methodresponse=True, allow_none=False).encode("utf-8")


#: A successful reply carrying an :class:`EncodedText` is these bytes around its data:
#: ``xmlrpc.client``'s own envelope, cut where the string goes.
_ENCODED_HEAD, _ENCODED_TAIL = _dumps([True, "\0", 0]).split(b"\0")

"""``GET /metrics``: the Prometheus exposition of :mod:`cloudburst.metrics`.

Scrapes authenticate with HTTP Basic as a user of the ``oneadmin`` group
(Prometheus' ``basic_auth`` scrape setting); anyone else gets 401 or 403 and
one line saying why. The pool gauges are read from the store per scrape, so
every daemon of a shared store reports the same pools; counters are this
daemon's own.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import TYPE_CHECKING

from aiohttp import web

from cloudburst import metrics
from cloudburst.errors import AuthenticationError

if TYPE_CHECKING:
    from cloudburst.service.facade import Services

ADMIN_GROUP = 0

#: The classic text format, which every Prometheus version reads.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

_CHALLENGE = {"WWW-Authenticate": 'Basic realm="cloudburst metrics"'}


def install(app: web.Application, daemon: Services) -> None:
    """Serve ``/metrics`` on ``app``."""
    async def handle(request: web.Request) -> web.Response:
        session = _basic_session(request.headers.get("Authorization", ""))
        if session is None:
            return web.Response(status=401, text="metrics need HTTP Basic credentials\n",
                                headers=_CHALLENGE)
        try:
            user = await daemon.users.authenticate(session)
        except AuthenticationError:
            return web.Response(status=401, text="wrong user name or password\n",
                                headers=_CHALLENGE)
        if user.gid != ADMIN_GROUP:
            return web.Response(status=403,
                                text=f"user {user.name} is not in the oneadmin group\n")
        snapshot = await daemon.db.read(metrics.pool_snapshot)
        body = await asyncio.to_thread(metrics.render, snapshot)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", handle)


def _basic_session(header: str) -> str | None:
    """``user:password`` from a Basic ``Authorization`` header, if it is one."""
    scheme, _, encoded = header.partition(" ")
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        session = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return session if ":" in session else None

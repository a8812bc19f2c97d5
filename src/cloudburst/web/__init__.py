"""The web dashboard and JSON API, served by ``oned`` on the API's address.

``GET /`` is the dashboard (plain JavaScript modules and CSS from
``static/``, no build step, nothing from other origins), ``/api/v1`` the JSON
API it uses (:mod:`cloudburst.web.api`, documented in ``openapi.json``),
``/api/v1/events`` the live stream of the daemon's changes
(:mod:`cloudburst.web.live`). ``POST /`` and ``/RPC2`` stay XML-RPC.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from aiohttp import web

from cloudburst.service.facade import Services
from cloudburst.web.api import Api, build_api
from cloudburst.web.http import security_headers

__all__ = ["install"]


def static_dir() -> Path:
    """The directory of the dashboard's assets inside the installed package."""
    return Path(str(resources.files("cloudburst.web").joinpath("static")))


def install(app: web.Application, services: Services) -> Api:
    """Add the dashboard and the JSON API to the API server's ``app``."""
    api_app, api = build_api(services)
    assets = static_dir()

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(assets / "index.html")

    app.router.add_get("/", index)
    app.router.add_static("/static/", assets, follow_symlinks=False, append_version=False)
    app.add_subapp("/api/v1", api_app)
    app.on_response_prepare.append(security_headers)
    return api

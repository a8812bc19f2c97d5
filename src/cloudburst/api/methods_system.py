"""The ``one.system.*`` methods: version and configuration.

Handlers follow :mod:`cloudburst.api.calls`; the dispatch table that names
them is in :mod:`cloudburst.api.xmlrpc`.
"""

from __future__ import annotations

from cloudburst.api import documents
from cloudburst.api.calls import Call
from cloudburst.service.facade import API_VERSION

__all__ = ["system_config", "system_version"]


# -- one.system ---------------------------------------------------------------------------


async def system_version(call: Call) -> object:
    """``one.system.version()``: the version string."""
    return API_VERSION


async def system_config(call: Call) -> object:
    """``one.system.config()``: the configuration document."""
    return documents.config_document(call.daemon.settings)

"""HTTP plumbing of the JSON API: errors as one-line JSON, request bodies, headers.

Errors: every :class:`~cloudburst.errors.CloudburstError` becomes
``{"error": "<one line>", "code": <OpenNebula error code>}`` with the HTTP
status :data:`HTTP_STATUS` gives for its code; anything else is logged and
answered ``500 {"error": "Internal error"}``, and the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Final, TypeVar

from aiohttp import web

from cloudburst.errors import ApiArgumentError, CloudburstError, ErrorCode, one_line

log = logging.getLogger(__name__)

__all__ = ["HTTP_STATUS", "Body", "error_middleware", "json_response", "security_headers"]

T = TypeVar("T")

#: The HTTP status of each API error code (one table for the whole JSON API).
HTTP_STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.AUTHENTICATION: 401,
    ErrorCode.AUTHORIZATION: 403,
    ErrorCode.NO_EXISTS: 404,
    ErrorCode.ACTION: 409,
    ErrorCode.XML_RPC_API: 400,
    ErrorCode.ALLOCATE: 400,
    ErrorCode.LOCKED: 423,
    ErrorCode.INTERNAL: 400,
}

#: Largest JSON body accepted (templates included).
MAX_BODY_BYTES: Final = 1024 * 1024
#: Seconds a client has to send its whole body.
BODY_TIMEOUT: Final = 30.0

#: Sent with every dashboard and API response: no framing, no sniffing, no
#: referrer, and only this origin's scripts, styles and connections.
SECURITY_HEADERS: Final[Mapping[str, str]] = {
    "Content-Security-Policy": ("default-src 'self'; img-src 'self' data:; "
                                "frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def json_response(value: object, status: int = 200) -> web.Response:
    """``value`` as a JSON response."""
    return web.Response(text=json.dumps(value, separators=(",", ":")), status=status,
                        content_type="application/json")


def error_response(message: str, code: int, status: int) -> web.Response:
    return json_response({"error": one_line(message, 2048), "code": int(code)}, status)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn errors into one-line JSON answers (see the module docstring)."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error_response(exc.text or exc.reason, ErrorCode.XML_RPC_API, exc.status)
    except CloudburstError as exc:
        status = HTTP_STATUS.get(exc.code, 400)
        return error_response(exc.message, exc.code, status)
    except Exception:
        log.exception("%s %s: internal error", request.method, request.path)
        return error_response("Internal error", ErrorCode.INTERNAL, 500)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare`` hook adding :data:`SECURITY_HEADERS` to dashboard answers."""
    if request.path.startswith("/RPC2") or (request.method == "POST" and request.path == "/"):
        return
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)


class Body:
    """A JSON object request body, read field by field with types checked.

    Errors are :class:`~cloudburst.errors.ApiArgumentError` naming the field.
    """

    def __init__(self, data: Mapping[str, object]) -> None:
        self._data = data

    @classmethod
    async def read(cls, request: web.Request) -> Body:
        """The request's JSON object body (an empty body is an empty object).

        Raises:
            ApiArgumentError: too large, not JSON, or not an object.
        """
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            raise ApiArgumentError(f"Request body exceeds {MAX_BODY_BYTES} bytes")
        try:
            async with asyncio.timeout(BODY_TIMEOUT):
                raw = await request.content.read(MAX_BODY_BYTES + 1)
        except TimeoutError:
            raise ApiArgumentError(f"Request body not received within {BODY_TIMEOUT:g} s"
                                   ) from None
        if len(raw) > MAX_BODY_BYTES:
            raise ApiArgumentError(f"Request body exceeds {MAX_BODY_BYTES} bytes")
        if not raw.strip():
            return cls({})
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ApiArgumentError(f"The request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiArgumentError("The request body must be a JSON object")
        return cls(data)

    def _get(self, name: str, kind: type[T], default: T | None, what: str) -> T:
        value = self._data.get(name)
        if value is None:
            if default is None:
                raise ApiArgumentError(f"Missing field {name!r}: expected {what}")
            return default
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ApiArgumentError(f"Field {name!r} must be {what}, got {type(value).__name__}")
        return value

    def string(self, name: str, default: str | None = None) -> str:
        return self._get(name, str, default, "a string")

    def integer(self, name: str, default: int | None = None) -> int:
        value = self._get(name, int, default, "an integer")
        if not -(2**31) <= value < 2**31:
            raise ApiArgumentError(f"Field {name!r} is out of range: {value}")
        return value

    def boolean(self, name: str, default: bool | None = None) -> bool:
        return self._get(name, bool, default, "a boolean")


def query_int(request: web.Request, name: str, default: int, *, low: int, high: int) -> int:
    """An integer query parameter within ``[low, high]``.

    Raises:
        ApiArgumentError: not an integer or out of range.
    """
    text = request.query.get(name)
    if text is None or text == "":
        return default
    try:
        value = int(text)
    except ValueError:
        raise ApiArgumentError(f"Query parameter {name!r} must be an integer, got {text!r}"
                               ) from None
    if not low <= value <= high:
        raise ApiArgumentError(f"Query parameter {name!r} must be between {low} and {high}")
    return value

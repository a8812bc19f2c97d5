"""Who is calling the JSON API, and whether a change carries its CSRF token.

Two ways in:

* **a session cookie** (the dashboard): the session names the user; every
  request that is not ``GET``/``HEAD`` must carry the session's token in the
  ``X-CSRF-Token`` header, and, when the browser sends an ``Origin``
  header, come from this server's own origin;
* **HTTP Basic credentials** ``user:password`` (scripts): checked exactly as
  an XML-RPC session string is, on every request. Browsers never send these
  on their own (the API never asks for them), so no CSRF token is needed.

Whatever the way in, the result is the caller's user record; what the caller
may see and do is decided by the services, as for XML-RPC.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from cloudburst.errors import AuthenticationError, AuthorizationError, NotFoundError
from cloudburst.model.records import UserRecord
from cloudburst.service.users import UserService
from cloudburst.web.sessions import COOKIE, Session, SessionStore

__all__ = ["CSRF_HEADER", "Caller", "authenticate"]

#: The header that carries the session's CSRF token.
CSRF_HEADER: Final = "X-CSRF-Token"
_SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
_NOT_LOGGED_IN: Final = "Not logged in (or the session expired): log in again"


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated API caller; ``session`` is ``None`` for Basic credentials."""

    user: UserRecord
    session: Session | None


async def authenticate(request: web.Request, users: UserService,
                       sessions: SessionStore) -> Caller:
    """The caller of ``request``.

    Raises:
        AuthenticationError: no valid session or credentials.
        AuthorizationError: a session request that changes something without
            the right CSRF token, or from another origin.
    """
    header = request.headers.get("Authorization", "")
    if header[:6].lower() == "basic ":
        return Caller(await users.authenticate(_basic_credentials(header[6:]),
                                               client=request.remote or ""), None)
    session = sessions.get(request.cookies.get(COOKIE))
    if session is None:
        raise AuthenticationError(_NOT_LOGGED_IN)
    if request.method not in _SAFE_METHODS:
        check_csrf(request, session)
    try:
        user = await users.info(session.user_id)
    except NotFoundError:
        sessions.end(session.id)
        raise AuthenticationError(_NOT_LOGGED_IN) from None
    if not user.enabled:
        sessions.end(session.id)
        raise AuthenticationError(_NOT_LOGGED_IN)
    return Caller(user, session)


def check_csrf(request: web.Request, session: Session) -> None:
    """Refuse a state-changing request without the session's token or from elsewhere.

    Raises:
        AuthorizationError: missing or wrong token, or a foreign ``Origin``.
    """
    origin = request.headers.get("Origin")
    if origin is not None and origin != f"{request.scheme}://{request.host}":
        raise AuthorizationError(f"Cross-origin request refused (Origin {origin})")
    if not session.csrf_matches(request.headers.get(CSRF_HEADER)):
        raise AuthorizationError(f"Missing or wrong CSRF token: send the session's token in "
                                 f"the {CSRF_HEADER} header")


def _basic_credentials(encoded: str) -> str:
    """``user:password`` from a Basic authorization value.

    Raises:
        AuthenticationError: not base64 of UTF-8 text with a colon.
    """
    try:
        text = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise AuthenticationError("Malformed Basic credentials") from None
    if ":" not in text:
        raise AuthenticationError("Malformed Basic credentials")
    return text

"""What every command shares: the endpoint, the session, calls, documents, input.

Endpoint: ``--endpoint``, else ``ONE_XMLRPC``, else
``http://127.0.0.1:<CLOUDBURST_PORT or 2633>/RPC2``.
Session (``user:password``): ``--user`` with ``--password`` (asked for on a
terminal when missing), else the first line of the file ``ONE_AUTH`` names,
else of ``~/.one/one_auth`` when it exists, else of
``$CLOUDBURST_HOME/one_auth`` (default ``~/.cloudburst/one_auth``).
With ``-v/--verbose`` each call is reported on stderr (method, duration, outcome).

Failures reach the user as one line on stderr and exit status 1 (usage errors
are argparse's, status 2). Nothing printed ever contains the session.
"""

from __future__ import annotations

import argparse
import getpass
import http.client
import os
import shlex
import subprocess
import sys
import tempfile
import time
import xmlrpc.client
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit
from xml.etree import ElementTree

from cloudburst.template import Template

DEFAULT_PORT: Final = 2633
#: Seconds a call may take before the CLI gives up.
DEFAULT_TIMEOUT: Final = 60.0
#: Most VMs one id range may name (a typo such as 1..1000000000 is refused).
MAX_IDS: Final = 100_000


class CliError(Exception):
    """A failure to report as one line on stderr, exiting with status 1."""


class UnreachableError(CliError):
    """The daemon did not answer at all: no point in trying further calls."""


# -- endpoint and session ------------------------------------------------------------------


def endpoint(environ: Mapping[str, str] = os.environ) -> str:
    """The XML-RPC URL to call."""
    url = environ.get("ONE_XMLRPC", "").strip()
    if url:
        return url
    port = environ.get("CLOUDBURST_PORT", "").strip() or str(DEFAULT_PORT)
    return f"http://127.0.0.1:{port}/RPC2"


def session_file(environ: Mapping[str, str] = os.environ) -> Path:
    """The file holding the session, by the rules of the module docstring."""
    named = environ.get("ONE_AUTH", "").strip()
    if named:
        return Path(named).expanduser()
    one_auth = Path("~/.one/one_auth").expanduser()
    if one_auth.exists():
        return one_auth
    home = environ.get("CLOUDBURST_HOME", "").strip() or "~/.cloudburst"
    return Path(home).expanduser() / "one_auth"


def read_session(environ: Mapping[str, str] = os.environ) -> str:
    """The ``user:password`` session (first line of :func:`session_file`, stripped).

    Raises:
        CliError: the file cannot be read or its first line is not ``user:password``.
    """
    path = session_file(environ)
    try:
        with open(path, encoding="utf-8") as handle:
            first = handle.readline().strip()
    except OSError as exc:
        raise CliError(f"cannot read the session file {path}: {exc.strerror or exc}; set "
                       "ONE_AUTH to a file holding user:password") from None
    if ":" not in first:
        raise CliError(f"the session file {path} must hold user:password on its first line")
    return first


def _printable_url(url: str) -> str:
    """``url`` without any ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


# -- calls -------------------------------------------------------------------------------


# ServerProxy has no timeout of its own: its transports set one on each connection.
class _TimeoutTransport(xmlrpc.client.Transport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _SafeTimeoutTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class Client:
    """Calls ``one.*`` methods with the session prepended, as OpenNebula's CLI does."""

    def __init__(self, url: str, session: str, *, timeout: float = DEFAULT_TIMEOUT,
                 verbose: bool = False) -> None:
        self.url = url
        self._session = session
        self._verbose = verbose
        transport = (_SafeTimeoutTransport(timeout) if url.startswith("https:")
                     else _TimeoutTransport(timeout))
        try:
            self._proxy = xmlrpc.client.ServerProxy(url, transport=transport, allow_none=False)
        except OSError as exc:
            raise CliError(f"invalid endpoint {_printable_url(url)}: {exc}") from None

    def call(self, method: str, *params: object) -> Any:
        """The value of a successful call.

        Raises:
            CliError: the daemon cannot be reached, or it answered with an error
                (its message, e.g. ``[one.vm.info] Error getting virtual machine [9].``).
        """
        url = _printable_url(self.url)
        started = time.monotonic()
        try:
            reply = self._send(method, params)
        finally:
            if self._verbose:
                print(f"{method} -> {url} ({(time.monotonic() - started) * 1000:.0f} ms)",
                      file=sys.stderr)
        if not isinstance(reply, list) or len(reply) < 3:
            raise CliError(f"[{method}] unexpected reply from {url}")
        if not reply[0]:
            raise CliError(str(reply[1]))
        return reply[1]

    def _send(self, method: str, params: tuple[object, ...]) -> Any:
        url = _printable_url(self.url)
        try:
            return getattr(self._proxy, method)(self._session, *params)
        except xmlrpc.client.Fault as fault:
            raise CliError(f"[{method}] {fault.faultString}") from None
        except xmlrpc.client.ProtocolError as exc:
            raise CliError(f"the daemon at {url} answered HTTP {exc.errcode} {exc.errmsg}; "
                           "check ONE_XMLRPC") from None
        except (OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise UnreachableError(f"cannot reach the cloudburst daemon at {url}: "
                                   f"is oned running? ({reason})") from None
        except xmlrpc.client.ResponseError as exc:
            raise CliError(f"the daemon at {url} sent a reply that is not XML-RPC: {exc}") \
                from None

    def document(self, method: str, *params: object) -> ElementTree.Element:
        """The XML document a call returns, parsed."""
        value = self.call(method, *params)
        try:
            return ElementTree.fromstring(value)
        except (ElementTree.ParseError, TypeError) as exc:
            raise CliError(f"[{method}] the reply is not an XML document: {exc}") from None


@dataclass(frozen=True, slots=True)
class ConnectionOptions:
    """The command line's ``--endpoint``, ``--user``, ``--password``, ``--verbose``."""

    endpoint: str | None = None
    user: str | None = None
    password: str | None = None
    verbose: bool = False

    @classmethod
    def of(cls, args: argparse.Namespace) -> ConnectionOptions:
        return cls(getattr(args, "endpoint", None), getattr(args, "user", None),
                   getattr(args, "password", None), bool(getattr(args, "verbose", False)))

    def session(self, environ: Mapping[str, str]) -> str:
        """``--user:--password``, else the session file's (:func:`read_session`).

        Raises:
            CliError: ``--password`` without ``--user``, or no password to be had.
        """
        if self.user is None:
            if self.password is not None:
                raise CliError("--password needs --user")
            return read_session(environ)
        password = self.password
        if password is None:
            if not sys.stdin.isatty():
                raise CliError("--user needs --password (or a terminal to ask for it)")
            password = getpass.getpass(f"Password for {self.user}: ")
        return f"{self.user}:{password}"


#: Set by :func:`run` from the command line before the handler runs.
_options = ConnectionOptions()


def connect(environ: Mapping[str, str] = os.environ) -> Client:
    """A client for the endpoint and session (command-line options first)."""
    url = _options.endpoint or endpoint(environ)
    return Client(url, _options.session(environ), verbose=_options.verbose)


# -- documents ----------------------------------------------------------------------------


def text(element: ElementTree.Element, path: str, default: str = "") -> str:
    """The text at ``path`` below ``element`` (``default`` when absent or empty)."""
    found = element.find(path)
    if found is None or found.text is None:
        return default
    return found.text


def number(element: ElementTree.Element, path: str, default: int = 0) -> int:
    """The integer at ``path``; ``default`` when absent or not a number."""
    try:
        return int(float(text(element, path)))
    except (ValueError, OverflowError):
        return default


def template_at(element: ElementTree.Element, path: str) -> Template:
    """The template under ``path`` (``TEMPLATE``, ``USER_TEMPLATE``); empty when absent."""
    root = element.find(path)
    template = Template()
    if root is None:
        return template
    for child in root:
        if len(child):
            template.append(child.tag, {key.tag: key.text or "" for key in child})
        else:
            template.append(child.tag, child.text or "")
    return template


def find_host_id(client: Client, token: str) -> int:
    """A host id given as a number or a name (resolved with ``one.hostpool.info``).

    Raises:
        CliError: no host has that name.
    """
    if token.lstrip("-").isdigit():
        return int(token)
    pool = client.document("one.hostpool.info")
    for host in pool.findall("HOST"):
        if text(host, "NAME") == token:
            return number(host, "ID")
    raise CliError(f"HOST named {token} not found")


# -- input --------------------------------------------------------------------------------


def id_list(value: str) -> list[int]:
    """Parse ``3``, ``1,2,5``, ``3..7`` or mixes such as ``1,4..6`` (argparse type).

    Raises:
        argparse.ArgumentTypeError: not such a list, or a backwards range.
    """
    ids: list[int] = []
    for part in value.split(","):
        first, dots, last = part.strip().partition("..")
        try:
            start = int(first)
            end = int(last) if dots else start
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"invalid id list {value!r}: use 3, 1,2,5 or 3..7") from None
        if end < start:
            raise argparse.ArgumentTypeError(f"invalid range {part.strip()!r}: {end} < {start}")
        if end - start >= MAX_IDS:
            raise argparse.ArgumentTypeError(
                f"range {part.strip()!r} is too large (at most {MAX_IDS} ids)")
        ids.extend(range(start, end + 1))
    return ids


def read_source(path: str) -> str:
    """The contents of ``path``, or standard input for ``-``.

    Raises:
        CliError: the file cannot be read.
    """
    if path == "-":
        return sys.stdin.read()
    try:
        return Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"cannot read {path}: it is not UTF-8 text") from None


def edit(initial: str) -> str:
    """Let the user edit ``initial`` in ``$VISUAL``/``$EDITOR`` (``vi``); return the result.

    Raises:
        CliError: the editor cannot be started or exits with a failure.
    """
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    with tempfile.TemporaryDirectory(prefix="cloudburst-") as directory:
        path = Path(directory) / "template.txt"
        path.write_text(initial, encoding="utf-8")
        try:
            status = subprocess.call([*shlex.split(editor), str(path)])
        except OSError as exc:
            raise CliError(f"cannot start the editor {editor!r}: {exc.strerror or exc}") \
                from None
        if status != 0:
            raise CliError(f"the editor {editor!r} failed (exit status {status}); nothing changed")
        return path.read_text(encoding="utf-8")


def new_contents(path: str | None, current: Callable[[], Template]) -> str:
    """The text for an ``update``: ``path``'s contents, or ``current()`` edited."""
    if path is not None:
        return read_source(path)
    return edit(current().to_text())


# -- running commands ---------------------------------------------------------------------


def run(parser: argparse.ArgumentParser, argv: list[str] | None) -> int:
    """Parse ``argv`` and run the chosen subcommand's ``handler(args)``.

    Returns the exit status: the handler's, 1 after a :class:`CliError`
    (its message alone on stderr, as OpenNebula's CLI prints the daemon's),
    130 on Ctrl-C.
    """
    global _options
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    if handler is None:
        parser.print_usage(sys.stderr)
        print(f"{parser.prog}: error: a subcommand is required", file=sys.stderr)
        return 2
    _options = ConnectionOptions.of(args)
    try:
        return handler(args)
    except CliError as exc:
        print(exc, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader (e.g. `head`) went away; say nothing more.
        sys.stderr.close()
        return 0

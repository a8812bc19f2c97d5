"""The partner's rc file: endpoint, credentials, quota and time limits.

Format: ``KEY=VALUE`` lines as a shell would source them (``export`` and
quotes allowed, ``#`` comments)::

    ONE_XMLRPC=http://partner.example.org:2633/RPC2   # required
    ONE_AUTH=user:password     # required; or a path (relative to this file's
                               # directory) of a file whose first line is it
    TOTALCPU=800               # optional quota, percent of a core
    TOTALMEMORY=16777216       # optional quota, KB
    TIMEOUT=30                 # seconds per XML-RPC call
    BOOT_TIMEOUT=120           # seconds a partner VM may take to reach RUNNING
    SHUTDOWN_TIMEOUT=120       # seconds a partner VM may take to be gone
    POLL_INTERVAL=2            # longest wait between checks while waiting

The file, and an ``ONE_AUTH`` file it names, must not be readable by group or
others (``chmod 600``): the driver refuses to use them otherwise. Error
messages name the file and the key, never a credential. The file is re-read
when it changes, so an operator can fix it without restarting the daemon.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit, urlunsplit

from cloudburst.drivers.base import DriverContext
from cloudburst.drivers.config_files import ParsedFiles, rc_lines
from cloudburst.errors import DriverError

#: The rc file used when ``ARGUMENTS`` names none (relative to ``etc/``).
DEFAULT_RC: Final = "one/partnerrc"

_KNOWN: Final = frozenset({
    "ONE_XMLRPC", "ONE_AUTH", "TOTALCPU", "TOTALMEMORY", "TIMEOUT", "BOOT_TIMEOUT",
    "SHUTDOWN_TIMEOUT", "POLL_INTERVAL",
})


@dataclass(frozen=True, slots=True)
class PartnerConfig:
    """What the rc file says. ``session`` is never shown (``repr`` hides it).

    Attributes:
        path: the rc file.
        endpoint: the partner's XML-RPC URL.
        session: ``user:password``, sent as the first parameter of every call.
        total_cpu: the CPU quota (percent of a core), ``None`` when unset.
        total_memory: the memory quota (KB), ``None`` when unset.
        timeout: seconds one XML-RPC call may take.
        boot_timeout: seconds a new partner VM may take to reach RUNNING.
        shutdown_timeout: seconds a terminated partner VM may take to be gone.
        poll_interval: the longest pause between two checks while waiting.
        unknown_keys: keys the file sets that the driver does not know.
    """

    path: Path
    endpoint: str
    session: str = field(repr=False)
    total_cpu: int | None = None
    total_memory: int | None = None
    timeout: float = 30.0
    boot_timeout: float = 120.0
    shutdown_timeout: float = 120.0
    poll_interval: float = 2.0
    unknown_keys: tuple[str, ...] = ()

    @property
    def shown_endpoint(self) -> str:
        """The endpoint without any ``user:password@`` part, for messages."""
        return printable_url(self.endpoint)

    @property
    def label(self) -> str:
        """How messages name the partner: ``partner cloud <endpoint>``."""
        return f"partner cloud {self.shown_endpoint}"

    @property
    def secrets(self) -> tuple[str, ...]:
        """Strings that must never appear in anything shown (session, password)."""
        password = self.session.partition(":")[2]
        return tuple(value for value in (self.session, password) if len(value) >= 3)

    def scrub(self, text: str) -> str:
        """``text`` with every credential replaced by ``***``."""
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


def rc_path(context: DriverContext) -> Path:
    """The rc file a driver section names: the last word of ``ARGUMENTS``, under ``etc/``."""
    return context.resolve(context.arguments[-1] if context.arguments else DEFAULT_RC)


def printable_url(url: str) -> str:
    """``url`` without a ``user:password@`` part."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def _private(path: Path, what: str) -> None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise DriverError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise DriverError(f"{what} {path}: {exc.strerror}") from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise DriverError(
            f"{what} {path} is accessible by other users (mode {stat.S_IMODE(mode):04o}); "
            f"it holds credentials: run chmod 600 {path}")


def _pairs(path: Path, text: str) -> dict[str, tuple[str, int]]:
    """Key (upper case) -> (value, line number) of the rc file's ``text``.

    Raises:
        DriverError: a line is not ``KEY=VALUE`` (the line is never echoed:
            it may hold the password).
    """
    values: dict[str, tuple[str, int]] = {}
    for line in rc_lines(text):
        key = line.key.upper()
        if not line.assignment or not key.replace("_", "").isalnum():
            raise DriverError(f"{path}:{line.number}: expected KEY=VALUE")
        value = shell_value(line.value)
        if value is None:
            raise DriverError(f"{path}:{line.number}: unbalanced quotes in the value of {key}")
        values[key] = (value, line.number)
    return values


def shell_value(text: str) -> str | None:
    """The value of ``KEY=<text>`` as ``sh`` would assign it; ``None``: unbalanced quotes.

    Quotes and backslashes work as in the shell; an unquoted ``#`` starts a
    comment only at the beginning of a word (``pa#ss`` stays whole); unquoted
    blanks between words collapse into one.
    """
    words: list[str] = []
    current: list[str] = []
    in_word = False
    quote = ""
    index = 0
    while index < len(text):
        char = text[index]
        index += 1
        if quote:
            if char == quote:
                quote = ""
            elif char == "\\" and quote == '"' and index < len(text) and text[index] in '"\\$`':
                current.append(text[index])
                index += 1
            else:
                current.append(char)
        elif char in "'\"":
            quote, in_word = char, True
        elif char == "\\" and index < len(text):
            current.append(text[index])
            index += 1
            in_word = True
        elif char.isspace():
            if in_word:
                words.append("".join(current))
                current, in_word = [], False
        elif char == "#" and not in_word:
            break
        else:
            current.append(char)
            in_word = True
    if quote:
        return None
    if in_word:
        words.append("".join(current))
    return " ".join(words)


def _number(path: Path, values: dict[str, tuple[str, int]], key: str, default: float,
            *, whole: bool = False) -> float:
    if key not in values:
        return default
    text, line = values[key]
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0 or (whole and value != int(value)) or (not whole and value == 0):
        kind = "a whole number >= 0" if whole else "a number of seconds > 0"
        raise DriverError(f"{path}:{line}: {key} must be {kind}, not {text!r}")
    return value


def _session(path: Path, values: dict[str, tuple[str, int]]) -> str:
    if "ONE_AUTH" not in values:
        raise DriverError(f"{path}: ONE_AUTH is not set (user:password, or a file holding it)")
    value, line = values["ONE_AUTH"]
    if ":" not in value:
        auth_file = Path(value).expanduser()
        if not auth_file.is_absolute():
            auth_file = path.parent / auth_file
        _private(auth_file, "the ONE_AUTH file")
        try:
            with open(auth_file, encoding="utf-8") as handle:
                value = handle.readline().strip()
        except OSError as exc:
            raise DriverError(f"the ONE_AUTH file {auth_file}: {exc.strerror}") from None
        if ":" not in value:
            raise DriverError(f"the ONE_AUTH file {auth_file} must hold user:password "
                              "on its first line")
    user, _, password = value.partition(":")
    if not user or not password:
        raise DriverError(f"{path}:{line}: ONE_AUTH must be user:password (both non-empty)")
    return value


def load(path: Path) -> PartnerConfig:
    """Read and check the rc file at ``path``.

    Raises:
        DriverError: missing, too permissive, or a bad value (the message
            names the file, line and key, never a credential).
    """
    _private(path, "the partner rc file")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise DriverError(f"the partner rc file {path}: {exc.strerror}") from None
    values = _pairs(path, text)
    endpoint = values.get("ONE_XMLRPC", ("", 0))[0].strip()
    if not endpoint:
        raise DriverError(f"{path}: ONE_XMLRPC is not set (the partner's "
                          "http://host:2633/RPC2 endpoint)")
    if urlsplit(endpoint).scheme not in ("http", "https"):
        raise DriverError(f"{path}:{values['ONE_XMLRPC'][1]}: ONE_XMLRPC must be an http:// "
                          f"or https:// URL, not {printable_url(endpoint)!r}")
    cpu = _number(path, values, "TOTALCPU", -1, whole=True)
    memory = _number(path, values, "TOTALMEMORY", -1, whole=True)
    return PartnerConfig(
        path=path,
        endpoint=endpoint,
        session=_session(path, values),
        total_cpu=None if cpu < 0 else int(cpu),
        total_memory=None if memory < 0 else int(memory),
        timeout=_number(path, values, "TIMEOUT", 30.0),
        boot_timeout=_number(path, values, "BOOT_TIMEOUT", 120.0),
        shutdown_timeout=_number(path, values, "SHUTDOWN_TIMEOUT", 120.0),
        poll_interval=_number(path, values, "POLL_INTERVAL", 2.0),
        unknown_keys=tuple(sorted(set(values) - _KNOWN)),
    )


class ConfigCache:
    """Loads the rc file again only when it changed (contents or permissions)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._files = ParsedFiles(load)

    def get(self) -> PartnerConfig:
        """The current configuration.

        Raises:
            DriverError: as :func:`load`.
        """
        try:
            return self._files.get(self.path)
        except OSError:
            return load(self.path)  # raises the precise error

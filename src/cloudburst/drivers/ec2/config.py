"""The EC2 driver's configuration: flags, rc files, defaults and limits.

**VM driver** (``VM_MAD`` ``ARGUMENTS = "<flags> vmm_ec2/vmm_ec2.conf"``). The
last word is the defaults file (relative to ``etc/``). The seed's flags:

* ``-u URL``: the endpoint (``EC2_URL``), any EC2-compatible URL;
* ``-h DIR``, ``-k FILE``, ``-c FILE``: ``EC2_HOME``, ``EC2_PRIVATE_KEY`` and
  ``EC2_CERT`` of the Java API tools. They are accepted so old lines still
  load, and are otherwise ignored with a warning: AWS no longer accepts X.509
  certificates for the EC2 API.

**Credentials file** ``vmm_ec2rc`` (``KEY=VALUE`` lines, ``export``, quotes and
``#`` comments allowed), looked up next to the defaults file: first
``<VM_MAD name>rc`` (e.g. ``vmm_amazon_eu_westrc``: one account per site),
then ``vmm_ec2rc``. Keys:

* ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``;
  or ``AWS_PROFILE`` (a profile of the shared AWS files). Without any of them
  the standard AWS credential chain is used (environment, shared files,
  instance role, ...);
* ``AWS_DEFAULT_REGION`` (or ``AWS_REGION``); else the region in the endpoint's
  host name (``eu-west-1.ec2.amazonaws.com``); else ``us-east-1``;
* ``EC2_URL``: the endpoint when ``-u`` is not given;
* tuning: ``EC2_THREADS`` (SDK thread pool, default ``-t`` + 2),
  ``EC2_CONNECT_TIMEOUT`` (5 s), ``EC2_READ_TIMEOUT`` (60 s),
  ``EC2_MAX_ATTEMPTS`` (5 tries of a throttled or failed call),
  ``EC2_RETRY_BASE_DELAY`` (0.5 s, doubled each try), ``EC2_RETRY_MAX_DELAY``
  (20 s), ``EC2_RATE_LIMITS`` / ``EC2_RATE_SCALE`` / ``EC2_RATE_<BUCKET>``
  (see :mod:`.limits`), ``EC2_LISTING_REUSE_SECONDS`` (15: how old a poll's
  instance listing the orphan sweep may reuse), ``EC2_INGRESS_CIDR``
  (``0.0.0.0/0``: who may reach ``AUTHORIZED_PORTS``),
  ``EC2_EXTRA_INSTANCE_TYPES`` (comma list of type names an EC2-compatible
  cloud offers beyond AWS's).

Credentials never leave this module as text: they are held in :class:`Secret`,
whose ``repr`` and ``str`` are masked, and only :mod:`.client` reveals them,
to boto3.

**Defaults file** ``vmm_ec2.conf``: the seed's XML,
``<TEMPLATE><EC2><KEYPAIR>...</KEYPAIR>...</EC2></TEMPLATE>`` (a
``PUBLIC_CLOUD`` element is read the same way). Every key may be defaulted.

**Information driver** ``im_ec2.conf`` (``KEY=VALUE``): the seed's
``SMALL_INSTANCES``, ``LARGE_INSTANCES``, ``EXTRALARGE_INSTANCES`` (empty = 0),
and ``INSTANCES_<TYPE>=N`` for any current type, the type written as in
``CAPACITY`` vectors: upper case, ``_`` for ``.`` (``INSTANCES_T3_MICRO=2``).
Optional ``DEFAULT_INSTANCE_TYPE`` (else the ``INSTANCETYPE`` of
``VMM_DEFAULTS``, default ``vmm_ec2/vmm_ec2.conf``, else ``m1.small``).
"""

from __future__ import annotations

import hashlib
import logging
import re
import stat
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cloudburst.drivers.base import DriverContext
from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.limits import DEFAULT_BUCKETS, BucketSpec
from cloudburst.errors import ConfigError, TemplateError
from cloudburst.template import parse_xml

log = logging.getLogger(__name__)

X509_NOTICE: Final = (
    "X.509 credentials (EC2_PRIVATE_KEY/EC2_CERT) are no longer accepted by AWS; put "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the driver's rc file (vmm_ec2rc) or "
    "use the standard AWS credential chain"
)

_DEFAULT_REGION: Final = "us-east-1"
_REGION_RE: Final = re.compile(r"(?:^|\.)([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+)(?:\.|$)")
_KEY_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

#: rc keys the driver understands (others get a warning).
_RC_KEYS: Final = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "EC2_URL", "EC2_HOME", "EC2_PRIVATE_KEY", "EC2_CERT",
    "EC2_JVM_ARGS", "EC2_JVM_CONCURRENCY", "EC2_THREADS", "EC2_CONNECT_TIMEOUT",
    "EC2_READ_TIMEOUT", "EC2_MAX_ATTEMPTS", "EC2_RETRY_BASE_DELAY", "EC2_RETRY_MAX_DELAY",
    "EC2_RATE_LIMITS", "EC2_RATE_SCALE", "EC2_LISTING_REUSE_SECONDS", "EC2_INGRESS_CIDR",
    "EC2_EXTRA_INSTANCE_TYPES",
})


class Secret:
    """A credential: compares and hashes like its value, never prints it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The value, for the SDK call that needs it (never for messages)."""
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __reduce__(self) -> tuple[object, ...]:
        raise TypeError("credentials cannot be pickled")


@dataclass(frozen=True, slots=True)
class Credentials:
    """Explicit credentials from an rc file (``None`` fields: use the AWS chain)."""

    access_key_id: Secret | None = None
    secret_access_key: Secret | None = None
    session_token: Secret | None = None
    profile: str | None = None

    @property
    def explicit(self) -> bool:
        return self.access_key_id is not None

    def secrets(self) -> list[str]:
        """The secret values, for scrubbing messages (never for display)."""
        return [item.reveal() for item in (self.access_key_id, self.secret_access_key,
                                           self.session_token) if item is not None]

    def fingerprint(self) -> str:
        """A short one-way id of the account's key (for sharing rate limits)."""
        if self.access_key_id is None:
            return f"chain:{self.profile or ''}"
        return hashlib.sha256(self.access_key_id.reveal().encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries of throttled, 5xx, timed-out and dropped calls.

    Attempt ``n`` (from 1) waits ``d/2 + uniform(0, d/2)`` with
    ``d = min(max_delay, base_delay * 2 ** (n - 1))`` before the next one.
    """

    max_attempts: int = 5
    base_delay: float = 0.5
    max_delay: float = 20.0


@dataclass(frozen=True, slots=True)
class SiteConfig:
    """Everything needed to talk to one EC2 site (one ``VM_MAD``)."""

    name: str
    endpoint_url: str | None
    region: str
    credentials: Credentials = field(repr=False, default_factory=Credentials)
    defaults_path: Path | None = None
    rc_path: Path | None = None
    threads: int = 17
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    #: ``None``: client-side rate limits are off.
    rate_limits: Mapping[str, BucketSpec] | None = field(
        default_factory=lambda: dict(DEFAULT_BUCKETS))
    listing_reuse_seconds: float = 15.0
    ingress_cidr: str = "0.0.0.0/0"
    #: Operator-facing notes about the configuration (X.509, unknown keys, ...).
    notes: tuple[str, ...] = ()

    @property
    def endpoint_label(self) -> str:
        """The endpoint for messages (no user info), or ``AWS <region>``."""
        if not self.endpoint_url:
            return f"AWS {self.region}"
        parts = urlsplit(self.endpoint_url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"


# -- KEY=VALUE files --------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EnvFile:
    """A parsed ``KEY=VALUE`` file: values and the line each came from."""

    path: Path
    values: Mapping[str, str]
    lines: Mapping[str, int]

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(str(self.path), f"{key}: {problem}", self.lines.get(key))


def parse_env_text(text: str, path: Path) -> EnvFile:
    """Parse shell-style ``KEY=VALUE`` lines (``export``, quotes, comments).

    Raises:
        ConfigError: a line is not ``KEY=VALUE`` (file and line named; the value
            is never echoed, it may be a secret).
    """
    values: dict[str, str] = {}
    lines: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, equals, value = line.partition("=")
        key = key.strip()
        if not equals or _KEY_RE.fullmatch(key) is None:
            raise ConfigError(str(path), "expected KEY=VALUE", number)
        values[key.upper()] = _unquote(value.strip())
        lines[key.upper()] = number
    return EnvFile(path, values, lines)


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
        return value[1:-1]
    if value.startswith(("'", '"')):
        return value[1:]
    # An unquoted value ends at a comment, as in the shell.
    comment = re.search(r"\s#", value)
    return value[: comment.start()].rstrip() if comment else value


def read_env_file(path: Path) -> EnvFile:
    """Read and parse a ``KEY=VALUE`` file.

    Raises:
        ConfigError: unreadable or malformed.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), "the file is not UTF-8 text") from None
    return parse_env_text(text, path)


# -- VM driver arguments and rc files ------------------------------------------------


@dataclass(frozen=True, slots=True)
class VmmArguments:
    """The words of a ``VM_MAD``'s ``ARGUMENTS`` (dispatcher flags removed)."""

    endpoint: str | None = None
    ec2_home: str | None = None
    private_key: str | None = None
    cert: str | None = None
    defaults: str | None = None


_FLAGS: Final = {"-u": "endpoint", "-h": "ec2_home", "-k": "private_key", "-c": "cert"}


def parse_vmm_arguments(words: Sequence[str]) -> VmmArguments:
    """Read ``-u/-h/-k/-c`` and the defaults file (the last plain word).

    Raises:
        ValueError: an unknown flag, a flag without its value, or two files.
    """
    found: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(words):
        word = words[index]
        if word in _FLAGS:
            if index + 1 >= len(words):
                raise ValueError(f"option {word} needs a value")
            found[_FLAGS[word]] = words[index + 1]
            index += 2
            continue
        if word.startswith("-") and len(word) > 1:
            raise ValueError(f"unknown option {word} for the EC2 driver "
                             "(known: -u EC2_URL, -h EC2_HOME, -k EC2_PRIVATE_KEY, -c EC2_CERT)")
        positional.append(word)
        index += 1
    if len(positional) > 1:
        raise ValueError(f"expected one defaults file as the last argument, got {positional}")
    return VmmArguments(defaults=positional[0] if positional else None, **found)


def normalize_endpoint(url: str) -> str:
    """``host[:port]`` or a URL -> a URL with a scheme (https by default).

    Raises:
        ValueError: not a usable URL.
    """
    text = url.strip()
    if "://" not in text:
        text = "https://" + text
    parts = urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"EC2 endpoint {url!r} is not an http(s) URL")
    return text.rstrip("/")


def region_from_endpoint(url: str | None) -> str | None:
    """The region named in an AWS endpoint's host name, if any."""
    if not url:
        return None
    host = urlsplit(url).hostname or ""
    match = _REGION_RE.search(host)
    return match.group(1) if match else None


def rc_candidates(context: DriverContext, defaults: Path | None) -> list[Path]:
    """Where the rc file may be, in order: ``<name>rc`` then ``vmm_ec2rc``."""
    directories = []
    if defaults is not None:
        directories.append(defaults.parent)
    directories.append(context.etc_dir / "vmm_ec2")
    candidates: list[Path] = []
    for directory in dict.fromkeys(directories):
        for name in (f"{context.name}rc", "vmm_ec2rc"):
            path = directory / name
            if path not in candidates:
                candidates.append(path)
    return candidates


def _positive(env: EnvFile, key: str, default: float, *, minimum: float = 0.0) -> float:
    raw = env.values.get(key, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise env.error(key, f"must be a number, got {raw!r}") from None
    if not value >= minimum or value != value or value == float("inf"):
        raise env.error(key, f"must be a number >= {minimum:g}, got {raw!r}")
    return value


def _rate_limits(env: EnvFile) -> dict[str, BucketSpec] | None:
    switch = env.values.get("EC2_RATE_LIMITS", "aws").strip().lower()
    if switch in ("off", "no", "none", "0", "false"):
        return None
    if switch not in ("aws", "on", "yes", "1", "true", "default", ""):
        raise env.error("EC2_RATE_LIMITS", f"use 'aws' or 'off', got {switch!r}")
    scale = _positive(env, "EC2_RATE_SCALE", 1.0, minimum=0.01)
    specs = {name: spec.scaled(scale) for name, spec in DEFAULT_BUCKETS.items()}
    for key, raw in env.values.items():
        if not key.startswith("EC2_RATE_") or key in ("EC2_RATE_LIMITS", "EC2_RATE_SCALE"):
            continue
        bucket = key[len("EC2_RATE_"):]
        if bucket not in DEFAULT_BUCKETS:
            raise env.error(key, f"unknown bucket {bucket}; known: "
                                 f"{', '.join(sorted(DEFAULT_BUCKETS))}")
        burst, slash, refill = raw.partition("/")
        try:
            spec = BucketSpec(float(burst), float(refill))
        except ValueError:
            spec = BucketSpec(-1, -1)
        if not slash or spec.burst < 1 or spec.refill <= 0:
            raise env.error(key, f"use BURST/REFILL_PER_SECOND, e.g. 5/2; got {raw!r}")
        specs[bucket] = spec
    return specs


def load_site_config(context: DriverContext) -> SiteConfig:
    """Build a site's configuration from the ``VM_MAD`` arguments and rc file.

    Raises:
        ValueError: bad ``ARGUMENTS`` (the dispatcher reports it with oned.conf's line).
        ConfigError: a malformed rc file or value.
    """
    arguments = parse_vmm_arguments(context.arguments)
    defaults = context.resolve(arguments.defaults) if arguments.defaults else None
    if defaults is None and context.default is not None:
        defaults = context.default
    notes: list[str] = []
    if defaults is not None and not defaults.is_file():
        notes.append(f"defaults file {defaults} not found: VMs get no defaults "
                     "(KEYPAIR, INSTANCETYPE, ...) until it exists")
    rc_path = next((path for path in rc_candidates(context, defaults) if path.is_file()), None)
    env = read_env_file(rc_path) if rc_path is not None else EnvFile(Path("-"), {}, {})
    values = env.values
    unknown = sorted(key for key in values if key not in _RC_KEYS
                     and not key.startswith("EC2_RATE_"))
    if unknown:
        notes.append(f"{rc_path}: unknown keys ignored: {', '.join(unknown)}")

    if arguments.private_key or arguments.cert or values.get("EC2_PRIVATE_KEY") \
            or values.get("EC2_CERT"):
        notes.append(X509_NOTICE)
    if arguments.ec2_home or values.get("EC2_HOME"):
        notes.append("EC2_HOME (-h) is ignored: the driver calls the EC2 API through boto3, "
                     "not the Java EC2 API tools")

    access = values.get("AWS_ACCESS_KEY_ID", "").strip()
    secret = values.get("AWS_SECRET_ACCESS_KEY", "").strip()
    if bool(access) != bool(secret):
        missing = "AWS_SECRET_ACCESS_KEY" if access else "AWS_ACCESS_KEY_ID"
        raise ConfigError(str(rc_path), f"{missing} is missing (both keys are needed)")
    token = values.get("AWS_SESSION_TOKEN", "").strip()
    credentials = Credentials(
        access_key_id=Secret(access) if access else None,
        secret_access_key=Secret(secret) if secret else None,
        session_token=Secret(token) if token and access else None,
        profile=values.get("AWS_PROFILE", "").strip() or None,
    )
    if rc_path is not None and credentials.explicit:
        _check_private(rc_path, notes)

    raw_endpoint = arguments.endpoint or values.get("EC2_URL", "").strip() or None
    endpoint = None
    if raw_endpoint:
        try:
            endpoint = normalize_endpoint(raw_endpoint)
        except ValueError as exc:
            if arguments.endpoint:
                raise
            raise env.error("EC2_URL", str(exc)) from None
    region = (values.get("AWS_DEFAULT_REGION", "").strip() or values.get("AWS_REGION", "").strip()
              or region_from_endpoint(endpoint) or _DEFAULT_REGION)

    extra = [name for name in values.get("EC2_EXTRA_INSTANCE_TYPES", "").split(",")
             if name.strip()]
    types.register_extra_types(extra)
    threads = int(_positive(env, "EC2_THREADS", context.options.threads + 2, minimum=1))
    retry = RetryPolicy(
        max_attempts=int(_positive(env, "EC2_MAX_ATTEMPTS", 5, minimum=1)),
        base_delay=_positive(env, "EC2_RETRY_BASE_DELAY", 0.5),
        max_delay=_positive(env, "EC2_RETRY_MAX_DELAY", 20.0),
    )
    return SiteConfig(
        name=context.name, endpoint_url=endpoint, region=region, credentials=credentials,
        defaults_path=defaults, rc_path=rc_path, threads=threads,
        connect_timeout=_positive(env, "EC2_CONNECT_TIMEOUT", 5.0, minimum=0.01),
        read_timeout=_positive(env, "EC2_READ_TIMEOUT", 60.0, minimum=0.01),
        retry=retry, rate_limits=_rate_limits(env),
        listing_reuse_seconds=_positive(env, "EC2_LISTING_REUSE_SECONDS", 15.0),
        ingress_cidr=values.get("EC2_INGRESS_CIDR", "").strip() or "0.0.0.0/0",
        notes=tuple(notes),
    )


def _check_private(path: Path, notes: list[str]) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        notes.append(f"{path} holds credentials but other users may read it; "
                     f"run: chmod 600 {path}")


# -- the defaults file (vmm_ec2.conf) ------------------------------------------------------


class _Cached:
    """A file parsed once and again only when its stat signature changes."""

    def __init__(self) -> None:
        self._entries: dict[Path, tuple[tuple[int, int, int], object]] = {}

    def get(self, path: Path) -> tuple[tuple[int, int, int] | None, object | None]:
        try:
            status = path.stat()
        except OSError:
            return None, None
        signature = (status.st_ino, status.st_size, status.st_mtime_ns)
        cached = self._entries.get(path)
        if cached is not None and cached[0] == signature:
            return signature, cached[1]
        return signature, None

    def put(self, path: Path, signature: tuple[int, int, int], value: object) -> None:
        self._entries[path] = (signature, value)


_defaults_cache = _Cached()


def load_defaults(path: Path | None) -> dict[str, str]:
    """The default section of ``vmm_ec2.conf`` (empty when there is no file).

    Keys are upper case, as written (aliases are resolved by :mod:`.launch`).

    Raises:
        ConfigError: the file is not the expected XML.
    """
    if path is None:
        return {}
    signature, cached = _defaults_cache.get(path)
    if signature is None:
        return {}
    if isinstance(cached, dict):
        return dict(cached)
    try:
        text = path.read_text(encoding="utf-8")
        template = parse_xml(text)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    except TemplateError as exc:
        raise ConfigError(str(path), exc.message) from None
    section: dict[str, str] = {}
    for name in ("EC2", "PUBLIC_CLOUD"):
        for vector in template.vectors(name):
            if name == "PUBLIC_CLOUD" and vector.get("TYPE", "ec2").strip().lower() != "ec2":
                continue
            for key, value in vector.items():
                section.setdefault(key, value)
    _defaults_cache.put(path, signature, section)
    return dict(section)


# -- im_ec2.conf -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImConfig:
    """Capacity limits of a site (instances per type) and its default type."""

    path: Path
    limits: Mapping[str, int]
    default_instance_type: str | None = None
    vmm_defaults: str | None = None


_IM_KEYS: Final = frozenset({*types.LEGACY_CLASSES, "DEFAULT_INSTANCE_TYPE", "VMM_DEFAULTS"})


def _count(env: EnvFile | Mapping[str, str], key: str, raw: str, where: str) -> int:
    text = raw.strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        problem = f"must be a whole number >= 0 (empty means 0), got {text!r}"
        if isinstance(env, EnvFile):
            raise env.error(key, problem)
        raise ConfigError(where, f"{key}: {problem}")
    return value


def limits_from(values: Mapping[str, str], env: EnvFile | Mapping[str, str],
                where: str) -> tuple[dict[str, int], list[str]]:
    """Instance limits from ``*_INSTANCES`` and ``INSTANCES_<TYPE>`` keys.

    Returns the limits and the keys that name no known type.
    """
    limits: dict[str, int] = {}
    unknown: list[str] = []
    for key, raw in values.items():
        if key in types.LEGACY_CLASSES:
            limits[types.LEGACY_CLASSES[key]] = _count(env, key, raw, where)
        elif key.startswith("INSTANCES_"):
            kind = types.type_from_key(key[len("INSTANCES_"):])
            if kind is None:
                unknown.append(key)
                continue
            limits[kind] = _count(env, key, raw, where)
    return limits, unknown


def load_im_config(path: Path) -> ImConfig:
    """Read ``im_ec2.conf``.

    Raises:
        ConfigError: unreadable, malformed, a bad number or an unknown type.
    """
    env = read_env_file(path)
    limits, unknown = limits_from(env.values, env, str(path))
    if unknown:
        raise env.error(unknown[0], "names no known instance type (write the type in upper "
                                    "case with '_' for '.', e.g. INSTANCES_T3_MICRO=2)")
    for legacy in types.LEGACY_CLASSES.values():
        limits.setdefault(legacy, 0)
    default_type = env.values.get("DEFAULT_INSTANCE_TYPE", "").strip().lower() or None
    if default_type is not None and not types.is_known(default_type):
        raise env.error("DEFAULT_INSTANCE_TYPE", f"unknown instance type {default_type!r}")
    others = sorted(key for key in env.values
                    if key not in _IM_KEYS and not key.startswith("INSTANCES_"))
    if others:
        log.warning("%s: unknown keys ignored: %s", path, ", ".join(others))
    return ImConfig(path=path, limits=limits, default_instance_type=default_type,
                    vmm_defaults=env.values.get("VMM_DEFAULTS", "").strip() or None)

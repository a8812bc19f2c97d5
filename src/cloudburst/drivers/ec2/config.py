"""One EC2 site's settings (:class:`SiteConfig`), resolved from its files and flags.

A site is one ``VM_MAD``: its flags (:mod:`.arguments`), its defaults file
(:mod:`.defaults_file`, named by the flags) and its **rc file** ``vmm_ec2rc``
(``KEY=VALUE``, :mod:`.env_file`), looked up next to the defaults file: first
``<VM_MAD name>rc`` (e.g. ``vmm_amazon_eu_westrc``: one account per site),
then ``vmm_ec2rc``. Keys:

* credentials (:mod:`.credentials`): ``AWS_ACCESS_KEY_ID``,
  ``AWS_SECRET_ACCESS_KEY``, optional ``AWS_SESSION_TOKEN``; or ``AWS_PROFILE``;
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
  cloud offers beyond AWS's), ``EC2_BATCH_MAX`` (250: most instances launched
  per call; a ``TerminateInstances`` takes up to 1,000), ``EC2_BATCH_WINDOW``
  (0.02 s: how long a deploy or termination waits for others to share its
  call, beyond the time the daemon still has more of them on their way; see
  :mod:`.run_instances`).

What is odd but harmless (X.509 flags, unknown keys, an rc file others may
read, a missing defaults file) becomes an operator note, not an error.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final
from urllib.parse import urlsplit

from cloudburst.drivers.base import DriverContext
from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.arguments import VmmArguments, parse_vmm_arguments
from cloudburst.drivers.ec2.credentials import Credentials, credentials_from, exposure_note
from cloudburst.drivers.ec2.env_file import EnvFile, empty_env_file, read_env_file
from cloudburst.drivers.ec2.limits import DEFAULT_BUCKETS, BucketSpec

X509_NOTICE: Final = (
    "X.509 credentials (EC2_PRIVATE_KEY/EC2_CERT) are no longer accepted by AWS; put "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in the driver's rc file (vmm_ec2rc) or "
    "use the standard AWS credential chain"
)

_DEFAULT_REGION: Final = "us-east-1"
_REGION_RE: Final = re.compile(r"(?:^|\.)([a-z]{2}(?:-gov|-iso[a-z]?)?-[a-z]+-\d+)(?:\.|$)")

#: rc keys the driver understands (others get a note).
_RC_KEYS: Final = frozenset({
    "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
    "AWS_DEFAULT_REGION", "AWS_REGION", "EC2_URL", "EC2_HOME", "EC2_PRIVATE_KEY", "EC2_CERT",
    "EC2_JVM_ARGS", "EC2_JVM_CONCURRENCY", "EC2_THREADS", "EC2_CONNECT_TIMEOUT",
    "EC2_READ_TIMEOUT", "EC2_MAX_ATTEMPTS", "EC2_RETRY_BASE_DELAY", "EC2_RETRY_MAX_DELAY",
    "EC2_RATE_LIMITS", "EC2_RATE_SCALE", "EC2_LISTING_REUSE_SECONDS", "EC2_INGRESS_CIDR",
    "EC2_EXTRA_INSTANCE_TYPES", "EC2_BATCH_MAX", "EC2_BATCH_WINDOW",
})
_RATE_PREFIX: Final = "EC2_RATE_"
_RATE_SWITCHES: Final = frozenset({"EC2_RATE_LIMITS", "EC2_RATE_SCALE"})


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
    #: Most instances per ``RunInstances`` / ``TerminateInstances`` call.
    batch_max: int = 250
    #: Seconds a launch or termination waits for others to share its call.
    batch_window: float = 0.02
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


# -- endpoint and region ----------------------------------------------------------


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


def _endpoint(arguments: VmmArguments, env: EnvFile) -> str | None:
    """``-u``, else the rc file's ``EC2_URL``, normalized; ``None``: AWS's own endpoint.

    Raises:
        ValueError: a bad ``-u`` (reported against oned.conf).
        ConfigError: a bad ``EC2_URL`` (reported against the rc file).
    """
    raw = arguments.endpoint or env.values.get("EC2_URL", "").strip() or None
    if not raw:
        return None
    try:
        return normalize_endpoint(raw)
    except ValueError as exc:
        if arguments.endpoint:
            raise
        raise env.error("EC2_URL", str(exc)) from None


def _region(env: EnvFile, endpoint: str | None) -> str:
    values = env.values
    return (values.get("AWS_DEFAULT_REGION", "").strip() or values.get("AWS_REGION", "").strip()
            or region_from_endpoint(endpoint) or _DEFAULT_REGION)


# -- files and notes --------------------------------------------------------------


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


def _defaults_path(context: DriverContext, arguments: VmmArguments) -> Path | None:
    defaults = context.resolve(arguments.defaults) if arguments.defaults else None
    if defaults is None and context.default is not None:
        defaults = context.default
    return defaults


def _legacy_notes(arguments: VmmArguments, values: Mapping[str, str]) -> list[str]:
    """Notes about the Java API tools' settings, which the driver accepts and ignores."""
    notes: list[str] = []
    if arguments.private_key or arguments.cert or values.get("EC2_PRIVATE_KEY") \
            or values.get("EC2_CERT"):
        notes.append(X509_NOTICE)
    if arguments.ec2_home or values.get("EC2_HOME"):
        notes.append("EC2_HOME (-h) is ignored: the driver calls the EC2 API through boto3, "
                     "not the Java EC2 API tools")
    return notes


# -- numbers and rate limits ----------------------------------------------------------


def _positive(env: EnvFile, key: str, default: float, *, minimum: float = 0.0) -> float:
    """The finite number at ``key`` (at least ``minimum``), or ``default`` when unset."""
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
    """AWS's buckets scaled by ``EC2_RATE_SCALE`` and overridden per bucket; ``None``: off."""
    switch = env.values.get("EC2_RATE_LIMITS", "aws").strip().lower()
    if switch in ("off", "no", "none", "0", "false"):
        return None
    if switch not in ("aws", "on", "yes", "1", "true", "default", ""):
        raise env.error("EC2_RATE_LIMITS", f"use 'aws' or 'off', got {switch!r}")
    scale = _positive(env, "EC2_RATE_SCALE", 1.0, minimum=0.01)
    specs = {name: spec.scaled(scale) for name, spec in DEFAULT_BUCKETS.items()}
    for key, raw in env.values.items():
        if not key.startswith(_RATE_PREFIX) or key in _RATE_SWITCHES:
            continue
        bucket = key[len(_RATE_PREFIX):]
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


# -- the whole site -------------------------------------------------------------------


def load_site_config(context: DriverContext) -> SiteConfig:
    """Build a site's configuration from the ``VM_MAD`` arguments and rc file.

    Registers the rc file's ``EC2_EXTRA_INSTANCE_TYPES`` as valid type names.

    Raises:
        ValueError: bad ``ARGUMENTS`` (the dispatcher reports it with oned.conf's line).
        ConfigError: a malformed rc file or value.
    """
    arguments = parse_vmm_arguments(context.arguments)
    defaults = _defaults_path(context, arguments)
    notes: list[str] = []
    if defaults is not None and not defaults.is_file():
        notes.append(f"defaults file {defaults} not found: VMs get no defaults "
                     "(KEYPAIR, INSTANCETYPE, ...) until it exists")
    rc_path = next((path for path in rc_candidates(context, defaults) if path.is_file()), None)
    env = read_env_file(rc_path) if rc_path is not None else empty_env_file()
    values = env.values
    unknown = sorted(key for key in values if key not in _RC_KEYS
                     and not key.startswith(_RATE_PREFIX))
    if unknown:
        notes.append(f"{rc_path}: unknown keys ignored: {', '.join(unknown)}")
    notes += _legacy_notes(arguments, values)

    credentials = credentials_from(env)
    if rc_path is not None and credentials.explicit:
        exposed = exposure_note(rc_path)
        if exposed is not None:
            notes.append(exposed)

    endpoint = _endpoint(arguments, env)
    types.register_extra_types(
        name for name in values.get("EC2_EXTRA_INSTANCE_TYPES", "").split(",") if name.strip())
    threads = int(_positive(env, "EC2_THREADS", context.options.threads + 2, minimum=1))
    retry = RetryPolicy(
        max_attempts=int(_positive(env, "EC2_MAX_ATTEMPTS", 5, minimum=1)),
        base_delay=_positive(env, "EC2_RETRY_BASE_DELAY", 0.5),
        max_delay=_positive(env, "EC2_RETRY_MAX_DELAY", 20.0),
    )
    return SiteConfig(
        name=context.name, endpoint_url=endpoint, region=_region(env, endpoint),
        credentials=credentials, defaults_path=defaults, rc_path=rc_path, threads=threads,
        connect_timeout=_positive(env, "EC2_CONNECT_TIMEOUT", 5.0, minimum=0.01),
        read_timeout=_positive(env, "EC2_READ_TIMEOUT", 60.0, minimum=0.01),
        retry=retry, rate_limits=_rate_limits(env),
        listing_reuse_seconds=_positive(env, "EC2_LISTING_REUSE_SECONDS", 15.0),
        ingress_cidr=values.get("EC2_INGRESS_CIDR", "").strip() or "0.0.0.0/0",
        batch_max=min(1000, int(_positive(env, "EC2_BATCH_MAX", 250, minimum=1))),
        batch_window=min(5.0, _positive(env, "EC2_BATCH_WINDOW", 0.02)),
        notes=tuple(notes),
    )

"""Read ``oned.conf``: OpenNebula template syntax into :class:`Settings`.

Recognised attributes (anything else is reported as a warning, since a typo
silently ignored is worse than a noisy log):

* ``LISTEN_ADDRESS``, ``PORT`` -- where the XML-RPC API listens.
* ``DB = [ BACKEND = "sqlite" | "postgresql", URL = "..." ]`` -- the store.
* ``MONITORING_INTERVAL``, ``VM_POLLING_INTERVAL`` -- seconds.
* ``SCHED_INTERVAL``, ``MAX_VM``, ``MAX_DISPATCH``, ``MAX_HOST`` -- scheduler
  limits, as in OpenNebula's ``sched.conf``.
* ``DEFAULT_SCHED = [ POLICY = 0..4, RANK = "...", COST_ORDER = "YES" ]`` -- default
  host ranking: 0 packing, 1 striping, 2 load-aware, 3 custom ``RANK``, 4 fixed
  ``PRIORITY``; ``COST_ORDER = "NO"`` ranks cloud sites by ``RANK`` before price.
* ``RECALL = [ PER_MINUTE = 2, MIN_CLOUD_TIME = 600, WINDOW = "22:00-06:00" ]`` --
  bringing ``RECALL = "YES"`` cloud VMs home (:class:`~cloudburst.config.settings.
  RecallSettings`).
* ``DEFAULT_ACTION_TIMEOUT``, ``ORPHAN_GRACE_PERIOD``, ``MAX_REQUEST_BYTES``,
  ``DRIVER_RETRY_DELAY``, ``CAPACITY_COOLOFF``.
* ``REQUEST_HEADER_TIMEOUT``, ``REQUEST_BODY_TIMEOUT``, ``MAX_CONNECTIONS``,
  ``MAX_CONNECTIONS_PER_CLIENT``, ``FILE_RESERVE`` -- what clients may hold of
  the API server (:class:`~cloudburst.config.settings.ApiLimits`).
* ``LEADER_LEASE = [ DURATION = 3, RENEW = 0.75, RETRY = 0.5, STALL = 15 ]`` --
  seconds; the lease of daemons sharing a PostgreSQL store.
* ``STORE_TIMEOUT`` -- seconds a write waits for a lock another process holds on the store.
* ``LOGIN_MAX_FAILURES``, ``LOGIN_LOCKOUT``, ``FAILED_LOGIN_DELAY``, ``LOGIN_QUEUE`` --
  password guessing (:class:`~cloudburst.config.settings.LoginLimits`).
* ``LOG = [ LEVEL = "DEBUG" | "INFO" | ... ]`` (``DEBUG_LEVEL = 0..3`` also read).
* ``IM_MAD``, ``VM_MAD``, ``TM_MAD`` sections with ``NAME``, ``EXECUTABLE``,
  ``ARGUMENTS``, ``DEFAULT``, ``TYPE``.

Every problem raises :class:`~cloudburst.errors.ConfigError` naming the file,
the line and what is wrong, so a bad file stops the daemon at start.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

from cloudburst.config.settings import (
    ApiLimits,
    DriverSection,
    LeaseSettings,
    LoginLimits,
    RecallSettings,
    SchedulerSettings,
    Settings,
)
from cloudburst.errors import ConfigError, TemplateError, TemplateSyntaxError
from cloudburst.template import Template, parse

_POLICY_RANKS = {
    "0": "RUNNING_VMS",
    "1": "- RUNNING_VMS",
    "2": "FREE_CPU",
    "4": "PRIORITY",
}
_LOG_LEVELS = {"0": "ERROR", "1": "WARNING", "2": "INFO", "3": "DEBUG"}
_DRIVER_KINDS = ("IM_MAD", "VM_MAD", "TM_MAD")
_KNOWN = {
    "LISTEN_ADDRESS", "PORT", "DB", "MONITORING_INTERVAL", "VM_POLLING_INTERVAL",
    "SCHED_INTERVAL", "MAX_VM", "MAX_DISPATCH", "MAX_HOST", "DEFAULT_SCHED", "RECALL",
    "DEFAULT_ACTION_TIMEOUT", "ORPHAN_GRACE_PERIOD", "MAX_REQUEST_BYTES", "LOG",
    "DRIVER_RETRY_DELAY", "CAPACITY_COOLOFF",
    "REQUEST_HEADER_TIMEOUT", "REQUEST_BODY_TIMEOUT", "MAX_CONNECTIONS",
    "MAX_CONNECTIONS_PER_CLIENT", "FILE_RESERVE",
    "STORE_TIMEOUT", "LOGIN_MAX_FAILURES", "LOGIN_LOCKOUT", "FAILED_LOGIN_DELAY", "LOGIN_QUEUE",
    "LEADER_LEASE", *_DRIVER_KINDS,
}


class _Reader:
    """Typed access to the parsed file with errors that name file and line."""

    def __init__(self, path: Path, text: str, template: Template) -> None:
        self.path = path
        self.text = text
        self.template = template

    def line_of(self, name: str, occurrence: int = 0) -> int | None:
        pattern = re.compile(rf"^[ \t]*{re.escape(name)}[ \t]*=", re.IGNORECASE | re.MULTILINE)
        matches = list(pattern.finditer(self.text))
        if occurrence < len(matches):
            return self.text.count("\n", 0, matches[occurrence].start()) + 1
        return None

    def fail(self, name: str, problem: str, occurrence: int = 0) -> ConfigError:
        return ConfigError(str(self.path), problem, self.line_of(name, occurrence))

    def single(self, name: str) -> str | None:
        """The value of a single attribute; when it is repeated, the last one wins,
        so appending a line to the file overrides the shipped default."""
        values = self.template.get_all(name)
        if any(isinstance(value, dict) for value in values):
            raise self.fail(name, f"{name} must be a single value, not a vector")
        return str(values[-1]) if values else None

    def vector(self, name: str) -> dict[str, str] | None:
        """The last vector value of ``name`` (appended lines override), if any."""
        vectors = self.template.vectors(name)
        return vectors[-1] if vectors else None

    def string(self, name: str, default: str) -> str:
        value = self.single(name)
        return default if value is None else value

    def number(self, name: str, default: float, *, minimum: float = 0.0) -> float:
        raw = self.single(name)
        if raw is None:
            return default
        try:
            value = float(raw)
        except ValueError:
            raise self.fail(name, f"{name} must be a number, not {raw!r}") from None
        if value < minimum:
            raise self.fail(name, f"{name} must be at least {minimum:g}, not {raw}")
        return value

    def integer(self, name: str, default: int, *, minimum: int = 0) -> int:
        value = self.number(name, default, minimum=minimum)
        if value != int(value):
            raise self.fail(name, f"{name} must be a whole number, not {value:g}")
        return int(value)


def load(path: Path, home: Path) -> tuple[Settings, list[str]]:
    """Parse ``path`` into settings rooted at ``home``; return them and warnings.

    Environment overrides applied afterwards: ``CLOUDBURST_PORT``, ``CLOUDBURST_DB_URL``.

    Raises:
        ConfigError: the file is missing, unreadable, malformed or has a bad value.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read the file: {exc.strerror}") from None
    try:
        template = parse(text)
    except TemplateSyntaxError as exc:
        raise ConfigError(str(path), f"{_strip_position(exc.message)} at column {exc.column}",
                          exc.line) from None
    except TemplateError as exc:
        raise ConfigError(str(path), exc.message) from None
    reader = _Reader(path, text, template)
    defaults = Settings(home=home)
    warnings = [
        f"{path}:{reader.line_of(name) or '?'}: unknown attribute {name} ignored"
        for name in template.names()
        if name not in _KNOWN
    ]
    settings = Settings(
        home=home,
        listen_address=reader.string("LISTEN_ADDRESS", defaults.listen_address),
        port=reader.integer("PORT", defaults.port, minimum=0),
        db_url=_db_url(reader),
        monitoring_interval=reader.number("MONITORING_INTERVAL", defaults.monitoring_interval,
                                          minimum=0.05),
        vm_polling_interval=reader.number("VM_POLLING_INTERVAL", defaults.vm_polling_interval,
                                          minimum=0.05),
        default_action_timeout=reader.number(
            "DEFAULT_ACTION_TIMEOUT", defaults.default_action_timeout, minimum=0.01),
        orphan_grace_period=reader.number("ORPHAN_GRACE_PERIOD", defaults.orphan_grace_period),
        driver_retry_delay=reader.number("DRIVER_RETRY_DELAY", defaults.driver_retry_delay,
                                         minimum=0.01),
        capacity_cooloff=reader.number("CAPACITY_COOLOFF", defaults.capacity_cooloff,
                                       minimum=0.01),
        max_request_bytes=reader.integer("MAX_REQUEST_BYTES", defaults.max_request_bytes,
                                         minimum=1024),
        log_level=_log_level(reader, defaults.log_level),
        api=_api_limits(reader),
        store_timeout=reader.number("STORE_TIMEOUT", defaults.store_timeout, minimum=0.1),
        logins=_login_limits(reader),
        scheduler=_scheduler(reader),
        lease=_lease(reader),
        drivers=_drivers(reader),
    )
    return _apply_environment(settings, path), warnings


def _strip_position(message: str) -> str:
    return re.sub(r" at line \d+, column \d+$", "", message)


def _db_url(reader: _Reader) -> str:
    section = reader.vector("DB")
    if section is None:
        return ""
    backend = section.get("BACKEND", "sqlite").lower()
    url = section.get("URL", "")
    if backend == "sqlite":
        return url
    if backend in ("postgresql", "postgres"):
        if not url:
            raise reader.fail("DB", 'DB BACKEND="postgresql" needs URL="postgresql://..."')
        return url
    raise reader.fail("DB", f'DB BACKEND must be "sqlite" or "postgresql", not {backend!r}')


def _lease(reader: _Reader) -> LeaseSettings:
    defaults = LeaseSettings()
    section = reader.vector("LEADER_LEASE") or {}
    values = {}
    for key, default in (("DURATION", defaults.duration), ("RENEW", defaults.renew),
                         ("RETRY", defaults.retry), ("STALL", defaults.stall)):
        raw = section.get(key)
        try:
            values[key] = default if raw is None else float(raw)
        except ValueError:
            raise reader.fail("LEADER_LEASE",
                              f"LEADER_LEASE {key} must be a number, not {raw!r}") from None
        if values[key] < 0.05:
            raise reader.fail("LEADER_LEASE", f"LEADER_LEASE {key} must be at least 0.05")
    if values["RENEW"] * 2 > values["DURATION"]:
        raise reader.fail("LEADER_LEASE", "LEADER_LEASE RENEW must be at most half of "
                                          f"DURATION ({values['DURATION']:g})")
    if values["STALL"] < 1:
        raise reader.fail("LEADER_LEASE", "LEADER_LEASE STALL must be at least 1 (a running "
                                          "daemon shows it is alive every 0.5 s)")
    return LeaseSettings(duration=values["DURATION"], renew=values["RENEW"],
                         retry=values["RETRY"], stall=values["STALL"])


def _log_level(reader: _Reader, default: str) -> str:
    section = reader.vector("LOG") or {}
    if "LEVEL" in section:
        level = section["LEVEL"].upper()
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise reader.fail("LOG", f"LOG LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                                     f"not {section['LEVEL']!r}")
        return level
    if "DEBUG_LEVEL" in section:
        try:
            return _LOG_LEVELS[section["DEBUG_LEVEL"]]
        except KeyError:
            raise reader.fail("LOG", "LOG DEBUG_LEVEL must be 0, 1, 2 or 3") from None
    return default


def _api_limits(reader: _Reader) -> ApiLimits:
    defaults = ApiLimits()
    return ApiLimits(
        header_timeout=reader.number("REQUEST_HEADER_TIMEOUT", defaults.header_timeout,
                                     minimum=0.1),
        body_timeout=reader.number("REQUEST_BODY_TIMEOUT", defaults.body_timeout, minimum=0.1),
        max_connections=reader.integer("MAX_CONNECTIONS", defaults.max_connections, minimum=1),
        max_connections_per_client=reader.integer(
            "MAX_CONNECTIONS_PER_CLIENT", defaults.max_connections_per_client, minimum=1),
        file_reserve=reader.integer("FILE_RESERVE", defaults.file_reserve, minimum=16),
    )


def _login_limits(reader: _Reader) -> LoginLimits:
    defaults = LoginLimits()
    return LoginLimits(
        max_failures=reader.integer("LOGIN_MAX_FAILURES", defaults.max_failures, minimum=1),
        lockout=reader.number("LOGIN_LOCKOUT", defaults.lockout, minimum=0.1),
        failure_delay=reader.number("FAILED_LOGIN_DELAY", defaults.failure_delay),
        queue=reader.integer("LOGIN_QUEUE", defaults.queue, minimum=1),
    )


def _scheduler(reader: _Reader) -> SchedulerSettings:
    defaults = SchedulerSettings()
    rank = defaults.default_rank
    cost_order = defaults.cost_order
    policy = reader.vector("DEFAULT_SCHED")
    if policy is not None:
        flag = policy.get("COST_ORDER", "YES").strip().upper()
        if flag not in ("YES", "NO"):
            raise reader.fail("DEFAULT_SCHED",
                              f"DEFAULT_SCHED COST_ORDER must be YES or NO, not {flag!r}")
        cost_order = flag == "YES"
        number = policy.get("POLICY", "1")
        if number == "3":
            rank = policy.get("RANK", "")
            if not rank:
                raise reader.fail("DEFAULT_SCHED", "DEFAULT_SCHED POLICY=3 needs a RANK")
        elif number in _POLICY_RANKS:
            rank = _POLICY_RANKS[number]
        else:
            raise reader.fail("DEFAULT_SCHED",
                              f"DEFAULT_SCHED POLICY must be 0, 1, 2, 3 or 4, not {number!r}")
    return SchedulerSettings(
        interval=reader.number("SCHED_INTERVAL", defaults.interval, minimum=0.05),
        max_vm=reader.integer("MAX_VM", defaults.max_vm),
        max_dispatch=reader.integer("MAX_DISPATCH", defaults.max_dispatch),
        max_host=reader.integer("MAX_HOST", defaults.max_host),
        default_rank=rank,
        cost_order=cost_order,
        recall=_recall(reader),
    )


def _recall(reader: _Reader) -> RecallSettings:
    defaults = RecallSettings()
    vector = reader.vector("RECALL")
    if vector is None:
        return defaults
    try:
        per_minute = int(vector.get("PER_MINUTE", str(defaults.per_minute)))
        min_time = float(vector.get("MIN_CLOUD_TIME", str(defaults.min_cloud_time)))
    except ValueError:
        raise reader.fail("RECALL", "RECALL PER_MINUTE and MIN_CLOUD_TIME must be numbers"
                          ) from None
    if per_minute < 0 or min_time < 0:
        raise reader.fail("RECALL", "RECALL PER_MINUTE and MIN_CLOUD_TIME cannot be negative")
    window = None
    text = vector.get("WINDOW", "").strip()
    if text:
        window = _window(reader, text)
    return RecallSettings(per_minute=per_minute, min_cloud_time=min_time, window=window,
                          check_interval=defaults.check_interval)


def _window(reader: _Reader, text: str) -> tuple[int, int]:
    """``"22:00-06:00"`` as minutes of the day."""
    try:
        start, end = (part.strip().split(":") for part in text.split("-"))
        minutes = (int(start[0]) * 60 + int(start[1]), int(end[0]) * 60 + int(end[1]))
    except (ValueError, IndexError):
        raise reader.fail("RECALL", f"RECALL WINDOW must be HH:MM-HH:MM (UTC), not {text!r}"
                          ) from None
    if not all(0 <= minute <= 24 * 60 for minute in minutes):
        raise reader.fail("RECALL", f"RECALL WINDOW must be HH:MM-HH:MM (UTC), not {text!r}")
    return minutes


def _drivers(reader: _Reader) -> tuple[DriverSection, ...]:
    sections: list[DriverSection] = []
    for kind in _DRIVER_KINDS:
        seen: set[str] = set()
        for index, value in enumerate(reader.template.get_all(kind)):
            if not isinstance(value, dict):
                raise reader.fail(kind, f"{kind} must be a vector: {kind} = [ NAME = ..., ... ]",
                                  index)
            name = value.get("NAME", "").strip()
            executable = value.get("EXECUTABLE", "").strip()
            if not name:
                raise reader.fail(kind, f"{kind} section without NAME", index)
            if not executable and kind != "TM_MAD":
                raise reader.fail(kind, f"{kind} {name!r} has no EXECUTABLE", index)
            if name in seen:
                raise reader.fail(kind, f"{kind} {name!r} is defined twice", index)
            seen.add(name)
            sections.append(DriverSection(
                kind=kind,
                name=name,
                executable=executable,
                arguments=value.get("ARGUMENTS", ""),
                default=value.get("DEFAULT") or None,
                type=value.get("TYPE", "xml").lower() or "xml",
                line=reader.line_of(kind, index) or 0,
            ))
    return tuple(sections)


def _apply_environment(settings: Settings, path: Path) -> Settings:
    port = os.environ.get("CLOUDBURST_PORT")
    if port:
        if not port.isdigit() or int(port) > 65535:
            raise ConfigError("CLOUDBURST_PORT", f"must be a port number, not {port!r}")
        settings = dataclasses.replace(settings, port=int(port))
    if settings.port > 65535:
        raise ConfigError(str(path), f"PORT must be at most 65535, not {settings.port}")
    db_url = os.environ.get("CLOUDBURST_DB_URL")
    if db_url:
        settings = dataclasses.replace(settings, db_url=db_url)
    return settings

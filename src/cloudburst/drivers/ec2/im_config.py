"""The information driver's file ``im_ec2.conf``: how many instances a site may run.

``KEY=VALUE`` lines (:mod:`.env_file`): the seed's ``SMALL_INSTANCES``,
``LARGE_INSTANCES``, ``EXTRALARGE_INSTANCES`` (empty = 0), and
``INSTANCES_<TYPE>=N`` for any current type, the type written as in
``CAPACITY`` vectors: upper case, ``_`` for ``.`` (``INSTANCES_T3_MICRO=2``).
Optional ``DEFAULT_INSTANCE_TYPE`` (else the ``INSTANCETYPE`` of
``VMM_DEFAULTS``, default ``vmm_ec2/vmm_ec2.conf``, else ``m1.small``).
Prices (:mod:`.pricing`): ``PRICE_<TYPE>=N`` (US$ per hour) over the table of
``PRICES_FILE`` (default: the shipped ``ec2_prices.conf``). ``PRICES_REFRESH=N``
(seconds, default 0 = never) has the daemon rewrite that table from the AWS
Price List API once it is older than that (:mod:`.price_refresh`; e.g. 86400 for
daily), at ``PRICES_ENDPOINT`` when set (else AWS's own).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.env_file import read_env_file
from cloudburst.drivers.ec2.pricing import FLAT_PRICE, PRICE_PREFIX, prices_from
from cloudburst.errors import ConfigError

log = logging.getLogger(__name__)

#: Builds the error for a bad value: ``(key, problem) -> ConfigError``.
ErrorFor = Callable[[str, str], ConfigError]

_IM_KEYS: Final = frozenset({*types.LEGACY_CLASSES, "DEFAULT_INSTANCE_TYPE", "VMM_DEFAULTS",
                             "PRICES_FILE", "PRICES_REFRESH", "PRICES_ENDPOINT", FLAT_PRICE})
_PER_TYPE: Final = "INSTANCES_"


@dataclass(frozen=True, slots=True)
class ImConfig:
    """Capacity limits of a site (instances per type) and its default type."""

    path: Path
    limits: Mapping[str, int]
    default_instance_type: str | None = None
    vmm_defaults: str | None = None
    #: ``PRICE_<TYPE>`` lines of the file (over the price file's table).
    prices: Mapping[str, float] = field(default_factory=dict)
    #: ``PRICES_FILE`` as written (``None``: the shipped table).
    price_file: str | None = None
    #: ``PRICES_REFRESH``: seconds after which the table is fetched again (0: never).
    prices_refresh: int = 0
    #: ``PRICES_ENDPOINT``: the Price List API's URL (``None``: AWS's).
    prices_endpoint: str | None = None


def is_limit_key(key: str) -> bool:
    """Whether ``key`` limits instances (a seed class or ``INSTANCES_<TYPE>``)."""
    return key in types.LEGACY_CLASSES or key.startswith(_PER_TYPE)


def _count(key: str, raw: str, error: ErrorFor) -> int:
    text = raw.strip()
    if not text:
        return 0
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise error(key, f"must be a whole number >= 0 (empty means 0), got {text!r}")
    return value


def limits_from(values: Mapping[str, str], error: ErrorFor) -> tuple[dict[str, int], list[str]]:
    """Instance limits from ``*_INSTANCES`` and ``INSTANCES_<TYPE>`` keys.

    Returns the limits and the keys that name no known type; other keys are
    ignored.

    Raises:
        ConfigError: from ``error``, for a count that is not a whole number >= 0.
    """
    limits: dict[str, int] = {}
    unknown: list[str] = []
    for key, raw in values.items():
        if key in types.LEGACY_CLASSES:
            limits[types.LEGACY_CLASSES[key]] = _count(key, raw, error)
        elif key.startswith(_PER_TYPE):
            kind = types.type_from_key(key[len(_PER_TYPE):])
            if kind is None:
                unknown.append(key)
                continue
            limits[kind] = _count(key, raw, error)
    return limits, unknown


def load_im_config(path: Path) -> ImConfig:
    """Read ``im_ec2.conf``; the seed's three classes are always in the limits.

    Raises:
        ConfigError: unreadable, malformed, a bad number or an unknown type.
    """
    env = read_env_file(path)
    limits, unknown = limits_from(env.values, env.error)
    if unknown:
        raise env.error(unknown[0], "names no known instance type (write the type in upper "
                                    "case with '_' for '.', e.g. INSTANCES_T3_MICRO=2)")
    for legacy in types.LEGACY_CLASSES.values():
        limits.setdefault(legacy, 0)
    default_type = env.values.get("DEFAULT_INSTANCE_TYPE", "").strip().lower() or None
    if default_type is not None and not types.is_known(default_type):
        raise env.error("DEFAULT_INSTANCE_TYPE", f"unknown instance type {default_type!r}")
    prices, unpriced = prices_from(env.values, env.error)
    if unpriced:
        raise env.error(unpriced[0], "names no known instance type (write the type in upper "
                                     "case with '_' for '.', e.g. PRICE_M5_LARGE=0.096)")
    others = sorted(key for key in env.values if key not in _IM_KEYS
                    and not key.startswith((_PER_TYPE, PRICE_PREFIX)))
    if others:
        log.warning("%s: unknown keys ignored: %s", path, ", ".join(others))
    endpoint = env.values.get("PRICES_ENDPOINT", "").strip() or None
    if endpoint is not None and not endpoint.startswith(("https://", "http://")):
        raise env.error("PRICES_ENDPOINT", f"must be an http(s) URL, got {endpoint!r}")
    return ImConfig(path=path, limits=limits, default_instance_type=default_type,
                    vmm_defaults=env.values.get("VMM_DEFAULTS", "").strip() or None,
                    prices=prices, price_file=env.values.get("PRICES_FILE", "").strip() or None,
                    prices_refresh=_count("PRICES_REFRESH",
                                          env.values.get("PRICES_REFRESH", ""), env.error),
                    prices_endpoint=endpoint)

"""Instance types: which names are valid and how big each is.

Sizes feed the information driver's ``TOTALCPU`` (cores x 100) and
``TOTALMEMORY`` (KB). The three classes of the seed's ``im_ec2.conf`` keep the
sizes OpenNebula 3.x used (``spec/opennebula.md`` 6.1): small = 1 core and
1.7 GB, large = 4 cores and 7.5 GB, extra-large = 8 cores and 15 GB, counted
as ``m1.small``, ``m1.large`` and ``m1.xlarge``. Other types have their AWS
vCPU count and memory.

Valid names are the union of: the types in the size table, every
``InstanceType`` value of the EC2 API model that botocore ships (about 1,200
names, so a type AWS launched last month is accepted without a release of
ours), and names an operator declares for EC2-compatible clouds with
``EC2_EXTRA_INSTANCE_TYPES`` in ``vmm_ec2rc`` (:func:`register_extra_types`).
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

from cloudburst.model.capacity import capacity_key

log = logging.getLogger(__name__)

#: The type of a VM whose sections and defaults name none (the seed's default).
DEFAULT_INSTANCE_TYPE: Final = "m1.small"

#: ``im_ec2.conf`` classes of the seed and the type each one limits.
LEGACY_CLASSES: Final[Mapping[str, str]] = MappingProxyType({
    "SMALL_INSTANCES": "m1.small",
    "LARGE_INSTANCES": "m1.large",
    "EXTRALARGE_INSTANCES": "m1.xlarge",
})


@dataclass(frozen=True, slots=True)
class InstanceSize:
    """Cores and memory (GB) of an instance type."""

    cores: float
    memory_gb: float

    @property
    def cpu(self) -> int:
        """OpenNebula CPU units (percent of a core)."""
        return round(self.cores * 100)

    @property
    def memory_kb(self) -> int:
        return round(self.memory_gb * 1024 * 1024)


def _table() -> dict[str, InstanceSize]:
    sizes: dict[str, InstanceSize] = {
        # The 3.x table (spec/opennebula.md 6.1) for the seed's three classes.
        "m1.small": InstanceSize(1, 1.7),
        "m1.large": InstanceSize(4, 7.5),
        "m1.xlarge": InstanceSize(8, 15),
        # The rest of the seed's valid types and their generation.
        "m1.medium": InstanceSize(1, 3.75),
        "c1.medium": InstanceSize(2, 1.7),
        "c1.xlarge": InstanceSize(8, 7),
        "t1.micro": InstanceSize(1, 0.613),
        "m2.xlarge": InstanceSize(2, 17.1),
        "m2.2xlarge": InstanceSize(4, 34.2),
        "m2.4xlarge": InstanceSize(8, 68.4),
        "m3.medium": InstanceSize(1, 3.75),
        "m3.large": InstanceSize(2, 7.5),
        "m3.xlarge": InstanceSize(4, 15),
        "m3.2xlarge": InstanceSize(8, 30),
    }
    burstable = {"nano": (0.5, 1), "micro": (1, 1), "small": (2, 1), "medium": (4, 2),
                 "large": (8, 2), "xlarge": (16, 4), "2xlarge": (32, 8)}
    for family in ("t2", "t3", "t3a", "t4g"):
        for size, (memory, t2_cores) in burstable.items():
            # t3/t3a/t4g have two vCPUs up to large; t2 one up to small.
            cores = t2_cores if family == "t2" else max(2, t2_cores)
            sizes[f"{family}.{size}"] = InstanceSize(cores, memory)
    cores_of = {"medium": 1, "large": 2, "xlarge": 4, "2xlarge": 8, "4xlarge": 16,
                "8xlarge": 32, "12xlarge": 48, "16xlarge": 64, "24xlarge": 96}
    per_core = {"m": 4, "c": 2, "r": 8}
    generations = ("5", "5a", "6i", "6a", "6g", "7i", "7a", "7g")
    for letter, memory_per_core in per_core.items():
        for generation in generations:
            family = f"{letter}{generation}"
            for size, cores in cores_of.items():
                if size == "medium" and not generation.endswith("g"):
                    continue  # only the Graviton families have .medium
                sizes[f"{family}.{size}"] = InstanceSize(cores, cores * memory_per_core)
    return sizes


#: Known sizes; types missing here count 0 cores and memory in host totals.
SIZES: Final[Mapping[str, InstanceSize]] = MappingProxyType(_table())

_extra: set[str] = set()
_extra_lock = threading.Lock()


@functools.cache
def _api_types() -> frozenset[str]:
    """Every ``InstanceType`` enum value in botocore's EC2 model (empty without botocore)."""
    try:
        import botocore.session
    except ImportError:  # pragma: no cover - boto3 is needed to run the VM driver anyway
        return frozenset()
    try:
        model = botocore.session.get_session().get_service_model("ec2")
        return frozenset(str(name) for name in model.shape_for("InstanceType").enum)
    except Exception as exc:  # pragma: no cover - a broken botocore data directory
        log.warning("cannot read instance types from botocore's EC2 model: %s", exc)
        return frozenset()


def warm_up() -> None:
    """Read the EC2 model's type names now (about 0.2 s, once per process)."""
    _api_types()


def register_extra_types(names: Iterable[str]) -> None:
    """Accept ``names`` as valid types (EC2-compatible clouds with their own types)."""
    with _extra_lock:
        _extra.update(name.strip().lower() for name in names if name.strip())


def is_known(instance_type: str) -> bool:
    """Whether ``instance_type`` (any case) is a valid type name."""
    name = instance_type.strip().lower()
    return name in SIZES or name in _extra or name in _api_types()


def size_of(instance_type: str) -> InstanceSize | None:
    return SIZES.get(instance_type.strip().lower())


def examples() -> str:
    """A short list of valid names for error messages."""
    return "m1.small, m1.large, m1.xlarge, c1.medium, c1.xlarge, t3.micro, m5.large, ..."


def type_from_key(key: str) -> str | None:
    """The type named by a capacity key (``T3_MICRO`` -> ``t3.micro``), if known."""
    wanted = key.strip().upper()
    for name in (*SIZES, *sorted(_extra), *sorted(_api_types())):
        if capacity_key(name) == wanted:
            return name
    return None

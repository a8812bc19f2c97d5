"""From a VM's template to the ``RunInstances`` request.

**Sections.** A VM's EC2 part is every ``EC2 = [...]`` vector (the seed's 3.x
form) and every ``PUBLIC_CLOUD = [ TYPE = ec2, ... ]`` vector (5.x), in
template order. Which one a site uses is decided by the core
(:mod:`cloudburst.model.cloud_sections`) and handed over as
:attr:`DeploySpec.section`; every section is checked when the VM is created.

**Defaults.** The defaults file's section (``vmm_ec2.conf``) is merged under
the chosen section: a key of the section wins when its value is not blank.

**Keys** (aliases in brackets): ``AMI`` (mandatory), ``KEYPAIR`` (mandatory),
``INSTANCETYPE`` [``INSTANCE_TYPE``] (default ``m1.small``, must be a known
type), ``ELASTICIP`` (an IPv4 address or an ``eipalloc-`` id),
``AUTHORIZED_PORTS`` [``AUTHORIZEDPORTS``] (``22``, ``22-90`` or a comma list:
TCP ports opened from ``EC2_INGRESS_CIDR`` by a security group the driver
owns), ``SUBNETID``, ``SECURITYGROUPS`` (names or ``sg-`` ids, comma list),
``SECURITYGROUPIDS``, ``USERDATA`` (text; the SDK encodes it; with a
``CONTEXT`` it becomes the second part of the cloud-init data, see
:func:`add_context`), ``TAGS``
(``k=v,k=v``), ``AVAILABILITYZONE``, ``PRIVATEIP``, ``PLACEMENTGROUP``,
``TENANCY``, ``EBS_OPTIMIZED`` (``yes``/``no``), ``MARKET`` (``spot`` or
``on-demand``, the default), ``MAX_PRICE`` (spot only: most US$ per hour,
e.g. ``0.05``; default: the on-demand price, as EC2 does) and
``SPOT_FALLBACK`` (``on-demand``, the default: a spot launch refused for
capacity, price or quota is sent again on-demand at once; ``none``: it is not,
and the VM tries the next site), ``BLOCKDEVICEMAPPING`` (see
:func:`parse_block_devices`: ``/dev/xvda=:30:true:gp3`` sets the root
volume's size and type), ``IAMINSTANCEPROFILE`` [``IAM_INSTANCE_PROFILE``]
(a profile name or ``arn:``) and ``METADATA_TOKENS`` [``HTTP_TOKENS``]
(``required``, the default: the instance metadata service answers IMDSv2
sessions only; ``optional`` allows IMDSv1). ``CLOUD``/``HOST``/``TYPE``
select sections. Other keys are ignored.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from cloudburst.drivers.base import DeploySpec
from cloudburst.drivers.context import check_context, cloud_init_user_data, context_of
from cloudburst.drivers.ec2 import types
from cloudburst.errors import DriverError
from cloudburst.model.cloud_sections import cloud_sections
from cloudburst.template import Template

#: Alias -> canonical key.
ALIASES: Final[Mapping[str, str]] = {
    "AUTHORIZEDPORTS": "AUTHORIZED_PORTS",
    "INSTANCE_TYPE": "INSTANCETYPE",
    "ELASTIC_IP": "ELASTICIP",
    "SECURITY_GROUPS": "SECURITYGROUPS",
    "SECURITY_GROUP_IDS": "SECURITYGROUPIDS",
    "SUBNET_ID": "SUBNETID",
    "USER_DATA": "USERDATA",
    "AVAILABILITY_ZONE": "AVAILABILITYZONE",
    "EBSOPTIMIZED": "EBS_OPTIMIZED",
    "PRIVATE_IP": "PRIVATEIP",
    "PLACEMENT_GROUP": "PLACEMENTGROUP",
    "MAXPRICE": "MAX_PRICE",
    "SPOT_PRICE": "MAX_PRICE",
    "SPOTFALLBACK": "SPOT_FALLBACK",
    "BLOCK_DEVICE_MAPPING": "BLOCKDEVICEMAPPING",
    "IAM_INSTANCE_PROFILE": "IAMINSTANCEPROFILE",
    "HTTP_TOKENS": "METADATA_TOKENS",
    "METADATATOKENS": "METADATA_TOKENS",
}

#: ``MARKET`` values.
MARKETS: Final = ("on-demand", "spot")
#: ``SPOT_FALLBACK`` values.
SPOT_FALLBACKS: Final = ("on-demand", "none")

#: ``METADATA_TOKENS`` values (EC2's ``HttpTokens``); the first is the default.
METADATA_TOKENS: Final = ("required", "optional")
#: EBS volume types ``BLOCKDEVICEMAPPING`` may name.
VOLUME_TYPES: Final = ("gp3", "gp2", "io1", "io2", "st1", "sc1", "standard")

#: Tag key prefixes users may not set through ``TAGS``.
RESERVED_TAG_PREFIXES: Final = ("aws:", "cloudburst:")

_MAX_USERDATA: Final = 16 * 1024
_PROFILE_RE: Final = re.compile(r"[\w+=,.@-]{1,128}|arn:aws[\w-]*:iam::\d{12}:instance-profile/"
                                r"[\w+=,.@/-]{1,128}")
_SUBNET_RE: Final = re.compile(r"subnet-[0-9a-zA-Z]{1,64}")
_ZONE_RE: Final = re.compile(r"[a-z]{2}(-[a-z0-9]+){2,4}[a-z]?")
_YES: Final = frozenset({"yes", "true", "1", "on"})
_NO: Final = frozenset({"no", "false", "0", "off"})


def normalize(section: Mapping[str, str]) -> dict[str, str]:
    """Upper-case canonical keys; for a key given twice the first non-blank value wins."""
    result: dict[str, str] = {}
    for key, value in section.items():
        canonical = ALIASES.get(key.upper(), key.upper())
        if canonical not in result or (not result[canonical].strip() and value.strip()):
            result[canonical] = value
    return result


def sections_of(template: Template) -> list[dict[str, str]]:
    """The VM's EC2 sections (``EC2`` and ``PUBLIC_CLOUD`` of ``TYPE`` ec2), in order."""
    return [normalize(section.attributes) for section in cloud_sections(template)
            if section.type == "ec2"]


def section_label(section: Mapping[str, str], index: int, count: int) -> str:
    """How messages name section ``index`` (from 1) of a VM's ``count`` sections."""
    site = (section.get("HOST") or section.get("CLOUD") or "").strip()
    if site:
        key = "HOST" if section.get("HOST", "").strip() else "CLOUD"
        return f"EC2 section for {key}={site}"
    return "EC2 section" if count == 1 else f"EC2 section {index}"


def deployment_section(spec: DeploySpec) -> dict[str, str]:
    """The EC2 section the core chose for ``spec``'s site (:attr:`DeploySpec.section`).

    Raises:
        DriverError: none was handed over (the site is not a cloud site to the core).
    """
    if spec.section is None:
        raise DriverError(f"VM {spec.vm_id}: no EC2 section was chosen for site "
                          f"{spec.host.name}")
    return normalize(spec.section)


def add_context(merged: dict[str, str], template: Template) -> dict[str, str]:
    """``merged`` with the VM's ``CONTEXT`` folded into ``USERDATA`` as cloud-init data
    (:func:`cloudburst.drivers.context.cloud_init_user_data`; the section's own
    ``USERDATA`` goes along). Unchanged without a ``CONTEXT`` or with a bad one
    (:func:`~cloudburst.drivers.context.check_context` reports that)."""
    found = context_of(template)
    if found is None or check_context(template):
        return merged
    merged["USERDATA"] = cloud_init_user_data(found, merged.get("USERDATA") or None)
    return merged


def merge(section: Mapping[str, str], defaults: Mapping[str, str]) -> dict[str, str]:
    """``defaults`` under ``section``: a section key wins when not blank."""
    merged = normalize(defaults)
    for key, value in normalize(section).items():
        if value.strip() or key not in merged:
            merged[key] = value
    return merged


@dataclass(frozen=True, slots=True)
class Ports:
    """TCP port ranges from ``AUTHORIZED_PORTS``."""

    ranges: tuple[tuple[int, int], ...]

    @property
    def text(self) -> str:
        """``22``, ``22-90``, ``22,80-90``: canonical, for names and tags."""
        return ",".join(str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in self.ranges)


def parse_ports(text: str) -> Ports:
    """``"22"``, ``"22-90"`` or a comma list of those.

    Raises:
        ValueError: the message says what is wrong.
    """
    ranges: list[tuple[int, int]] = []
    for part in text.replace(" ", "").split(","):
        if not part:
            continue
        low, dash, high = part.partition("-")
        try:
            lo = int(low)
            hi = int(high) if dash else lo
        except ValueError:
            raise ValueError(f"{part!r} is not a port or a range like 22-90") from None
        if not (0 <= lo <= hi <= 65535):
            raise ValueError(f"{part!r} is not a port range within 0-65535")
        ranges.append((lo, hi))
    if not ranges:
        raise ValueError("no port given")
    return Ports(tuple(sorted(set(ranges))))


def _list(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def parse_tags(text: str) -> list[tuple[str, str]]:
    """``k=v,k=v`` (OpenNebula 4.x's ``TAGS``).

    Raises:
        ValueError: a pair without ``=``, an empty or reserved key.
    """
    tags: list[tuple[str, str]] = []
    for item in _list(text):
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key:
            raise ValueError(f"{item!r} is not KEY=VALUE")
        if key.lower().startswith(RESERVED_TAG_PREFIXES):
            raise ValueError(f"tag key {key!r} is reserved")
        tags.append((key, value.strip()))
    return tags


@dataclass(frozen=True, slots=True)
class BlockDevice:
    """One ``BLOCKDEVICEMAPPING`` entry: an EBS volume at ``device``."""

    device: str
    snapshot: str | None = None
    size_gb: int | None = None
    delete_on_termination: bool | None = None
    volume_type: str | None = None
    iops: int | None = None

    def mapping(self) -> dict[str, Any]:
        """The entry as ``RunInstances`` wants it (``BlockDeviceMappings``)."""
        ebs: dict[str, Any] = {}
        for key, value in (("SnapshotId", self.snapshot), ("VolumeSize", self.size_gb),
                           ("DeleteOnTermination", self.delete_on_termination),
                           ("VolumeType", self.volume_type), ("Iops", self.iops)):
            if value is not None:
                ebs[key] = value
        return {"DeviceName": self.device, "Ebs": ebs}


def _whole_number(text: str, what: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise ValueError(f"{what} {text!r} must be a whole number in {low}..{high}")
    return value


def parse_block_devices(text: str) -> list[BlockDevice]:
    """``DEVICE=[SNAPSHOT]:[SIZE_GB]:[DELETE_ON_TERMINATION]:[TYPE]:[IOPS]``, comma list.

    As EC2's classic ``-b`` option: trailing fields may be left out, empty ones
    keep the image's value. ``/dev/xvda=:30:true:gp3`` makes the root volume
    (named as the AMI names it) 30 GB of gp3 that goes with the instance.

    Raises:
        ValueError: the message names the entry and what is wrong with it.
    """
    devices: list[BlockDevice] = []
    for entry in _list(text):
        device, equals, spec = entry.partition("=")
        device = device.strip()
        if not equals or not device.startswith(("/dev/", "xvd", "sd")):
            raise ValueError(f"{entry!r} is not DEVICE=SNAPSHOT:SIZE:DELETE:TYPE:IOPS "
                             "(e.g. /dev/xvda=:30:true:gp3)")
        fields = [part.strip() for part in spec.split(":")]
        if len(fields) > 5:
            raise ValueError(f"{entry!r} has more than 5 fields after '='")
        fields += [""] * (5 - len(fields))
        snapshot, size, delete, kind, iops = fields
        if snapshot and not snapshot.startswith("snap-"):
            raise ValueError(f"{device}: {snapshot!r} is not a snapshot id (snap-...)")
        if delete and delete.lower() not in _YES | _NO:
            raise ValueError(f"{device}: delete-on-termination {delete!r} must be true or false")
        if kind and kind.lower() not in VOLUME_TYPES:
            raise ValueError(f"{device}: volume type {kind!r} must be one of "
                             f"{', '.join(VOLUME_TYPES)}")
        if kind.lower() in ("io1", "io2") and not iops:
            raise ValueError(f"{device}: volume type {kind} needs IOPS (5th field)")
        devices.append(BlockDevice(
            device=device, snapshot=snapshot or None,
            size_gb=_whole_number(size, f"{device}: size", 1, 65536) if size else None,
            delete_on_termination=None if not delete else delete.lower() in _YES,
            volume_type=kind.lower() or None,
            iops=_whole_number(iops, f"{device}: IOPS", 100, 256000) if iops else None))
    if len({device.device for device in devices}) != len(devices):
        raise ValueError("a device is mapped twice")
    return devices


@dataclass(frozen=True, slots=True)
class LaunchRequest:
    """A validated EC2 section with defaults merged in."""

    ami: str
    keypair: str
    instance_type: str
    elastic_ip: str | None = None
    ports: Ports | None = None
    subnet_id: str | None = None
    security_groups: tuple[str, ...] = ()
    security_group_ids: tuple[str, ...] = ()
    user_data: str | None = None
    tags: tuple[tuple[str, str], ...] = ()
    availability_zone: str | None = None
    private_ip: str | None = None
    placement_group: str | None = None
    tenancy: str | None = None
    ebs_optimized: bool | None = None
    market: str = "on-demand"
    max_price: str | None = None
    #: Whether a spot launch refused for capacity, price or quota goes again on-demand.
    spot_fallback: bool = True
    block_devices: tuple[BlockDevice, ...] = ()
    #: An instance profile's name, or its ARN.
    iam_profile: str | None = None
    #: EC2's ``HttpTokens``: ``required`` = IMDSv2 only.
    metadata_tokens: str = METADATA_TOKENS[0]

    @property
    def spot(self) -> bool:
        return self.market == "spot"

    @property
    def batchable(self) -> bool:
        """Whether VMs with this request may share one ``RunInstances`` call (an
        Elastic IP or a private address belongs to one instance only)."""
        return self.elastic_ip is None and self.private_ip is None


def _value(merged: Mapping[str, str], key: str) -> str | None:
    value = merged.get(key, "").strip()
    return value or None


def problems_of(merged: Mapping[str, str]) -> list[str]:
    """Everything wrong with a merged section, one phrase each (empty: fine)."""
    found: list[str] = []
    for key in ("AMI", "KEYPAIR"):
        if _value(merged, key) is None:
            found.append(f"{key} is missing (mandatory; set it in the EC2 section or in "
                         "vmm_ec2.conf)")
    kind = _value(merged, "INSTANCETYPE")
    if kind is not None and not types.is_known(kind):
        found.append(f"INSTANCETYPE {kind!r} is not a known EC2 instance type "
                     f"(valid: {types.examples()})")
    ports = _value(merged, "AUTHORIZED_PORTS")
    if ports is not None:
        try:
            parse_ports(ports)
        except ValueError as exc:
            found.append(f"AUTHORIZED_PORTS {ports!r}: {exc}; use \"22\" or \"22-90\"")
    eip = _value(merged, "ELASTICIP")
    if eip is not None and not eip.startswith("eipalloc-"):
        try:
            ipaddress.IPv4Address(eip)
        except ValueError:
            found.append(f"ELASTICIP {eip!r} is neither an IPv4 address nor an "
                         "eipalloc- allocation id")
    tags = _value(merged, "TAGS")
    if tags is not None:
        try:
            parse_tags(tags)
        except ValueError as exc:
            found.append(f"TAGS: {exc}")
    user_data = merged.get("USERDATA", "")
    if len(user_data.encode()) > _MAX_USERDATA:
        found.append(f"USERDATA (with the CONTEXT, if any) is longer than "
                     f"{_MAX_USERDATA} bytes")
    optimized = _value(merged, "EBS_OPTIMIZED")
    if optimized is not None and optimized.lower() not in _YES | _NO:
        found.append(f"EBS_OPTIMIZED {optimized!r} must be yes or no")
    found += _market_problems(merged)
    devices = _value(merged, "BLOCKDEVICEMAPPING")
    if devices is not None:
        try:
            parse_block_devices(devices)
        except ValueError as exc:
            found.append(f"BLOCKDEVICEMAPPING: {exc}")
    profile = _value(merged, "IAMINSTANCEPROFILE")
    if profile is not None and not _PROFILE_RE.fullmatch(profile):
        found.append(f"IAMINSTANCEPROFILE {profile!r} is neither an instance profile name "
                     "(letters, digits and +=,.@_-) nor an arn:aws...:instance-profile/ ARN")
    tokens = _value(merged, "METADATA_TOKENS")
    if tokens is not None and tokens.lower() not in METADATA_TOKENS:
        found.append(f"METADATA_TOKENS {tokens!r} must be required (IMDSv2 only, the "
                     "default) or optional")
    subnet = _value(merged, "SUBNETID")
    if subnet is not None and not _SUBNET_RE.fullmatch(subnet):
        found.append(f"SUBNETID {subnet!r} is not a subnet id (subnet-...)")
    zone = _value(merged, "AVAILABILITYZONE")
    if zone is not None and not _ZONE_RE.fullmatch(zone):
        found.append(f"AVAILABILITYZONE {zone!r} is not a zone name (e.g. us-east-1a)")
    for group in _list(merged.get("SECURITYGROUPIDS", "")):
        if not group.startswith("sg-"):
            found.append(f"SECURITYGROUPIDS: {group!r} is not a security group id (sg-...); "
                         "give names in SECURITYGROUPS")
    return found


def _market_problems(merged: Mapping[str, str]) -> list[str]:
    found: list[str] = []
    market = (_value(merged, "MARKET") or "on-demand").lower()
    if market not in MARKETS:
        found.append(f"MARKET {market!r} must be spot or on-demand")
    price = _value(merged, "MAX_PRICE")
    if price is not None:
        try:
            number = float(price)
        except ValueError:
            number = -1.0
        if not 0 < number < 10_000 or number != number:
            found.append(f"MAX_PRICE {price!r} must be a price in US$ per hour, e.g. 0.05")
        elif market != "spot":
            found.append('MAX_PRICE is only for spot instances (add MARKET = "spot")')
    fallback = _value(merged, "SPOT_FALLBACK")
    if fallback is not None and fallback.lower() not in SPOT_FALLBACKS:
        found.append(f"SPOT_FALLBACK {fallback!r} must be on-demand or none")
    return found


def build_request(merged: Mapping[str, str]) -> LaunchRequest | list[str]:
    """A :class:`LaunchRequest`, or the problems that prevent one."""
    problems = problems_of(merged)
    if problems:
        return problems
    groups = _list(merged.get("SECURITYGROUPS", ""))
    ids = [group for group in groups if group.startswith("sg-")]
    ids += [group for group in _list(merged.get("SECURITYGROUPIDS", "")) if group not in ids]
    ports = _value(merged, "AUTHORIZED_PORTS")
    optimized = _value(merged, "EBS_OPTIMIZED")
    return LaunchRequest(
        ami=merged["AMI"].strip(),
        keypair=merged["KEYPAIR"].strip(),
        instance_type=(_value(merged, "INSTANCETYPE") or types.DEFAULT_INSTANCE_TYPE).lower(),
        elastic_ip=_value(merged, "ELASTICIP"),
        ports=parse_ports(ports) if ports else None,
        subnet_id=_value(merged, "SUBNETID"),
        security_groups=tuple(group for group in groups if not group.startswith("sg-")),
        security_group_ids=tuple(ids),
        user_data=merged.get("USERDATA") or None,
        tags=tuple(parse_tags(merged.get("TAGS", ""))),
        availability_zone=_value(merged, "AVAILABILITYZONE"),
        private_ip=_value(merged, "PRIVATEIP"),
        placement_group=_value(merged, "PLACEMENTGROUP"),
        tenancy=_value(merged, "TENANCY"),
        ebs_optimized=None if optimized is None else optimized.lower() in _YES,
        market=(_value(merged, "MARKET") or "on-demand").lower(),
        max_price=_value(merged, "MAX_PRICE"),
        spot_fallback=(_value(merged, "SPOT_FALLBACK") or "on-demand").lower() != "none",
        block_devices=tuple(parse_block_devices(merged.get("BLOCKDEVICEMAPPING", ""))),
        iam_profile=_value(merged, "IAMINSTANCEPROFILE"),
        metadata_tokens=(_value(merged, "METADATA_TOKENS") or METADATA_TOKENS[0]).lower(),
    )

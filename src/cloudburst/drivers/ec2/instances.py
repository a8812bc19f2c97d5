"""Our tags, and ``DescribeInstances`` output turned into compact views and polls.

Every instance the driver launches carries, from its creation
(``TagSpecifications``):

=============================  ==============================================
``cloudburst:installation``    this installation's id (every listing filters on it)
``cloudburst:batch``           the ``RunInstances`` call's batch token
``cloudburst:batch-vms``       the batch's VM ids in launch order, as ranges
                               (``12-511,600``); continued in ``...-vms-2``,
                               ``-3``... when longer than a tag value
``cloudburst:host-id``         the host (site) it was deployed for (orphan sweeps)
``cloudburst:host``            that host's name (for people)
=============================  ==============================================

**Binding rule.** Tags set at creation are the same for every instance of one
call, so an instance of a batch is bound to its VM by its ``AmiLaunchIndex``:
index *i* belongs to the *i*-th VM of ``cloudburst:batch-vms``. A batch of one
also carries its VM's own tags: ``cloudburst:vm-id``, ``cloudburst:token``
(the deploy's idempotency token), ``ONE_ID`` (as OpenNebula 4.x tagged),
``Name`` = ``one-<vmid>`` and ``cloudburst:elastic-ip`` (the requested
``ELASTICIP``, if any).

State mapping for polls (choices where OpenNebula was silent or inconsistent):

* ``pending``, ``running`` -> ACTIVE;
* ``stopping``, ``stopped`` -> GONE: stopped by ``onevm poweroff`` (the VM
  is POWEROFF already) or by someone outside cloudburst (the VM leaves RUNNING
  for POWEROFF, with the reason, and comes back to RUNNING if the instance is
  started again);
* ``shutting-down``, ``terminated`` with the state reason
  ``Server.SpotInstanceTermination`` (EC2 reclaimed a spot instance) ->
  RECLAIMED: the VM is deployed again;
* other ``shutting-down``, ``terminated``, and an instance missing from the
  listing -> GONE;
* anything else -> UNKNOWN (no state change).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final

from cloudburst.drivers.base import PollResult, PollState
from cloudburst.errors import one_line
from cloudburst.model import cost

TAG_INSTALL: Final = "cloudburst:installation"
TAG_BATCH: Final = "cloudburst:batch"
TAG_BATCH_VMS: Final = "cloudburst:batch-vms"
TAG_MARKET: Final = "cloudburst:market"
#: The state reason of a spot instance EC2 took back.
SPOT_INTERRUPTION: Final = "Server.SpotInstanceTermination"
TAG_VM: Final = "cloudburst:vm-id"
TAG_TOKEN: Final = "cloudburst:token"
TAG_HOST: Final = "cloudburst:host-id"
TAG_HOST_NAME: Final = "cloudburst:host"
TAG_EIP: Final = "cloudburst:elastic-ip"
TAG_MANAGED: Final = "cloudburst:managed"
TAG_PORTS: Final = "cloudburst:ports"

#: States in which an instance exists and may be billed.
LIVE_STATES: Final = frozenset({"pending", "running", "stopping", "stopped"})
_ACTIVE: Final = frozenset({"pending", "running"})
_GONE: Final = frozenset({"stopping", "stopped", "shutting-down", "terminated"})


#: The longest tag value EC2 accepts.
TAG_VALUE_MAX: Final = 256


def encode_members(vm_ids: Sequence[int]) -> list[str]:
    """``cloudburst:batch-vms`` values for ``vm_ids`` in launch order (ranges, split
    into tag-sized pieces)."""
    runs: list[str] = []
    index = 0
    while index < len(vm_ids):
        end = index
        while end + 1 < len(vm_ids) and vm_ids[end + 1] == vm_ids[end] + 1:
            end += 1
        first, last = vm_ids[index], vm_ids[end]
        runs.append(str(first) if first == last else f"{first}-{last}")
        index = end + 1
    text = ",".join(runs)
    return [text[start:start + TAG_VALUE_MAX] for start in range(0, len(text), TAG_VALUE_MAX)]


def member_tag(piece: int) -> str:
    """The key of the ``piece``-th (from 0) ``cloudburst:batch-vms`` tag."""
    return TAG_BATCH_VMS if piece == 0 else f"{TAG_BATCH_VMS}-{piece + 1}"


def decode_members(tags: Mapping[str, str]) -> list[int]:
    """The VM ids of a batch, in launch order, from an instance's tags (``[]``: none)."""
    pieces: list[str] = []
    while (piece := tags.get(member_tag(len(pieces)))) is not None:
        pieces.append(piece)
    members: list[int] = []
    for run in "".join(pieces).split(","):
        first, dash, last = run.partition("-")
        try:
            low = int(first)
            high = int(last) if dash else low
        except ValueError:
            return []
        members.extend(range(low, high + 1))
    return members


def _vm_of(tags: Mapping[str, str], launch_index: int | None) -> int | None:
    """The VM an instance belongs to: its own tag, else the batch's binding rule."""
    own = _int(tags.get(TAG_VM))
    if own is not None or launch_index is None:
        return own
    members = decode_members(tags)
    return members[launch_index] if 0 <= launch_index < len(members) else None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class InstanceView:
    """What the driver keeps of one instance of a listing."""

    id: str
    state: str
    vm_id: int | None = None
    host_id: int | None = None
    token: str = ""
    batch: str = ""
    launch_index: int | None = None
    #: ``spot`` or ``on-demand``.
    market: str = "on-demand"
    #: ``StateReason.Code`` (why it stopped or terminated), if any.
    state_reason: str = ""
    public_dns: str = ""
    public_ip: str = ""
    private_ip: str = ""
    private_dns: str = ""
    instance_type: str = ""
    zone: str = ""
    key_name: str = ""
    image_id: str = ""
    vpc_id: str = ""
    subnet_id: str = ""
    group_ids: tuple[str, ...] = ()
    group_names: tuple[str, ...] = ()
    launch_time: datetime | None = None
    elastic_ip: str = ""
    tags: Mapping[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @classmethod
    def from_api(cls, item: Mapping[str, Any]) -> InstanceView:
        tags = {str(tag.get("Key", "")): str(tag.get("Value", ""))
                for tag in item.get("Tags") or []}
        groups = item.get("SecurityGroups") or []
        launch = item.get("LaunchTime")
        index = item.get("AmiLaunchIndex")
        launch_index = int(index) if isinstance(index, int) else None
        return cls(
            id=str(item.get("InstanceId", "")),
            state=str((item.get("State") or {}).get("Name", "")),
            vm_id=_vm_of(tags, launch_index),
            host_id=_int(tags.get(TAG_HOST)),
            token=tags.get(TAG_TOKEN, ""),
            batch=tags.get(TAG_BATCH, ""),
            launch_index=launch_index,
            market="spot" if item.get("InstanceLifecycle") == "spot" else "on-demand",
            state_reason=str((item.get("StateReason") or {}).get("Code") or ""),
            public_dns=str(item.get("PublicDnsName") or ""),
            public_ip=str(item.get("PublicIpAddress") or ""),
            private_ip=str(item.get("PrivateIpAddress") or ""),
            private_dns=str(item.get("PrivateDnsName") or ""),
            instance_type=str(item.get("InstanceType") or ""),
            zone=str((item.get("Placement") or {}).get("AvailabilityZone") or ""),
            key_name=str(item.get("KeyName") or ""),
            image_id=str(item.get("ImageId") or ""),
            vpc_id=str(item.get("VpcId") or ""),
            subnet_id=str(item.get("SubnetId") or ""),
            group_ids=tuple(str(group.get("GroupId", "")) for group in groups),
            group_names=tuple(str(group.get("GroupName", "")) for group in groups),
            launch_time=launch if isinstance(launch, datetime) else None,
            elastic_ip=tags.get(TAG_EIP, ""),
            tags=tags,
        )


def views(reservations: Iterable[Mapping[str, Any]]) -> list[InstanceView]:
    """Instances of ``DescribeInstances`` reservations."""
    return [InstanceView.from_api(item) for reservation in reservations
            for item in reservation.get("Instances") or []]


def poll_result(instance: InstanceView | None, *, elastic_ip: str | None = None,
                error: str | None = None, price: float | None = None,
                spot_price: bool = False) -> PollResult:
    """The poll of one VM whose instance is ``instance`` (``None``: not listed).

    ``IP`` is the public DNS name, else the public address (the seed shows
    ``IP=ec2-...compute-1.amazonaws.com``); ``elastic_ip`` replaces it when an
    address was associated in this poll (the listing predates it).
    ``PRICE_PER_HOUR`` is ``price`` (US$ per hour, when known: the zone's spot
    price for a spot instance, else the on-demand price of its type at its
    site); ``spot_price`` marks it as the provider's bill (:class:`PollResult`).
    """
    if instance is None:
        return PollResult(PollState.GONE, {"AWS_STATE": "missing"})
    info: dict[str, str] = {"AWS_STATE": instance.state, "AWS_MARKET": instance.market}
    if instance.state in _ACTIVE:
        state = PollState.ACTIVE
    elif instance.state in _GONE and instance.state_reason == SPOT_INTERRUPTION:
        state = PollState.RECLAIMED
        info["REASON"] = f"spot interruption ({SPOT_INTERRUPTION})"
    elif instance.state in _GONE:
        state = PollState.GONE
    else:
        state = PollState.UNKNOWN
    if instance.state_reason:
        info["AWS_STATE_REASON"] = instance.state_reason
    address = elastic_ip or instance.public_dns or instance.public_ip
    if address and state is PollState.ACTIVE:
        info["IP"] = address
    if instance.private_ip:
        info["PRIVATE_IP"] = instance.private_ip
    if price is not None:
        info["PRICE_PER_HOUR"] = cost.money(price)
    for key, value in (
        ("AWS_DNS_NAME", instance.public_dns),
        ("AWS_IP_ADDRESS", elastic_ip or instance.public_ip),
        ("AWS_PRIVATE_DNS_NAME", instance.private_dns),
        ("AWS_PRIVATE_IP_ADDRESS", instance.private_ip),
        ("AWS_INSTANCE_TYPE", instance.instance_type),
        ("AWS_AVAILABILITY_ZONE", instance.zone),
        ("AWS_KEY_NAME", instance.key_name),
        ("AWS_IMAGE_ID", instance.image_id),
        ("AWS_VPC_ID", instance.vpc_id),
        ("AWS_SUBNET_ID", instance.subnet_id),
        ("AWS_SECURITY_GROUPS", ",".join(instance.group_ids)),
    ):
        if value:
            info[key] = value
    if error:
        info["ERROR"] = one_line(error, 300)
    return PollResult(state, info, price=price if spot_price else None)

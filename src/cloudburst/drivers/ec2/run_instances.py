"""Launching instances: VMs with the same launch request share one ``RunInstances``.

**Batches.** Deploys that arrive together for the same host with the same
launch request (AMI, type, key, groups, subnet, user data, tags, ...) are
gathered by a :class:`.Coalescer` (for ``EC2_BATCH_WINDOW`` seconds, then
while the daemon's backlog says more deploys for the host are on their way,
while a call is in flight or the rate limiter holds the next one) and go out
as one ``RunInstances`` with ``MinCount = MaxCount = n`` (all or nothing;
at most ``EC2_BATCH_MAX``). VMs with an ``ELASTICIP`` or ``PRIVATEIP`` go
alone. Instance *i* of the answer (``AmiLaunchIndex`` *i*) is the *i*-th VM
of the batch; every instance is tagged at creation with the batch token and
the batch's VM ids (:mod:`.instances`), so the binding can be read back from
EC2 alone.

**Exactly once.** A batch's token is derived from its members' deploy tokens
(a batch of one uses the deploy token itself) and is the call's
``ClientToken``. *Before* the call, each member's deploy journal entry gets a
note naming the batch and its launch index (:class:`~cloudburst.drivers.base.
DeployNotes`; the store keeps it). After a lost answer (timeout, dropped
connection, 5xx) the batch is looked up by its tag before anything is resent
(the ``recover`` hook of :meth:`.Site.call`); after a crash the daemon's
``find`` reads the note and binds the VM to the batch's instance at its launch
index. Nothing is launched twice as long as EC2 lists what it launched.

**Spot.** ``MARKET = "spot"`` launches with ``InstanceMarketOptions`` (one-time,
terminate on interruption, ``MAX_PRICE`` when given). A spot refusal for
capacity, price or quota (:data:`.errors.SPOT_REFUSAL_CODES`) is sent again at
once as an on-demand launch of the same batch (token ``<batch>/on-demand``),
unless ``SPOT_FALLBACK = "none"``: then it is a capacity error and the VM
tries the next site. Every instance carries ``cloudburst:market``.

Two refusals are worked around once each: EC2 refuses to reuse the token of
an instance that was terminated meanwhile (``IdempotentInstanceTerminated``):
the launch goes on under a derived, equally stable token; and our
``AUTHORIZED_PORTS`` group may have been deleted by another daemon's sweep
(``InvalidGroup.NotFound``): it is created again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cloudburst.drivers.base import Backlog, DeployNotes, DeploySpec
from cloudburst.drivers.ec2.client import Response, Site
from cloudburst.drivers.ec2.coalesce import Coalescer
from cloudburst.drivers.ec2.errors import SPOT_REFUSAL_CODES, AwsCodeError
from cloudburst.drivers.ec2.instances import (
    TAG_BATCH,
    TAG_EIP,
    TAG_HOST,
    TAG_HOST_NAME,
    TAG_INSTALL,
    TAG_MARKET,
    TAG_TOKEN,
    TAG_VALUE_MAX,
    TAG_VM,
    InstanceView,
    encode_members,
    member_tag,
    views,
)
from cloudburst.drivers.ec2.launch import LaunchRequest
from cloudburst.drivers.ec2.listing import installation_filter
from cloudburst.drivers.ec2.security_groups import SecurityGroups
from cloudburst.errors import CapacityError, DriverError, TransientDriverError, one_line

_RUN_REFUSALS: Final = frozenset({"IdempotentInstanceTerminated", "InvalidGroup.NotFound"})
#: Tags EC2 allows on one resource.
MAX_TAGS: Final = 50
#: Tags of ours besides the batch's VM list (installation, host id and name,
#: batch, market; for a batch of one also vm-id, token, ONE_ID, Name, elastic-ip).
_OWN_TAGS: Final = 10
#: Most ``cloudburst:batch-vms`` tags (each up to 256 characters).
MAX_MEMBER_TAGS: Final = 8
#: Journal notes start with this word (see :func:`note_for`).
NOTE_PREFIX: Final = "ec2-batch"


def client_token(token: str) -> str:
    """``token`` as an EC2 ``ClientToken`` (at most 64 ASCII characters)."""
    if len(token) <= 64 and token.isascii():
        return token
    return hashlib.sha256(token.encode()).hexdigest()


def batch_token(install_id: str, tokens: Sequence[str]) -> str:
    """The token of a batch of deploys: the deploy token itself for one, else a
    digest of the members' tokens in order (the same members give the same token)."""
    if len(tokens) == 1:
        return client_token(tokens[0])
    digest = hashlib.sha256("\n".join(tokens).encode()).hexdigest()[:32]
    return f"{install_id[:24]}-b{digest}"


def note_for(batch: str, index: int) -> str:
    """The journal note of the member at launch index ``index`` of ``batch``."""
    return f"{NOTE_PREFIX} {batch} {index}"


def parse_note(note: str | None) -> tuple[str, int] | None:
    """``(batch, launch index)`` from a note of :func:`note_for`; ``None`` otherwise."""
    words = (note or "").split()
    if len(words) != 3 or words[0] != NOTE_PREFIX or not words[2].isdigit():
        return None
    return words[1], int(words[2])


@dataclass(frozen=True, slots=True)
class Member:
    """One deploy waiting for its batch."""

    spec: DeploySpec
    request: LaunchRequest


def _member_budget(request: LaunchRequest) -> int:
    """Characters available for a batch's VM list, given the request's own tags."""
    tags = max(1, min(MAX_MEMBER_TAGS, MAX_TAGS - _OWN_TAGS - len(request.tags)))
    return tags * TAG_VALUE_MAX


def _fits(members: list[Member], candidate: Member) -> bool:
    """Whether the batch's VM list still fits its tags with ``candidate`` added."""
    budget = _member_budget(candidate.request)
    ids = [member.spec.vm_id for member in members] + [candidate.spec.vm_id]
    if sum(len(str(vm_id)) + 1 for vm_id in ids) <= budget:
        return True  # even without ranges
    return sum(len(piece) for piece in encode_members(ids)) <= budget


class Launcher:
    """Launches and finds the instances of one site and installation (see the module doc)."""

    def __init__(self, site: Site, install_id: str, groups: SecurityGroups,
                 log: logging.Logger, *, batch_max: int, window: float,
                 backlog: Backlog | None = None) -> None:
        self.site = site
        self.install_id = install_id
        self.groups = groups
        self.log = log

        def more(key: tuple[Any, ...]) -> int:  # deploys for the key's host on their way
            return 0 if backlog is None else backlog.waiting(key[0], ("deploy",))

        self.batches: Coalescer[tuple[Any, ...], Member, str] = Coalescer(
            self._launch_batch, window=window, max_size=batch_max,
            ready_in=lambda: site.limiter.ready_in("RunInstances"), fits=_fits, more=more)

    async def launch(self, spec: DeploySpec, request: LaunchRequest) -> str:
        """Launch ``spec``'s instance, in a batch when others come along; its id.

        Raises:
            DriverError: a subclass per :mod:`.errors` (capacity, credentials, ...).
        """
        key: tuple[Any, ...] = (spec.host.id, spec.host.name, request)
        if not request.batchable:
            key += (spec.token,)
        return await self.batches.submit(key, Member(spec, request))

    async def lookup(self, batch: str) -> list[InstanceView]:
        """The live instances of ``batch`` (one filtered ``DescribeInstances``)."""
        reservations = await self.site.paginate("DescribeInstances", {
            "Filters": [installation_filter(self.install_id),
                        {"Name": f"tag:{TAG_BATCH}", "Values": [batch]}],
            "MaxResults": 1000,
        })
        return [view for view in views(reservations) if view.live]

    async def close(self) -> None:
        await self.batches.close()

    # -- one batch -------------------------------------------------------------------------

    async def _launch_batch(self, key: tuple[Any, ...], members: list[Member]
                            ) -> list[str | BaseException]:
        request = members[0].request
        batch = batch_token(self.install_id, [member.spec.token for member in members])
        await self._journal(batch, members)
        held: list[str] = []  # our security groups this launch uses (not to be deleted)
        try:
            launched = await self._run(batch, members, request, held)
        except CapacityError as exc:
            exc.instance_type = exc.instance_type or request.instance_type  # cool that type off
            raise
        finally:
            self.groups.release(held)
        if len(members) > 1:
            self.log.info("launched %d of %d instances in one call (batch %s, VMs %s)",
                          len(launched), len(members), batch,
                          encode_members([member.spec.vm_id for member in members])[0])
        missing = TransientDriverError(f"EC2 RunInstances at {self.site.label}: batch {batch} "
                                       "lists no instance for this VM")
        return [launched.get(index) or missing for index in range(len(members))]

    async def _journal(self, batch: str, members: list[Member]) -> None:
        """Note each member's batch and launch index in its deploy's journal entry."""
        stores: dict[int, tuple[DeployNotes, dict[str, str]]] = {}
        for index, member in enumerate(members):
            notes = member.spec.notes
            if notes is not None:
                stores.setdefault(id(notes), (notes, {}))[1][member.spec.token] = \
                    note_for(batch, index)
        for notes, entries in stores.values():
            try:
                await notes.write(entries)
            except Exception as exc:  # the store failed: launch nothing unjournalled
                raise TransientDriverError(f"cannot journal launch batch {batch}: "
                                           f"{one_line(str(exc), 200)}",
                                           nothing_created=True) from None

    async def _run(self, batch: str, members: list[Member], request: LaunchRequest,
                   held: list[str]) -> dict[int, str]:
        """Send the batch's ``RunInstances``; launch index -> instance id."""
        group_ids, group_names = await self.groups.for_launch(request, held)
        spot = request.spot
        params = self._params(batch, members, request, group_ids, group_names, spot=spot)
        expect = _RUN_REFUSALS | (SPOT_REFUSAL_CODES if spot else frozenset())

        async def recover() -> Response | None:
            # The answer was lost: did the launch happen? (moto ignores ClientToken.)
            try:
                found = await self.lookup(batch)
            except DriverError as exc:
                self.log.info("batch %s: look-up after a lost answer failed: %s", batch, exc)
                return None
            if not found:
                return None
            return {"Instances": [{"InstanceId": view.id, "AmiLaunchIndex": view.launch_index}
                                  for view in found]}

        for attempt in range(4):
            try:
                response = await self.site.call("RunInstances", params, resources=len(members),
                                                recover=recover, expect=expect)
            except AwsCodeError as exc:
                if spot and exc.aws_code in SPOT_REFUSAL_CODES:
                    if not request.spot_fallback:  # cools off spot only, not on-demand
                        raise CapacityError(exc.message, instance_type=(
                            f"{request.instance_type} (spot)")) from None
                    self.log.info("batch %s: spot refused (%s); launching on-demand", batch,
                                  exc.aws_code)
                    spot, expect = False, _RUN_REFUSALS
                    params = {**self._params(batch, members, request, group_ids, group_names,
                                             spot=False),
                              "ClientToken": client_token(f"{batch}/on-demand")}
                    continue
                if exc.aws_code == "IdempotentInstanceTerminated" and attempt < 3:
                    params["ClientToken"] = client_token(f"{params['ClientToken']}/relaunch")
                    continue
                if exc.aws_code == "InvalidGroup.NotFound" and request.ports is not None \
                        and attempt < 3:
                    self.groups.forget_ours()
                    group_ids, group_names = await self.groups.for_launch(request, held)
                    params = {**self._params(batch, members, request, group_ids, group_names,
                                             spot=spot),
                              "ClientToken": params["ClientToken"]}
                    continue
                raise DriverError(exc.message) from None
            launched = _by_launch_index(response.get("Instances") or [])
            if not launched:
                raise DriverError(f"EC2 RunInstances at {self.site.label}: "
                                  "the answer names no instance")
            return launched
        raise DriverError(f"EC2 RunInstances at {self.site.label}: launch failed repeatedly")

    def _tags(self, batch: str, members: list[Member], request: LaunchRequest,
              spot: bool) -> list[dict[str, str]]:
        """The request's ``TAGS`` under ours (ours win), as EC2 wants them."""
        spec = members[0].spec
        tags = dict(request.tags)
        if len(members) == 1:
            tags.setdefault("Name", f"one-{spec.vm_id}")
            tags.update({TAG_VM: str(spec.vm_id), TAG_TOKEN: spec.token[:TAG_VALUE_MAX],
                         "ONE_ID": str(spec.vm_id)})
            if request.elastic_ip:
                tags[TAG_EIP] = request.elastic_ip
        tags.update({
            TAG_INSTALL: self.install_id,
            TAG_BATCH: batch,
            TAG_MARKET: "spot" if spot else "on-demand",
            TAG_HOST: str(spec.host.id),
            TAG_HOST_NAME: spec.host.name[:TAG_VALUE_MAX],
        })
        pieces = encode_members([member.spec.vm_id for member in members])
        tags.update((member_tag(index), piece) for index, piece in enumerate(pieces))
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _params(self, batch: str, members: list[Member], request: LaunchRequest,
                group_ids: Sequence[str], group_names: Sequence[str], *,
                spot: bool) -> dict[str, Any]:
        """The ``RunInstances`` parameters (optional ones only when set)."""
        params: dict[str, Any] = {
            "ImageId": request.ami,
            "MinCount": len(members),
            "MaxCount": len(members),
            "KeyName": request.keypair,
            "InstanceType": request.instance_type,
            "ClientToken": client_token(batch),
            "TagSpecifications": [{"ResourceType": "instance",
                                   "Tags": self._tags(batch, members, request, spot)}],
        }
        if spot:
            options: dict[str, Any] = {"SpotInstanceType": "one-time",
                                       "InstanceInterruptionBehavior": "terminate"}
            if request.max_price:
                options["MaxPrice"] = request.max_price
            params["InstanceMarketOptions"] = {"MarketType": "spot", "SpotOptions": options}
        optional = {
            "SecurityGroupIds": list(group_ids),
            "SecurityGroups": list(group_names),
            "SubnetId": request.subnet_id,
            "UserData": request.user_data,
            "PrivateIpAddress": request.private_ip,
        }
        params.update((key, value) for key, value in optional.items() if value)
        if request.ebs_optimized is not None:
            params["EbsOptimized"] = request.ebs_optimized
        if request.block_devices:
            params["BlockDeviceMappings"] = [device.mapping()
                                             for device in request.block_devices]
        if request.iam_profile:
            kind = "Arn" if request.iam_profile.startswith("arn:") else "Name"
            params["IamInstanceProfile"] = {kind: request.iam_profile}
        params["MetadataOptions"] = {"HttpTokens": request.metadata_tokens,
                                     "HttpEndpoint": "enabled"}
        placement = {key: value for key, value in (
            ("AvailabilityZone", request.availability_zone),
            ("GroupName", request.placement_group),
            ("Tenancy", request.tenancy)) if value}
        if placement:
            params["Placement"] = placement
        return params


def _by_launch_index(instances: Sequence[Mapping[str, Any]]) -> dict[int, str]:
    """Launch index -> instance id (an answer without indexes counts in order)."""
    launched: dict[int, str] = {}
    for position, instance in enumerate(instances):
        instance_id = instance.get("InstanceId")
        index = instance.get("AmiLaunchIndex")
        if instance_id:
            launched[int(index) if isinstance(index, int) else position] = str(instance_id)
    return launched

"""Launching one VM's instance: ``RunInstances`` exactly once per deploy token.

A deploy may be retried or replayed (a lost answer, a daemon restart), so
every instance carries its deploy token from creation on (tags, see
:mod:`.instances`) and is found again by it:

* :meth:`Launcher.find` looks the token up with one filtered
  ``DescribeInstances``. This works where EC2's ``ClientToken`` is not
  honoured (e.g. moto);
* :meth:`Launcher.launch` sends ``RunInstances`` with ``ClientToken`` = the
  deploy token and every tag set at creation. A call whose answer was lost
  (timeout, dropped connection, 5xx) is looked up by its tags before it is
  sent again (the ``recover`` hook of :meth:`.Site.call`).

Two refusals are worked around once each: EC2 refuses to reuse the token of
an instance that was terminated meanwhile (``IdempotentInstanceTerminated``):
the launch goes on under a derived, equally stable token; and our
``AUTHORIZED_PORTS`` group may have been deleted by another daemon's sweep
(``InvalidGroup.NotFound``): it is created again.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, Final

from cloudburst.drivers.base import DeploySpec
from cloudburst.drivers.ec2.client import Response, Site
from cloudburst.drivers.ec2.errors import AwsCodeError
from cloudburst.drivers.ec2.instances import (
    LIVE_STATES,
    TAG_EIP,
    TAG_HOST,
    TAG_HOST_NAME,
    TAG_INSTALL,
    TAG_TOKEN,
    TAG_VM,
    views,
)
from cloudburst.drivers.ec2.launch import LaunchRequest
from cloudburst.drivers.ec2.listing import installation_filter
from cloudburst.drivers.ec2.security_groups import SecurityGroups
from cloudburst.errors import DriverError

#: The longest tag value EC2 accepts.
_TAG_VALUE_MAX: Final = 256
_RUN_REFUSALS: Final = frozenset({"IdempotentInstanceTerminated", "InvalidGroup.NotFound"})


def client_token(token: str) -> str:
    """``token`` as an EC2 ``ClientToken`` (at most 64 ASCII characters)."""
    if len(token) <= 64 and token.isascii():
        return token
    return hashlib.sha256(token.encode()).hexdigest()


class Launcher:
    """Launches and finds the instances of one site and installation."""

    def __init__(self, site: Site, install_id: str, groups: SecurityGroups,
                 log: logging.Logger) -> None:
        self.site = site
        self.install_id = install_id
        self.groups = groups
        self.log = log

    async def find(self, token: str) -> str | None:
        """The id of the live instance launched with deploy token ``token``, if any.

        Should a token have several (launched behind our back), the oldest is
        the one; the orphan sweep removes the others.
        """
        reservations = await self.site.paginate("DescribeInstances", {
            "Filters": [
                installation_filter(self.install_id),
                {"Name": f"tag:{TAG_TOKEN}", "Values": [token[:_TAG_VALUE_MAX]]},
                {"Name": "instance-state-name", "Values": sorted(LIVE_STATES)},
            ],
            "MaxResults": 1000,
        })
        found = sorted((view for view in views(reservations) if view.live),
                       key=lambda view: (view.launch_time is None, view.launch_time, view.id))
        if len(found) > 1:
            self.log.warning("token %s has %d instances (%s); using %s, the sweep removes "
                             "the others", token, len(found), ", ".join(v.id for v in found),
                             found[0].id)
        return found[0].id if found else None

    async def launch(self, spec: DeploySpec, request: LaunchRequest) -> str:
        """Run the instance of ``spec`` (see the module doc); its id.

        Raises:
            DriverError: a subclass per :mod:`.errors` (capacity, credentials, ...).
        """
        held: list[str] = []  # our security groups this launch uses (not to be deleted)
        try:
            return await self._run(spec, request, held)
        finally:
            self.groups.release(held)

    async def _run(self, spec: DeploySpec, request: LaunchRequest, held: list[str]) -> str:
        group_ids, group_names = await self.groups.for_launch(request, held)
        params = self._params(spec, request, group_ids, group_names)

        async def recover() -> Response | None:
            # The answer was lost: did the launch happen? (moto ignores ClientToken.)
            try:
                found = await self.find(spec.token)
            except DriverError as exc:
                self.log.info("VM %d: look-up after a lost answer failed: %s", spec.vm_id, exc)
                return None
            return {"Instances": [{"InstanceId": found}]} if found else None

        for attempt in range(3):
            try:
                response = await self.site.call("RunInstances", params, resources=1,
                                                recover=recover, expect=_RUN_REFUSALS)
            except AwsCodeError as exc:
                if exc.aws_code == "IdempotentInstanceTerminated" and attempt == 0:
                    params["ClientToken"] = client_token(f"{spec.token}/relaunch")
                    continue
                if exc.aws_code == "InvalidGroup.NotFound" and request.ports is not None \
                        and attempt < 2:
                    self.groups.forget_ours()
                    group_ids, group_names = await self.groups.for_launch(request, held)
                    params = {**self._params(spec, request, group_ids, group_names),
                              "ClientToken": params["ClientToken"]}
                    continue
                raise DriverError(exc.message) from None
            instances = response.get("Instances") or []
            if not instances or not instances[0].get("InstanceId"):
                raise DriverError(f"EC2 RunInstances at {self.site.label}: "
                                  "the answer names no instance")
            return str(instances[0]["InstanceId"])
        raise DriverError(f"EC2 RunInstances at {self.site.label}: launch failed repeatedly")

    def _tags(self, spec: DeploySpec, request: LaunchRequest) -> list[dict[str, str]]:
        """The request's ``TAGS`` under ours (ours win), as EC2 wants them."""
        tags = dict(request.tags)
        tags.setdefault("Name", f"one-{spec.vm_id}")
        tags.update({
            TAG_INSTALL: self.install_id,
            TAG_VM: str(spec.vm_id),
            TAG_TOKEN: spec.token[:_TAG_VALUE_MAX],
            TAG_HOST: str(spec.host.id),
            TAG_HOST_NAME: spec.host.name[:_TAG_VALUE_MAX],
            "ONE_ID": str(spec.vm_id),
        })
        if request.elastic_ip:
            tags[TAG_EIP] = request.elastic_ip
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _params(self, spec: DeploySpec, request: LaunchRequest,
                group_ids: Sequence[str], group_names: Sequence[str]) -> dict[str, Any]:
        """The ``RunInstances`` parameters (optional ones only when set)."""
        params: dict[str, Any] = {
            "ImageId": request.ami,
            "MinCount": 1,
            "MaxCount": 1,
            "KeyName": request.keypair,
            "InstanceType": request.instance_type,
            "ClientToken": client_token(spec.token),
            "TagSpecifications": [{"ResourceType": "instance",
                                   "Tags": self._tags(spec, request)}],
        }
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
        placement = {key: value for key, value in (
            ("AvailabilityZone", request.availability_zone),
            ("GroupName", request.placement_group),
            ("Tenancy", request.tenancy)) if value}
        if placement:
            params["Placement"] = placement
        return params

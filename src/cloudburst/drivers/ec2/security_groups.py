"""Security groups of a launch, and the groups the driver owns for ``AUTHORIZED_PORTS``.

**Named groups.** ``SECURITYGROUPS`` names are sent as names, except where
EC2 wants ids (in a VPC subnet, or next to other ids): then they are looked
up (``DescribeSecurityGroups``) in the subnet's VPC.

**Our groups.** ``AUTHORIZED_PORTS`` adds, once per port set and VPC, a group
of the driver's named ``cloudburst-<installation>-tcp-<ports>`` and tagged
with the installation, ``cloudburst:managed=security-group`` and the ports.
It lets TCP in on those ports from ``EC2_INGRESS_CIDR``. An existing group of
that name and tag is reused (its missing rules added); two daemons creating
it at once settle on one (``InvalidGroup.Duplicate``).

**Clean-up.** After an instance is terminated, the orphan sweep deletes our
groups that no listed instance uses any more, except a group a deploy holds
or used after the listing started (it may be launching with it right now).
EC2 refuses to delete a group a terminating instance still holds
(``DependencyViolation``): it is tried again at the next sweep.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, Final

from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.errors import AwsCodeError
from cloudburst.drivers.ec2.instances import TAG_INSTALL, TAG_MANAGED, TAG_PORTS
from cloudburst.drivers.ec2.launch import LaunchRequest, Ports
from cloudburst.drivers.ec2.listing import Listing, installation_filter
from cloudburst.errors import DriverError

#: The ``cloudburst:managed`` tag value of our groups.
MANAGED_KIND: Final = "security-group"

_DELETE_REFUSALS: Final = frozenset(
    {"DependencyViolation", "InvalidGroup.NotFound", "InvalidGroup.InUse"})


class SecurityGroups:
    """One site's security groups, as launches use them and sweeps clean them up.

    Attributes:
        cleanup_due: whether :meth:`collect` has work (something was
            terminated, or a group could not be deleted yet).
    """

    def __init__(self, site: Site, install_id: str, ingress_cidr: str,
                 log: logging.Logger) -> None:
        self.site = site
        self.install_id = install_id
        self.ingress_cidr = ingress_cidr
        self.log = log
        self.cleanup_due = True
        #: (vpc id or "", ports text) -> id of our group
        self._ours: dict[tuple[str, str], str] = {}
        self._creation_locks: dict[tuple[str, str], asyncio.Lock] = {}
        #: group id -> launches holding it right now
        self._held: Counter[str] = Counter()
        #: group id -> monotonic time a launch last took it
        self._last_taken: dict[str, float] = {}
        #: subnet id -> its VPC id
        self._subnet_vpcs: dict[str, str] = {}

    def group_name(self, ports: Ports) -> str:
        """The name of our group for ``ports``."""
        return f"cloudburst-{self.install_id}-tcp-{ports.text}"

    # -- launches ------------------------------------------------------------------

    async def for_launch(self, request: LaunchRequest, held: list[str]
                         ) -> tuple[list[str], list[str]]:
        """Group ids and names for ``RunInstances``.

        Our group for the request's ports, if any, is appended to ``held`` and
        counts as in use until :meth:`release` gets ``held`` back.

        Raises:
            DriverError: the subnet or a named group does not exist, or an
                API call failed.
        """
        ids = list(request.security_group_ids)
        names = list(request.security_groups)
        vpc = await self._vpc_of(request.subnet_id) if request.subnet_id else ""
        if request.ports is not None:
            group = await self._ensure_ours(request.ports, vpc)
            self._held[group] += 1
            self._last_taken[group] = time.monotonic()
            held.append(group)
            ids.append(group)
        if names and (ids or request.subnet_id):
            ids += await self._ids_of(names, vpc)
            names = []
        return ids, names

    def release(self, held: Sequence[str]) -> None:
        """The launch that took ``held`` (see :meth:`for_launch`) is over."""
        for group in held:
            self._held[group] -= 1

    def forget_ours(self) -> None:
        """Forget the ids of our groups (one was deleted behind our back)."""
        self._ours.clear()

    async def _vpc_of(self, subnet: str) -> str:
        vpc = self._subnet_vpcs.get(subnet)
        if vpc is None:
            response = await self.site.call("DescribeSubnets", {"SubnetIds": [subnet]})
            subnets = response.get("Subnets") or []
            if not subnets:
                raise DriverError(f"SUBNETID {subnet} does not exist at {self.site.label}")
            vpc = self._subnet_vpcs[subnet] = str(subnets[0].get("VpcId") or "")
        return vpc

    async def _ids_of(self, names: Sequence[str], vpc: str) -> list[str]:
        filters = [{"Name": "group-name", "Values": list(names)}]
        if vpc:
            filters.append({"Name": "vpc-id", "Values": [vpc]})
        response = await self.site.call("DescribeSecurityGroups", {"Filters": filters})
        by_name = {str(group["GroupName"]): str(group["GroupId"])
                   for group in response.get("SecurityGroups") or []}
        missing = [name for name in names if name not in by_name]
        if missing:
            raise DriverError(f"SECURITYGROUPS: no group named {', '.join(missing)} at "
                              f"{self.site.label}")
        return [by_name[name] for name in names]

    # -- our groups ----------------------------------------------------------------------

    async def _ensure_ours(self, ports: Ports, vpc: str) -> str:
        key = (vpc, ports.text)
        cached = self._ours.get(key)
        if cached is not None:
            return cached
        async with self._creation_locks.setdefault(key, asyncio.Lock()):
            cached = self._ours.get(key)
            if cached is not None:
                return cached
            group = await self._find_or_create(ports, vpc)
            self._ours[key] = group
            return group

    async def _find_or_create(self, ports: Ports, vpc: str) -> str:
        name = self.group_name(ports)
        filters = [{"Name": "group-name", "Values": [name]}, installation_filter(self.install_id)]
        if vpc:
            filters.append({"Name": "vpc-id", "Values": [vpc]})
        response = await self.site.call("DescribeSecurityGroups", {"Filters": filters})
        existing = response.get("SecurityGroups") or []
        if existing:
            return await self._adopt(existing[0], ports)
        params: dict[str, Any] = {
            "GroupName": name,
            "Description": f"cloudburst {self.install_id}: TCP {ports.text} (AUTHORIZED_PORTS)",
            "TagSpecifications": [{"ResourceType": "security-group", "Tags": [
                {"Key": TAG_INSTALL, "Value": self.install_id},
                {"Key": TAG_MANAGED, "Value": MANAGED_KIND},
                {"Key": TAG_PORTS, "Value": ports.text},
                {"Key": "Name", "Value": name},
            ]}],
        }
        if vpc:
            params["VpcId"] = vpc
        try:
            created = await self.site.call("CreateSecurityGroup", params,
                                           expect=frozenset({"InvalidGroup.Duplicate"}))
        except AwsCodeError:
            # Created meanwhile by another daemon of this installation.
            response = await self.site.call("DescribeSecurityGroups", {"Filters": filters})
            groups = response.get("SecurityGroups") or []
            if not groups:
                raise DriverError(
                    f"a security group named {name} exists at {self.site.label} but lacks "
                    f"the tag {TAG_INSTALL}={self.install_id}; delete it or tag it") from None
            return await self._adopt(groups[0], ports)
        group_id = str(created["GroupId"])
        # Taken from its creation on: a sweep listing it before the launch holds it
        # must not delete it (it has no instance yet).
        self._last_taken[group_id] = time.monotonic()
        await self._authorize(group_id, ports, [])
        self.log.info("created security group %s (%s) for TCP %s", name, group_id, ports.text)
        return group_id

    async def _adopt(self, group: Mapping[str, Any], ports: Ports) -> str:
        """Use an existing group of ours, adding the rules it lacks; its id."""
        group_id = str(group["GroupId"])
        self._last_taken[group_id] = time.monotonic()
        await self._authorize(group_id, ports, group.get("IpPermissions") or [])
        return group_id

    async def _authorize(self, group_id: str, ports: Ports,
                         existing: Sequence[Mapping[str, Any]]) -> None:
        """Let TCP in on ``ports`` from the ingress CIDR, unless ``existing`` rules do."""
        cidr = self.ingress_cidr
        present = {(rule.get("IpProtocol"), rule.get("FromPort"), rule.get("ToPort"))
                   for rule in existing
                   if any(r.get("CidrIp") == cidr for r in rule.get("IpRanges") or [])}
        wanted = [(lo, hi) for lo, hi in ports.ranges if ("tcp", lo, hi) not in present]
        if not wanted:
            return
        await self.site.call("AuthorizeSecurityGroupIngress", {
            "GroupId": group_id,
            "IpPermissions": [{
                "IpProtocol": "tcp", "FromPort": lo, "ToPort": hi,
                "IpRanges": [{"CidrIp": cidr, "Description": "cloudburst AUTHORIZED_PORTS"}],
            } for lo, hi in wanted],
        }, expect=frozenset({"InvalidPermission.Duplicate"}))

    # -- clean-up ----------------------------------------------------------------------

    def note_termination(self) -> None:
        """An instance is being terminated: its groups may become free."""
        self.cleanup_due = True

    async def collect(self, listing: Listing) -> None:
        """Delete our groups that no instance of ``listing`` uses any more.

        Meant for when :attr:`cleanup_due`, with a listing that started after
        the latest termination (an older one still shows the instances).

        Raises:
            DriverError: listing the groups failed.
        """
        groups = await self.site.paginate("DescribeSecurityGroups", {
            "Filters": [installation_filter(self.install_id),
                        {"Name": f"tag:{TAG_MANAGED}", "Values": [MANAGED_KIND]}],
            "MaxResults": 1000,
        }, items="SecurityGroups")
        in_use = {group for view in listing.instances.values() if view.state != "terminated"
                  for group in view.group_ids}
        due = False
        for group in groups:
            group_id = str(group.get("GroupId"))
            if group_id in in_use:
                continue
            if self._held[group_id] > 0 or \
                    self._last_taken.get(group_id, 0.0) >= listing.started:
                due = True  # a deploy may be launching with it right now
                continue
            if not await self._delete(group_id, group.get("GroupName")):
                due = True
        self.cleanup_due = due

    async def _delete(self, group_id: str, name: object) -> bool:
        """Delete one of our groups; ``False``: EC2 refused for now."""
        try:
            await self.site.call("DeleteSecurityGroup", {"GroupId": group_id},
                                 expect=_DELETE_REFUSALS)
        except AwsCodeError as exc:
            if exc.aws_code != "InvalidGroup.NotFound":
                self.log.info("security group %s still in use (%s); retrying later",
                              group_id, exc.aws_code)
                return False
        self.log.info("deleted security group %s (%s): no instance uses it", name, group_id)
        for key in [key for key, value in self._ours.items() if value == group_id]:
            del self._ours[key]
        self._last_taken.pop(group_id, None)
        return True

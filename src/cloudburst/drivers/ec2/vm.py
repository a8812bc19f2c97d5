"""``one_vmm_ec2``: VMs on an EC2 site (one ``VM_MAD`` = one endpoint and account).

Actions and what they cost in API calls:

* ``deploy``: one filtered ``DescribeInstances`` (find-first: a retried or
  replayed deploy finds the instance by its installation and token tags, which
  works where ``ClientToken`` is not honoured, e.g. moto) and one
  ``RunInstances`` with ``ClientToken`` = the deploy token and every tag set at
  creation. ``AUTHORIZED_PORTS`` adds, once per port set and VPC, a security
  group of the driver's (``cloudburst-<installation>-tcp-<ports>``). A
  ``RunInstances`` whose answer was lost (timeout, dropped connection, 5xx) is
  looked up by its tags before it is sent again.
* ``poll``: one paginated ``DescribeInstances`` per site and call, filtered on
  the installation tag (``MaxResults=1000``), whatever the number of VMs;
  concurrent polls of several hosts of a site share it. ``ELASTICIP`` is
  associated by the first poll that sees the instance running (EC2 refuses it
  before), never taking the address from another instance
  (``AllowReassociation=false``); a failure shows as the VM's monitoring error
  and is tried again a minute later. The poll reports ``IP`` (public DNS name,
  else public address), ``PRIVATE_IP`` and ``AWS_*`` details.
* ``shutdown`` and ``cancel``: ``TerminateInstances`` (an instance that is
  already gone is success); a known Elastic IP association is released first.
* ``reboot``: ``RebootInstances``. ``reset`` is also ``RebootInstances``: EC2
  has no power-cycle call, and a reboot that the guest ignores becomes a hard
  reboot after four minutes. Stop and start would be closer to a power cycle but
  changes the public address and takes minutes, so the driver does not do it.
* ``sweep``: uses the poll's listing when it is at most
  ``EC2_LISTING_REUSE_SECONDS`` old (no extra call). Instances with our tags for
  the host whose VM is not live, and second instances of a VM that is polled
  with another one, are orphans; an orphan is terminated once it has been seen
  by two sweeps and for at least the grace period. Security groups of the
  driver that no instance uses any more are deleted here too (EC2 refuses while
  a terminating instance still holds them: ``DependencyViolation`` is retried at
  the next sweep).

Nothing of the credentials reaches a message, a log line or a ``repr``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
import weakref
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    HostRef,
    PollResult,
    PollState,
    SweepReport,
    VmDriver,
    VmRef,
)
from cloudburst.drivers.ec2 import launch, types
from cloudburst.drivers.ec2.client import Response, Site
from cloudburst.drivers.ec2.config import SiteConfig, load_defaults, load_site_config
from cloudburst.drivers.ec2.errors import AwsCodeError
from cloudburst.drivers.ec2.instances import (
    LIVE_STATES,
    TAG_EIP,
    TAG_HOST,
    TAG_HOST_NAME,
    TAG_INSTALL,
    TAG_MANAGED,
    TAG_PORTS,
    TAG_TOKEN,
    TAG_VM,
    InstanceView,
    poll_result,
    views,
)
from cloudburst.errors import (
    DriverError,
    InstanceNotFoundError,
    TemplateError,
    ValidationError,
)
from cloudburst.template import Template, parse_xml

#: Seconds after launch during which an instance missing from a listing is
#: not yet "gone" (EC2's listings are eventually consistent).
LAUNCH_VISIBILITY_GRACE: Final = 120.0
#: Seconds before a failed Elastic IP association is tried again.
EIP_RETRY_SECONDS: Final = 60.0
#: Most instance ids in one ``TerminateInstances`` call.
TERMINATE_BATCH: Final = 1000

_drivers: weakref.WeakSet[Ec2VmDriver] = weakref.WeakSet()


@dataclass(frozen=True, slots=True)
class Listing:
    """One listing of the site's instances carrying our installation tag.

    ``terminations`` is the driver's termination counter when the listing
    started: a listing taken before a termination is not used to decide that
    a security group is free.
    """

    started: float
    finished: float
    terminations: int
    instances: Mapping[str, InstanceView]


def client_token(token: str) -> str:
    """``token`` as an EC2 ``ClientToken`` (at most 64 ASCII characters)."""
    if len(token) <= 64 and token.isascii():
        return token
    return hashlib.sha256(token.encode()).hexdigest()


class Ec2VmDriver(VmDriver):
    """The EC2 VM driver (see the module doc)."""

    def __init__(self, context: DriverContext) -> None:
        super().__init__(context)
        self.config: SiteConfig = load_site_config(context)
        self.log = context.logger
        for note in self.config.notes:
            self.log.warning("%s: %s", context.name, note)
        if not context.install_id:
            self.log.warning("%s: no installation id; tagging instances with 'cloudburst'",
                             context.name)
        self.install_id = context.install_id or "cloudburst"
        types.warm_up()  # load the type names now, not during a VM's creation
        self.site = Site(self.config)
        self.listing: Listing | None = None
        self._listing_task: asyncio.Future[Listing] | None = None
        self.terminations = 0
        #: instance id -> (host id, monotonic time first seen orphaned, sweeps seen)
        self._orphans: dict[str, tuple[int, float, int]] = {}
        #: instance id -> monotonic launch time (this process)
        self._launched: dict[str, float] = {}
        #: vm id -> (host id, deploy id) of the latest poll
        self._polled: dict[int, tuple[int, str]] = {}
        self._groups: dict[tuple[str, str], str] = {}
        self._group_locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._group_inflight: Counter[str] = Counter()
        self._group_last_used: dict[str, float] = {}
        self.groups_due = True
        self._subnet_vpcs: dict[str, str] = {}
        self._addresses: dict[str, tuple[str | None, str]] = {}
        self._eip_failures: dict[str, float] = {}
        self._eip_associations: dict[str, str] = {}
        _drivers.add(self)

    def __repr__(self) -> str:
        return (f"Ec2VmDriver(name={self.name!r}, endpoint={self.config.endpoint_label!r}, "
                f"region={self.config.region!r})")

    # -- templates -----------------------------------------------------------------

    def defaults(self) -> dict[str, str]:
        """The defaults file's section (re-read when the file changes)."""
        return load_defaults(self.config.defaults_path)

    def check_template(self, template: Template) -> None:
        """Refuse EC2 sections that no EC2 driver could deploy (AMI, KEYPAIR, type, ...).

        A section passes when, with the defaults of some EC2 driver of this
        daemon merged in, nothing is missing or wrong; so a key defaulted for
        one site only is enough, as it is for that site's VMs.
        """
        sections = launch.sections_of(template)
        if not sections:
            return
        drivers = [self, *(driver for driver in list(_drivers) if driver is not self)]
        for index, section in enumerate(sections, start=1):
            first: list[str] | None = None
            for driver in drivers:
                problems = launch.problems_of(launch.merge(section, driver.defaults()))
                if not problems:
                    break
                first = first if first is not None else problems
            else:
                label = _section_label(section, index, len(sections))
                raise ValidationError(f"{label}: {'; '.join(first or [])}")

    def _request(self, spec: DeploySpec) -> launch.LaunchRequest:
        text = spec.deployment
        if not text.strip():
            try:
                text = spec.deployment_file.read_text(encoding="utf-8")
            except OSError as exc:
                raise DriverError(f"cannot read deployment file {spec.deployment_file}: "
                                  f"{exc.strerror}") from None
        try:
            template = parse_xml(text)
        except TemplateError as exc:
            raise DriverError(f"deployment file of VM {spec.vm_id}: {exc.message}") from None
        chosen = launch.select_section(launch.sections_of(template), spec.host.name)
        if isinstance(chosen, str):
            raise DriverError(f"VM {spec.vm_id}: {chosen}")
        request = launch.build_request(launch.merge(chosen, self.defaults()))
        if isinstance(request, list):
            raise DriverError(f"VM {spec.vm_id}: EC2 section: {'; '.join(request)}")
        return request

    # -- deploy ----------------------------------------------------------------------

    async def deploy(self, spec: DeploySpec) -> str:
        request = self._request(spec)
        found = await self._find_token(spec.token)
        if found is not None:
            self.log.info("VM %d: deploy token already launched %s; not launching again",
                          spec.vm_id, found)
            return found
        held: list[str] = []  # our security groups this launch uses (not to be deleted)
        try:
            instance_id = await self._run(spec, request, held)
        finally:
            for group in held:
                self._group_inflight[group] -= 1
        self._launched[instance_id] = time.monotonic()
        self.log.info("VM %d: launched %s (%s, %s) at %s", spec.vm_id, instance_id,
                      request.instance_type, request.ami, self.site.label)
        return instance_id

    def _tags(self, spec: DeploySpec, request: launch.LaunchRequest) -> list[dict[str, str]]:
        tags = dict(request.tags)
        tags.setdefault("Name", f"one-{spec.vm_id}")
        tags.update({
            TAG_INSTALL: self.install_id,
            TAG_VM: str(spec.vm_id),
            TAG_TOKEN: spec.token[:256],
            TAG_HOST: str(spec.host.id),
            TAG_HOST_NAME: spec.host.name[:256],
            "ONE_ID": str(spec.vm_id),
        })
        if request.elastic_ip:
            tags[TAG_EIP] = request.elastic_ip
        return [{"Key": key, "Value": value} for key, value in tags.items()]

    def _run_params(self, spec: DeploySpec, request: launch.LaunchRequest,
                    group_ids: Sequence[str], group_names: Sequence[str]) -> dict[str, Any]:
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
        if group_ids:
            params["SecurityGroupIds"] = list(group_ids)
        if group_names:
            params["SecurityGroups"] = list(group_names)
        if request.subnet_id:
            params["SubnetId"] = request.subnet_id
        if request.user_data:
            params["UserData"] = request.user_data
        if request.private_ip:
            params["PrivateIpAddress"] = request.private_ip
        if request.ebs_optimized is not None:
            params["EbsOptimized"] = request.ebs_optimized
        placement = {key: value for key, value in (
            ("AvailabilityZone", request.availability_zone),
            ("GroupName", request.placement_group),
            ("Tenancy", request.tenancy)) if value}
        if placement:
            params["Placement"] = placement
        return params

    async def _run(self, spec: DeploySpec, request: launch.LaunchRequest,
                   held: list[str]) -> str:
        group_ids, group_names = await self._security_groups(request, held)
        params = self._run_params(spec, request, group_ids, group_names)

        async def recover() -> Response | None:
            # The answer was lost: did the launch happen? (moto ignores ClientToken.)
            try:
                found = await self._find_token(spec.token)
            except DriverError as exc:
                self.log.info("VM %d: look-up after a lost answer failed: %s", spec.vm_id, exc)
                return None
            return {"Instances": [{"InstanceId": found}]} if found else None

        expect = frozenset({"IdempotentInstanceTerminated", "InvalidGroup.NotFound"})
        for attempt in range(3):
            try:
                response = await self.site.call("RunInstances", params, resources=1,
                                                recover=recover, expect=expect)
            except AwsCodeError as exc:
                if exc.aws_code == "IdempotentInstanceTerminated" and attempt == 0:
                    # The token's instance was terminated (EC2 refuses to reuse it since
                    # 2025): launch anew under a derived, equally stable token.
                    params["ClientToken"] = client_token(f"{spec.token}/relaunch")
                    continue
                if exc.aws_code == "InvalidGroup.NotFound" and request.ports is not None \
                        and attempt < 2:
                    # Our group was deleted meanwhile (another daemon's sweep): recreate it.
                    self._groups.clear()
                    group_ids, group_names = await self._security_groups(request, held)
                    params = {**self._run_params(spec, request, group_ids, group_names),
                              "ClientToken": params["ClientToken"]}
                    continue
                raise DriverError(exc.message) from None
            instances = response.get("Instances") or []
            if not instances or not instances[0].get("InstanceId"):
                raise DriverError(f"EC2 RunInstances at {self.site.label}: "
                                  "the answer names no instance")
            return str(instances[0]["InstanceId"])
        raise DriverError(f"EC2 RunInstances at {self.site.label}: launch failed repeatedly")

    async def find(self, spec: DeploySpec) -> str | None:
        return await self._find_token(spec.token)

    async def _find_token(self, token: str) -> str | None:
        """The live instance launched with deploy token ``token``, by its tags."""
        reservations = await self.site.paginate("DescribeInstances", {
            "Filters": [
                {"Name": f"tag:{TAG_INSTALL}", "Values": [self.install_id]},
                {"Name": f"tag:{TAG_TOKEN}", "Values": [token[:256]]},
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

    # -- security groups ----------------------------------------------------------

    async def _security_groups(self, request: launch.LaunchRequest, held: list[str]
                               ) -> tuple[list[str], list[str]]:
        """Group ids and names for ``RunInstances``; our groups are added to ``held``."""
        ids = list(request.security_group_ids)
        names = list(request.security_groups)
        vpc = await self._vpc_of(request.subnet_id) if request.subnet_id else ""
        if request.ports is not None:
            group = await self._ensure_group(request.ports, vpc)
            self._group_inflight[group] += 1
            self._group_last_used[group] = time.monotonic()
            held.append(group)
            ids.append(group)
        if names and (ids or request.subnet_id):
            ids += await self._group_ids(names, vpc)
            names = []
        return ids, names

    async def _vpc_of(self, subnet: str) -> str:
        vpc = self._subnet_vpcs.get(subnet)
        if vpc is None:
            response = await self.site.call("DescribeSubnets", {"SubnetIds": [subnet]})
            subnets = response.get("Subnets") or []
            if not subnets:
                raise DriverError(f"SUBNETID {subnet} does not exist at {self.site.label}")
            vpc = self._subnet_vpcs[subnet] = str(subnets[0].get("VpcId") or "")
        return vpc

    async def _group_ids(self, names: Sequence[str], vpc: str) -> list[str]:
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

    def group_name(self, ports: launch.Ports) -> str:
        return f"cloudburst-{self.install_id}-tcp-{ports.text}"

    async def _ensure_group(self, ports: launch.Ports, vpc: str) -> str:
        key = (vpc, ports.text)
        cached = self._groups.get(key)
        if cached is not None:
            return cached
        lock = self._group_locks.setdefault(key, asyncio.Lock())
        async with lock:
            cached = self._groups.get(key)
            if cached is not None:
                return cached
            group = await self._find_or_create_group(ports, vpc)
            self._groups[key] = group
            return group

    async def _find_or_create_group(self, ports: launch.Ports, vpc: str) -> str:
        name = self.group_name(ports)
        filters = [{"Name": "group-name", "Values": [name]},
                   {"Name": f"tag:{TAG_INSTALL}", "Values": [self.install_id]}]
        if vpc:
            filters.append({"Name": "vpc-id", "Values": [vpc]})
        response = await self.site.call("DescribeSecurityGroups", {"Filters": filters})
        existing = response.get("SecurityGroups") or []
        if existing:
            group = existing[0]
            await self._authorize(str(group["GroupId"]), ports, group.get("IpPermissions") or [])
            return str(group["GroupId"])
        params: dict[str, Any] = {
            "GroupName": name,
            "Description": f"cloudburst {self.install_id}: TCP {ports.text} (AUTHORIZED_PORTS)",
            "TagSpecifications": [{"ResourceType": "security-group", "Tags": [
                {"Key": TAG_INSTALL, "Value": self.install_id},
                {"Key": TAG_MANAGED, "Value": "security-group"},
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
            await self._authorize(str(groups[0]["GroupId"]), ports,
                                  groups[0].get("IpPermissions") or [])
            return str(groups[0]["GroupId"])
        group_id = str(created["GroupId"])
        await self._authorize(group_id, ports, [])
        self.log.info("created security group %s (%s) for TCP %s", name, group_id, ports.text)
        return group_id

    async def _authorize(self, group_id: str, ports: launch.Ports,
                         existing: Sequence[Mapping[str, Any]]) -> None:
        cidr = self.config.ingress_cidr
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

    async def _collect_groups(self, listing: Listing) -> None:
        """Delete our security groups that no instance uses any more."""
        if not self.groups_due or listing.terminations != self.terminations:
            return
        groups = await self.site.paginate("DescribeSecurityGroups", {
            "Filters": [{"Name": f"tag:{TAG_INSTALL}", "Values": [self.install_id]},
                        {"Name": f"tag:{TAG_MANAGED}", "Values": ["security-group"]}],
            "MaxResults": 1000,
        }, items="SecurityGroups")
        in_use = {group for view in listing.instances.values() if view.state != "terminated"
                  for group in view.group_ids}
        due = False
        for group in groups:
            group_id = str(group.get("GroupId"))
            if group_id in in_use:
                continue
            if self._group_inflight[group_id] > 0 or \
                    self._group_last_used.get(group_id, 0.0) >= listing.started:
                due = True  # a deploy may be launching with it right now
                continue
            try:
                await self.site.call("DeleteSecurityGroup", {"GroupId": group_id}, expect=frozenset(
                    {"DependencyViolation", "InvalidGroup.NotFound", "InvalidGroup.InUse"}))
            except AwsCodeError as exc:
                if exc.aws_code != "InvalidGroup.NotFound":
                    self.log.info("security group %s still in use (%s); retrying later",
                                  group_id, exc.aws_code)
                    due = True
                    continue
            self.log.info("deleted security group %s (%s): no instance uses it",
                          group.get("GroupName"), group_id)
            for key in [key for key, value in self._groups.items() if value == group_id]:
                del self._groups[key]
            self._group_last_used.pop(group_id, None)
        self.groups_due = due

    # -- listing and poll ---------------------------------------------------------

    async def list_instances(self) -> Listing:
        """List the site's instances with our installation tag (concurrent calls share one)."""
        task = self._listing_task
        if task is None or task.done():
            task = asyncio.ensure_future(self._fetch_listing())
            # Every waiter may be gone (cancelled) when it fails: retrieve the error.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._listing_task = task
        return await asyncio.shield(task)

    async def _fetch_listing(self) -> Listing:
        started = time.monotonic()
        terminations = self.terminations
        reservations = await self.site.paginate("DescribeInstances", {
            "Filters": [{"Name": f"tag:{TAG_INSTALL}", "Values": [self.install_id]}],
            "MaxResults": 1000,
        })
        listing = Listing(started, time.monotonic(), terminations,
                          {view.id: view for view in views(reservations)})
        self.listing = listing
        cutoff = time.monotonic() - LAUNCH_VISIBILITY_GRACE
        self._launched = {key: when for key, when in self._launched.items() if when > cutoff}
        return listing

    async def poll(self, vms: Sequence[VmRef]) -> dict[int, PollResult]:
        if not vms:
            return {}
        listing = await self.list_instances()
        now = time.monotonic()
        results: dict[int, PollResult] = {}
        associations: list[tuple[VmRef, InstanceView]] = []
        for vm in vms:
            self._polled[vm.vm_id] = (vm.host.id, vm.deploy_id)
            instance = listing.instances.get(vm.deploy_id)
            if instance is None and now - self._launched.get(vm.deploy_id, -1e9) < \
                    LAUNCH_VISIBILITY_GRACE:
                results[vm.vm_id] = PollResult(PollState.UNKNOWN, {"AWS_STATE": "launching"})
            elif instance is not None and instance.state == "running" and instance.elastic_ip \
                    and not self._eip_in_place(instance):
                associations.append((vm, instance))
            else:
                results[vm.vm_id] = poll_result(instance)
        if associations:
            done = await asyncio.gather(*(self._associate(instance)
                                          for _, instance in associations))
            for (vm, instance), (address, error) in zip(associations, done, strict=True):
                results[vm.vm_id] = poll_result(instance, elastic_ip=address, error=error)
        return results

    # -- Elastic IPs ----------------------------------------------------------------

    def _eip_in_place(self, instance: InstanceView) -> bool:
        wanted = instance.elastic_ip
        address = self._addresses.get(wanted)
        public = address[1] if address is not None else wanted
        return bool(public) and instance.public_ip == public

    async def _address(self, wanted: str) -> tuple[str | None, str]:
        """``(allocation id or None, public address)`` of an ``ELASTICIP`` value."""
        cached = self._addresses.get(wanted)
        if cached is not None:
            return cached
        if wanted.startswith("eipalloc-"):
            params: dict[str, Any] = {"AllocationIds": [wanted]}
        else:
            params = {"PublicIps": [wanted]}
        try:
            response = await self.site.call("DescribeAddresses", params, expect=frozenset(
                {"InvalidAllocationID.NotFound", "InvalidAddress.NotFound"}))
        except AwsCodeError:
            raise DriverError(f"ELASTICIP {wanted} is not an address of this account at "
                              f"{self.site.label}") from None
        addresses = response.get("Addresses") or []
        if not addresses:
            raise DriverError(f"ELASTICIP {wanted} is not an address of this account at "
                              f"{self.site.label}")
        allocation = addresses[0].get("AllocationId")
        found = (str(allocation) if allocation else None, str(addresses[0].get("PublicIp", "")))
        self._addresses[wanted] = found
        return found

    async def _associate(self, instance: InstanceView) -> tuple[str | None, str | None]:
        """Associate the instance's ``ELASTICIP``; ``(address, error)``."""
        wanted = instance.elastic_ip
        failed_at = self._eip_failures.get(instance.id)
        if failed_at is not None and time.monotonic() - failed_at < EIP_RETRY_SECONDS:
            return None, f"ELASTICIP {wanted} not associated yet (retrying)"
        try:
            allocation, public = await self._address(wanted)
            params: dict[str, Any] = {"InstanceId": instance.id}
            if allocation:
                # Never take the address away from another instance (two VMs naming
                # the same ELASTICIP would otherwise steal it from each other).
                params.update(AllocationId=allocation, AllowReassociation=False)
            else:
                params["PublicIp"] = public
            response = await self.site.call("AssociateAddress", params)
        except DriverError as exc:
            self._eip_failures[instance.id] = time.monotonic()
            self.log.warning("instance %s: associating ELASTICIP %s failed: %s", instance.id,
                             wanted, exc.message)
            return None, f"ELASTICIP {wanted} not associated: {exc.message}"
        self._eip_failures.pop(instance.id, None)
        if response.get("AssociationId"):
            self._eip_associations[instance.id] = str(response["AssociationId"])
        self.log.info("instance %s: associated ELASTICIP %s", instance.id, public)
        return public, None

    async def _release_address(self, instance_id: str) -> None:
        """Disassociate the instance's Elastic IP, if it has one we know of (best effort).

        An instance never seen by a listing of this process is left alone: in a
        VPC, terminating it releases the association anyway.
        """
        association = self._eip_associations.pop(instance_id, None)
        public: str | None = None
        if association is None:
            known = self.listing.instances.get(instance_id) if self.listing else None
            if known is None or not known.elastic_ip:
                return
            try:
                response = await self.site.call("DescribeAddresses", {
                    "Filters": [{"Name": "instance-id", "Values": [instance_id]}]})
            except DriverError as exc:
                self.log.warning("instance %s: cannot look its Elastic IP up: %s", instance_id,
                                 exc.message)
                return
            for address in response.get("Addresses") or []:
                association = address.get("AssociationId")
                public = address.get("PublicIp")
                break
        if not association and not public:
            return
        params = {"AssociationId": association} if association else {"PublicIp": public}
        try:
            await self.site.call("DisassociateAddress", params, expect=frozenset(
                {"InvalidAssociationID.NotFound", "InvalidAddress.NotFound"}))
        except AwsCodeError:
            return
        except DriverError as exc:
            self.log.warning("instance %s: releasing its Elastic IP failed: %s", instance_id,
                             exc.message)
            return
        self.log.info("instance %s: Elastic IP released", instance_id)

    # -- stop, reboot ------------------------------------------------------------------

    async def _terminate(self, vm: VmRef) -> None:
        if not vm.deploy_id:
            return
        await self._release_address(vm.deploy_id)
        self.terminations += 1
        self.groups_due = True
        try:
            await self.site.call("TerminateInstances", {"InstanceIds": [vm.deploy_id]},
                                 resources=1)
        except InstanceNotFoundError:
            self.log.info("VM %d: instance %s is already gone", vm.vm_id, vm.deploy_id)
        self._launched.pop(vm.deploy_id, None)
        self._eip_failures.pop(vm.deploy_id, None)

    async def shutdown(self, vm: VmRef) -> None:
        await self._terminate(vm)

    async def cancel(self, vm: VmRef) -> None:
        await self._terminate(vm)

    async def reboot(self, vm: VmRef) -> None:
        await self.site.call("RebootInstances", {"InstanceIds": [vm.deploy_id]})

    async def reset(self, vm: VmRef) -> None:
        await self.site.call("RebootInstances", {"InstanceIds": [vm.deploy_id]})

    # -- orphans ---------------------------------------------------------------------------

    async def sweep(self, host: HostRef, live_vm_ids: frozenset[int],
                    grace_period: float) -> SweepReport | None:
        listing = self.listing
        if listing is None or time.monotonic() - listing.finished > \
                self.config.listing_reuse_seconds or (
                    self.groups_due and listing.terminations != self.terminations):
            # No recent poll, or instances were terminated since: list again.
            listing = await self.list_instances()
        now = time.monotonic()
        orphans: dict[str, float] = {}
        for instance in listing.instances.values():
            if not instance.live or instance.host_id != host.id:
                continue
            if not self._is_orphan(instance, listing, live_vm_ids):
                continue
            _, first, sweeps = self._orphans.get(instance.id, (host.id, now, 0))
            self._orphans[instance.id] = (host.id, first, sweeps + 1)
            orphans[instance.id] = now - first
        for instance_id in [key for key, (owner, _, _) in self._orphans.items()
                            if owner == host.id and key not in orphans]:
            del self._orphans[instance_id]
        for vm_id in [key for key, (owner, _) in self._polled.items()
                      if owner == host.id and key not in live_vm_ids]:
            del self._polled[vm_id]
        expired = [key for key, age in orphans.items()
                   if age >= grace_period and self._orphans[key][2] >= 2]
        terminated: list[str] = []
        for start in range(0, len(expired), TERMINATE_BATCH):
            batch = expired[start:start + TERMINATE_BATCH]
            self.terminations += 1
            self.groups_due = True
            try:
                await self.site.call("TerminateInstances", {"InstanceIds": batch},
                                     resources=len(batch))
            except DriverError as exc:
                self.log.warning("terminating orphans %s failed: %s", ", ".join(batch),
                                 exc.message)
                continue
            terminated += batch
            for instance_id in batch:
                self._orphans.pop(instance_id, None)
        try:
            await self._collect_groups(listing)
        except DriverError as exc:
            self.log.warning("cleaning security groups up failed: %s", exc.message)
        return SweepReport(orphans=orphans, terminated=terminated)

    def _is_orphan(self, instance: InstanceView, listing: Listing,
                   live_vm_ids: frozenset[int]) -> bool:
        if instance.vm_id is None or instance.vm_id not in live_vm_ids:
            return True
        # A second instance of a VM that runs as another one (e.g. a lost launch
        # retried by someone without our tags' help).
        polled = self._polled.get(instance.vm_id, (None, ""))[1]
        if not polled or polled == instance.id:
            return False
        current = listing.instances.get(polled)
        return current is not None and current.live

    async def close(self) -> None:
        _drivers.discard(self)
        await self.site.close()


def _section_label(section: Mapping[str, str], index: int, count: int) -> str:
    site = launch.site_of(section)
    if site is not None:
        return f"EC2 section for CLOUD={site}"
    return "EC2 section" if count == 1 else f"EC2 section {index}"

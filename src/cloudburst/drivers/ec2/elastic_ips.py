"""``ELASTICIP``: associating a VM's Elastic IP once it runs, and releasing it.

EC2 refuses an association before the instance is running, so the deploy
only tags the instance with the wanted address (``cloudburst:elastic-ip``)
and the first poll that sees it running associates it. The association
never takes the address from another instance (``AllowReassociation=false``:
two VMs naming the same ``ELASTICIP`` would otherwise steal it from each
other). A failure shows as the VM's monitoring error and is tried again
:data:`EIP_RETRY_SECONDS` later. Before an instance is terminated, a known
association is released.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.errors import AwsCodeError
from cloudburst.drivers.ec2.instances import InstanceView
from cloudburst.errors import DriverError

#: Seconds before a failed Elastic IP association is tried again.
EIP_RETRY_SECONDS: Final = 60.0

_ADDRESS_MISSING: Final = frozenset({"InvalidAllocationID.NotFound", "InvalidAddress.NotFound"})
_ASSOCIATION_MISSING: Final = frozenset(
    {"InvalidAssociationID.NotFound", "InvalidAddress.NotFound"})


class ElasticIps:
    """The Elastic IPs of one site's instances."""

    def __init__(self, site: Site, log: logging.Logger) -> None:
        self.site = site
        self.log = log
        #: ``ELASTICIP`` value -> (allocation id or None, public address)
        self._addresses: dict[str, tuple[str | None, str]] = {}
        #: instance id -> monotonic time its association last failed
        self._failures: dict[str, float] = {}
        #: instance id -> association id (associations made by this process)
        self._associations: dict[str, str] = {}

    def pending(self, instance: InstanceView) -> bool:
        """Whether the instance runs and lacks the ``ELASTICIP`` it asked for."""
        return instance.state == "running" and bool(instance.elastic_ip) \
            and not self._in_place(instance)

    def _in_place(self, instance: InstanceView) -> bool:
        wanted = instance.elastic_ip
        address = self._addresses.get(wanted)
        public = address[1] if address is not None else wanted
        return bool(public) and instance.public_ip == public

    async def _address(self, wanted: str) -> tuple[str | None, str]:
        """``(allocation id or None, public address)`` of an ``ELASTICIP`` value.

        Raises:
            DriverError: the account has no such address at this site.
        """
        cached = self._addresses.get(wanted)
        if cached is not None:
            return cached
        if wanted.startswith("eipalloc-"):
            params: dict[str, Any] = {"AllocationIds": [wanted]}
        else:
            params = {"PublicIps": [wanted]}
        missing = f"ELASTICIP {wanted} is not an address of this account at {self.site.label}"
        try:
            response = await self.site.call("DescribeAddresses", params, expect=_ADDRESS_MISSING)
        except AwsCodeError:
            raise DriverError(missing) from None
        addresses = response.get("Addresses") or []
        if not addresses:
            raise DriverError(missing)
        allocation = addresses[0].get("AllocationId")
        found = (str(allocation) if allocation else None, str(addresses[0].get("PublicIp", "")))
        self._addresses[wanted] = found
        return found

    async def associate(self, instance: InstanceView) -> tuple[str | None, str | None]:
        """Associate the instance's ``ELASTICIP``: ``(public address, None)`` or
        ``(None, error for the VM's monitoring)``. Never raises a driver error."""
        wanted = instance.elastic_ip
        failed_at = self._failures.get(instance.id)
        if failed_at is not None and time.monotonic() - failed_at < EIP_RETRY_SECONDS:
            return None, f"ELASTICIP {wanted} not associated yet (retrying)"
        try:
            allocation, public = await self._address(wanted)
            params: dict[str, Any] = {"InstanceId": instance.id}
            if allocation:
                params.update(AllocationId=allocation, AllowReassociation=False)
            else:
                params["PublicIp"] = public
            response = await self.site.call("AssociateAddress", params)
        except DriverError as exc:
            self._failures[instance.id] = time.monotonic()
            self.log.warning("instance %s: associating ELASTICIP %s failed: %s", instance.id,
                             wanted, exc.message)
            return None, f"ELASTICIP {wanted} not associated: {exc.message}"
        self._failures.pop(instance.id, None)
        if response.get("AssociationId"):
            self._associations[instance.id] = str(response["AssociationId"])
        self.log.info("instance %s: associated ELASTICIP %s", instance.id, public)
        return public, None

    async def release(self, instance_id: str, known: InstanceView | None) -> None:
        """Disassociate the instance's Elastic IP, if it has one we know of (best effort).

        ``known`` is the instance as the latest listing saw it; an instance
        never listed by this process is left alone: in a VPC, terminating it
        releases the association anyway.
        """
        association = self._associations.pop(instance_id, None)
        public: str | None = None
        if association is None:
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
            await self.site.call("DisassociateAddress", params, expect=_ASSOCIATION_MISSING)
        except AwsCodeError:
            return
        except DriverError as exc:
            self.log.warning("instance %s: releasing its Elastic IP failed: %s", instance_id,
                             exc.message)
            return
        self.log.info("instance %s: Elastic IP released", instance_id)

    def forget(self, instance_id: str) -> None:
        """The instance is terminated: drop its failed-association record."""
        self._failures.pop(instance_id, None)

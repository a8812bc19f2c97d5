"""One instance's power and size: stop, start, wait until stopped, change the type.

EC2's ``StopInstances`` returns while the instance is still ``stopping`` (from
seconds to a few minutes), and an instance type can only be changed, or the
instance started again, once it is ``stopped``. :func:`wait_stopped` asks
``DescribeInstances`` for the one instance, first after a second, then at
growing intervals (at most 15 s apart, :data:`STOP_WAIT` in all): one call
when EC2 (or moto, which stops at once) has already stopped it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from cloudburst.drivers.ec2.client import Site
from cloudburst.drivers.ec2.instances import InstanceView, views
from cloudburst.errors import DriverError, InstanceNotFoundError, TransientDriverError

#: Seconds a stop may take before :func:`wait_stopped` gives up.
STOP_WAIT: Final = 600.0
_FIRST_LOOK: Final = 1.0
_LONGEST_LOOK: Final = 15.0
#: States from which an instance is on its way to ``stopped`` (right after
#: ``StopInstances`` a listing may still say ``running``).
_STOPPING: Final = frozenset({"stopping"})
_AFTER_STOP: Final = frozenset({"stopping", "running", "pending"})


async def stop(site: Site, instance_id: str, *, force: bool) -> None:
    """``StopInstances`` (``Force``: no clean guest shutdown); stopped already is success."""
    await site.call("StopInstances", {"InstanceIds": [instance_id], "Force": force},
                    resources=1)


async def start(site: Site, instance_id: str) -> None:
    """``StartInstances``; the instance keeps its id (its public address may change)."""
    await site.call("StartInstances", {"InstanceIds": [instance_id]}, resources=1)


async def describe(site: Site, instance_id: str) -> InstanceView:
    """The instance as ``DescribeInstances`` shows it now.

    Raises:
        InstanceNotFoundError: EC2 does not know it.
    """
    reply = await site.call("DescribeInstances", {"InstanceIds": [instance_id]})
    found = [view for view in views(reply.get("Reservations") or [])
             if view.id == instance_id]
    if not found:
        raise InstanceNotFoundError(f"instance {instance_id} is not known at {site.label}")
    return found[0]


async def wait_stopped(site: Site, instance_id: str, *, just_stopped: bool,
                       timeout: float = STOP_WAIT) -> InstanceView:
    """The instance once EC2 reports it ``stopped``.

    ``just_stopped``: a ``StopInstances`` was just sent, so a listing that
    still says ``running`` is waited out too.

    Raises:
        DriverError: the instance is terminated or gone, or runs (when not
            ``just_stopped``): it cannot be brought to ``stopped``.
        TransientDriverError: still stopping after ``timeout`` seconds.
    """
    waiting = _AFTER_STOP if just_stopped else _STOPPING
    deadline = time.monotonic() + timeout
    delay = _FIRST_LOOK
    while True:
        view = await describe(site, instance_id)
        if view.state == "stopped":
            return view
        if view.state not in waiting:
            raise DriverError(f"instance {instance_id} is {view.state or 'in no state'}, "
                              "not stopped")
        if time.monotonic() + delay > deadline:
            raise TransientDriverError(f"instance {instance_id} is still {view.state} after "
                                       f"{timeout:g} s")
        await asyncio.sleep(delay)
        delay = min(delay * 2, _LONGEST_LOOK)


async def change_type(site: Site, instance_id: str, instance_type: str) -> None:
    """``ModifyInstanceAttribute InstanceType`` (the instance must be stopped)."""
    await site.call("ModifyInstanceAttribute",
                    {"InstanceId": instance_id, "InstanceType": {"Value": instance_type}})

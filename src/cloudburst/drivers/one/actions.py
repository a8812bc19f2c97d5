"""The optional lifecycle actions on a partner VM (:mod:`cloudburst.drivers.base` seam).

Each sends the partner the ``one.vm.*`` call that does the same there and
waits (on the shared pool listings) until the partner VM is in the state
that action leaves, within ``BOOT_TIMEOUT``:

* ``poweroff`` -> ``poweroff``/``poweroff-hard``, until POWEROFF (already off,
  or stopped/undeployed, counts as done);
* ``poweron`` -> ``resume`` of a partner VM that is powered off, suspended,
  stopped or undeployed, until RUNNING; a partner VM that is gone (deleted
  over there) is replaced by a new deploy, so the VM is never trapped;
* ``save`` -> ``suspend``, until SUSPENDED (the partner keeps the guest's
  memory; the checkpoint path is not used); ``restore`` -> ``resume``;
* ``resize`` -> ``one.vm.resize`` (``CPU``, ``VCPU``, ``MEMORY``; a partner
  whose hypervisor cannot hot-plug refuses it while the VM runs);
* ``reconfigure`` -> ``one.vm.updateconf`` merging the new ``CONTEXT`` into the
  partner VM's (its other sections are the partner's), until it runs again (the
  partner passes it through HOTPLUG);
* ``snapshot_create``/``snapshot_revert``/``snapshot_delete`` ->
  ``one.vm.snapshot*``, the partner's snapshot id being the provider name;
  each waits until the partner VM runs again (the partner does them in the
  background).

Migration is not offered: the partner is one host of ours, and moving a VM
between the partner's own hosts is the partner's business. Disk and NIC
hot-plug would need the partner's images and networks.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Final

from cloudburst.drivers.base import ResizeSpec
from cloudburst.drivers.one.client import PartnerClient, WrongStateError
from cloudburst.drivers.one.config import PartnerConfig
from cloudburst.drivers.one.documents import RemoteVm
from cloudburst.drivers.one.partner_vms import is_running, remote_label
from cloudburst.drivers.one.pool import PoolSnapshots
from cloudburst.drivers.one.waits import until_state
from cloudburst.errors import DriverError, InstanceNotFoundError
from cloudburst.model.states import VmState
from cloudburst.template import Template

#: Partner states a ``resume`` brings back to RUNNING.
RESUMABLE: Final = frozenset({VmState.POWEROFF, VmState.SUSPENDED, VmState.STOPPED,
                              VmState.UNDEPLOYED})
#: Partner states in which the guest is off (a poweroff has nothing left to do).
_OFF: Final = frozenset({VmState.POWEROFF, VmState.STOPPED, VmState.UNDEPLOYED})
_UNDEPLOYED: Final = frozenset({VmState.UNDEPLOYED})


class PartnerActions:
    """Lifecycle actions on partner VMs of one partner (see the module docstring)."""

    def __init__(self, client: PartnerClient) -> None:
        self._client = client

    async def _send(self, config: PartnerConfig, remote: int, action: str) -> bool:
        """``one.vm.action``; False when the partner refused it in the VM's state."""
        try:
            await self._client.vm_action(config, action, remote)
        except InstanceNotFoundError:
            raise InstanceNotFoundError(f"partner VM {remote} no longer exists") from None
        except WrongStateError:
            return False
        return True

    async def poweroff(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                       hard: bool, leaving: bool = False) -> None:
        """``poweroff`` the partner VM, or ``undeploy`` it when ``leaving`` (the partner
        frees its host too; ``resume`` brings it back), and wait until it is off."""
        action = "undeploy" if leaving else "poweroff"
        done = _UNDEPLOYED if leaving else _OFF
        if not await self._send(config, remote, f"{action}-hard" if hard else action):
            current = (await pool.get(time.monotonic())).find(remote)
            if current is not None and current.state in done:
                return
        await until_state(pool, config, remote, lambda vm: vm.state in done,
                          "undeployed" if leaving else "powered off", config.boot_timeout)

    async def resume(self, config: PartnerConfig, pool: PoolSnapshots, remote: int) -> RemoteVm:
        """``resume`` the partner VM (nothing to do when it runs) and wait until it runs.

        Raises:
            InstanceNotFoundError: the partner no longer has it.
        """
        if not await self._send(config, remote, "resume"):
            current = (await pool.get(time.monotonic())).find(remote)
            if current is None or not is_running(current):
                await self._refused(config, pool, remote, "resume")
        return await until_state(pool, config, remote, is_running, "running",
                                 config.boot_timeout)

    async def suspend(self, config: PartnerConfig, pool: PoolSnapshots, remote: int) -> None:
        if not await self._send(config, remote, "suspend"):
            await self._refused(config, pool, remote, "suspend")
        await until_state(pool, config, remote, lambda vm: vm.state == VmState.SUSPENDED,
                          "suspended", config.boot_timeout)

    async def _refused(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                       action: str) -> None:
        """Raise the refusal of ``action``, naming the partner VM's state
        (:class:`InstanceNotFoundError` when it is gone: DONE VMs refuse every action)."""
        current = (await pool.get(time.monotonic())).find(remote)
        if current is None:
            raise InstanceNotFoundError(f"partner VM {remote} no longer exists")
        raise DriverError(f"{config.label} refused to {action} partner VM {remote} "
                          f"in state {remote_label(current)}")

    async def resize(self, config: PartnerConfig, remote: int, spec: ResizeSpec) -> None:
        template = f"CPU = {spec.cpu:g}\nVCPU = {spec.vcpu}\nMEMORY = {spec.memory_mb}\n"
        await self._client.call(config, "one.vm.resize", remote, template, False)

    async def update_context(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                             context: Mapping[str, str]) -> None:
        """Merge ``context`` into the partner VM's CONTEXT (``one.vm.updateconf`` type 1,
        which leaves its other sections alone) and wait until it runs again."""
        text = Template([("CONTEXT", dict(context))]).to_text()
        await self._client.call(config, "one.vm.updateconf", remote, text, 1)
        await self._settled(config, pool, remote)

    async def snapshot_create(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                              name: str) -> str:
        value = await self._client.call(config, "one.vm.snapshotcreate", remote, name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise DriverError(f"{config.label} answered the snapshot without an id")
        await self._settled(config, pool, remote)
        return str(value)

    async def snapshot_revert(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                              name: str) -> None:
        await self._client.call(config, "one.vm.snapshotrevert", remote, _snapshot_id(name))
        await self._settled(config, pool, remote)

    async def snapshot_delete(self, config: PartnerConfig, pool: PoolSnapshots, remote: int,
                              name: str) -> None:
        with contextlib.suppress(InstanceNotFoundError):  # already gone
            await self._client.call(config, "one.vm.snapshotdelete", remote, _snapshot_id(name))
            await self._settled(config, pool, remote)

    @staticmethod
    async def _settled(config: PartnerConfig, pool: PoolSnapshots, remote: int) -> None:
        """Wait until the partner has done a snapshot operation (the VM runs again)."""
        await until_state(pool, config, remote, is_running, "running", config.boot_timeout)


def _snapshot_id(name: str) -> int:
    """The partner's snapshot id a ``snapshot_create`` returned."""
    try:
        return int(name)
    except ValueError:
        raise DriverError(f"{name!r} is not a partner snapshot id") from None

"""Waiting for a partner VM to run, to be gone, or to reach a state an action asked for.

Both waits check the partner's pool through shared listings
(:class:`~.pool.PoolSnapshots`), each check on a listing requested after the
previous one, so that every VM waiting at the same time shares one call per
round. They pause first, 0.2 s growing to ``POLL_INTERVAL``: the VMs created
or stopped meanwhile then share the listing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Final

from cloudburst.drivers.one.client import PartnerClient, WrongStateError
from cloudburst.drivers.one.config import PartnerConfig
from cloudburst.drivers.one.documents import RemoteVm
from cloudburst.drivers.one.partner_vms import (
    is_failed,
    is_leaving,
    is_running,
    is_waiting,
    remote_label,
)
from cloudburst.drivers.one.pool import PoolSnapshots
from cloudburst.errors import (
    CapacityError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
)
from cloudburst.model.states import VmState

#: First pause between two checks while waiting.
_FIRST_PAUSE: Final = 0.2
#: Each pause is this much longer than the one before (up to ``POLL_INTERVAL``).
_PAUSE_GROWTH: Final = 1.5
#: Seconds between two terminate requests for a VM that is not leaving yet.
_REISSUE_AFTER: Final = 5.0
#: A listing that starts after this moment (monotonic seconds) is newer.
_JUST_AFTER: Final = 1e-6


class _Pauses:
    """The growing pauses of one wait."""

    def __init__(self, longest: float) -> None:
        self._next = _FIRST_PAUSE
        self._longest = longest

    async def sleep(self) -> None:
        await asyncio.sleep(self._next)
        self._next = min(self._next * _PAUSE_GROWTH, self._longest)


async def discard(client: PartnerClient, config: PartnerConfig, remote: int,
                  log: logging.Logger) -> None:
    """Best-effort ``terminate-hard`` of a partner VM we give up on."""
    try:
        await client.vm_action(config, "terminate-hard", remote)
    except InstanceNotFoundError:
        pass
    except DriverError as exc:
        log.warning("could not terminate partner VM %d: %s", remote, exc)


async def until_running(client: PartnerClient, config: PartnerConfig, pool: PoolSnapshots,
                        remote: int, limit: float, log: logging.Logger) -> None:
    """Wait up to ``limit`` seconds until partner VM ``remote`` runs.

    A partner that cannot be listed meanwhile is waited for (the VM exists).

    Raises:
        CapacityError: the partner's scheduler did not start the VM in time;
            it was terminated there, so our scheduler can place it elsewhere.
        DriverError: the VM failed (it was terminated), ended, or is in
            another state at the end; the partner's last listing error.
    """
    deadline = time.monotonic() + limit
    seen_after = time.monotonic()
    pauses = _Pauses(config.poll_interval)
    unreachable: DriverError | None = None
    vm: RemoteVm | None = None
    while True:
        await pauses.sleep()
        try:
            snapshot = await pool.get(seen_after)
        except TransientDriverError as exc:
            unreachable = exc
        else:
            unreachable = None
            seen_after = snapshot.started + _JUST_AFTER
            vm = snapshot.find(remote)
            if vm is None:
                raise DriverError(f"partner VM {remote} ended before it ran")
            if is_running(vm):
                return
            if is_failed(vm):
                await discard(client, config, remote, log)
                reason = vm.error or f"state {remote_label(vm)}"
                raise DriverError(f"partner VM {remote} failed: {reason}; it was terminated")
        if time.monotonic() >= deadline:
            break
    if unreachable is not None or vm is None:
        raise unreachable or DriverError(f"partner VM {remote} cannot be observed")
    if is_waiting(vm):
        await discard(client, config, remote, log)
        why = f": {vm.sched_message}" if vm.sched_message else ""
        raise CapacityError(f"{config.label} did not start VM {remote} within {limit:g} s "
                            f"({remote_label(vm)}{why}); it was terminated there")
    raise DriverError(f"partner VM {remote} is still {remote_label(vm)} after {limit:g} s")


async def until_gone(client: PartnerClient, config: PartnerConfig, pool: PoolSnapshots,
                     remote: int, action: str) -> None:
    """Send ``action`` (``terminate``, ``terminate-hard``) until partner VM ``remote``
    is DONE or gone; a VM that is leaving is not asked again.

    Raises:
        DriverError: the VM is still there ``SHUTDOWN_TIMEOUT`` seconds later,
            or the partner failed.
    """
    deadline = time.monotonic() + config.shutdown_timeout
    pauses = _Pauses(config.poll_interval)
    issued = float("-inf")
    seen_after = time.monotonic()
    while True:
        if time.monotonic() - issued >= _REISSUE_AFTER:
            try:
                await client.vm_action(config, action, remote)
            except InstanceNotFoundError:
                return
            except WrongStateError:
                pass  # on its way out already, or DONE
            issued = seen_after = time.monotonic()
        await pauses.sleep()
        snapshot = await pool.get(seen_after)
        seen_after = snapshot.started + _JUST_AFTER
        current = snapshot.find(remote)
        if current is None or current.state == VmState.DONE:
            return
        if is_leaving(current):
            issued = time.monotonic()  # no need to ask again while it leaves
        if time.monotonic() >= deadline:
            raise DriverError(f"partner VM {remote} is still {remote_label(current)} "
                              f"{config.shutdown_timeout:g} s after {action}")


async def until_state(pool: PoolSnapshots, config: PartnerConfig, remote: int,
                      wanted: Callable[[RemoteVm], bool], what: str,
                      limit: float) -> RemoteVm:
    """Wait up to ``limit`` seconds until partner VM ``remote`` is ``wanted``; never
    discards it (it holds the guest's state: powered off, suspended, ...).

    Raises:
        InstanceNotFoundError: the partner no longer lists the VM.
        DriverError: it failed, or is not ``what`` in time (its state is named).
    """
    deadline = time.monotonic() + limit
    seen_after = time.monotonic()
    pauses = _Pauses(config.poll_interval)
    while True:
        await pauses.sleep()
        snapshot = await pool.get(seen_after)
        seen_after = snapshot.started + _JUST_AFTER
        vm = snapshot.find(remote)
        if vm is None or vm.state == VmState.DONE:
            raise InstanceNotFoundError(f"partner VM {remote} no longer exists")
        if wanted(vm):
            return vm
        if is_failed(vm):
            reason = vm.error or f"state {remote_label(vm)}"
            raise DriverError(f"partner VM {remote} failed: {reason}")
        if time.monotonic() >= deadline:
            raise DriverError(f"partner VM {remote} is still {remote_label(vm)}, not {what}, "
                              f"after {limit:g} s")

"""Partner VMs as our VMs see them: deploy ids, what their states mean, what a poll shows.

A partner VM's deploy id is ``one-<its id at the partner>``. Its state maps
to our poll (``onevm`` letters in brackets):

* ACTIVE/RUNNING -> :attr:`PollState.ACTIVE` (``a``);
* SUSPENDED -> :attr:`PollState.PAUSED` (``p``);
* DONE, missing, POWEROFF, STOPPED, UNDEPLOYED -> :attr:`PollState.GONE` (``d``:
  our VM shows POWEROFF, with ``PARTNER_STATE`` ``poff``, ``stop``, ``unde``
  or ``gone``);
* FAILED and the ``*_FAILURE`` LCM states -> :attr:`PollState.ERROR` (``e``);
* anything else (pending, booting, shutting down) -> :attr:`PollState.UNKNOWN`
  (``-``: no change).
"""

from __future__ import annotations

from typing import Final

from cloudburst.drivers.base import PollState
from cloudburst.drivers.one.documents import RemoteVm
from cloudburst.errors import DriverError, one_line
from cloudburst.model.states import LcmState, VmState, vm_short_state

#: The ``PUBLIC_CLOUD`` TYPE, host ``HYPERVISOR`` and deploy-id prefix of partner clouds.
CLOUD_TYPE: Final = "one"

#: OpenNebula LCM states that are failures (oned 5.x-7.x numbering).
_FAILURE_LCM: Final = frozenset({36, 37, 38, 39, 40, 41, 42, 44, 46, 47, 48, 49, 50, 59})
#: LCM states of a VM on its way out (no need to repeat the terminate).
_LEAVING_LCM: Final = frozenset({10, 11, 12, 15, 18, 23, 29, 30})
_GONE_STATES: Final = frozenset({VmState.DONE, VmState.POWEROFF, VmState.STOPPED,
                                 VmState.UNDEPLOYED})
_FAILED_STATES: Final = frozenset({7, VmState.CLONING_FAILURE})
_WAITING_STATES: Final = frozenset({VmState.INIT, VmState.PENDING, VmState.HOLD,
                                    VmState.CLONING})
#: Monitoring keys of the partner VM copied into our poll when numeric.
_NUMERIC_MONITORING: Final = ("CPU", "MEMORY", "NETTX", "NETRX")


def remote_id(deploy_id: str) -> int:
    """The partner VM id of deploy id ``one-<id>`` (or a bare number).

    Raises:
        DriverError: not a partner deploy id.
    """
    text = deploy_id.strip()
    if text.startswith(f"{CLOUD_TYPE}-"):
        text = text[len(CLOUD_TYPE) + 1:]
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise DriverError(f"{deploy_id!r} is not a partner-cloud deploy id (one-<id>)")
    return value


def deploy_id_of(remote: int) -> str:
    """Our deploy id for partner VM ``remote``."""
    return f"{CLOUD_TYPE}-{remote}"


def remote_label(vm: RemoteVm) -> str:
    """The partner VM's state as ``onevm list`` shows it (``runn``, ``pend``, ...)."""
    try:
        return vm_short_state(VmState(vm.state), LcmState(vm.lcm_state))
    except ValueError:
        return f"{vm.state}/{vm.lcm_state}"


def poll_state(vm: RemoteVm | None) -> PollState:
    """What a partner VM's state means for ours (see the module docstring)."""
    if vm is None:
        return PollState.GONE
    if vm.state == VmState.ACTIVE:
        if vm.lcm_state == LcmState.RUNNING:
            return PollState.ACTIVE
        return PollState.ERROR if vm.lcm_state in _FAILURE_LCM else PollState.UNKNOWN
    if vm.state == VmState.SUSPENDED:
        return PollState.PAUSED
    if vm.state in _GONE_STATES:
        return PollState.GONE
    if vm.state in _FAILED_STATES:
        return PollState.ERROR
    return PollState.UNKNOWN


def is_running(vm: RemoteVm) -> bool:
    return vm.state == VmState.ACTIVE and vm.lcm_state == LcmState.RUNNING


def is_failed(vm: RemoteVm) -> bool:
    """FAILED, a cloning failure, or an ACTIVE VM in a ``*_FAILURE`` LCM state."""
    return vm.state in _FAILED_STATES or (vm.state == VmState.ACTIVE
                                          and vm.lcm_state in _FAILURE_LCM)


def is_leaving(vm: RemoteVm) -> bool:
    """Whether the VM is on its way out (shutting down, cleaning up, ...)."""
    return vm.state == VmState.ACTIVE and vm.lcm_state in _LEAVING_LCM


def is_waiting(vm: RemoteVm) -> bool:
    """Whether the VM waits for the partner's scheduler (or for its disks)."""
    return vm.state in _WAITING_STATES


def poll_info(vm: RemoteVm | None, remote: int) -> dict[str, str]:
    """What our poll reports of partner VM ``remote`` (``vm``, ``None`` when the
    partner no longer lists it: ``PARTNER_STATE=gone``): where it is, its address
    and usage."""
    if vm is None:
        return {"PARTNER_VM_ID": str(remote), "PARTNER_STATE": "gone"}
    info = {"PARTNER_VM_ID": str(vm.id), "PARTNER_STATE": remote_label(vm)}
    if vm.ip:
        info["IP"] = vm.ip
    for key in _NUMERIC_MONITORING:
        value = vm.monitoring.get(key, "")
        try:
            float(value)
        except ValueError:
            continue
        info[key] = value
    if vm.error and is_failed(vm):
        info["PARTNER_ERROR"] = one_line(vm.error, 200)
    return info

"""Every built-in VM driver declares exactly the optional actions it implements."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path

import pytest

from cloudburst.drivers.base import (
    OPTIONAL_ACTIONS,
    DriverContext,
    DriverOptions,
    HostRef,
    VmDriver,
    VmRef,
    implemented_actions,
)
from cloudburst.drivers.registry import VM_DRIVERS
from cloudburst.drivers.script import ScriptVmDriver
from cloudburst.errors import UnsupportedActionError


def driver_classes() -> dict[str, type[VmDriver]]:
    classes: dict[str, type[VmDriver]] = {}
    for target in set(VM_DRIVERS.values()):
        module, _, name = target.partition(":")
        classes[name] = getattr(importlib.import_module(module), name)
    return classes


# The script driver's capabilities follow its scripts: the next test checks them.
@pytest.mark.parametrize("name", sorted(name for name, cls in driver_classes().items()
                                        if cls is not ScriptVmDriver))
def test_declared_capabilities_are_the_overridden_methods(name: str) -> None:
    driver_class = driver_classes()[name]
    assert driver_class.capabilities == implemented_actions(driver_class)


def test_script_driver_declares_what_its_scripts_allow(tmp_path: Path) -> None:
    home = tmp_path / "home"
    context = DriverContext(
        name="vmm_sh", executable="one_vmm_sh", arguments=("prov",), options=DriverOptions(),
        etc_dir=home / "etc", remotes_dir=home / "remotes", var_dir=home / "var")
    driver = ScriptVmDriver(context)
    assert driver.capabilities == frozenset()
    directory = home / "remotes/vmm/prov"
    directory.mkdir(parents=True)
    for script in ("deploy", "shutdown", "cancel", "save", "restore", "migrate", "resize",
                   "attach_disk", "detach_disk", "attach_nic", "detach_nic",
                   "snapshot_create", "snapshot_revert", "snapshot_delete"):
        (directory / script).write_text("#!/bin/sh\n")
        (directory / script).chmod(0o755)
    assert driver.capabilities == implemented_actions(ScriptVmDriver) == frozenset(
        OPTIONAL_ACTIONS)


def test_an_undeclared_action_is_refused_with_one_line_naming_it_and_the_driver(
        tmp_path: Path) -> None:
    class Minimal(VmDriver):
        async def deploy(self, spec: object) -> str:  # type: ignore[override]
            return "x"

        async def shutdown(self, vm: VmRef) -> None: ...
        async def cancel(self, vm: VmRef) -> None: ...
        async def reboot(self, vm: VmRef) -> None: ...
        async def reset(self, vm: VmRef) -> None: ...
        async def poll(self, vms: object) -> dict[int, object]:  # type: ignore[override]
            return {}

    context = DriverContext(
        name="vmm_min", executable="x", arguments=(), options=DriverOptions(),
        etc_dir=tmp_path, remotes_dir=tmp_path, var_dir=tmp_path)
    driver = Minimal(context)
    assert implemented_actions(Minimal) == frozenset() == driver.capabilities
    vm = VmRef(1, "d-1", HostRef(0, "h"))
    with pytest.raises(UnsupportedActionError) as caught:
        asyncio.run(driver.migrate(vm, vm.host, live=True))
    assert str(caught.value) == 'Action "migrate_live" is not supported by driver vmm_min'
    with pytest.raises(UnsupportedActionError, match='"poweroff" is not supported'):
        asyncio.run(driver.poweroff(vm, hard=True, leaving=False))

"""The dummy drivers: fixed answers and failure injection."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from cloudburst.drivers.base import (
    CORE_ACTIONS,
    OPTIONAL_ACTIONS,
    DeploySpec,
    DeviceSpec,
    DriverContext,
    DriverOptions,
    HostRef,
    PollResult,
    PollState,
    ResizeSpec,
    VmRef,
)
from cloudburst.drivers.dummy import DummyInformationDriver, DummyVmDriver, parse_outcome
from cloudburst.errors import (
    CapacityError,
    DriverError,
    TransientDriverError,
)
from cloudburst.template import Template

#: Optional driver methods; each reads its own injected outcome.
OPTIONAL = sorted({method for methods in OPTIONAL_ACTIONS.values() for method in methods})
VM_ACTIONS = ["deploy", "shutdown", "cancel", "reboot", "reset", "poll", *OPTIONAL]


def make_context(tmp_path: Path) -> DriverContext:
    return DriverContext(
        name="dummy",
        executable="one_vmm_dummy",
        arguments=(),
        options=DriverOptions(),
        etc_dir=tmp_path / "etc",
        remotes_dir=tmp_path / "remotes",
        var_dir=tmp_path / "var",
    )


def host(**attributes: str) -> HostRef:
    return HostRef(id=7, name="dummy-host", attributes=attributes)


def spec(vm_id: int = 3, token: str = "tok-3", on: HostRef | None = None) -> DeploySpec:
    return DeploySpec(
        vm_id=vm_id,
        host=on or host(),
        deployment_file=Path("/nonexistent/deployment.3"),
        template=Template(),
        token=token,
    )


def vm_action(driver: DummyVmDriver, action: str, on: HostRef) -> Callable[[], Awaitable[object]]:
    """A zero-argument coroutine function running ``action`` against ``on``."""
    vm = VmRef(vm_id=3, deploy_id="dummy-3-abc", host=on)
    if action == "deploy":
        return lambda: driver.deploy(spec(on=on))
    if action == "poll":
        return lambda: driver.poll([vm])
    if action in CORE_ACTIONS:
        method: Callable[[VmRef], Awaitable[None]] = getattr(driver, action)
        return lambda: method(vm)
    return optional_call(driver, action, vm)


def optional_call(driver: DummyVmDriver, method: str, vm: VmRef
                  ) -> Callable[[], Awaitable[object]]:
    """A zero-argument coroutine function calling optional ``method`` with sample arguments."""
    device = DeviceSpec(1, "vdb", {"SOURCE": "/img"})
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "poweroff": lambda: driver.poweroff(vm, hard=False, leaving=False),
        "poweron": lambda: driver.poweron(vm, spec(on=vm.host)),
        "save": lambda: driver.save(vm, Path("/ckpt"), leaving=False),
        "restore": lambda: driver.restore(vm, Path("/ckpt")),
        "migrate": lambda: driver.migrate(vm, vm.host, live=True),
        "resize": lambda: driver.resize(vm, ResizeSpec(1.0, 1, 512)),
        "snapshot_create": lambda: driver.snapshot_create(vm, 0, "s"),
        "snapshot_revert": lambda: driver.snapshot_revert(vm, "s"),
        "snapshot_delete": lambda: driver.snapshot_delete(vm, "s"),
        "attach_disk": lambda: driver.attach_disk(vm, device),
        "detach_disk": lambda: driver.detach_disk(vm, device),
        "attach_nic": lambda: driver.attach_nic(vm, device),
        "detach_nic": lambda: driver.detach_nic(vm, device),
    }
    return calls[method]


def inject(tmp_path: Path, action: str, value: str) -> None:
    directory = tmp_path / "var" / "dummy"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / action).write_text(value + "\n")


# --- fixed answers ---------------------------------------------------------------------------


def test_monitor_reports_the_dummy_host(tmp_path: Path) -> None:
    info = asyncio.run(DummyInformationDriver(make_context(tmp_path)).monitor(host()))
    assert dict(info.attributes) == {
        "HYPERVISOR": "dummy",
        "HOSTNAME": "dummy-host",
        "TOTALCPU": "800",
        "CPUSPEED": "2200",
        "TOTALMEMORY": "16777216",
        "USEDMEMORY": "0",
        "FREEMEMORY": "16777216",
        "FREECPU": "800",
        "USEDCPU": "0",
    }
    assert info.vms == ()


def test_monitor_totals_come_from_host_attributes(tmp_path: Path) -> None:
    driver = DummyInformationDriver(make_context(tmp_path))
    info = asyncio.run(driver.monitor(host(DUMMY_TOTALCPU="6400", DUMMY_TOTALMEMORY="1048576")))
    assert info.attributes["TOTALCPU"] == info.attributes["FREECPU"] == "6400"
    assert info.attributes["TOTALMEMORY"] == info.attributes["FREEMEMORY"] == "1048576"
    with pytest.raises(DriverError, match="DUMMY_TOTALCPU must be a whole number, got 'lots'"):
        asyncio.run(driver.monitor(host(DUMMY_TOTALCPU="lots")))


def test_deploy_ids_are_unique_and_idempotent_on_the_token(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))

    async def scenario() -> None:
        first = await driver.deploy(spec(vm_id=3, token="a"))
        second = await driver.deploy(spec(vm_id=3, token="b"))
        assert first.startswith("dummy-3-") and second.startswith("dummy-3-")
        assert first != second
        assert await driver.deploy(spec(vm_id=3, token="a")) == first
        assert await driver.find(spec(token="a")) == first
        assert await driver.find(spec(token="never")) is None
        await driver.cancel(VmRef(3, first, host()))
        assert await driver.find(spec(token="a")) is None
        await driver.shutdown(VmRef(3, second, host()))
        assert await driver.find(spec(token="b")) is None

    asyncio.run(scenario())


def test_core_actions_succeed_even_for_unknown_vms(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    unknown = VmRef(9, "never-deployed", host())

    async def scenario() -> None:
        await driver.shutdown(unknown)
        await driver.cancel(unknown)
        await driver.reboot(unknown)
        await driver.reset(unknown)

    asyncio.run(scenario())


def test_poll_reports_every_vm_active(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    other = HostRef(id=8, name="other")
    vms = [VmRef(1, "a", host()), VmRef(2, "b", other), VmRef(3, "never-deployed", host())]
    expected = PollResult(PollState.ACTIVE, {"NETTX": "12345"})
    assert asyncio.run(driver.poll(vms)) == {1: expected, 2: expected, 3: expected}
    assert asyncio.run(driver.poll([])) == {}


def test_every_optional_action_is_a_capability(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    assert driver.capabilities == frozenset(OPTIONAL_ACTIONS)
    vm = VmRef(1, "a", host())
    for action in OPTIONAL_ACTIONS:
        assert driver.supports(action)
    assert not driver.supports("resume_from_space")
    results = {method: asyncio.run(optional_call(driver, method, vm)()) for method in OPTIONAL}
    assert results["snapshot_create"] == "a-snap0"
    assert results["restore"] == results["poweron"] == results["migrate"] == "a"


# --- failure injection -----------------------------------------------------------------------


@pytest.mark.parametrize("action", VM_ACTIONS)
@pytest.mark.parametrize(
    ("value", "error", "message"),
    [
        ("failure", DriverError, "dummy {action} failure"),
        ("failure: disk on fire", DriverError, "disk on fire"),
        ("capacity", CapacityError, "dummy {action} no capacity"),
        ("capacity: region full", CapacityError, "region full"),
        ("transient", TransientDriverError, "dummy {action} transient failure"),
        ("Transient: throttled", TransientDriverError, "throttled"),
        ("explode", DriverError, "dummy {action}: unknown injected outcome 'explode'"),
        ("sleep soon", DriverError, "dummy {action}: unknown injected outcome 'sleep soon'"),
    ],
)
def test_injected_errors_through_host_attributes(
    tmp_path: Path, action: str, value: str, error: type[DriverError], message: str
) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    run = vm_action(driver, action, host(**{f"DUMMY_{action.upper()}": value}))
    with pytest.raises(error) as caught:
        asyncio.run(run())
    assert type(caught.value) is error
    assert str(caught.value) == message.format(action=action)


@pytest.mark.parametrize("action", VM_ACTIONS)
def test_injected_success_sleep_and_hang(tmp_path: Path, action: str) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    key = f"DUMMY_{action.upper()}"
    asyncio.run(vm_action(driver, action, host(**{key: "success"}))())

    started = time.monotonic()
    asyncio.run(vm_action(driver, action, host(**{key: "sleep 0.05"}))())
    assert time.monotonic() - started >= 0.05

    hang = vm_action(driver, action, host(**{key: "hang"}))
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(hang(), 0.05))


def test_injected_monitor_outcomes(tmp_path: Path) -> None:
    driver = DummyInformationDriver(make_context(tmp_path))
    with pytest.raises(CapacityError, match=r"^dummy monitor no capacity$"):
        asyncio.run(driver.monitor(host(DUMMY_MONITOR="capacity")))
    with pytest.raises(TimeoutError):
        asyncio.run(asyncio.wait_for(driver.monitor(host(DUMMY_MONITOR="hang")), 0.05))
    inject(tmp_path, "monitor", "failure: probe exploded")
    with pytest.raises(DriverError, match=r"^probe exploded$"):
        asyncio.run(driver.monitor(host()))


@pytest.mark.parametrize(
    ("value", "state"),
    [
        ("gone", PollState.GONE),
        ("error", PollState.ERROR),
        ("paused", PollState.PAUSED),
        ("unknown", PollState.UNKNOWN),
        ("success", PollState.ACTIVE),
    ],
)
def test_injected_poll_states(tmp_path: Path, value: str, state: PollState) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    vms = [VmRef(1, "a", host(DUMMY_POLL=value)), VmRef(2, "b", host(DUMMY_POLL=value))]
    results = asyncio.run(driver.poll(vms))
    assert {vm_id: result.state for vm_id, result in results.items()} == {1: state, 2: state}


def test_poll_states_are_poll_only(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    with pytest.raises(DriverError, match="unknown injected outcome 'gone'"):
        asyncio.run(driver.deploy(spec(on=host(DUMMY_DEPLOY="gone"))))


def test_poll_outcome_is_per_host(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    gone = HostRef(id=1, name="h1", attributes={"DUMMY_POLL": "gone"})
    fine = HostRef(id=2, name="h2")
    results = asyncio.run(driver.poll([VmRef(1, "a", gone), VmRef(2, "b", fine)]))
    assert results[1].state is PollState.GONE
    assert results[2].state is PollState.ACTIVE


def test_injection_files(tmp_path: Path) -> None:
    driver = DummyVmDriver(make_context(tmp_path))
    inject(tmp_path, "deploy", "failure: from a file")
    with pytest.raises(DriverError, match=r"^from a file$"):
        asyncio.run(driver.deploy(spec()))
    # The host attribute wins over the file.
    assert asyncio.run(driver.deploy(spec(on=host(DUMMY_DEPLOY="success"))))
    # A rewritten file is read again, even with the same size.
    inject(tmp_path, "deploy", "failure: from b file")
    with pytest.raises(DriverError, match=r"^from b file$"):
        asyncio.run(driver.deploy(spec()))
    inject(tmp_path, "deploy", "capacity")
    with pytest.raises(CapacityError):
        asyncio.run(driver.deploy(spec()))
    os.unlink(tmp_path / "var" / "dummy" / "deploy")
    assert asyncio.run(driver.deploy(spec()))
    inject(tmp_path, "poll", "paused")
    assert asyncio.run(driver.poll([VmRef(1, "a", host())]))[1].state is PollState.PAUSED


def test_parse_outcome_details() -> None:
    assert parse_outcome("deploy", "  FAILURE  ").message == "dummy deploy failure"
    assert parse_outcome("deploy", "failure:").message == "dummy deploy failure"
    assert parse_outcome("deploy", "failure: two\nlines").message == "two lines"
    assert parse_outcome("deploy", "sleep 1.5").delay == 1.5
    assert parse_outcome("deploy", "hang").delay is None
    for bad in ("sleep -1", "sleep", "sleep 1 2", "success: yes", "hang: now", "sleep nan"):
        outcome = parse_outcome("deploy", bad)
        assert outcome.error is DriverError, bad
        assert outcome.message == f"dummy deploy: unknown injected outcome {bad!r}"

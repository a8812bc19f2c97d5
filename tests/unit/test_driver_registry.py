"""The driver registry: ARGUMENTS parsing and EXECUTABLE lookup."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from cloudburst.drivers.base import DriverContext, DriverOptions
from cloudburst.drivers.dummy import DummyInformationDriver, DummyVmDriver
from cloudburst.drivers.registry import (
    INFORMATION_DRIVERS,
    VM_DRIVERS,
    build_information_driver,
    build_vm_driver,
    known_executables,
    parse_driver_arguments,
)
from cloudburst.drivers.script import ScriptInformationDriver, ScriptVmDriver


def make_context(tmp_path: Path, executable: str, arguments: tuple[str, ...] = ()) -> DriverContext:
    return DriverContext(
        name="test_driver",
        executable=executable,
        arguments=arguments,
        options=DriverOptions(),
        etc_dir=tmp_path / "etc",
        remotes_dir=tmp_path / "remotes",
        var_dir=tmp_path / "var",
    )


# --- parse_driver_arguments ----------------------------------------------------------------------


def test_seed_arguments() -> None:
    assert parse_driver_arguments("-t 15 -r 0 provider_name") == (
        DriverOptions(threads=15, retries=0, timeout=None),
        ("provider_name",),
    )


def test_options_anywhere_and_other_words_kept_in_order() -> None:
    options, rest = parse_driver_arguments("-u http://x:2633 -t 2 -c kvm -w 30 -p -r 3")
    assert options == DriverOptions(threads=2, retries=3, timeout=30.0)
    assert rest == ("-u", "http://x:2633", "-c", "kvm", "-p")


def test_defaults_when_absent() -> None:
    assert parse_driver_arguments("provider") == (DriverOptions(), ("provider",))
    assert parse_driver_arguments("") == (DriverOptions(), ())


def test_quoted_words_and_fractional_timeout() -> None:
    options, rest = parse_driver_arguments("-w 0.5 \"my provider\" 'x y'")
    assert options.timeout == 0.5
    assert rest == ("my provider", "x y")


def test_later_occurrence_wins() -> None:
    options, _ = parse_driver_arguments("-t 1 -t 4")
    assert options.threads == 4


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ("-t x kvm", "option -t (threads) must be a whole number >= 1, got 'x'"),
        ("-t 0 kvm", "option -t (threads) must be a whole number >= 1, got '0'"),
        ("-r -1", "option -r (retries) must be a whole number >= 0, got '-1'"),
        ("-r 1.5", "option -r (retries)"),
        ("-w 0", "option -w (timeout) must be a number of seconds > 0, got '0'"),
        ("-w soon", "got 'soon'"),
        ("-w nan", "got 'nan'"),
        ("-w inf", "got 'inf'"),
        ("kvm -t", "option -t needs a value"),
        ('-t 1 "kvm', "ARGUMENTS cannot be split into words"),
    ],
)
def test_bad_arguments(arguments: str, fragment: str) -> None:
    with pytest.raises(ValueError) as caught:
        parse_driver_arguments(arguments)
    assert fragment in str(caught.value)


# --- building drivers ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("executable", "expected"),
    [
        ("one_im_dummy", DummyInformationDriver),
        ("one_im_sh", ScriptInformationDriver),
        ("one_im_exec", ScriptInformationDriver),
        ("one_im_ssh", ScriptInformationDriver),
        ("/usr/lib/one/mads/one_im_sh", ScriptInformationDriver),
    ],
)
def test_information_drivers(tmp_path: Path, executable: str, expected: type) -> None:
    driver = build_information_driver(make_context(tmp_path, executable, ("provider",)))
    assert type(driver) is expected
    assert driver.name == "test_driver"


@pytest.mark.parametrize(
    ("executable", "expected"),
    [
        ("one_vmm_dummy", DummyVmDriver),
        ("one_vmm_sh", ScriptVmDriver),
        ("one_vmm_exec", ScriptVmDriver),
        ("one_vmm_ssh", ScriptVmDriver),
        ("cloudburst.drivers.dummy:DummyVmDriver", DummyVmDriver),
    ],
)
def test_vm_drivers(tmp_path: Path, executable: str, expected: type) -> None:
    driver = build_vm_driver(make_context(tmp_path, executable, ("provider",)))
    assert type(driver) is expected


def test_ec2_is_registered_lazily() -> None:
    assert INFORMATION_DRIVERS["one_im_ec2"] == (
        "cloudburst.drivers.ec2.information:Ec2InformationDriver"
    )
    assert VM_DRIVERS["one_vmm_ec2"] == "cloudburst.drivers.ec2.vm:Ec2VmDriver"
    probe = "import sys, cloudburst.drivers.registry; print(sorted(sys.modules))"
    src = Path(__file__).resolve().parents[2] / "src"
    shown = subprocess.run(
        [sys.executable, "-c", probe],
        env={"PYTHONPATH": str(src)},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "cloudburst.drivers.registry" in shown
    for implementation in ("dummy", "script", "ec2"):
        assert f"'cloudburst.drivers.{implementation}" not in shown


def test_third_party_driver(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "acme_drivers"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "cloud.py").write_text(
        textwrap.dedent(
            """
            from cloudburst.drivers.dummy import DummyVmDriver

            class AcmeVmDriver(DummyVmDriver):
                pass
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    driver = build_vm_driver(make_context(tmp_path, "acme_drivers.cloud:AcmeVmDriver"))
    assert type(driver).__name__ == "AcmeVmDriver"


def test_unknown_executable_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(LookupError) as caught:
        build_vm_driver(make_context(tmp_path, "one_vmm_xen"))
    message = str(caught.value)
    assert 'unknown VM_MAD EXECUTABLE "one_vmm_xen"' in message
    for name in VM_DRIVERS:
        assert name in message
    with pytest.raises(LookupError, match="one_im_dummy"):
        build_information_driver(make_context(tmp_path, "one_vmm_dummy"))


def test_unimportable_module_and_missing_class(tmp_path: Path) -> None:
    with pytest.raises(LookupError, match=r"cannot import no_such_package\.mod"):
        build_vm_driver(make_context(tmp_path, "no_such_package.mod:Driver"))
    with pytest.raises(LookupError, match=r"cloudburst\.drivers\.dummy has no Nope"):
        build_vm_driver(make_context(tmp_path, "cloudburst.drivers.dummy:Nope"))


def test_wrong_kind_of_class(tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="is not a subclass of VmDriver"):
        build_vm_driver(make_context(tmp_path, "cloudburst.drivers.dummy:DummyInformationDriver"))
    with pytest.raises(TypeError, match="is not a subclass of InformationDriver"):
        build_information_driver(make_context(tmp_path, "cloudburst.drivers.dummy:Outcome"))
    with pytest.raises(TypeError, match="dummy:parse_outcome is not a class"):
        build_vm_driver(make_context(tmp_path, "cloudburst.drivers.dummy:parse_outcome"))


def test_script_drivers_need_a_directory_name(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="must end with the provider directory name"):
        build_vm_driver(make_context(tmp_path, "one_vmm_sh"))
    with pytest.raises(ValueError, match="must end with the probe set name"):
        build_information_driver(make_context(tmp_path, "one_im_sh"))


def test_known_executables() -> None:
    known = known_executables()
    assert known["IM_MAD"] == tuple(sorted(INFORMATION_DRIVERS))
    assert known["VM_MAD"] == tuple(sorted(VM_DRIVERS))
    assert "one_vmm_sh" in known["VM_MAD"]
    assert "one_im_dummy" in known["IM_MAD"]

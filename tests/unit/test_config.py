"""oned.conf: the shipped default, error messages that name file and line, overrides."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cloudburst.config import oned
from cloudburst.config.settings import DriverSection, Settings
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.main import SHARE_DIR, load_settings
from cloudburst.errors import ConfigError
from seed_templates import SEED_ONED_CONF_EC2_IM_MAD, SEED_PROVIDER_IM_MAD, SEED_PROVIDER_VM_MAD

SHIPPED = SHARE_DIR / "etc" / "oned.conf"


@pytest.fixture(autouse=True)
def _no_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLOUDBURST_PORT", "CLOUDBURST_DB_URL", "CLOUDBURST_HOME"):
        monkeypatch.delenv(name, raising=False)


def write(tmp_path: Path, text: str, name: str = "oned.conf") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


def load(path: Path) -> tuple[Settings, list[str]]:
    return oned.load(path, path.parent)


def refused(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load(path)
    return caught.value


# -- the shipped default ------------------------------------------------------------


def test_shipped_default_loads_without_warnings(tmp_path: Path) -> None:
    settings, warnings = oned.load(SHIPPED, tmp_path)
    assert warnings == []
    assert settings.port == 2633
    assert settings.listen_address == "127.0.0.1"
    assert settings.database_url == f"sqlite:///{tmp_path / 'one.db'}"
    assert settings.driver("IM_MAD", "dummy") == DriverSection(
        kind="IM_MAD", name="dummy", executable="one_im_dummy",
        line=settings.driver("IM_MAD", "dummy").line)  # type: ignore[union-attr]
    vmm = settings.driver("VM_MAD", "dummy")
    assert vmm is not None and vmm.executable == "one_vmm_dummy" and vmm.type == "xml"
    names = [(s.kind, s.name) for s in settings.drivers]
    assert len(names) == len(set(names))
    assert settings.scheduler.default_rank == "- RUNNING_VMS"
    assert settings.monitoring_interval == 60
    assert settings.vm_polling_interval == 30


def test_every_shipped_driver_section_can_be_built(tmp_path: Path) -> None:
    """A daemon started on the default file must not stop on one of its sections."""
    settings, _ = oned.load(SHIPPED, tmp_path)
    Dispatcher(settings, "cb-test").build_all()


def test_driver_sections_know_their_line(tmp_path: Path) -> None:
    settings, _ = oned.load(SHIPPED, tmp_path)
    lines = SHIPPED.read_text().splitlines()
    for section in settings.drivers:
        assert lines[section.line - 1].startswith(section.kind), section


def test_load_settings_bootstraps_a_home_with_the_default(tmp_path: Path) -> None:
    home = tmp_path / "home"
    settings, warnings = load_settings(home)
    assert (home / "etc" / "oned.conf").read_text() == SHIPPED.read_text()
    assert (home / "remotes").is_dir()
    assert settings.home == home and warnings == []
    # A second start keeps the operator's edits.
    conf = home / "etc" / "oned.conf"
    conf.write_text(conf.read_text().replace("PORT = 2633", "PORT = 2700"))
    settings, _ = load_settings(home)
    assert settings.port == 2700


# -- errors name the file and the line ----------------------------------------------------


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """
        PORT = 2633
        LISTEN_ADDRESS = "127.0.0.1
        """)
    error = refused(path)
    assert error.path == str(path) and error.line == 2
    message = str(error)
    assert message.startswith(f"{path}:2: ")
    assert "unterminated" in message
    assert "column 18" in message, message


def test_unexpected_token_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, """
        # comment
        PORT = 2633
        MAX_VM = 10 ]
        """)
    message = str(refused(path))
    assert message.startswith(f"{path}:3: ")
    assert "']'" in message
    assert "column 13" in message, message


def test_port_must_be_a_number(tmp_path: Path) -> None:
    path = write(tmp_path, """
        LISTEN_ADDRESS = "127.0.0.1"

        PORT = abc
        """)
    assert str(refused(path)) == f"{path}:3: PORT must be a number, not 'abc'"


@pytest.mark.parametrize(("line", "problem"), [
    ("PORT = 70000", "PORT must be at most 65535"),
    ("PORT = -1", "PORT must be at least 0"),
    ("PORT = 26.5", "whole number"),
    ("MONITORING_INTERVAL = 0", "MONITORING_INTERVAL must be at least"),
    ("SCHED_INTERVAL = soon", "SCHED_INTERVAL must be a number"),
    ("MAX_DISPATCH = -3", "MAX_DISPATCH must be at least 0"),
    ("LOG = [ LEVEL = LOUD ]", "LOG LEVEL must be DEBUG, INFO, WARNING or ERROR"),
    ("LISTEN_ADDRESS = [ A = 1 ]", "LISTEN_ADDRESS must be a single value"),
    ("LEADER_LEASE = [ STALL = 0.5 ]", "LEADER_LEASE STALL must be at least 1"),
    ("LEADER_LEASE = [ STALL = never ]", "LEADER_LEASE STALL must be a number"),
])
def test_bad_values_are_refused_with_the_attribute_named(tmp_path: Path, line: str,
                                                         problem: str) -> None:
    path = write(tmp_path, f"# header\n{line}\n")
    message = str(refused(path))
    assert message.startswith(f"{path}:"), message
    assert problem in message


def test_the_shipped_lease_keeps_a_stalled_leader_15_s(tmp_path: Path) -> None:
    settings, _ = load(SHIPPED)
    assert settings.lease.stall == 15.0
    settings, _ = load(write(tmp_path, "LEADER_LEASE = [ STALL = 4 ]\n"))
    assert (settings.lease.stall, settings.lease.duration) == (4.0, 3.0)


def test_im_mad_without_name(tmp_path: Path) -> None:
    path = write(tmp_path, """
        IM_MAD = [ name = "dummy", executable = "one_im_dummy" ]

        IM_MAD = [
            executable = "one_im_sh",
            arguments  = "-t 1 -r 0 provider_name" ]
        """)
    error = refused(path)
    assert error.line == 3
    assert "IM_MAD section without NAME" in str(error)


def test_vm_mad_without_executable(tmp_path: Path) -> None:
    path = write(tmp_path, """
        VM_MAD = [
            name       = "vmm_provider",
            arguments  = "-t 15 -r 0 provider_name",
            type       = "xml" ]
        """)
    error = refused(path)
    assert error.line == 1
    assert "VM_MAD 'vmm_provider' has no EXECUTABLE" in str(error)


def test_duplicate_driver_names_point_at_the_second_section(tmp_path: Path) -> None:
    path = write(tmp_path, """
        VM_MAD = [ name = "vmm_ec2", executable = "one_vmm_ec2", arguments = "a.conf" ]
        IM_MAD = [ name = "vmm_ec2", executable = "one_im_dummy" ]
        VM_MAD = [ name = "vmm_ec2", executable = "one_vmm_sh", arguments = "x" ]
        """)
    error = refused(path)
    assert error.line == 3
    assert "VM_MAD 'vmm_ec2' is defined twice" in str(error)


def test_driver_section_must_be_a_vector(tmp_path: Path) -> None:
    path = write(tmp_path, 'PORT = 1\nIM_MAD = "one_im_dummy"\n')
    error = refused(path)
    assert error.line == 2 and "IM_MAD must be a vector" in str(error)


def test_bad_db_backend(tmp_path: Path) -> None:
    path = write(tmp_path, """
        PORT = 2633
        DB = [ BACKEND = "mysql", URL = "mysql://x" ]
        """)
    assert str(refused(path)) == (
        f"{path}:2: DB BACKEND must be \"sqlite\" or \"postgresql\", not 'mysql'")


def test_postgresql_backend_needs_a_url(tmp_path: Path) -> None:
    error = refused(write(tmp_path, 'DB = [ BACKEND = "postgresql" ]\n'))
    assert error.line == 1 and "URL" in str(error)
    settings, _ = load(write(tmp_path, 'DB = [ BACKEND = "postgresql", '
                                       'URL = "postgresql://u@h/db" ]\n'))
    assert settings.database_url == "postgresql://u@h/db"


def test_bad_default_sched_policy(tmp_path: Path) -> None:
    path = write(tmp_path, """
        MAX_VM = 10
        DEFAULT_SCHED = [ POLICY = 7 ]
        """)
    assert str(refused(path)) == (
        f"{path}:2: DEFAULT_SCHED POLICY must be 0, 1, 2, 3 or 4, not '7'")


def test_custom_policy_needs_a_rank(tmp_path: Path) -> None:
    error = refused(write(tmp_path, "DEFAULT_SCHED = [ POLICY = 3 ]\n"))
    assert error.line == 1 and "RANK" in str(error)


@pytest.mark.parametrize(("policy", "rank"), [
    ("0", "RUNNING_VMS"), ("1", "- RUNNING_VMS"), ("2", "FREE_CPU"), ("4", "PRIORITY"),
])
def test_default_sched_policies(tmp_path: Path, policy: str, rank: str) -> None:
    settings, _ = load(write(tmp_path, f"DEFAULT_SCHED = [ POLICY = {policy} ]\n"))
    assert settings.scheduler.default_rank == rank


def test_custom_rank_policy(tmp_path: Path) -> None:
    settings, _ = load(write(tmp_path,
                             'DEFAULT_SCHED = [ POLICY = 3, RANK = "FREE_CPU - 10" ]\n'))
    assert settings.scheduler.default_rank == "FREE_CPU - 10"


def test_missing_file_is_named(tmp_path: Path) -> None:
    error = refused(tmp_path / "nope.conf")
    assert str(tmp_path / "nope.conf") in str(error) and "cannot read" in str(error)


def test_unknown_attributes_are_warnings_with_their_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        PORT = 2633
        HOST_MONITORING_INTERVAL = 600
        MANAGER_TIMER = 15
        """)
    settings, warnings = load(path)
    assert settings.port == 2633
    assert warnings == [
        f"{path}:2: unknown attribute HOST_MONITORING_INTERVAL ignored",
        f"{path}:3: unknown attribute MANAGER_TIMER ignored",
    ]


def test_scheduler_and_timer_values(tmp_path: Path) -> None:
    settings, _ = load(write(tmp_path, """
        SCHED_INTERVAL = 30
        MAX_VM = 300
        MAX_DISPATCH = 30
        MAX_HOST = 1
        MONITORING_INTERVAL = 0.5
        VM_POLLING_INTERVAL = 2
        DEFAULT_ACTION_TIMEOUT = 12
        LOG = [ DEBUG_LEVEL = 3 ]
        """))
    assert settings.scheduler.interval == 30
    assert (settings.scheduler.max_vm, settings.scheduler.max_dispatch,
            settings.scheduler.max_host) == (300, 30, 1)
    assert settings.monitoring_interval == 0.5
    assert settings.vm_polling_interval == 2
    assert settings.default_action_timeout == 12
    assert settings.log_level == "DEBUG"


# -- environment overrides ------------------------------------------------------------


def test_cloudburst_port_overrides_the_file(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDBURST_PORT", "40123")
    settings, _ = oned.load(SHIPPED, tmp_path)
    assert settings.port == 40123


def test_bad_cloudburst_port_is_refused(tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDBURST_PORT", "http")
    with pytest.raises(ConfigError, match=r"CLOUDBURST_PORT.*'http'"):
        oned.load(SHIPPED, tmp_path)


def test_cloudburst_db_url_overrides_the_file(tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDBURST_DB_URL", "postgresql://cb@127.0.0.1:5433/cb")
    path = write(tmp_path, 'DB = [ BACKEND = "sqlite", URL = "sqlite:////tmp/x.db" ]\n')
    settings, _ = load(path)
    assert settings.database_url == "postgresql://cb@127.0.0.1:5433/cb"


# -- the seeds' driver sections --------------------------------------------------------------

# Copied from the seeds ("Amazon EC2 Driver 3.0" and "Cloud Bursting Driver"), comments included;
# the sections other tests use too come from seed_templates.
SEED_SECTIONS = f'''
{SEED_ONED_CONF_EC2_IM_MAD}
  VM_MAD = [
      name       = "vmm_ec2",
      executable = "one_vmm_ec2",
      arguments  = "-c /home/user/.ec2/ec2-cert.pem vmm_ec2/vmm_ec2.conf",
      type       = "xml" ]

VM_MAD = [
    name       = "vmm_amazon_eu_west",
    executable = "one_vmm_ec2",
    arguments  = "-u https://eu-west-1.ec2.amazonaws.com vmm_ec2/vmm_ec2.conf",
    type       = "xml" ]

#*******************************************************************************
# Information Driver Configuration
#*******************************************************************************
# You can add more information managers with different configurations but make
# sure it has different names.
#
#   name      : name for this information manager
#
#   executable: path of the information driver executable, can be an
#               absolute path or relative to $ONE_LOCATION/lib/mads (or
#               /usr/lib/one/mads/ if OpenNebula was installed in /)
#
#   arguments : for the driver executable, usually a probe configuration file,
#               can be an absolute path or relative to $ONE_LOCATION/etc (or
#               /etc/one/ if OpenNebula was installed in /)
#    -r number of retries when monitoring a host
#    -t number of threads, i.e. number of hosts monitored at the same time
#*******************************************************************************
#-------------------------------------------------------------------------------
#  EC2 Information Driver Manager Configuration
#-------------------------------------------------------------------------------
{SEED_PROVIDER_IM_MAD}#-------------------------------------------------------------------------------

{SEED_PROVIDER_VM_MAD}#-------------------------------------------------------------------------------
'''


def test_seed_driver_sections_parse(tmp_path: Path) -> None:
    path = write(tmp_path, SHIPPED.read_text() + SEED_SECTIONS)
    settings, warnings = load(path)
    assert warnings == []
    text_lines = path.read_text().splitlines()

    def section(kind: str, name: str) -> DriverSection:
        found = settings.driver(kind, name)
        assert found is not None, (kind, name)
        assert text_lines[found.line - 1].strip().startswith(kind)
        return found

    im_ec2 = section("IM_MAD", "im_ec2")
    assert (im_ec2.executable, im_ec2.arguments, im_ec2.default) == (
        "one_im_ec2", "im_ec2/im_ec2.conf", "im_ec2/im_ec2.conf")
    vmm_ec2 = section("VM_MAD", "vmm_ec2")
    assert (vmm_ec2.executable, vmm_ec2.arguments, vmm_ec2.type, vmm_ec2.default) == (
        "one_vmm_ec2", "-c /home/user/.ec2/ec2-cert.pem vmm_ec2/vmm_ec2.conf", "xml", None)
    eu_west = section("VM_MAD", "vmm_amazon_eu_west")
    assert eu_west.arguments == "-u https://eu-west-1.ec2.amazonaws.com vmm_ec2/vmm_ec2.conf"
    im_provider = section("IM_MAD", "im_provider")
    assert (im_provider.executable, im_provider.arguments) == ("one_im_sh",
                                                               "-t 1 -r 0 provider_name")
    vmm_provider = section("VM_MAD", "vmm_provider")
    assert (vmm_provider.executable, vmm_provider.arguments, vmm_provider.type) == (
        "one_vmm_sh", "-t 15 -r 0 provider_name", "xml")
    assert section("IM_MAD", "dummy").executable == "one_im_dummy"


def test_provider_arguments_become_driver_options(tmp_path: Path) -> None:
    """-t and -r are the dispatcher's; the last word names the provider directory."""
    settings, _ = load(write(tmp_path, SEED_SECTIONS))
    dispatcher = Dispatcher(settings, "cb-test")
    vmm = dispatcher.context_for(settings.driver("VM_MAD", "vmm_provider"))  # type: ignore[arg-type]
    assert (vmm.options.threads, vmm.options.retries) == (15, 0)
    assert vmm.arguments == ("provider_name",)
    assert vmm.remotes_dir == tmp_path / "remotes"
    im = dispatcher.context_for(settings.driver("IM_MAD", "im_provider"))  # type: ignore[arg-type]
    assert (im.options.threads, im.options.retries, im.arguments) == (1, 0, ("provider_name",))
    ec2 = dispatcher.context_for(settings.driver("IM_MAD", "im_ec2"))  # type: ignore[arg-type]
    assert ec2.default == tmp_path / "etc" / "im_ec2/im_ec2.conf"


def test_unknown_driver_executable_fails_at_build_naming_the_line(tmp_path: Path) -> None:
    path = write(tmp_path, """
        PORT = 2633
        VM_MAD = [ name = "mystery", executable = "one_vmm_nonexistent" ]
        """)
    settings, _ = load(path)
    with pytest.raises(ConfigError) as caught:
        Dispatcher(settings, "cb-test").build_all()
    assert caught.value.line == 2
    assert "mystery" in str(caught.value)


def test_burst_policy_settings(tmp_path: Path) -> None:
    settings, warnings = load(write(tmp_path, textwrap.dedent("""
        DEFAULT_SCHED = [ POLICY = 1, COST_ORDER = "NO" ]
        RECALL = [ PER_MINUTE = 3, MIN_CLOUD_TIME = 30, WINDOW = "22:00-06:30" ]
        """)))
    assert not warnings
    assert settings.scheduler.cost_order is False
    recall = settings.scheduler.recall
    assert (recall.per_minute, recall.min_cloud_time, recall.window) == (3, 30.0, (1320, 390))
    day = 86_400 * 20_000
    assert recall.in_window(day + 23 * 3600) and recall.in_window(day + 6 * 3600)
    assert not recall.in_window(day + 6 * 3600 + 1800) and not recall.in_window(day + 12 * 3600)
    assert "COST_ORDER must be YES or NO" in refused(write(
        tmp_path, 'DEFAULT_SCHED = [ COST_ORDER = "maybe" ]')).message
    assert "WINDOW must be HH:MM-HH:MM" in refused(write(
        tmp_path, 'RECALL = [ WINDOW = "late" ]')).message
    assert "cannot be negative" in refused(write(tmp_path, "RECALL = [ PER_MINUTE = -1 ]")).message

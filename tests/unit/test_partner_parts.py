"""The partner-cloud driver's pure parts: rc files, documents, state mapping, templates."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloudburst.drivers.base import PollState
from cloudburst.drivers.one.client import reply_error
from cloudburst.drivers.one.config import load, printable_url, shell_value
from cloudburst.drivers.one.documents import RemoteVm, parse_host_pool, parse_vm_pool
from cloudburst.drivers.one.partner_vms import poll_state, remote_id
from cloudburst.errors import (
    CapacityError,
    DriverAuthError,
    DriverError,
    InstanceNotFoundError,
    ValidationError,
)
from cloudburst.template import parse

PASSWORD = "s3cr#t pass"


def rc(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / "partnerrc"
    path.write_text(text)
    path.chmod(mode)
    return path


@pytest.mark.parametrize(("text", "value"), [
    ("user:pa#ss # comment", "user:pa#ss"),
    ('"a b" # c', "a b"),
    ("'x\"y'", 'x"y'),
    ("a\\ b", "a b"),
    ('"q\\"x"', 'q"x'),
    ("  http://h:2633/RPC2  ", "http://h:2633/RPC2"),
    ('"unbalanced', None),
])
def test_rc_values_read_as_sh_would(text: str, value: str | None) -> None:
    assert shell_value(text) == value


def test_rc_file_is_read(tmp_path: Path) -> None:
    config = load(rc(tmp_path, f"""
        # partner
        export ONE_XMLRPC=http://partner:2633/RPC2
        ONE_AUTH="burst:{PASSWORD}"
        TOTALCPU=800
        TOTALMEMORY=16777216
        BOOT_TIMEOUT=30
        COLOUR=blue
        """.replace("        ", "")))
    assert config.endpoint == "http://partner:2633/RPC2"
    assert config.session == f"burst:{PASSWORD}"
    assert (config.total_cpu, config.total_memory, config.boot_timeout) == (800, 16777216, 30)
    assert config.unknown_keys == ("COLOUR",)
    assert PASSWORD not in repr(config)
    assert config.scrub(f"echoed burst:{PASSWORD} back") == "echoed *** back"


def test_auth_may_live_in_its_own_file(tmp_path: Path) -> None:
    auth = tmp_path / "auth"
    auth.write_text(f"burst:{PASSWORD}\n")
    auth.chmod(0o600)
    config = load(rc(tmp_path, "ONE_XMLRPC=http://p/RPC2\nONE_AUTH=auth\n"))
    assert config.session == f"burst:{PASSWORD}"
    auth.chmod(0o640)
    with pytest.raises(DriverError, match="chmod 600"):
        load(tmp_path / "partnerrc")


@pytest.mark.parametrize(("text", "mode", "message"), [
    (f"ONE_XMLRPC=http://p/RPC2\nONE_AUTH=u:{PASSWORD}\n", 0o644,
     r"accessible by other users \(mode 0644\).*chmod 600"),
    (f"ONE_AUTH=u:{PASSWORD}\n", 0o600, "ONE_XMLRPC is not set"),
    (f"ONE_XMLRPC=partner:2633\nONE_AUTH=u:{PASSWORD}\n", 0o600, "must be an http"),
    ("ONE_XMLRPC=http://p/RPC2\n", 0o600, "ONE_AUTH is not set"),
    ("ONE_XMLRPC=http://p/RPC2\nONE_AUTH=u:\n", 0o600, "both non-empty"),
    (f"ONE_XMLRPC=http://p/RPC2\nONE_AUTH=u:{PASSWORD}\nTOTALCPU=lots\n", 0o600,
     r"partnerrc:3: TOTALCPU must be a whole number >= 0, not 'lots'"),
    (f'ONE_XMLRPC=http://p/RPC2\nONE_AUTH="u:{PASSWORD}\n', 0o600,
     "partnerrc:2: unbalanced quotes in the value of ONE_AUTH"),
])
def test_bad_rc_files_are_refused_without_echoing_secrets(tmp_path: Path, text: str,
                                                          mode: int, message: str) -> None:
    with pytest.raises(DriverError, match=message) as refused:
        load(rc(tmp_path, text, mode))
    assert PASSWORD not in str(refused.value)


def test_urls_are_shown_without_credentials() -> None:
    assert printable_url("http://u:pw@partner:2633/RPC2") == "http://partner:2633/RPC2"
    assert printable_url("https://partner/RPC2") == "https://partner/RPC2"


def test_reply_errors_map_to_the_error_tree(tmp_path: Path) -> None:
    config = load(rc(tmp_path, f"ONE_XMLRPC=http://u:x@p/RPC2\nONE_AUTH=u:{PASSWORD}\n"))
    refused = reply_error(config, "one.vm.allocate", "[one.vm.allocate] User couldn't be "
                                                     "authenticated, aborting call.", 0x100)
    assert isinstance(refused, DriverAuthError) and "u:x@" not in str(refused)
    assert isinstance(reply_error(config, "one.vm.action", "[one.vm.action] Error getting "
                                                           "virtual machine [9].", 0x400),
                      InstanceNotFoundError)
    assert isinstance(reply_error(config, "one.vm.allocate", "User [3] : Not enough quota "
                                                             "(VMS)", 0x200), CapacityError)
    echoed = reply_error(config, "one.vm.allocate", f"bad u:{PASSWORD}", 0x2000)
    assert PASSWORD not in str(echoed) and "***" in str(echoed)


VM_POOL = (
    "<VM_POOL>"
    "<VM><ID>4</ID><NAME>w</NAME><STATE>3</STATE><LCM_STATE>3</LCM_STATE>"
    "<TEMPLATE><CPU><![CDATA[0.5]]></CPU><MEMORY><![CDATA[128]]></MEMORY>"
    "<NIC><IP><![CDATA[192.168.1.4]]></IP></NIC></TEMPLATE>"
    "<MONITORING><CPU>3.5</CPU></MONITORING>"
    "<USER_TEMPLATE><CLOUDBURST_ORIGIN><![CDATA[cb-1:12]]></CLOUDBURST_ORIGIN>"
    "<CLOUDBURST_TOKEN><![CDATA[cb-1-vm12-0]]></CLOUDBURST_TOKEN>"
    "<CLOUDBURST_HOST><![CDATA[1]]></CLOUDBURST_HOST></USER_TEMPLATE></VM>"
    "<VM><ID>5</ID><STATE>1</STATE><LCM_STATE>0</LCM_STATE><TEMPLATE/>"
    "<MONITORING><IP>10.0.0.5</IP></MONITORING><USER_TEMPLATE>"
    "<SCHED_MESSAGE>No host with enough capacity</SCHED_MESSAGE></USER_TEMPLATE></VM>"
    "</VM_POOL>"
)


def test_vm_pools_parse() -> None:
    first, second = parse_vm_pool(VM_POOL)
    assert (first.id, first.cpu, first.memory_mb, first.ip) == (4, 0.5, 128, "192.168.1.4")
    assert (first.token, first.host_tag, first.origin_of("cb-1")) == ("cb-1-vm12-0", "1", 12)
    assert first.origin_of("cb-2") is None
    assert first.monitoring["CPU"] == "3.5"
    assert (second.ip, second.sched_message) == ("10.0.0.5", "No host with enough capacity")
    with pytest.raises(DriverError, match="HOST_POOL document instead of VM_POOL"):
        parse_vm_pool("<HOST_POOL/>")
    with pytest.raises(DriverError, match="DOCTYPE"):
        parse_vm_pool('<!DOCTYPE x [<!ENTITY a "b">]><VM_POOL/>')
    hosts = parse_host_pool(
        "<HOST_POOL><HOST><ID>0</ID><STATE>2</STATE><HOST_SHARE><MAX_CPU>800</MAX_CPU>"
        "<CPU_USAGE>100</CPU_USAGE><MAX_MEM>1024</MAX_MEM><MEM_USAGE>0</MEM_USAGE></HOST_SHARE>"
        "<TEMPLATE><PUBLIC_CLOUD>YES</PUBLIC_CLOUD></TEMPLATE></HOST></HOST_POOL>")
    assert (hosts[0].max_cpu, hosts[0].cpu_usage, hosts[0].public_cloud) == (800, 100, True)


@pytest.mark.parametrize(("state", "lcm", "expected"), [
    (3, 3, PollState.ACTIVE),        # RUNNING
    (3, 2, PollState.UNKNOWN),       # BOOT: no change yet
    (3, 16, PollState.UNKNOWN),      # UNKNOWN at the partner
    (3, 36, PollState.ERROR),        # BOOT_FAILURE
    (5, 0, PollState.PAUSED),        # SUSPENDED
    (8, 0, PollState.GONE),          # POWEROFF
    (6, 0, PollState.GONE),          # DONE
    (1, 0, PollState.UNKNOWN),       # PENDING
    (7, 0, PollState.ERROR),         # FAILED
])
def test_partner_states_map_to_poll_states(state: int, lcm: int, expected: PollState) -> None:
    assert poll_state(RemoteVm(id=1, name="", state=state, lcm_state=lcm)) is expected
    assert poll_state(None) is PollState.GONE


def test_deploy_ids() -> None:
    assert remote_id("one-42") == 42 and remote_id("7") == 7
    with pytest.raises(DriverError, match="not a partner-cloud deploy id"):
        remote_id("i-0abc")


@pytest.mark.parametrize(("section", "message"), [
    ('TYPE="one", TEMPLATE_ID="web"', "TEMPLATE_ID must be the partner's template id"),
    ('TYPE="one", MEMORY="512"', "MEMORY cannot be set in the section"),
    ('TYPE="ONE", CLOUDBURST_TOKEN="x"', "CLOUDBURST_TOKEN cannot be set"),
])
def test_partner_sections_are_checked_at_creation(tmp_path: Path, section: str,
                                                  message: str) -> None:
    from cloudburst.drivers.base import DriverContext, DriverOptions
    from cloudburst.drivers.one.vm import OneVmDriver

    driver = OneVmDriver(DriverContext(
        name="vmm_one", executable="one_vmm_one", arguments=(), options=DriverOptions(),
        etc_dir=tmp_path, remotes_dir=tmp_path, var_dir=tmp_path))
    driver.check_template(parse('CPU=1\nMEMORY=1\nPUBLIC_CLOUD=[TYPE="one", TEMPLATE_ID="3"]'))
    driver.check_template(parse("PUBLIC_CLOUD=[TYPE=ec2, MEMORY=1]"))  # not ours
    with pytest.raises(ValidationError, match=message):
        driver.check_template(parse(f"CPU=1\nMEMORY=1\nPUBLIC_CLOUD=[{section}]"))

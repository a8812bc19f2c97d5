"""The real daemon driven by OpenNebula's own Python client, pyone, and by raw posts."""

from __future__ import annotations

import urllib.error
import urllib.request
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

pytestmark = pytest.mark.e2e

TEMPLATE = """
NAME = "web-1"
CPU = 0.5
MEMORY = 128
PUBLIC_CLOUD = [ TYPE = "ec2", AMI = "ami-1", INSTANCETYPE = "t3.micro" ]
"""


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("pyone")) as running:
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


def post(url: str, body: bytes) -> object:
    """Post a raw body; the parsed reply, or ``("fault", code, text)``, or the HTTP status."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "text/xml"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            data = response.read()
    except urllib.error.HTTPError as exc:
        return exc.code
    try:
        return xmlrpc.client.loads(data)[0][0]
    except xmlrpc.client.Fault as fault:
        return ("fault", fault.faultCode, fault.faultString)


def call_body(method: str, *params: object) -> bytes:
    return xmlrpc.client.dumps(params, method).encode()


def test_version_needs_a_session(one: pyone.OneServer, daemon: RunningDaemon) -> None:
    assert one.system.version() == "6.10.0"
    bad = pyone.OneServer(daemon.url, session="oneadmin:wrong")
    with pytest.raises(pyone.OneAuthenticationException,
                       match=r"\[one.system.version\] User couldn't be authenticated"):
        bad.system.version()


def test_vm_life_cycle(one: pyone.OneServer) -> None:
    host_id = one.host.allocate("h1", "dummy", "dummy", -1)
    host = wait_for(lambda: (h := one.host.info(host_id)).STATE == 2 and h, timeout=20)
    assert host.HOST_SHARE.MAX_CPU == 800
    assert host.TEMPLATE["HYPERVISOR"] == "dummy"

    vm_id = one.vm.allocate(TEMPLATE, True)
    vm = one.vm.info(vm_id)
    assert (vm.STATE, vm.NAME) == (pyone.VM_STATE.HOLD, "web-1")
    assert vm.USER_TEMPLATE["PUBLIC_CLOUD"] == {"TYPE": "ec2", "AMI": "ami-1",
                                                "INSTANCETYPE": "t3.micro"}

    assert one.vm.deploy(vm_id, host_id, False, -1, "") == vm_id
    vm = wait_for(lambda: (v := one.vm.info(vm_id)).LCM_STATE == 3 and v, timeout=20)
    assert vm.STATE == pyone.VM_STATE.ACTIVE
    assert vm.DEPLOY_ID
    assert vm.TEMPLATE["VMID"] == str(vm_id)
    last = vm.HISTORY_RECORDS.HISTORY[-1]
    assert (host_id, "h1") == (last.HID, last.HOSTNAME)

    for pool in (one.vmpool.info(-2, -1, -1, -1), one.vmpool.infoextended(-2, -1, -1, -1)):
        [listed] = [entry for entry in pool.VM if vm_id == entry.ID]
        assert (3, host_id) == (listed.LCM_STATE, listed.HISTORY_RECORDS.HISTORY[-1].HID)
    assert vm_id in one.host.info(host_id).VMS.ID

    with pytest.raises(pyone.OneActionException, match='Error performing action "release"'):
        one.vm.action("release", vm_id)
    with pytest.raises(pyone.OneActionException, match=r"\[one.vm.deploy\] Error performing "
                       r"action \"deploy\": This action is not available for state RUNNING$"):
        one.vm.deploy(vm_id, host_id, False, -1, "")

    assert one.vm.action("terminate", vm_id) == vm_id
    vm = wait_for(lambda: (v := one.vm.info(vm_id)).STATE == 6 and v, timeout=20)
    assert vm.ETIME > 0
    assert vm_id not in [entry.ID for entry in one.vmpool.info(-2, -1, -1, -1).VM]
    assert vm_id in [entry.ID for entry in one.vmpool.info(-2, -1, -1, -2).VM]


def test_errors_map_to_pyone_exceptions(one: pyone.OneServer) -> None:
    with pytest.raises(pyone.OneNoExistsException,
                       match=r"^\[one.vm.info\] Error getting virtual machine \[999\]\.$"):
        one.vm.info(999)
    # A wrongly typed parameter is an XML-RPC fault -501, as oned answers it; pyone raises
    # its base exception with the message, which names the parameter.
    with pytest.raises(pyone.OneException, match=r"-501: 'Wrong type of parameter 1 \(id\): "
                                                 r"expected an integer, got a string'") as raised:
        one.vm.info("five")
    assert type(raised.value) is pyone.OneException
    with pytest.raises(pyone.OneApiException, match="Incorrect filter_flag"):
        one.vmpool.info(-9, -1, -1, -1)
    with pytest.raises(pyone.OneApiException, match="Incorrect state filter"):
        one.vmpool.info(-2, -1, -1, 77)
    with pytest.raises(pyone.OneInternalException, match="line 1, column"):
        one.vm.allocate("CPU = [", False)
    with pytest.raises(pyone.OneException, match="MEMORY"):
        one.vm.allocate("CPU = 1", False)


def test_pool_filters_and_pages(one: pyone.OneServer) -> None:
    ids = [one.vm.allocate(f'NAME="page-{n}"\nCPU=1\nMEMORY=64', True) for n in range(4)]
    page = one.vmpool.info(-2, ids[1], -2, -1)
    assert len(page.VM) == 2
    ranged = [vm.ID for vm in one.vmpool.info(-2, ids[1], ids[2], -1).VM]
    assert ranged == ids[2:0:-1]  # highest id first, as oned lists pools
    assert [vm.ID for vm in one.vmpool.info(-3, ids[0], ids[-1], 2).VM] == ids[::-1]
    assert [vm.ID for vm in one.vmpool.info(-2, -1, -1, -1, "VM.NAME=page-3").VM] == [ids[3]]
    assert one.vmpool.info(5, -1, -1, -1).VM == []


def test_users_templates_and_config(one: pyone.OneServer) -> None:
    me = one.user.info(-1)
    assert (me.ID, me.NAME, me.GROUPS.ID) == (0, "oneadmin", [0])
    assert me.PASSWORD == "********"
    assert [user.NAME for user in one.userpool.info().USER] == ["oneadmin"]
    config = one.system.config()
    assert config.PORT > 0
    assert [section.NAME for section in config.VM_MAD] == ["dummy", "kvm"]

    template_id = one.template.allocate(TEMPLATE)
    assert one.template.info(template_id).TEMPLATE["PUBLIC_CLOUD"]["AMI"] == "ami-1"
    one.template.rename(template_id, "renamed")
    assert [t.NAME for t in one.templatepool.info(-2, -1, -1).VMTEMPLATE] == ["renamed"]
    vm_id = one.template.instantiate(template_id, "from-template", True, "", False)
    vm = one.vm.info(vm_id)
    assert (vm.NAME, vm.STATE, vm.TEMPLATE["TEMPLATE_ID"]) == ("from-template", 2,
                                                               str(template_id))
    one.template.delete(template_id)
    with pytest.raises(pyone.OneNoExistsException, match="virtual machine template"):
        one.template.info(template_id)


def test_bad_requests_are_answered_and_survived(daemon: RunningDaemon,
                                                one: pyone.OneServer) -> None:
    url = daemon.url
    assert post(url, b"this is not XML")[:2] == ("fault", -32700)
    assert post(url, b"<methodCall><methodName>one.vm.info")[:2] == ("fault", -32700)
    unknown = post(url, call_body("one.vm.explode", daemon.session))
    assert unknown == ("fault", -506, "Method 'one.vm.explode' not defined")
    entity = (b'<?xml version="1.0"?><!DOCTYPE m [<!ENTITY e "x">]>'
              b"<methodCall><methodName>one.system.version</methodName></methodCall>")
    assert post(url, entity)[:2] == ("fault", -32600)
    wrong_types = post(url, call_body("one.vm.action", daemon.session, 3, "terminate"))
    assert wrong_types == ("fault", -501, "Wrong type of parameter 1 (action): expected a "
                                          "string, got an integer")
    missing = post(url, call_body("one.vm.action", daemon.session, "terminate"))
    assert missing == ("fault", -501, "Missing parameter 2 (id): expected an integer")
    too_many = post(url, call_body("one.vm.info", daemon.session, 1, True, "x"))
    assert too_many[2] == 0x1000
    assert post(url, call_body("one.vm.info")) == (
        "fault", -501, "Missing parameter 0 (session): expected a string")
    assert post(url, call_body("one.vm.info", 7, 1)) == (
        "fault", -501, "Wrong type of parameter 0 (session): expected a string, got an integer")

    huge = call_body("one.vm.allocate", daemon.session, "A" * (20 * 1024 * 1024))
    answer = post(url, huge)
    assert answer == 413 or answer[:2] == ("fault", -32600)

    assert one.system.version() == "6.10.0"
    assert daemon.process.poll() is None


def test_many_clients_at_once(daemon: RunningDaemon) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def version(_: int) -> object:
        return post(daemon.url, call_body("one.system.version", daemon.session))

    with ThreadPoolExecutor(max_workers=16) as pool:
        answers = list(pool.map(version, range(64)))
    assert answers == [[True, "6.10.0", 0]] * 64


def test_fixture_extends_oned_conf_and_vms_get_monitored(tmp_path: Path) -> None:
    extra = 'VM_POLLING_INTERVAL = 0.2\nVM_MAD = [ name = "other", executable = "one_vmm_dummy" ]'
    with start_daemon(tmp_path, oned_conf_extra=extra) as running:
        one = pyone.OneServer(running.url, session=running.session)
        config = one.system.config()
        assert [section.NAME for section in config.VM_MAD] == ["dummy", "kvm", "other"]
        assert config.MONITORING_INTERVAL_VM == 1
        host_id = one.host.allocate("polled", "dummy", "other", -1)
        wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=20)
        vm_id = one.vm.allocate("CPU=1\nMEMORY=64", True)
        one.vm.deploy(vm_id, host_id, False, -1, "")
        vm = wait_for(lambda: (v := one.vm.info(vm_id)).MONITORING.NETTX and v, timeout=20)
        assert (vm_id, 3) == (vm.MONITORING.ID, vm.LCM_STATE)
        assert vm.MONITORING.TIMESTAMP >= vm.STIME
    assert running.process.poll() is not None


def test_templates_are_named_as_oned_names_them(one: pyone.OneServer) -> None:
    base = one.template.allocate('NAME = "named"\nCPU = 0.1\nMEMORY = 32\n')
    assert "NAME" not in one.template.info(base).TEMPLATE  # the name is not kept inside
    with pytest.raises(pyone.OneInternalException, match=rf"already taken by TEMPLATE {base}\."):
        one.template.allocate('NAME = "named"\nCPU = 0.1\nMEMORY = 32\n')
    with pytest.raises(pyone.OneInternalException, match="NAME, it cannot be empty"):
        one.template.allocate("CPU = 0.1\nMEMORY = 32\n")

    # Without a name a VM is named after the template and its own id.
    vm_id = one.template.instantiate(base, "", True, "", False)
    assert f"named-{vm_id}" == one.vm.info(vm_id).NAME
    # Persistent: a copy of the template for the VM, named after it (else <name>-copy).
    kept = one.template.instantiate(base, "", True, "", True)
    copy = one.vm.info(kept).TEMPLATE["TEMPLATE_ID"]
    assert one.template.info(int(copy)).NAME == "named-copy"
    assert f"named-copy-{kept}" == one.vm.info(kept).NAME

    clone = one.template.clone(base, "named-clone", False)
    assert one.template.info(clone).TEMPLATE["MEMORY"] == "32"
    with pytest.raises(pyone.OneException, match="allocating a new virtual machine template"):
        one.template.clone(base, "named-clone", False)
    with pytest.raises(pyone.OneActionException, match="collides with virtual machine template"):
        one.template.rename(clone, "named")
    for template_id in (base, int(copy), clone):
        one.template.delete(template_id)

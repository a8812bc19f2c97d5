"""Every API document parses with pyone's own bindings into the right values."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
from pyone import bindings
from pyone.bindings import supbind

from cloudburst.api import documents, tenancy_documents
from cloudburst.config.settings import DriverSection, Settings
from cloudburst.model.records import (
    HistoryRecord,
    HostRecord,
    TemplateRecord,
    UserRecord,
    VmRecord,
)
from cloudburst.model.states import HostState, LcmState, VmState
from cloudburst.service.vm_template import prepare
from cloudburst.template import parse

VM_TEXT = """
NAME = "web & <db>"
CPU = 0.5
MEMORY = 128
DISK = [ IMAGE = "ubuntu" ]
NIC = [ NETWORK = "public" ]
CONTEXT = [ SSH_PUBLIC_KEY = "ssh-rsa AAA" ]
PUBLIC_CLOUD = [ TYPE = "ec2", AMI = "ami-1", INSTANCETYPE = "t3.micro" ]
NOTE = "ends with ]]> and a bell \x07"
"""


def parsed(document: str) -> Any:
    assert document.startswith("<") and not document.startswith("<?xml")
    assert re.search(r">\s+<", document) is None, "documents must be compact"
    return bindings.parseString(document.encode("utf-8"))


def no_text_keys(value: object) -> bool:
    """True when no dict inside ``value`` has xmltodict's '#text' or '@attr' keys."""
    if isinstance(value, dict):
        return all(not key.startswith(("#", "@")) and no_text_keys(item)
                   for key, item in value.items())
    if isinstance(value, list):
        return all(no_text_keys(item) for item in value)
    return True


def make_vm(vm_id: int = 7, **changes: Any) -> VmRecord:
    prepared = prepare(parse(VM_TEXT))
    system = prepared.template.copy()
    system.set("VMID", str(vm_id))
    history = (
        HistoryRecord(vm_id=vm_id, seq=0, host_id=2, hostname="kvm-1", vm_mad="kvm",
                      tm_mad="dummy", stime=1000, etime=1100, pstime=1000, petime=1001,
                      rstime=1001, retime=1100, action=27, reason="no capacity: full"),
        HistoryRecord(vm_id=vm_id, seq=1, host_id=4, hostname="aws-eu", vm_mad="ec2",
                      tm_mad="tm_dummy", stime=1200, pstime=1200, petime=1201, rstime=1201,
                      cluster_id=100),
    )
    vm = VmRecord(
        id=vm_id, name=prepared.name or "", uid=0, gid=0, state=VmState.ACTIVE,
        lcm_state=LcmState.RUNNING, prev_state=VmState.ACTIVE, prev_lcm_state=LcmState.BOOT,
        stime=1000, etime=0, deploy_id="i-0123", host_id=4, template=system,
        user_template=prepared.user_template, cpu=0.5, memory=128, version=3,
        monitoring={"CPU": "12.5", "MEMORY": "131072", "NETTX": "12345", "IP": "10.0.0.7",
                    "DISKRDBYTES": "not-a-number", "bad key": "x", "TIMESTAMP": "garbage"},
        last_poll=1300, error="Error monitoring VM: timeout", sched_message="", history=history,
    )
    return replace(vm, **changes)


def make_host(**changes: Any) -> HostRecord:
    host = HostRecord(
        id=4, name="aws-eu", state=HostState.MONITORED, prev_state=HostState.INIT,
        im_mad="ec2", vm_mad="ec2", tm_mad="tm_dummy", vn_mad="dummy", cluster_id=0,
        template=parse('PUBLIC_CLOUD="YES"\nHYPERVISOR="ec2"\nCPUSPEED="2200"'),
        last_mon_time=1500, version=2, max_cpu=500, max_mem=8912896, free_cpu=450,
        free_mem=8000000, used_cpu=50, used_mem=912896, cpu_usage=50, mem_usage=131072,
        running_vms=1, vm_ids=(7,))
    return replace(host, **changes)


def test_vm_document() -> None:
    vm = parsed(documents.vm_document(make_vm(), uname="oneadmin", gname="oneadmin"))
    assert isinstance(vm, supbind.VM)
    assert (vm.ID, vm.UID, vm.UNAME, vm.GNAME, vm.NAME) == (7, 0, "oneadmin", "oneadmin",
                                                            "web & <db>")
    assert (vm.STATE, vm.LCM_STATE, vm.PREV_STATE, vm.PREV_LCM_STATE) == (3, 3, 3, 2)
    assert (vm.STIME, vm.ETIME, vm.LAST_POLL, vm.DEPLOY_ID) == (1000, 0, 1300, "i-0123")
    assert vm.PERMISSIONS.OWNER_U == 1
    uuid = vm.TEMPLATE["OS"]["UUID"]
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", uuid)
    assert {
        "CPU": "0.5", "MEMORY": "128", "DISK": {"IMAGE": "ubuntu"},
        "NIC": {"NETWORK": "public"}, "CONTEXT": {"SSH_PUBLIC_KEY": "ssh-rsa AAA"},
        "VMID": "7", "TM_MAD_SYSTEM": "tm_dummy", "OS": {"UUID": uuid},
        "AUTOMATIC_REQUIREMENTS": "!(PUBLIC_CLOUD = YES) & !(PIN_POLICY = PINNED) | "
                                  "(PUBLIC_CLOUD = YES & (HYPERVISOR = ec2))"} == vm.TEMPLATE
    assert vm.USER_TEMPLATE == {
        "PUBLIC_CLOUD": {"TYPE": "ec2", "AMI": "ami-1", "INSTANCETYPE": "t3.micro"},
        "NOTE": "ends with ]]> and a bell ", "ERROR": "Error monitoring VM: timeout"}
    assert no_text_keys(vm.TEMPLATE) and no_text_keys(vm.USER_TEMPLATE)
    assert (vm.MONITORING.ID, vm.MONITORING.TIMESTAMP) == (7, 1300)
    cpu, memory, nettx = vm.MONITORING.CPU, vm.MONITORING.MEMORY, vm.MONITORING.NETTX
    assert (cpu, memory, nettx) == (Decimal("12.5"), Decimal("131072"), Decimal("12345"))
    assert vm.MONITORING.DISKRDBYTES is None
    records = vm.HISTORY_RECORDS.HISTORY
    assert [record.SEQ for record in records] == [0, 1]
    assert (records[-1].HID, records[-1].HOSTNAME, records[-1].VM_MAD) == (4, "aws-eu", "ec2")
    assert (records[0].ETIME, records[0].RETIME, records[0].ACTION) == (1100, 1100, 27)
    assert records[-1].PLAN_ID == -1
    # Each stay names the cluster its host was in (oned's CID).
    assert [record.CID for record in records] == [0, 100]


def test_vm_document_keeps_the_ip_and_sched_message() -> None:
    document = documents.vm_document(make_vm(sched_message="No host with enough capacity"),
                                     uname="oneadmin", gname="oneadmin")
    assert "<IP><![CDATA[10.0.0.7]]></IP>" in document
    assert "bad key" not in document
    assert parsed(document).USER_TEMPLATE["SCHED_MESSAGE"] == "No host with enough capacity"


def test_vm_without_history_or_monitoring() -> None:
    vm = make_vm(history=(), monitoring={}, error="", state=VmState.PENDING,
                 lcm_state=LcmState.LCM_INIT, deploy_id="")
    result = parsed(documents.vm_document(vm, uname="oneadmin", gname="oneadmin"))
    assert result.HISTORY_RECORDS.HISTORY == []
    assert "TM_MAD_SYSTEM" not in result.TEMPLATE
    assert "ERROR" not in result.USER_TEMPLATE
    assert result.DEPLOY_ID == ""


def test_vm_pool_reduced_and_extended() -> None:
    vms = [make_vm(1), make_vm(2, uid=5, gid=1)]
    names = {0: "oneadmin", 5: "alice"}.__getitem__
    groups = {0: "oneadmin", 1: "users"}.__getitem__
    reduced = parsed(documents.vm_pool_document(vms, extended=False, uname=names,
                                                gname=groups))
    assert isinstance(reduced, supbind.VM_POOL)
    assert [(vm.ID, vm.UNAME, vm.GNAME) for vm in reduced.VM] == [
        (1, "oneadmin", "oneadmin"), (2, "alice", "users")]
    first = reduced.VM[0]
    # VCPU is always there (empty when unset), as in oned's short body.
    assert first.TEMPLATE == {"CPU": "0.5", "MEMORY": "128", "DISK": {"IMAGE": "ubuntu"},
                              "NIC": {"NETWORK": "public"}, "VCPU": None}
    # The short user template keeps PUBLIC_CLOUD and ERROR, not other attributes.
    assert first.USER_TEMPLATE["PUBLIC_CLOUD"]["AMI"] == "ami-1"
    assert "NOTE" not in first.USER_TEMPLATE and "ERROR" in first.USER_TEMPLATE
    assert [(record.HID, record.CID) for record in first.HISTORY_RECORDS.HISTORY] == [(4, 100)]
    assert (first.STATE, first.LCM_STATE) == (3, 3)

    extended = parsed(documents.vm_pool_document(vms, extended=True, uname=names,
                                                 gname=groups))
    assert [len(vm.HISTORY_RECORDS.HISTORY) for vm in extended.VM] == [2, 2]
    assert extended.VM[1].TEMPLATE["VMID"] == "2"
    assert parsed(documents.vm_pool_document([], extended=False, uname=names,
                                             gname=groups)).VM == []


def test_host_document() -> None:
    host = parsed(documents.host_document(make_host(), cluster="default"))
    assert isinstance(host, supbind.HOST)
    assert (host.ID, host.NAME, host.STATE, host.PREV_STATE) == (4, "aws-eu", 2, 0)
    assert (host.IM_MAD, host.VM_MAD, host.CLUSTER_ID, host.CLUSTER) == ("ec2", "ec2", 0,
                                                                         "default")
    share = host.HOST_SHARE
    assert (share.MEM_USAGE, share.CPU_USAGE, share.MAX_MEM, share.MAX_CPU) == (
        131072, 50, 8912896, 500)
    assert (share.TOTAL_MEM, share.TOTAL_CPU, share.RUNNING_VMS) == (8912896, 500, 1)
    assert share.DATASTORES.FREE_DISK == 0
    assert host.VMS.ID == [7]
    assert host.TEMPLATE == {"PUBLIC_CLOUD": "YES", "HYPERVISOR": "ec2", "CPUSPEED": "2200"}
    assert (host.MONITORING.TIMESTAMP, host.MONITORING.CAPACITY.FREE_CPU) == (1500, 450)
    raw = documents.host_document(make_host(), cluster="default")
    for element in ("<FREE_MEM>8000000</FREE_MEM>", "<USED_CPU>50</USED_CPU>",
                    "<TM_MAD>tm_dummy</TM_MAD>", "<LAST_MON_TIME>1500</LAST_MON_TIME>"):
        assert element in raw


def test_host_in_error_and_never_monitored() -> None:
    failing = make_host(state=HostState.ERROR, error="probe timed out", template=parse(""))
    assert parsed(documents.host_document(failing, cluster="default")).TEMPLATE == {
        "ERROR": "probe timed out"}
    fresh = parsed(documents.host_document(make_host(last_mon_time=0, vm_ids=()),
                                           cluster="default"))
    assert fresh.MONITORING.TIMESTAMP is None
    assert fresh.VMS.ID == []
    clusters = {0: "default", 100: "aws"}.__getitem__
    pool = parsed(documents.host_pool_document(
        [make_host(), make_host(id=5, name="b", cluster_id=100)], cluster=clusters))
    assert isinstance(pool, supbind.HOST_POOL)
    assert [(host.NAME, host.CLUSTER_ID, host.CLUSTER) for host in pool.HOST] == [
        ("aws-eu", 0, "default"), ("b", 100, "aws")]


def test_template_documents() -> None:
    record = TemplateRecord(id=3, name="small", uid=0, gid=0, regtime=1234,
                            template=parse(VM_TEXT))
    template = parsed(documents.template_document(record, uname="oneadmin", gname="oneadmin"))
    assert isinstance(template, supbind.VMTEMPLATE)
    assert (template.ID, template.NAME, template.REGTIME) == (3, "small", 1234)
    assert template.TEMPLATE["PUBLIC_CLOUD"] == {"TYPE": "ec2", "AMI": "ami-1",
                                                 "INSTANCETYPE": "t3.micro"}
    assert no_text_keys(template.TEMPLATE)
    pool = parsed(documents.template_pool_document(
        [record, replace(record, id=4, gid=100)], uname=lambda uid: "oneadmin",
        gname={0: "oneadmin", 100: "site-a"}.__getitem__))
    assert isinstance(pool, supbind.VMTEMPLATE_POOL)
    assert [(item.UNAME, item.GNAME) for item in pool.VMTEMPLATE] == [
        ("oneadmin", "oneadmin"), ("oneadmin", "site-a")]


def test_user_documents_never_carry_the_hash() -> None:
    user = UserRecord(id=0, name="oneadmin", gid=0, password_hash="scrypt$c2FsdA==$aGFzaA==",
                      groups=(0,), template=parse('TOKEN_HINT="x"'))
    document = tenancy_documents.user_document(
        user, gname={0: "oneadmin"}.__getitem__, tokens=(), limits={}, usage={}, defaults={})
    assert "scrypt" not in document
    parsed_user = parsed(document)
    assert isinstance(parsed_user, supbind.USER)
    assert (parsed_user.ID, parsed_user.NAME, parsed_user.GNAME) == (0, "oneadmin", "oneadmin")
    assert (parsed_user.GROUPS.ID, parsed_user.ENABLED) == ([0], 1)
    assert parsed_user.PASSWORD == documents.PASSWORD_PLACEHOLDER
    assert parsed_user.TEMPLATE == {"TOKEN_HINT": "x"}
    pool_document = tenancy_documents.user_pool_document(
        [(user, {}, {})], gname={0: "oneadmin"}.__getitem__, defaults={})
    assert "scrypt" not in pool_document
    pool = parsed(pool_document)
    assert isinstance(pool, supbind.USER_POOL)
    assert [item.NAME for item in pool.USER] == ["oneadmin"]
    assert pool.DEFAULT_USER_QUOTAS is not None


def test_config_document_has_no_secrets() -> None:
    settings = Settings(
        home=Path("/tmp/cb"), port=2633, db_url="postgresql://one:s3cret@db/one",
        monitoring_interval=0.5,
        drivers=(
            DriverSection(kind="IM_MAD", name="im_ec2", executable="one_im_ec2",
                          arguments="-t 4 im_ec2/im_ec2.conf"),
            DriverSection(kind="VM_MAD", name="vmm_ec2", executable="one_vmm_ec2",
                          arguments="-u https://key:s3cret@ec2.example -r 2 vmm_ec2.conf",
                          default="vmm_ec2/vmm_ec2.conf"),
        ))
    document = documents.config_document(settings)
    assert "s3cret" not in document
    config = parsed(document)
    assert isinstance(config, supbind.OPENNEBULA_CONFIGURATION)
    assert (config.PORT, config.LISTEN_ADDRESS) == (2633, ["127.0.0.1"])
    assert config.MONITORING_INTERVAL_HOST == 1
    assert config.DB.BACKEND == "postgresql"
    assert [(mad.NAME, mad.THREADS) for mad in config.IM_MAD] == [("im_ec2", 4)]
    [vm_mad] = config.VM_MAD
    assert (vm_mad.NAME, vm_mad.EXECUTABLE, vm_mad.ARGUMENTS, vm_mad.TYPE) == (
        "vmm_ec2", "one_vmm_ec2", "-t 15 -r 2", "xml")
    assert "<MONITORING_INTERVAL>0.5</MONITORING_INTERVAL>" in document


def test_ten_thousand_vm_pool_render_time(capsys: pytest.CaptureFixture[str]) -> None:
    template_vm = make_vm()
    vms = [replace(template_vm, id=vm_id) for vm_id in range(10_000)]
    timings = {}
    for extended in (False, True):
        best = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            document = documents.vm_pool_document(vms, extended=extended,
                                                  uname=lambda uid: "oneadmin",
                                                  gname=lambda gid: "oneadmin")
            best = min(best, time.perf_counter() - started)
        timings["infoextended" if extended else "info"] = (best, len(document))
    with capsys.disabled():
        print()
        for name, (seconds, size) in timings.items():
            print(f"10,000-VM one.vmpool.{name} document: {seconds * 1000:.0f} ms, "
                  f"{size / 1e6:.1f} MB")
    assert len(ElementTree.fromstring(document)) == 10_000


def test_a_locked_vm_shows_its_lock_as_oned_does() -> None:
    vm = make_vm()
    template = vm.template.copy()
    template.set("LOCK", {"LOCKED": "2", "OWNER": "5", "TIME": "1700", "REQ_ID": "-1"})
    locked = replace(vm, template=template)
    full = parsed(documents.vm_document(locked, uname="oneadmin", gname="oneadmin"))
    assert (full.LOCK.LOCKED, full.LOCK.OWNER, full.LOCK.TIME, full.LOCK.REQ_ID) == (
        2, 5, 1700, -1)
    assert "LOCK" not in full.TEMPLATE  # oned keeps it out of the template
    raw = documents.vm_document(locked, uname="oneadmin", gname="oneadmin")
    assert raw.index("</DEPLOY_ID><LOCK>") < raw.index("<MONITORING>")
    # The pool's short form carries the level only.
    short = parsed(documents.vm_pool_document([locked], extended=False,
                                              uname=lambda uid: "oneadmin",
                                              gname=lambda gid: "oneadmin")).VM[0]
    assert (short.LOCK.LOCKED, short.LOCK.OWNER) == (2, None)
    assert parsed(documents.vm_document(vm, uname="oneadmin", gname="oneadmin")).LOCK is None

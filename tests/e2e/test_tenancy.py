"""Many users on one daemon, through pyone: permissions, ACL rules, quotas, tokens, audit.

Expected answers follow OpenNebula 6.10's rules (default ACL rules, UMASK 177,
independent USE/MANAGE/ADMIN rights); each message below was checked against
the real peer (``tests/e2e/test_tenancy_peer.py`` checks a sample of them live).
"""

from __future__ import annotations

import xmlrpc.client
from collections.abc import Iterator
from xml.etree import ElementTree

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

pytestmark = pytest.mark.e2e

SMALL = 'NAME = "small"\nCPU = 0.1\nMEMORY = 64\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("tenancy")) as running:
        yield running


@pytest.fixture(scope="module")
def admin(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


@pytest.fixture(scope="module")
def people(daemon: RunningDaemon, admin: pyone.OneServer) -> dict[str, pyone.OneServer]:
    """alice and bob in ``users`` (1), carol in a new group; dave is bob's group admin."""
    group = admin.group.allocate("research")
    ids = {"alice": admin.user.allocate("alice", "pw-a", "core", []),
           "bob": admin.user.allocate("bob", "pw-b", "core", []),
           "carol": admin.user.allocate("carol", "pw-c", "core", [group]),
           "dave": admin.user.allocate("dave", "pw-d", "core", [])}
    admin.group.addadmin(1, ids["dave"])
    admin.host.allocate("local-1", "dummy", "dummy", -1)
    return {name: pyone.OneServer(daemon.url, session=f"{name}:pw-{name[0]}") for name in ids}


def refused(call: object, *args: object) -> str:
    with pytest.raises(pyone.OneAuthorizationException) as info:
        call(*args)  # type: ignore[operator]
    return str(info.value)


def test_first_start_has_opennebulas_users_groups_cluster_and_rules(
        admin: pyone.OneServer) -> None:
    assert [(u.ID, u.NAME, u.GID) for u in admin.userpool.info().USER][:1] == [
        (0, "oneadmin", 0)]
    groups = {g.ID: g.NAME for g in admin.grouppool.info().GROUP}
    assert (groups[0], groups[1]) == ("oneadmin", "users")
    assert admin.cluster.info(0).NAME == "default"
    rules = {r.ID: r.STRING for r in admin.acl.info().ACL}
    assert rules[0] == "@1 VM+IMAGE+TEMPLATE+DOCUMENT+SECGROUP+VMGROUP+BACKUPJOB/* CREATE *"
    assert rules[3] == "@1 HOST/* MANAGE #0"


def test_owner_group_other_and_chmod_640(people: dict[str, pyone.OneServer],
                                         admin: pyone.OneServer) -> None:
    alice, bob, carol, dave = (people[n] for n in ("alice", "bob", "carol", "dave"))
    vm = alice.vm.allocate(SMALL)
    assert vm == alice.vm.info(vm).ID
    assert refused(bob.vm.info, vm).endswith("User [3] : Not authorized to perform USE VM "
                                             f"[{vm}].")
    assert "MANAGE VM" in refused(bob.vm.action, "terminate-hard", vm)
    assert "USE VM" in refused(carol.vm.info, vm)
    assert "ADMIN VM" in refused(alice.vm.deploy, vm, 0)
    alice.vm.chmod(vm, 1, 1, 0, 1, 0, 0, 0, 0, 0)          # 640
    assert admin.vm.info(vm).PERMISSIONS.GROUP_U == 1
    assert vm == bob.vm.info(vm).ID                         # group may use ...
    assert "MANAGE VM" in refused(bob.vm.action, "terminate-hard", vm)  # ... not manage
    assert "USE VM" in refused(carol.vm.info, vm)           # others still nothing
    assert "ADMIN VM" in refused(alice.vm.chmod, vm, -1, -1, 1, -1, -1, -1, -1, -1, -1)
    assert vm == dave.vm.info(vm).ID                        # the group admin's rules
    assert [v.ID for v in bob.vmpool.info(-2, -1, -1, -1).VM] == [vm]
    assert [v.ID for v in bob.vmpool.info(-3, -1, -1, -1).VM] == []
    assert [v.ID for v in carol.vmpool.info(-2, -1, -1, -1).VM] == []
    rule = admin.acl.addrule("100000004", "1200000001", "1")  # "#4 VM/@1 USE"
    assert vm == carol.vm.info(vm).ID
    admin.acl.delrule(rule)
    assert "USE VM" in refused(carol.vm.info, vm)
    assert "MANAGE USER [3]" in refused(alice.vm.chown, vm, 3, -1)
    admin.vm.chown(vm, 3, -1)
    assert bob.vm.info(vm).UID == 3
    admin.vm.action("terminate-hard", vm)


def test_users_see_only_themselves_and_cannot_touch_the_system(
        people: dict[str, pyone.OneServer]) -> None:
    alice = people["alice"]
    assert [u.NAME for u in alice.userpool.info().USER] == ["alice"]
    assert [g.NAME for g in alice.grouppool.info().GROUP] == ["users"]
    assert "USE USER [3]" in refused(alice.user.info, 3)
    assert "CREATE USER" in refused(alice.user.allocate, "x", "y", "core", [])
    assert "MANAGE ACL" in refused(alice.acl.info)
    assert "USE HOST [0]" in refused(alice.host.info, 0)
    assert "ADMIN HOST [0]" in refused(alice.host.delete, 0)
    assert "USE CLUSTER [0]" in refused(alice.cluster.info, 0)
    assert "MANAGE AUDIT" in refused(alice.audit.info, 0, -1, 10)


def test_vms_quota_refuses_the_third_and_allows_it_after_a_terminate(
        people: dict[str, pyone.OneServer], admin: pyone.OneServer) -> None:
    bob = people["bob"]
    admin.user.quota(3, "VM = [ VMS = 2, CPU = 0.5, MEMORY = 256 ]")
    first, _second = bob.vm.allocate(SMALL), bob.vm.allocate(SMALL)
    message = refused(bob.vm.allocate, SMALL)
    assert message.endswith("User [3] : user [3] limit of 2 reached for VMS quota in VM.")
    bob.vm.action("terminate-hard", first)
    wait_for(lambda: admin.vm.info(first).STATE == 6, timeout=20)
    assert "limit of 0.5 reached for CPU" in refused(
        bob.vm.allocate, "CPU = 1\nMEMORY = 64")
    assert "limit of 256 reached for MEMORY" in refused(
        bob.vm.allocate, "CPU = 0.1\nMEMORY = 512")
    third = bob.vm.allocate(SMALL)
    quota = admin.user.info(3).VM_QUOTA.VM[0]
    assert (quota.VMS, quota.VMS_USED) == ("2", "2")
    for vm in (_second, third):
        admin.vm.action("terminate-hard", vm)


def test_a_login_token_runs_a_whole_vm_life_and_sees_only_its_own_vms(
        daemon: RunningDaemon, people: dict[str, pyone.OneServer],
        admin: pyone.OneServer) -> None:
    others = people["bob"].vm.allocate(SMALL)
    token = people["alice"].user.login("alice", "", 3600, -1)
    assert len(token) == 64
    alice = pyone.OneServer(daemon.url, session=f"alice:{token}")
    vm = alice.vm.allocate(SMALL, True)
    assert alice.vm.info(vm).STATE == 2  # HOLD
    alice.vm.action("release", vm)
    wait_for(lambda: alice.vm.info(vm).LCM_STATE == 3, timeout=30)
    assert [v.ID for v in alice.vmpool.info(-2, -1, -1, -1).VM if v.STATE != 6] == [vm]
    assert "USE VM" in refused(alice.vm.info, others)
    alice.vm.update(vm, 'LABEL = "mine"', 1)
    alice.vm.rename(vm, "renamed")
    alice.vm.action("reboot", vm)
    wait_for(lambda: alice.vm.info(vm).LCM_STATE == 3, timeout=30)
    alice.vm.action("terminate-hard", vm)
    wait_for(lambda: alice.vm.info(vm).STATE == 6, timeout=30)
    shown = admin.user.info(2)
    assert token not in str(vars(shown)) and "scrypt" not in str(vars(shown))
    admin.vm.action("terminate-hard", others)


def test_disable_and_revoke_take_effect_at_once(daemon: RunningDaemon,
                                                people: dict[str, pyone.OneServer],
                                                admin: pyone.OneServer) -> None:
    carol = people["carol"]
    token = carol.user.login("carol", "", 600, -1)
    by_token = pyone.OneServer(daemon.url, session=f"carol:{token}")
    assert by_token.user.info(-1).NAME == "carol"
    admin.user.enable(4, False)
    for session in (carol, by_token):
        with pytest.raises(pyone.OneAuthenticationException):
            session.user.info(-1)
    admin.user.enable(4, True)
    assert by_token.user.info(-1).NAME == "carol"
    carol.user.login("carol", token, 0, -1)
    with pytest.raises(pyone.OneAuthenticationException):
        by_token.user.info(-1)
    admin.user.passwd(4, "new-secret")
    with pytest.raises(pyone.OneAuthenticationException):
        carol.user.info(-1)


def test_the_audit_trail_names_who_what_and_the_result(
        daemon: RunningDaemon, people: dict[str, pyone.OneServer]) -> None:
    refused(people["alice"].host.delete, 0)
    server = xmlrpc.client.ServerProxy(daemon.url)
    ok, document, _code = server.one.audit.info(daemon.session, 0, 2, 1000)
    assert ok
    records = ElementTree.fromstring(document).findall("RECORD")
    last = records[-1]
    assert (last.findtext("UNAME"), last.findtext("METHOD"), last.findtext("OBJECT"),
            last.findtext("SUCCESS")) == ("alice", "one.host.delete", "HOST [0]", "0")
    assert "Not authorized to perform ADMIN HOST [0]" in (last.findtext("MESSAGE") or "")
    assert all(r.findtext("UID") == "2" for r in records)
    assert not any(r.findtext("METHOD", "").endswith(".info") for r in records)


def test_a_per_cluster_quota_keeps_a_user_from_bursting_beyond_it(
        daemon: RunningDaemon, people: dict[str, pyone.OneServer],
        admin: pyone.OneServer) -> None:
    site = admin.cluster.allocate("site-a")
    site_host = admin.host.allocate("site-a-1", "dummy", "dummy", site)
    assert site == admin.host.info(site_host).CLUSTER_ID
    erin_id = admin.user.allocate("erin", "pw-e", "core", [])
    admin.user.quota(erin_id, f"VM = [ CLUSTER_ID = 0, VMS = 1 ]\n"
                              f"VM = [ CLUSTER_ID = {site}, VMS = 1 ]")
    erin = pyone.OneServer(daemon.url, session="erin:pw-e")
    vms = [erin.vm.allocate(SMALL) for _ in range(3)]

    def placed() -> list[int]:
        return [v.ID for v in (erin.vm.info(vm) for vm in vms) if v.LCM_STATE == 3]

    running = wait_for(lambda: len(placed()) == 2 and placed(), timeout=60)
    hosts = {erin.vm.info(vm).HISTORY_RECORDS.HISTORY[-1].HID for vm in running}
    assert hosts == {0, site_host}
    waiting = next(vm for vm in vms if vm not in running)
    message = wait_for(lambda: erin.vm.info(waiting).USER_TEMPLATE.get("SCHED_MESSAGE"),
                       timeout=30)
    assert "limit of 1 reached for VMS quota in VM of CLUSTER" in message
    assert erin.vm.info(waiting).STATE == 1
    _ok, document, _code = xmlrpc.client.ServerProxy(daemon.url).one.user.info(
        daemon.session, erin_id)
    quotas = {q.findtext("CLUSTER_ID"): q.findtext("VMS_USED")
              for q in ElementTree.fromstring(document).findall("VM_QUOTA/VM")}
    assert quotas == {None: "3", "0": "1", str(site): "1"}
    for vm in vms:
        admin.vm.action("terminate-hard", vm)

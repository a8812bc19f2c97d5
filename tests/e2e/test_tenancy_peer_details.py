"""Tenancy details against the real OpenNebula 6.10.5 peer, call for call.

Each test runs the same steps on a fresh peer and on a fresh cloudburst (the
same objects get the same ids on both) and compares every answer:

1. Group-scoped login tokens (``one.user.login``'s EGID): a session on such a
   token acts as a member of that group alone (new objects get it as their
   group, listings and authorization see only it); the refusals oned gives
   when making one; the token dies when the user leaves the group.
2. RUNNING_* quotas: a held VM counts; ``resume`` of a powered-off, stopped,
   undeployed or suspended VM is checked against the owner's quota (also when
   oneadmin asks), ``release`` is not (the held VM counted already).
3. Clusters and group names in documents: a VM deployed on a host of another
   cluster has that cluster in its history (``CID``) and ``onevm show``; host
   documents name their cluster; ``GNAME`` of a VM and a template in a new
   group is the group's name, in the XML and in the Ruby CLI's tables.
"""

from __future__ import annotations

import re
import subprocess
import time
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_fixture import RunningDaemon, start_daemon

from one_peer import OnePeer, peer_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

one_peer = peer_fixture()

#: Seconds a VM or host may take to reach a state (generous: a loaded 2-core machine).
STATE_TIMEOUT = 120.0
HOST_MONITORED = 2
HOLD, ACTIVE, STOPPED, SUSPENDED, DONE, POWEROFF, UNDEPLOYED = 2, 3, 4, 5, 6, 8, 9
LCM_RUNNING = 3
#: oned's ACL rule ``@GID VM+TEMPLATE/* CREATE`` in the hex form one.acl.addrule takes.
ACL_GROUP, ACL_VM_AND_TEMPLATE_ALL, ACL_CREATE = 0x200000000, "21400000000", "8"

Outcome = tuple[object, ...]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("tenancy-details")) as running:
        yield running


class Server:
    """One XML-RPC endpoint driven the same way on both sides; records every answer."""

    def __init__(self, url: str, admin: str) -> None:
        self.url = url
        self.admin = admin
        self.outcomes: list[Outcome] = []

    def raw(self, session: str, method: str, *params: object) -> list[object]:
        proxy = xmlrpc.client.ServerProxy(self.url)
        return list(getattr(proxy, method)(session, *params))

    def step(self, session: str, method: str, *params: object,
             value: Callable[[object], object] = lambda v: v) -> object:
        """Call and record ``(method, ok, code, message or value(result))``."""
        answer = self.raw(session, method, *params)
        ok, result = answer[0], answer[1]
        code = 0 if ok else answer[2]
        self.outcomes.append((method, ok, code, value(result) if ok else result))
        return result

    def document(self, method: str, *params: object) -> str:
        answer = self.raw(self.admin, method, *params)
        assert answer[0], (method, params, answer)
        return str(answer[1])

    def vm_state(self, vm_id: int) -> tuple[int, int]:
        document = self.document("one.vm.info", vm_id)
        return (int(_field(document, "STATE")), int(_field(document, "LCM_STATE")))

    def wait_vm(self, vm_id: int, state: int, lcm: int | None = None) -> None:
        deadline = time.monotonic() + STATE_TIMEOUT
        current = self.vm_state(vm_id)
        while not (current[0] == state and (lcm is None or current[1] == lcm)):
            assert time.monotonic() < deadline, (self.url, vm_id, "stuck in", current,
                                                 "waiting for", state, lcm)
            time.sleep(0.25)
            current = self.vm_state(vm_id)

    def add_host(self, name: str, cluster: int = -1) -> int:
        host_id = int(self.step(self.admin, "one.host.allocate", name, "dummy", "dummy",
                                cluster))
        deadline = time.monotonic() + STATE_TIMEOUT
        while int(_field(self.document("one.host.info", host_id), "STATE")) != HOST_MONITORED:
            assert time.monotonic() < deadline, (self.url, "host", name, "not monitored")
            time.sleep(0.25)
        return host_id

    def running_vms_used(self, user_id: int) -> str:
        return _field(self.document("one.user.info", user_id), "RUNNING_VMS_USED")


def _field(document: str, tag: str) -> str:
    """The text of the first ``tag`` element (CDATA unwrapped)."""
    found = re.search(rf"<{tag}>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</{tag}>", document)
    assert found is not None, (tag, document[:500])
    return found.group(1)


def _last(document: str, tag: str) -> str:
    found = re.findall(rf"<{tag}>(?:<!\[CDATA\[)?(.*?)(?:\]\]>)?</{tag}>", document)
    assert found, (tag, document[:500])
    return str(found[-1])


def both(one_peer: OnePeer, daemon: RunningDaemon) -> tuple[Server, Server]:
    return Server(one_peer.url, one_peer.session), Server(daemon.url, daemon.session)


def assert_same(peer: Server, ours: Server) -> None:
    differences = [(step, theirs, mine) for step, (theirs, mine)
                   in enumerate(zip(peer.outcomes, ours.outcomes, strict=True))
                   if theirs != mine]
    assert differences == [], "(step, OpenNebula's answer, cloudburst's answer)"


def run_on_both(one_peer: OnePeer, daemon: RunningDaemon,
                scenario: Callable[[Server], None]) -> None:
    """Run ``scenario`` on the peer, then on cloudburst: every answer must be the same."""
    peer, ours = both(one_peer, daemon)
    scenario(peer)
    scenario(ours)
    assert_same(peer, ours)


# -- 1. group-scoped tokens ---------------------------------------------------------------


def token_scenario(server: Server) -> None:
    admin, step = server.admin, server.step
    team = step(admin, "one.group.allocate", "team")
    step(admin, "one.group.allocate", "other")
    erin = step(admin, "one.user.allocate", "erin", "pw-e", "core", [])
    step(admin, "one.user.addgroup", erin, team)
    step(admin, "one.acl.addrule", f"{ACL_GROUP | int(str(team)):x}", ACL_VM_AND_TEMPLATE_ALL,
         ACL_CREATE)
    password = "erin:pw-e"
    step(password, "one.user.login", "erin", "", 600, 101, value=bool)  # not a member
    step(password, "one.user.login", "erin", "", 600, 999, value=bool)  # no such group
    scoped = f"erin:{step(password, 'one.user.login', 'erin', '', 600, team, value=bool)}"
    full = f"erin:{step(password, 'one.user.login', 'erin', '', 600, -1, value=bool)}"

    def group_of(kind: str) -> Callable[[object], object]:
        return lambda oid: (_field(server.document(f"one.{kind}.info", oid), "GID"),
                            _field(server.document(f"one.{kind}.info", oid), "GNAME"))

    # Objects made on the scoped token belong to the token's group.
    in_team = step(scoped, "one.vm.allocate", 'NAME="by-token"\nCPU=0.1\nMEMORY=32', True,
                   value=group_of("vm"))
    step(scoped, "one.template.allocate", 'NAME="tpl-by-token"\nCPU=0.1\nMEMORY=32',
         value=group_of("template"))
    in_users = step(password, "one.vm.allocate", 'NAME="by-password"\nCPU=0.1\nMEMORY=32',
                    True, value=group_of("vm"))
    for session in (full, password):
        step(session, "one.vm.allocate", 'NAME="by-full"\nCPU=0.1\nMEMORY=32', True,
             value=group_of("vm"))
    # A VM of oneadmin's, shared with each group.
    shared_users = step(admin, "one.vm.allocate", 'NAME="s1"\nCPU=0.1\nMEMORY=32', True)
    shared_team = step(admin, "one.vm.allocate", 'NAME="s2"\nCPU=0.1\nMEMORY=32', True)
    step(admin, "one.vm.chown", shared_users, -1, 1)
    step(admin, "one.vm.chown", shared_team, -1, team)
    for vm in (shared_users, shared_team):
        step(admin, "one.vm.chmod", vm, -1, -1, -1, 1, -1, -1, -1, -1, -1)

    def names(document: object) -> list[str]:
        return sorted(re.findall(r"<VM><ID>\d+</ID><UID>\d+</UID><GID>\d+</GID>"
                                 r"<UNAME>[^<]*</UNAME><GNAME>[^<]*</GNAME><NAME>([^<]*)</NAME>",
                                 str(document)))

    for session in (scoped, full, password):
        for flag in (-1, -2, -3, -4):
            step(session, "one.vmpool.info", flag, -1, -1, -1, value=names)
        step(session, "one.vm.info", shared_users, value=bool)
        step(session, "one.vm.info", shared_team, value=bool)
        step(session, "one.group.info", 1, value=bool)
        step(session, "one.group.info", -1, value=lambda v: _field(str(v), "NAME"))
        # The caller's own document shows every group, whatever the token.
        step(session, "one.user.info", -1,
             value=lambda v: (_field(str(v), "GID"), re.findall(
                 r"<ID>(\d+)</ID>", str(v).split("<GROUPS>")[1].split("</GROUPS>")[0])))
        step(session, "one.grouppool.info",
             value=lambda v: sorted(re.findall(r"<GROUP><ID>(\d+)</ID>", str(v))))
    step(scoped, "one.vm.chown", in_users, -1, team)
    step(scoped, "one.vm.chown", in_users, -1, 1)
    step(scoped, "one.user.chgrp", erin, 1)
    # A scoped session makes only tokens of its own group.
    step(scoped, "one.user.login", "erin", "", 60, -1, value=bool)
    step(scoped, "one.user.login", "erin", "", 60, 1, value=bool)
    step(scoped, "one.user.login", "erin", "", 60, team, value=bool)
    # oneadmin may scope a token to any group; one outside the user's groups never works.
    foreign = step(admin, "one.user.login", "erin", "", 60, 0, value=bool)
    step(f"erin:{foreign}", "one.vm.info", in_team, value=bool)
    # Leaving the group ends the token; joining again does not bring it back.
    step(scoped, "one.vm.info", in_team, value=bool)
    step(admin, "one.user.delgroup", erin, team)
    step(scoped, "one.vm.info", in_team, value=bool)
    step(admin, "one.user.addgroup", erin, team)
    step(scoped, "one.vm.info", in_team, value=bool)
    step(full, "one.vm.info", in_team, value=bool)
    for vm in (in_team, in_users, shared_users, shared_team):
        step(admin, "one.vm.action", "terminate-hard", vm)


def test_group_scoped_tokens_act_as_in_opennebula(
        one_peer: OnePeer, daemon: RunningDaemon) -> None:
    run_on_both(one_peer, daemon, token_scenario)


# -- 2. RUNNING_* quotas on release and resume --------------------------------------------


def quota_scenario(server: Server) -> None:
    admin, step = server.admin, server.step
    server.add_host("quota-host")
    quinn = step(admin, "one.user.allocate", "quinn", "pw-q", "core", [])
    step(admin, "one.user.quota", quinn, "VM = [ RUNNING_VMS = 1, VMS = 10 ]")
    session = "quinn:pw-q"
    template = 'NAME="q{}"\nCPU=0.1\nMEMORY=32'

    def act(action: str, vm: object, who: str = session) -> None:
        step(who, "one.vm.action", action, vm)

    def used() -> None:
        server.outcomes.append(("RUNNING_VMS_USED", server.running_vms_used(int(quinn))))

    first = step(session, "one.vm.allocate", template.format(1), False)
    server.wait_vm(int(first), ACTIVE, LCM_RUNNING)
    used()
    step(session, "one.vm.allocate", template.format(2), True)  # a held VM counts
    act("poweroff-hard", first)
    server.wait_vm(int(first), POWEROFF)
    used()
    second = step(session, "one.vm.allocate", template.format(3), True)
    used()
    act("resume", first)  # refused: the held VM holds the one running slot
    act("release", second)  # allowed: it counted already
    server.wait_vm(int(second), ACTIVE, LCM_RUNNING)
    act("resume", first)
    for park, parked_state in (("stop", STOPPED), ("undeploy-hard", UNDEPLOYED),
                               ("suspend", SUSPENDED)):
        running, parked = (second, first) if parked_state != UNDEPLOYED else (first, second)
        act(park, running)
        server.wait_vm(int(running), parked_state)
        used()
        act("resume", parked)
        server.wait_vm(int(parked), ACTIVE, LCM_RUNNING)
        act("resume", running)  # refused, also for oneadmin: the owner's quota applies
        act("resume", running, admin)
        used()
    for vm in (first, second):
        act("terminate-hard", vm, admin)
    for vm in (first, second):  # gone from the pools before the next scenario lists them
        server.wait_vm(int(vm), DONE)


def test_resume_and_release_check_running_quotas_as_opennebula(
        one_peer: OnePeer, daemon: RunningDaemon) -> None:
    run_on_both(one_peer, daemon, quota_scenario)


# -- 3. clusters and group names ----------------------------------------------------------


def cluster_scenario(server: Server, *, on_peer: bool) -> tuple[int, int, int]:
    """A VM and a template of group ``crew``, the VM on a host of cluster ``site-a``."""
    admin, step = server.admin, server.step
    cluster = step(admin, "one.cluster.allocate", "site-a")
    if on_peer:  # oned places VMs only on clusters with a system datastore
        server.raw(admin, "one.cluster.adddatastore", cluster, 0)
    crew = step(admin, "one.group.allocate", "crew")
    host = server.add_host("site-host", int(cluster))
    vm = step(admin, "one.vm.allocate", 'NAME="crew-vm"\nCPU=0.1\nMEMORY=32', True)
    step(admin, "one.vm.chown", vm, -1, crew)
    step(admin, "one.vm.deploy", vm, host, False)
    server.wait_vm(int(vm), ACTIVE, LCM_RUNNING)
    template = step(admin, "one.template.allocate", 'NAME="crew-tpl"\nCPU=0.1\nMEMORY=32')
    step(admin, "one.template.chown", template, -1, crew)
    vm_document = server.document("one.vm.info", vm)
    host_document = server.document("one.host.info", host)
    server.outcomes.extend([
        ("VM GNAME", _field(vm_document, "GNAME")),
        ("VM last HISTORY CID", _last(vm_document, "CID")),
        ("HOST CLUSTER", _field(host_document, "CLUSTER_ID"),
         _field(host_document, "CLUSTER")),
        ("TEMPLATE GNAME", _field(server.document("one.template.info", template), "GNAME")),
    ])
    pool = server.document("one.vmpool.info", -2, -1, -1, -1)
    server.outcomes.append(("VM POOL GNAME", re.findall(r"<GNAME>([^<]*)</GNAME>", pool)))
    return int(vm), int(host), int(template)


def ruby_cli(one_peer: OnePeer, url: str, session: str, home: Path, *argv: str) -> str:
    """OpenNebula's Ruby CLI against ``url``; its stdout (it must succeed)."""
    env = one_peer.cli_env(session, xmlrpc=url)
    env["HOME"] = str(home)
    result = subprocess.run([str(one_peer.dir / "bin" / argv[0]), *argv[1:]], env=env,
                            capture_output=True, text=True, timeout=120, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (url, argv, result.stdout, result.stderr)
    return result.stdout


def shown(output: str, label: str) -> str:
    """The value of ``LABEL : value`` in a Ruby CLI ``show``."""
    found = re.search(rf"^{re.escape(label)}\s*:\s*(.*?)\s*$", output, re.MULTILINE)
    assert found is not None, (label, output)
    return found.group(1)


def test_cluster_and_group_names_reach_documents_and_the_ruby_cli(
        one_peer: OnePeer, daemon: RunningDaemon, tmp_path: Path) -> None:
    peer, ours = both(one_peer, daemon)
    theirs = cluster_scenario(peer, on_peer=True)
    mine = cluster_scenario(ours, on_peer=False)
    assert_same(peer, ours)
    assert ("VM last HISTORY CID", "100") in ours.outcomes  # the cluster, not 0

    views = []
    for server, (vm, host, _template) in ((peer, theirs), (ours, mine)):
        def cli(*argv: str, server: Server = server) -> str:
            return ruby_cli(one_peer, server.url, server.admin, tmp_path, *argv)

        vm_shown = cli("onevm", "show", str(vm))
        host_shown = cli("onehost", "show", str(host))
        vm_list = cli("onevm", "list")
        template_list = cli("onetemplate", "list")
        views.append({
            "onevm show": [shown(vm_shown, label) for label in
                           ("GROUP", "CLUSTER ID", "CLUSTER", "HOST")],
            "onehost show": shown(host_shown, "CLUSTER"),
            "onevm list GROUP": "crew" in next(
                line for line in vm_list.splitlines() if "crew-vm" in line).split(),
            "onetemplate list GROUP": "crew" in next(
                line for line in template_list.splitlines() if "crew-tpl" in line).split(),
            "onehost list CLUSTER": "site-a" in next(
                line for line in cli("onehost", "list").splitlines()
                if "site-host" in line).split(),
        })
    assert views[1] == views[0]
    assert views[1]["onevm show"] == ["crew", "100", "site-a", "site-host"]

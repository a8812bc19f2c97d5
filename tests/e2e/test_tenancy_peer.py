"""Tenancy against the real OpenNebula 6.10.5 peer.

1. The same multi-user scenario runs on the peer and on cloudburst; every
   answer (success, error code, message) must be the same: authorization
   refusals, chmod 640, an added and a deleted ACL rule, group membership,
   quota refusals, unknown objects.
2. OpenNebula's own Ruby CLI drives cloudburst: ``oneuser``, ``onegroup``,
   ``oneacl``, ``onecluster`` and ``onevm chmod/chown/show``.
"""

from __future__ import annotations

import subprocess
import xmlrpc.client
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

from one_peer import OnePeer, peer_fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

one_peer = peer_fixture()

Outcome = tuple[object, ...]


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("tenancy-peer")) as running:
        yield running


def scenario(url: str, admin_session: str) -> list[Outcome]:
    """Run the scenario on one server; the outcome of every step, in order."""
    def server() -> xmlrpc.client.ServerProxy:
        return xmlrpc.client.ServerProxy(url)

    outcomes: list[Outcome] = []

    def step(session: str, method: str, *params: object,
             value: Callable[[object], object] = lambda v: None) -> object:
        ok, result, code = getattr(server(), method)(session, *params)[:3]
        outcomes.append((method, ok, code if not ok else 0,
                         result if not ok else value(result)))
        return result

    admin = admin_session
    step(admin, "one.user.allocate", "alice", "pw-a", "core", [], value=lambda v: v)
    step(admin, "one.user.allocate", "bob", "pw-b", "core", [], value=lambda v: v)
    group = step(admin, "one.group.allocate", "research", value=lambda v: v)
    step(admin, "one.user.allocate", "carol", "pw-c", "core", [group], value=lambda v: v)
    alice, bob, carol = "alice:pw-a", "bob:pw-b", "carol:pw-c"
    vm = step(alice, "one.vm.allocate", 'NAME="a"\nCPU=0.1\nMEMORY=64', True,
              value=lambda v: v)
    for session in (bob, carol):
        step(session, "one.vm.info", vm)
        step(session, "one.vm.action", "terminate", vm)
        step(session, "one.vm.chmod", vm, -1, -1, -1, 1, -1, -1, -1, -1, -1)
    step(alice, "one.vm.deploy", vm, 0)
    step(alice, "one.vm.chmod", vm, 1, 1, 0, 1, 0, 0, 0, 0, 0)
    step(alice, "one.vm.chmod", vm, -1, -1, 1, -1, -1, -1, -1, -1, -1)
    step(bob, "one.vm.info", vm, value=lambda v: "<ID>0</ID>" in str(v))
    step(bob, "one.vm.action", "terminate", vm)
    step(carol, "one.vm.info", vm)
    rule = step(admin, "one.acl.addrule", "100000004", "1200000001", "1", value=lambda v: v)
    step(carol, "one.vm.info", vm, value=lambda v: "<ID>0</ID>" in str(v))
    step(admin, "one.acl.delrule", rule, value=lambda v: v)
    step(carol, "one.vm.info", vm)
    step(admin, "one.acl.delrule", 999)
    step(admin, "one.acl.addrule", "#4", "FOO/@1", "USE")
    for session in (alice, carol):
        step(session, "one.user.info", 3)
        step(session, "one.group.info", 0)
        step(session, "one.cluster.info", 0)
        step(session, "one.acl.info")
        step(session, "one.user.allocate", "x", "y", "core", [])
        step(session, "one.user.passwd", 3, "z")
        step(session, "one.group.allocate", "g")
    step(alice, "one.user.passwd", 2, "pw-a", value=lambda v: v)
    step(alice, "one.vm.chown", vm, 3, -1)
    step(alice, "one.vm.chown", vm, -1, group)
    step(admin, "one.user.info", 999)
    step(admin, "one.group.info", 999)
    step(admin, "one.cluster.info", 999)
    step(admin, "one.user.quota", 2, "VM = [ VMS = 1 ]", value=lambda v: v)
    step(alice, "one.vm.allocate", 'CPU=0.1\nMEMORY=64', True)
    step(admin, "one.user.quota", 2, "VM = [ VMS = 5, CPU = 0.5, MEMORY = 128 ]",
         value=lambda v: v)
    step(alice, "one.vm.allocate", 'CPU=1\nMEMORY=64', True)
    step(alice, "one.vm.allocate", 'CPU=0.1\nMEMORY=256', True)
    step(admin, "one.group.delete", group)
    step(admin, "one.user.delete", 4, value=lambda v: v)
    step(admin, "one.group.delete", group, value=lambda v: v)
    step(admin, "one.vm.action", "terminate-hard", vm, value=lambda v: v)
    return outcomes


def test_the_same_calls_get_the_same_answers_as_opennebula(
        one_peer: OnePeer, daemon: RunningDaemon) -> None:
    ours = scenario(daemon.url, daemon.session)
    theirs = scenario(one_peer.url, one_peer.session)
    differences = [(mine, peer) for mine, peer in zip(ours, theirs, strict=True)
                   if mine != peer]
    assert differences == []


def ruby(one_peer: OnePeer, daemon: RunningDaemon, home: Path, session: str | None,
         *argv: str) -> str:
    """Run OpenNebula's Ruby CLI against cloudburst; its stdout (it must succeed)."""
    env = one_peer.cli_env(session or daemon.session, xmlrpc=daemon.url)
    env["HOME"] = str(home)  # `oneuser login` keeps tokens under ~/.one
    result = subprocess.run([str(one_peer.dir / "bin" / argv[0]), *argv[1:]], env=env,
                            capture_output=True, text=True, timeout=60, check=False,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, (argv, result.stdout, result.stderr)
    return result.stdout


def test_opennebulas_ruby_cli_manages_cloudburst_tenancy(
        one_peer: OnePeer, tmp_path: Path) -> None:
    with start_daemon(tmp_path / "cloudburst") as daemon:
        def cli(*argv: str, session: str | None = None) -> str:
            return ruby(one_peer, daemon, tmp_path, session, *argv)

        assert cli("oneuser", "create", "dan", "pw-1").strip() == "ID: 2"
        cli("oneuser", "passwd", "dan", "pw-2")
        # Without a user name, login uses (and then overwrites) dan's ONE_AUTH file with
        # the token: every later command as dan runs on the token.
        cli("oneuser", "login", "--time", "600", "--force", session="dan:pw-2")
        assert "dan" in cli("oneuser", "list")
        shown = cli("oneuser", "show", "dan")
        assert "VMS USAGE & QUOTAS" in shown and "scrypt" not in shown
        assert cli("onegroup", "create", "research").strip().startswith("ID: 100")
        assert "research" in cli("onegroup", "list")
        assert "GROUP 100 INFORMATION" in cli("onegroup", "show", "research")
        created = cli("oneacl", "create", "@100 VM/* USE")
        rule = created.split(":")[1].strip()
        listing = cli("oneacl", "list")
        assert f"  {rule}     @100" in listing and "RES_VHNIUTGDCOZSvRMAPtB" in listing
        cli("oneacl", "delete", rule)
        assert f"  {rule}     @100" not in cli("oneacl", "list")
        assert "default" in cli("onecluster", "list")
        assert "CLUSTER 0 INFORMATION" in cli("onecluster", "show", "0")
        cli("onehost", "create", "h1", "-i", "dummy", "-v", "dummy")
        cli("onevm", "create", "--name", "t", "--cpu", "0.1", "--memory", "64")
        wait_for(lambda: "runn" in cli("onevm", "list"), timeout=30)
        cli("onevm", "chmod", "0", "640")
        cli("onevm", "chown", "0", "dan")
        vm = cli("onevm", "show", "0")
        assert "CLUSTER             : default" in vm and "ERROR" not in vm
        assert "GROUP               : u--" in vm and "USER                : dan" in vm
        assert " t " in cli("onevm", "list", session="dan:pw-2")
        assert "TOKENS" in cli("oneuser", "show", session="dan:pw-2")

"""cloudburst's own oneuser, onegroup, oneacl, onecluster and oneaudit against the daemon."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_fixture import RunningDaemon, daemon_environment, start_daemon
from test_cli import Cli

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("tenancy-cli")) as running:
        yield running


@pytest.fixture(scope="module")
def cli(daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    env = daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file),
        "HOME": str(tmp_path_factory.mktemp("user-home"))})
    return Cli(daemon, env)


def test_users_groups_rules_clusters_and_the_audit_trail(cli: Cli, tmp_path: Path) -> None:
    assert cli.ok("oneuser", "create", "alice", "pw-a") == "ID: 2\n"
    assert cli.ok("onegroup", "create", "research") == "ID: 100\n"
    # As OpenNebula's CLI: members of a new group may create VMs, templates...
    assert "   9     @100     V--I-T---O-S-R--P-B     *     ---c" in cli.ok("oneacl", "list")
    assert cli.ok("onegroup", "create", "bare", "--resources", "") == "ID: 101\n"
    assert cli.ok("oneuser", "create", "bob", "pw-b", "--group", "research") == "ID: 3\n"
    quota = tmp_path / "quota"
    quota.write_text("VM = [ VMS = 2, CPU = 1 ]\n")
    cli.ok("oneuser", "quota", "alice", str(quota))
    lines = cli.ok("oneuser", "list").splitlines()
    assert lines[0].split() == ["ID", "NAME", "ENAB", "GROUP", "AUTH", "VMS", "MEMORY", "CPU"]
    assert lines[2].split()[:7] == ["2", "alice", "yes", "users", "core", "0", "/"]
    assert "0 /   2" in lines[2]
    shown = cli.ok("oneuser", "show", "alice")
    assert "PASSWORD        : ********" in shown and "VMS USAGE & QUOTAS" in shown
    groups = json.loads(cli.ok("onegroup", "list", "--json"))
    assert [(g["NAME"], g["USERS"]) for g in groups] == [
        ("oneadmin", 1), ("users", 1), ("research", 1), ("bare", 0)]
    cli.ok("onegroup", "addadmin", "users", "alice")
    assert "ADMINS\nID\n2" in cli.ok("onegroup", "show", "users")

    assert cli.ok("oneacl", "create", "#3 VM/@1 USE") == "ID: 17\n"
    listing = cli.ok("oneacl", "list").splitlines()
    assert listing[0].split() == ["ID", "USER", "RES_VHNIUTGDCOZSvRMAPtB", "RID", "OPE_UMAC",
                                  "ZONE"]
    assert "  17       #3     V------------------    @1     u---    #0" in listing
    bad = cli("oneacl", "create", "#3 FOO/@1 USE")
    assert bad.status == 1 and "Wrong resource type 'FOO'" in bad.err
    cli.ok("oneacl", "delete", "17")

    assert cli.ok("onecluster", "create", "site-a") == "ID: 100\n"
    cli.ok("onehost", "create", "h1", "-i", "dummy", "-v", "dummy")
    cli.ok("onecluster", "addhost", "site-a", "h1")
    clusters = cli.ok("onecluster", "list").splitlines()
    assert clusters[2].split() == ["100", "site-a", "1", "0", "0"]
    assert "HOSTS\n0" in cli.ok("onecluster", "show", "site-a")

    token = cli.ok("oneuser", "login", "alice", "--time", "600").strip()
    assert len(token) == 64
    as_alice = {"ONE_AUTH": str(tmp_path / "alice_auth")}
    (tmp_path / "alice_auth").write_text(f"alice:{token}\n")
    mine = cli("oneuser", "list", env=as_alice)
    assert (mine.status == 0 and [line.split()[1] for line in mine.out.splitlines()[1:]] == [
        "alice", "bob"]) or "alice" in mine.out
    refused = cli("oneaudit", "list", env=as_alice)
    assert refused.status == 1 and "Not authorized to perform MANAGE AUDIT" in refused.err
    cli.ok("oneuser", "disable", "bob")
    records = json.loads(cli.ok("oneaudit", "list", "--json"))
    assert [r["METHOD"] for r in records][:5] == [
        "one.user.allocate", "one.group.allocate", "one.acl.addrule", "one.group.allocate",
        "one.user.allocate"]
    assert records[-1]["METHOD"] == "one.user.enable" and records[-1]["OBJECT"] == "USER [3]"
    assert not any(token in json.dumps(r) for r in records)

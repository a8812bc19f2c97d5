"""The real onehost / onevm / onetemplate commands against the real daemon."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from daemon_fixture import RunningDaemon, daemon_environment, free_port, start_daemon, wait_for

from seed_templates import SEED_EC2_TEMPLATE

pytestmark = pytest.mark.e2e



@dataclass
class Result:
    status: int
    out: str
    err: str


class Cli:
    """Runs the commands as subprocesses with ONE_XMLRPC and ONE_AUTH set."""

    def __init__(self, daemon: RunningDaemon, env: dict[str, str]) -> None:
        self.daemon = daemon
        self.env = env
        self.outputs: list[str] = []

    def __call__(self, command: str, *args: str, stdin: str | None = None,
                 env: dict[str, str] | None = None) -> Result:
        completed = subprocess.run(
            [sys.executable, "-m", f"cloudburst.cli.{command}", *args],
            env={**self.env, **(env or {})}, input=stdin, capture_output=True, text=True,
            timeout=60, check=False)
        self.outputs += [completed.stdout, completed.stderr]
        return Result(completed.returncode, completed.stdout, completed.stderr)

    def ok(self, command: str, *args: str, stdin: str | None = None) -> str:
        result = self(command, *args, stdin=stdin)
        assert result.status == 0, result.err
        return result.out

    def json(self, command: str, *args: str) -> object:
        return json.loads(self.ok(command, *args, "--json"))


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("cli")) as running:
        yield running


@pytest.fixture(scope="module")
def cli(daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> Cli:
    home = tmp_path_factory.mktemp("user-home")
    env = daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file), "HOME": str(home)})
    return Cli(daemon, env)


def test_seed_walkthrough(cli: Cli, tmp_path: Path) -> None:
    assert cli.ok("onehost", "create", "ec2", "dummy", "dummy", "tm_dummy") == "ID: 0\n"
    wait_for(lambda: cli.json("onehost", "list")[0]["STAT"] == "on", timeout=20)
    lines = cli.ok("onehost", "list").splitlines()
    assert lines[0] == ("  ID NAME            CLUSTER   RVM      ALLOCATED_CPU      "
                        "ALLOCATED_MEM STAT")
    assert lines[1] == ("   0 ec2             default     0       0 / 800 (0%)      "
                        "0K / 16G (0%) on")

    template = tmp_path / "ec2template"
    template.write_text(SEED_EC2_TEMPLATE)
    assert cli.ok("onevm", "submit", str(template)) == "ID: 0\n"
    wait_for(lambda: cli.json("onevm", "list")[0]["STAT"] == "runn", timeout=20)
    listing = cli.ok("onevm", "list").splitlines()
    # OpenNebula 6's columns: the allocated CPU and memory, the group.
    assert listing[0] == ("  ID USER     GROUP    NAME            STAT  CPU     MEM HOST       "
                          "      TIME")
    [row] = [line for line in listing[1:] if line.split()[0] == "0"]
    assert row.startswith("   0 oneadmin oneadmin one-0           runn  0.5    128M ec2        ")
    assert row.endswith("0d 00h00")

    shown = cli.ok("onevm", "show", "0")
    assert shown.startswith("VIRTUAL MACHINE 0 INFORMATION\n")
    deploy_line = next(line for line in shown.splitlines() if line.startswith("DEPLOY ID"))
    assert deploy_line.split(":", 1)[1].strip() not in ("", "-")
    for expected in ("LCM_STATE           : RUNNING", "HOST                : ec2",
                     "VIRTUAL MACHINE HISTORY", 'EC2=[\n  AMI="ami-00bafcb5"',
                     'VIRTUAL MACHINE TEMPLATE\nCPU="0.5"'):
        assert expected in shown
    details = cli.json("onevm", "show", "0")
    assert details["HISTORY"][0]["HOST"] == "ec2"
    assert details["USER_TEMPLATE"]["EC2"]["KEYPAIR"] == "gsg-keypair"
    host = cli.json("onehost", "show", "ec2")
    assert (host["VMS"], host["PUBLIC_CLOUD"]) == ([0], False)
    assert "local" in cli.ok("onehost", "show", "0").split("LOCALITY")[1].splitlines()[0]

    assert cli.ok("onevm", "terminate", "0") == ""
    wait_for(lambda: cli.json("onevm", "show", "0")["STATE"] == "DONE", timeout=20)
    assert cli.json("onevm", "list") == []


def test_hold_deploy_by_name_and_ranges(cli: Cli) -> None:
    cli.ok("onehost", "create", "h2", "-i", "dummy", "-v", "dummy", "-c", "default")
    created = cli.ok("onevm", "create", "-", "--hold", "-m", "2",
                     stdin='CPU=1\nMEMORY=64\nCONTEXT = [ KEY = "k1" ]\n')
    first, second = (int(line.split()[1]) for line in created.splitlines())
    assert {vm["STAT"] for vm in cli.json("onevm", "list") if vm["ID"] in (first, second)} \
        == {"hold"}
    wait_for(lambda: cli.json("onehost", "show", "h2")["STATE"] == "MONITORED", timeout=20)
    cli.ok("onevm", "deploy", f"{first},{second}", "h2")
    wait_for(lambda: all(vm["STAT"] == "runn" for vm in cli.json("onevm", "list")), timeout=20)
    # A running VM takes a new CONTEXT: HOTPLUG while the driver reconfigures it.
    cli.ok("onevm", "updateconf", str(first), "-", stdin='CONTEXT = [ KEY = "k2" ]\n')
    wait_for(lambda: _shown(cli, first, "LCM_STATE", "TEMPLATE/CONTEXT/KEY")
             == ["RUNNING", "k2"], timeout=20)
    log = (cli.daemon.home / "vms" / str(first) / "vm.log").read_text()
    assert "New state is ACTIVE/HOTPLUG" in log
    assert cli.ok("onevm", "terminate", "--hard", f"{first}..{second}") == ""
    wait_for(lambda: cli.json("onevm", "list") == [], timeout=20)


def _shown(cli: Cli, vm_id: int, *paths: str) -> list[object]:
    """Values of ``onevm show --json`` at ``A/B`` paths (``None``: missing)."""
    shown = cli.json("onevm", "show", str(vm_id))
    values = []
    for path in paths:
        value: object = shown
        for part in path.split("/"):
            value = value.get(part) if isinstance(value, dict) else None
        values.append(value)
    return values


def test_errors_are_one_line_with_status_1(cli: Cli) -> None:
    broken = cli("onevm", "create", "-", stdin="CPU = 1\nMEMORY = 64\nNIC = [ BRIDGE =\n")
    assert broken.status == 1
    assert broken.out == ""
    assert broken.err.count("\n") == 1
    assert broken.err.startswith("[one.vm.allocate] ")
    assert "line 3, column" in broken.err

    missing = cli("onevm", "show", "999")
    assert (missing.status, missing.err) == (
        1, "[one.vm.info] Error getting virtual machine [999].\n")
    partly = cli("onevm", "hold", "998,999")
    assert partly.status == 1
    assert partly.err.splitlines() == [
        "[one.vm.action] Error getting virtual machine [998].",
        "[one.vm.action] Error getting virtual machine [999]."]
    unknown_host = cli("onehost", "show", "nowhere")
    assert (unknown_host.status, unknown_host.err) == (1, "HOST named nowhere not found\n")


def test_usage_and_help(cli: Cli) -> None:
    assert cli("onevm", "frobnicate").status == 2
    assert cli("onehost", "create", "only-a-name").status == 2
    assert cli("onevm", "terminate", "5..3").status == 2
    assert cli("onevm").status == 2
    for command, subcommands in (
            ("onehost", ("create", "list", "show", "update", "delete", "enable", "disable",
                         "offline", "rename")),
            ("onevm", ("create", "submit", "list", "show", "deploy", "terminate", "shutdown",
                       "reboot", "hold", "release", "update", "updateconf", "rename")),
            ("onetemplate", ("create", "list", "show", "instantiate", "delete", "update",
                             "rename"))):
        assert "usage:" in cli.ok(command, "--help")
        for subcommand in subcommands:
            assert f"usage: {command} {subcommand}" in cli.ok(command, subcommand, "--help")


def test_templates(cli: Cli) -> None:
    assert cli.ok("onetemplate", "create", "-",
                  stdin='NAME="small"\nCPU=1\nMEMORY=64\nCONTEXT = [ WHO = "" ]\n') == "ID: 0\n"
    assert [row["NAME"] for row in cli.json("onetemplate", "list")] == ["small"]
    cli.ok("onetemplate", "update", "0", "-", "--append", stdin='DESCRIPTION="tiny"\n')
    assert cli.json("onetemplate", "show", "0")["TEMPLATE"]["DESCRIPTION"] == "tiny"
    vm_line = cli.ok("onetemplate", "instantiate", "0", "--name", "from-small", "--hold")
    vm_id = vm_line.split()[-1]
    assert cli.json("onevm", "show", vm_id)["NAME"] == "from-small"
    cli.ok("onevm", "updateconf", vm_id, "-", stdin='CONTEXT = [ WHO = "$NAME-$VMID" ]\n')
    context = cli.json("onevm", "show", vm_id)["TEMPLATE"]["CONTEXT"]
    assert context["WHO"] == f"from-small-{vm_id}"
    cli.ok("onevm", "terminate", vm_id)
    cli.ok("onetemplate", "delete", "0")
    assert cli.json("onetemplate", "list") == []


def test_host_management(cli: Cli) -> None:
    host_id = cli.ok("onehost", "create", "h3", "dummy", "dummy", "tm_dummy", "dummy").split()[1]
    cli.ok("onehost", "disable", "h3")
    assert cli.json("onehost", "show", host_id)["STATE"] == "DISABLED"
    cli.ok("onehost", "update", "h3", "-", "--append", stdin='LABEL="rack-1"\n')
    assert cli.json("onehost", "show", "h3")["TEMPLATE"]["LABEL"] == "rack-1"
    # Without a file the current template is opened in $EDITOR.
    edited = cli("onehost", "update", "h3", env={"EDITOR": "sed -i s/rack-1/rack-2/"})
    assert edited.status == 0, edited.err
    assert cli.json("onehost", "show", "h3")["TEMPLATE"]["LABEL"] == "rack-2"
    cli.ok("onehost", "rename", "h3", "h4")
    cli.ok("onehost", "enable", "h4")
    cli.ok("onehost", "delete", "h4")
    assert "h4" not in [host["NAME"] for host in cli.json("onehost", "list")]


def test_password_never_printed(cli: Cli) -> None:
    password = cli.daemon.session.split(":", 1)[1]
    assert cli.outputs
    assert not any(password in output for output in cli.outputs)


def test_defaults_and_daemon_down(tmp_path: Path) -> None:
    user_home = tmp_path / "user"
    user_home.mkdir()
    with start_daemon(tmp_path) as running:
        # No ONE_XMLRPC / ONE_AUTH: CLOUDBURST_PORT and $CLOUDBURST_HOME/one_auth are used.
        env = daemon_environment(running.home, running.port, {"HOME": str(user_home)})
        cli = Cli(running, env)
        assert cli.json("onehost", "list") == []
    down = cli("onevm", "list")
    assert down.status == 1
    assert down.err == (f"cannot reach the cloudburst daemon at {running.url}: is oned running? "
                        "(Connection refused)\n")
    nowhere = Cli(running, {**env, "ONE_XMLRPC": f"http://127.0.0.1:{free_port()}/RPC2"})
    assert nowhere("onehost", "list").err.startswith("cannot reach the cloudburst daemon at ")

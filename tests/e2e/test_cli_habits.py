"""OpenNebula's CLI habits, by the real commands against the real daemon.

Output options (``-x``, ``-j``, ``--csv``, ``-l``, ``--filter``), connection
options (``--endpoint``, ``--user``/``--password``, ``-v``, ``--version``),
options after positionals, host state names, the one-line hints of hosts in
error, and ``oned -f`` beside a running daemon. Expected layouts were taken
from OpenNebula 6.10.5's own CLI (the peer in ``shared/opennebula-peer``).
"""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pytest
from daemon_fixture import (
    SRC,
    RunningDaemon,
    daemon_environment,
    free_port,
    start_daemon,
    wait_for,
)

pytestmark = pytest.mark.e2e

NO_DAEMON_SOCKET = "/nonexistent/libvirt-sock"


def run(env: dict[str, str], command: str, *args: str, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", f"cloudburst.cli.{command}", *args], env=env,
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def ok(env: dict[str, str], command: str, *args: str) -> str:
    completed = run(env, command, *args)
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def cli_env(daemon: RunningDaemon, home: Path) -> dict[str, str]:
    return daemon_environment(daemon.home, daemon.port, {
        "ONE_XMLRPC": daemon.url, "ONE_AUTH": str(daemon.auth_file), "HOME": str(home)})


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("habits"),
                      oned_conf_extra="MONITORING_INTERVAL = 1\n") as running:
        yield running


@pytest.fixture(scope="module")
def env(daemon: RunningDaemon, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Hosts ``host01`` (on) and ``spare`` (disabled); VMs 0 ``web`` and 1 ``db`` running."""
    environment = cli_env(daemon, tmp_path_factory.mktemp("user"))
    ok(environment, "onehost", "create", "host01", "dummy", "dummy", "tm_dummy")
    ok(environment, "onehost", "create", "spare", "dummy", "dummy")
    wait_for(lambda: [h["STAT"] for h in json.loads(ok(environment, "onehost", "list", "-j"))]
             == ["on", "on"], timeout=30)
    ok(environment, "onehost", "disable", "spare")
    for name, cpu, memory in (("web", "0.5", "128"), ("db", "2", "2048")):
        created = run(environment, "onevm", "create", "-",
                      stdin=f'NAME = "{name}"\nCPU = {cpu}\nMEMORY = {memory}\n')
        assert created.returncode == 0, created.stderr
    wait_for(lambda: [vm["STAT"] for vm in json.loads(ok(environment, "onevm", "list", "-j"))]
             == ["runn", "runn"], timeout=30)
    return environment


def test_list_as_opennebula_6_shows_it(env: dict[str, str]) -> None:
    assert ok(env, "onevm", "list").splitlines() == [
        "  ID USER     GROUP    NAME            STAT  CPU     MEM HOST             TIME",
        "   1 oneadmin oneadmin db              runn    2      2G host01       0d 00h00",
        "   0 oneadmin oneadmin web             runn  0.5    128M host01       0d 00h00",
    ]
    hosts = ok(env, "onehost", "list").splitlines()
    assert hosts[1].endswith(" dsbl"), hosts  # disabled; "off" is offline
    assert ok(env, "onehost", "list", "-l", "id,name").splitlines() == [
        "  ID NAME", "   1 spare", "   0 host01"]


def test_columns_csv_json_xml(env: dict[str, str]) -> None:
    assert ok(env, "onevm", "list", "-l", "ID,NAME").splitlines() == [
        "  ID NAME", "   1 db", "   0 web"]
    assert ok(env, "onevm", "list", "--list", "name,stat", "--no-header").splitlines() == [
        "db              runn", "web             runn"]
    rows = list(csv.reader(io.StringIO(ok(env, "onevm", "list", "--csv"))))
    assert rows == [["ID", "USER", "GROUP", "NAME", "STAT", "CPU", "MEM", "HOST", "TIME"],
                    ["1", "oneadmin", "oneadmin", "db", "runn", "2", "2G", "host01",
                     "  0d 00h00m"],
                    ["0", "oneadmin", "oneadmin", "web", "runn", "0.5", "128M", "host01",
                     "  0d 00h00m"]]
    assert json.loads(ok(env, "onevm", "list", "-j", "-l", "ID,CPU,MEM")) == [
        {"ID": 1, "CPU": 2, "MEM": 2048}, {"ID": 0, "CPU": 0.5, "MEM": 128}]
    pool = ElementTree.fromstring(ok(env, "onevm", "list", "-x"))
    assert pool.tag == "VM_POOL" and [vm.findtext("NAME") for vm in pool] == ["db", "web"]
    for command, target, root in (("onevm", "0", "VM"), ("onehost", "host01", "HOST")):
        document = ElementTree.fromstring(ok(env, command, "show", target, "--xml"))
        assert document.tag == root and document.findtext("ID") == "0"
    hosts = ElementTree.fromstring(ok(env, "onehost", "list", "--xml"))
    assert [host.findtext("NAME") for host in hosts] == ["spare", "host01"]


def test_filters(env: dict[str, str]) -> None:
    def names(*options: str) -> list[str]:
        return [row["NAME"] for row in json.loads(ok(env, "onevm", "list", "-j", *options))]

    assert names("--filter", "NAME=web") == ["web"]
    assert names("-f", "NAME!=web") == ["db"]
    assert names("-f", "CPU>1") == ["db"]
    assert names("-f", "CPU<=0.5,STAT=runn") == ["web"]
    assert names("-f", "NAME~e") == ["web"]
    assert names("-f", "NAME=web,NAME=db") == []
    assert names("-f", "NAME=web,NAME=db", "--operator", "OR") == ["db", "web"]
    spare = ok(env, "onehost", "list", "-f", "STAT=dsbl", "-l", "NAME", "--no-header")
    assert spare == "spare\n"

    unknown = run(env, "onevm", "list", "-l", "ID,COLOUR")
    assert (unknown.returncode, unknown.stderr) == (1, (
        "unknown column COLOUR; the columns are ID, USER, GROUP, NAME, STAT, CPU, MEM, HOST, "
        "TIME, IP\n"))
    bad = run(env, "onevm", "list", "--filter", "NAME")
    assert bad.returncode == 2 and "invalid filter 'NAME'" in bad.stderr


def test_options_after_positionals(env: dict[str, str], tmp_path: Path) -> None:
    label = tmp_path / "label"
    label.write_text('LABEL = "rack-1"\n')
    ok(env, "onevm", "update", "0", "--append", str(label))
    ok(env, "onehost", "update", "host01", "--append", str(label))
    ok(env, "onehost", "update", "--append", "spare", str(label))
    assert json.loads(ok(env, "onevm", "show", "0", "-j"))["USER_TEMPLATE"]["LABEL"] == "rack-1"
    for host in ("host01", "spare"):
        shown = json.loads(ok(env, "onehost", "show", "-j", host))
        assert shown["TEMPLATE"]["LABEL"] == "rack-1"
    # --append merged: what was there is still there.
    assert json.loads(ok(env, "onehost", "show", "host01", "-j"))["TEMPLATE"]["HYPERVISOR"] \
        == "dummy"
    for argv in (("--json", "-l", "ID", "a"), ("a", "-l", "ID", "--json"), ("-l", "ID", "a")):
        assert "0" in ok(env, "onevm", "list", *argv)


def test_connection_options(env: dict[str, str], daemon: RunningDaemon) -> None:
    user, password = daemon.session.split(":", 1)
    elsewhere = {**env, "ONE_XMLRPC": f"http://127.0.0.1:{free_port()}/RPC2",
                 "ONE_AUTH": "/nonexistent/one_auth"}
    listed = ok(elsewhere, "onevm", "list", "-l", "NAME", "--endpoint", daemon.url,
                "--user", user, "--password", password)
    assert listed.split() == ["NAME", "db", "web"]
    refused = run(env, "onevm", "list", "--user", user, "--password", "wrong")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1
    assert "authenticated" in refused.stderr and "wrong" not in refused.stderr
    lonely = run(env, "onehost", "list", "--password", password)
    assert (lonely.returncode, lonely.stderr) == (1, "--password needs --user\n")
    asked = run(env, "onehost", "list", "--user", user)  # no terminal to ask on
    assert asked.stderr == "--user needs --password (or a terminal to ask for it)\n"

    verbose = run(env, "onevm", "show", "0", "-v")
    assert verbose.returncode == 0
    assert verbose.stderr.startswith(f"one.vm.info -> {daemon.url} (")
    assert password not in verbose.stderr
    for command in ("onevm", "onehost", "onetemplate"):
        for argv in ((command, "--version"), (command, "list", "-V")):
            assert ok(env, *argv).startswith(f"{command} (cloudburst ")
    # onehost create keeps -v for the VMM driver; --verbose still works.
    created = run(env, "onehost", "create", "h9", "-i", "dummy", "-v", "dummy", "--verbose")
    assert created.stdout.startswith("ID: ") and "one.host.allocate" in created.stderr
    ok(env, "onehost", "delete", "h9")


def test_offline_host(env: dict[str, str]) -> None:
    ok(env, "onehost", "create", "gone", "dummy", "dummy")
    ok(env, "onehost", "offline", "gone")
    state = ok(env, "onehost", "list", "-f", "NAME=gone", "-l", "STAT", "--no-header")
    assert state == "off\n"
    ok(env, "onehost", "delete", "gone")


def test_second_daemon_on_the_same_port(daemon: RunningDaemon, tmp_path: Path) -> None:
    # As a user would: `oned -f` again, same home, while the first one runs.
    second = subprocess.run(
        [sys.executable, "-m", "cloudburst.daemon.main", "-f"], capture_output=True, text=True,
        timeout=60, check=False, env=daemon_environment(daemon.home, daemon.port))
    assert second.returncode == 1
    assert second.stderr == (
        f"oned: already running on 127.0.0.1:{daemon.port} (that port is taken; stop the "
        "other daemon, or set CLOUDBURST_PORT to use another port)\n")


def test_host_errors_say_what_to_do(env: dict[str, str], daemon: RunningDaemon) -> None:
    ok(env, "onehost", "create", "localhost", "kvm", "kvm")
    completed = run(env, "onehost", "update", "localhost", "-", "--append",
                    stdin=f'LIBVIRT_URI = "qemu+unix:///system?socket={NO_DAEMON_SOCKET}"\n')
    assert completed.returncode == 0, completed.stderr

    def reason() -> str:
        rows = json.loads(ok(env, "onehost", "list", "-j", "-f", "NAME=localhost"))
        return str(rows[0]["REASON"] or "") if rows[0]["STAT"] == "err" else ""

    wait_for(lambda: "no libvirtd" in reason(), timeout=30)
    uri = f"qemu+unix:///system?socket={NO_DAEMON_SOCKET}"
    logged = (f"start 'libvirtd -d' (./scripts/run does) for {uri}, or set the host's "
              "LIBVIRT_URI; no libvirtd answers: ")
    assert reason().startswith(logged)
    table = ok(env, "onehost", "list", "-l", "NAME,STAT,REASON", "-f", "NAME=localhost")
    assert table.splitlines()[1] == f"localhost       err    {logged[:64].rstrip()}"
    # Monitored every second, failing the same way: logged once, not every time.

    def last_monitored() -> int:
        return int(json.loads(ok(env, "onehost", "show", "localhost", "-j"))
                   ["LAST_MONITORING_TIME"])

    since = last_monitored()
    wait_for(lambda: last_monitored() >= since + 3, timeout=30)
    # (The orphan sweep after a VM poll fails for the same reason and says so once too.)
    host_id = json.loads(ok(env, "onehost", "show", "localhost", "-j"))["ID"]
    assert daemon.output().count(f"monitoring host {host_id} failed: {logged}") == 1, (
        daemon.output())
    ok(env, "onehost", "delete", "localhost")


def test_missing_libvirt_python_says_what_to_do(tmp_path: Path) -> None:
    """A daemon whose Python cannot import libvirt (as on a machine without it)."""
    blocker = tmp_path / "no-libvirt"
    blocker.mkdir()
    (blocker / "libvirt.py").write_text('raise ImportError("No module named \'libvirt\'")\n')
    with start_daemon(tmp_path, oned_conf_extra="MONITORING_INTERVAL = 1\n",
                      env={"PYTHONPATH": f"{blocker}:{SRC}"}) as running:
        environment = cli_env(running, tmp_path)
        ok(environment, "onehost", "create", "localhost", "kvm", "kvm")
        table = wait_for(lambda: (out := ok(environment, "onehost", "list", "-l",
                                            "NAME,STAT,REASON")) and " err " in out and out,
                         timeout=30)
        assert ("localhost       err    libvirt-python missing: run ./scripts/run to install "
                "it (or apt-") in table, table

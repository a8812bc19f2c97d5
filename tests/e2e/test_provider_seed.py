"""The seed "Cloud Bursting Driver" walkthrough, and the shipped example providers, end to end.

One real daemon runs every provider of this module: the seed's
``provider_name`` (probes and action scripts written here, in bash and in
Python), the shipped ``example_sh`` and ``example_py``, a ``flaky`` provider
whose scripts fail on purpose, and ``oops`` probes that forget the cloud
attributes. Everything is driven through the ``onehost``/``onevm`` commands.

One deviation from the seed's text: cloudburst's scheduler places a PENDING VM
the moment it is created, so the seed's ``onevm create`` + ``onevm deploy``
pair is run with ``--hold`` (``onevm deploy`` takes HOLD VMs, as in
OpenNebula); the same template created without ``--hold`` is placed on
``remote_provider`` by the scheduler and gets the same arguments.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pyone
import pytest
from burst_helpers import (
    RunningDaemon,
    cli,
    conf_text,
    process_alive,
    running_daemon,
    wait_for,
    write_script,
)

from seed_templates import SEED_PROVIDER_IM_MAD, SEED_PROVIDER_TEMPLATE, SEED_PROVIDER_VM_MAD

pytestmark = pytest.mark.e2e

#: The seed's oned.conf sections, word for word, plus the other providers.
SEED_CONF = "\n" + SEED_PROVIDER_IM_MAD + SEED_PROVIDER_VM_MAD + """
IM_MAD = [ name = "im_example_sh", executable = "one_im_sh", arguments = "example_sh" ]
VM_MAD = [ name = "vmm_example_sh", executable = "one_vmm_sh", arguments = "example_sh",
           type = "xml" ]
IM_MAD = [ name = "im_example_py", executable = "one_im_sh", arguments = "example_py" ]
VM_MAD = [ name = "vmm_example_py", executable = "one_vmm_sh", arguments = "example_py",
           type = "xml" ]
IM_MAD = [ name = "im_flaky", executable = "one_im_sh", arguments = "flaky" ]
VM_MAD = [ name = "vmm_flaky", executable = "one_vmm_sh", arguments = "-t 15 -r 0 -w 2 flaky",
           type = "xml" ]
IM_MAD = [ name = "im_oops", executable = "one_im_sh", arguments = "oops" ]
"""

PYTHON = f"#!{sys.executable}"

RUNNING, DONE, ACTIVE = 3, 6, 3
BOOT_FAILURE = 36


def seed_provider(remotes: Path) -> None:
    """The seed's provider_name: probes in bash and Python, actions in Python and bash."""
    write_script(remotes / "im/provider_name.d/cloud", """
        #!/usr/bin/env bash
        echo "$@" > "$CLOUDBURST_HOME/var/provider_name.probe-args"
        echo 'PUBLIC_CLOUD="YES"'
        echo 'HYPERVISOR="provider_name"'
        """)
    write_script(remotes / "im/provider_name.d/capacity", PYTHON + """
        print("TOTALCPU=500")
        print("TOTALMEMORY=8912896")
        """)
    write_script(remotes / "vmm/provider_name/deploy", PYTHON + """
        import json, os, sys
        deployment_file = sys.argv[1]
        record = {"argv": sys.argv[1:], "deployment": open(deployment_file).read(),
                  "token": os.environ.get("CLOUDBURST_ACTION_TOKEN")}
        with open(os.environ["CLOUDBURST_HOME"] + "/var/provider_name.deploys", "a") as log:
            log.write(json.dumps(record) + "\\n")
        print("prov-" + sys.argv[3])
        """)
    write_script(remotes / "vmm/provider_name/poll", """
        #!/usr/bin/env bash
        echo "STATE=a IP=10.0.0.$3 USEDMEMORY=262144"
        """)
    for action in ("shutdown", "cancel"):
        write_script(remotes / f"vmm/provider_name/{action}", f"""
            #!/usr/bin/env bash
            echo "{action} $*" >> "$CLOUDBURST_HOME/var/provider_name.stops"
            """)


def flaky_provider(remotes: Path) -> None:
    """A provider whose deploy fails, hangs or yields garbage polls, by MODE."""
    write_script(remotes / "im/flaky.d/probe", """
        #!/usr/bin/env bash
        echo PUBLIC_CLOUD=YES HYPERVISOR=flaky TOTALCPU=1000 TOTALMEMORY=10485760
        """)
    write_script(remotes / "vmm/flaky/deploy", PYTHON + """
        import os, re, sys, time
        text = open(sys.argv[1]).read()
        mode = re.search(r"<MODE>(\\w+)</MODE>", text).group(1)
        if mode == "fail":
            sys.stderr.write("some noise\\nERROR MESSAGE --8<------\\n"
                             "the provider refused: quota exceeded\\n"
                             "for image small\\nERROR MESSAGE ------>8--\\n")
            sys.exit(3)
        if mode == "hang":
            with open(os.environ["CLOUDBURST_HOME"] + "/var/flaky.hang.pid", "w") as out:
                out.write(str(os.getpid()))
            time.sleep(300)
        print(f"fl-{mode}-{sys.argv[3]}")
        """)
    write_script(remotes / "vmm/flaky/poll", """
        #!/usr/bin/env bash
        case "$1" in
            fl-garbage-*) echo "all systems nominal" ;;
            *) echo "STATE=a IP=10.9.9.$3" ;;
        esac
        """)
    write_script(remotes / "vmm/flaky/cancel", "#!/bin/sh\nexit 0\n")
    write_script(remotes / "im/oops.d/probe", """
        #!/usr/bin/env bash
        # Forgets PUBLIC_CLOUD (host oops) or HYPERVISOR (host oops_nohyp); sizes nothing.
        if [ "$6" = oops_nohyp ]; then echo PUBLIC_CLOUD=YES; else echo HYPERVISOR=oops; fi
        echo TOTALCPU=0 TOTALMEMORY=0
        """)


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("provider_seed")
    with running_daemon(root, conf_text(SEED_CONF)) as running:
        remotes = running.home / "remotes"
        seed_provider(remotes)
        flaky_provider(remotes)
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


def create(daemon: RunningDaemon, text: str, *extra: str) -> int:
    path = daemon.home.parent / f"vm-{time.monotonic_ns()}.one"
    path.write_text(text)
    return int(cli(daemon, "onevm", "create", str(path), *extra).stdout.split()[-1])


def running(one: pyone.OneServer, vm_id: int, timeout: float = 20) -> pyone.bindings.VM:
    return wait_for(lambda: (vm := one.vm.info(vm_id)).LCM_STATE == RUNNING
                    and vm.STATE == ACTIVE and vm, timeout=timeout)


def done(one: pyone.OneServer, vm_id: int) -> None:
    wait_for(lambda: one.vm.info(vm_id).STATE == DONE, timeout=20)


def host_row(daemon: RunningDaemon, name: str) -> str:
    lines = cli(daemon, "onehost", "list").stdout.splitlines()
    return next(line for line in lines if f" {name} " in line)


def test_seed_walkthrough(daemon: RunningDaemon, one: pyone.OneServer) -> None:
    created = cli(daemon, "onehost", "create", "remote_provider", "im_provider", "vmm_provider",
                  "tm_dummy", "dummy").stdout
    host_id = int(created.split()[-1])
    wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=20)
    row = host_row(daemon, "remote_provider")
    assert "0 / 500 (0%)" in row and "0K / 8.5G (0%)" in row and row.rstrip().endswith("on")
    probe_args = (daemon.home / "var/provider_name.probe-args").read_text().split()
    assert probe_args[0] == "provider_name" and probe_args[-2:] == [str(host_id),
                                                                     "remote_provider"]

    vm_id = create(daemon, SEED_PROVIDER_TEMPLATE, "--hold")
    cli(daemon, "onevm", "deploy", str(vm_id), "remote_provider")
    vm = running(one, vm_id)
    assert f"prov-{vm_id}" == vm.DEPLOY_ID

    record = json.loads((daemon.home / "var/provider_name.deploys").read_text().splitlines()[-1])
    dfile, host, argv_vm, host_again = record["argv"]
    assert (host, argv_vm, host_again) == ("remote_provider", str(vm_id), "remote_provider")
    assert Path(dfile).is_file() and record["token"]
    # As the seed shows it: plain elements a shell script can grep, no CDATA.
    for element in ("<CPU>1</CPU>", "<MEMORY>256</MEMORY>", "<TYPE>provider_name</TYPE>"):
        assert element in record["deployment"], record["deployment"]
    assert "CDATA" not in record["deployment"]
    document = ElementTree.fromstring(record["deployment"])
    assert document.findtext("CPU") == "1" and document.findtext("MEMORY") == "256"
    assert {child.tag: child.text for child in document.find("PUBLIC_CLOUD")} == {
        "TYPE": "provider_name", "PROVIDER_IMAGE_ID": "id-141234",
        "PROVIDER_INSTANCE_TYPE": "small_256mb"}

    show = wait_for(lambda: f"IP=10.0.0.{vm_id}" in (s := cli(daemon, "onevm", "show",
                                                              str(vm_id)).stdout) and s, 20)
    assert f"DEPLOY ID           : prov-{vm_id}" in show

    # The same template without --hold: the scheduler places it there itself.
    scheduled = create(daemon, SEED_PROVIDER_TEMPLATE)
    assert running(one, scheduled).HISTORY_RECORDS.HISTORY[-1].HOSTNAME == "remote_provider"
    assert "200 / 500 (40%)" in host_row(daemon, "remote_provider")

    # A missing action script: a clear error on the VM, the daemon carries on.
    cli(daemon, "onevm", "reboot", str(vm_id))
    error = wait_for(lambda: one.vm.info(vm_id).USER_TEMPLATE.get("ERROR"), timeout=20)
    assert error == ('Error rebooting VM: Action "reboot" is not supported by provider '
                     "provider_name (no executable vmm/provider_name/reboot)")
    assert one.vm.info(vm_id).LCM_STATE == RUNNING

    cli(daemon, "onevm", "terminate", f"{vm_id},{scheduled}")
    done(one, vm_id)
    done(one, scheduled)
    stops = (daemon.home / "var/provider_name.stops").read_text()
    assert f"shutdown prov-{vm_id} remote_provider {vm_id} remote_provider" in stops


@pytest.mark.parametrize("provider", ["example_sh", "example_py"])
def test_example_provider_life(daemon: RunningDaemon, one: pyone.OneServer,
                               provider: str) -> None:
    host = provider.replace("example_", "ex_")
    host_id = int(cli(daemon, "onehost", "create", host, f"im_{provider}", f"vmm_{provider}",
                      "tm_dummy").stdout.split()[-1])
    wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=20)
    assert "0 / 500 (0%)" in host_row(daemon, host)

    template = f'CPU=0.5\nMEMORY=128\nPUBLIC_CLOUD=[TYPE="{provider}", IMAGE="debian"]\n'
    vm_ids = [create(daemon, template) for _ in range(3)]
    vms = [running(one, vm_id) for vm_id in vm_ids]
    assert {vm.HISTORY_RECORDS.HISTORY[-1].HOSTNAME for vm in vms} == {host}
    instances = daemon.home / "var" / provider / "instances"
    assert len(list(instances.iterdir())) == 3
    for vm_id in vm_ids:
        wait_for(lambda v=vm_id: "IP=10." in cli(daemon, "onevm", "show", str(v)).stdout, 20)
    # The probes report what the resources use.
    wait_for(lambda: json.loads(cli(daemon, "onehost", "show", host, "--json").stdout)[
        "HOST_SHARE"]["USED_CPU"] == 150, timeout=20)

    cli(daemon, "onevm", "reboot", str(vm_ids[0]))
    cli(daemon, "onevm", "reboot", "--hard", str(vm_ids[1]))
    time.sleep(1.5)
    for vm_id in vm_ids[:2]:
        vm = one.vm.info(vm_id)
        assert vm.LCM_STATE == RUNNING and "ERROR" not in vm.USER_TEMPLATE

    cli(daemon, "onevm", "terminate", str(vm_ids[0]))
    cli(daemon, "onevm", "terminate", "--hard", f"{vm_ids[1]},{vm_ids[2]}")
    for vm_id in vm_ids:
        done(one, vm_id)
    assert list(instances.iterdir()) == []
    log = (daemon.home / "vms" / str(vm_ids[0]) / "vm.log").read_text()
    assert "Deployed: DEPLOY_ID=" in log


def test_failing_scripts(daemon: RunningDaemon, one: pyone.OneServer) -> None:
    host_id = int(cli(daemon, "onehost", "create", "flaky", "im_flaky", "vmm_flaky",
                      "tm_dummy").stdout.split()[-1])
    wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=20)

    def vm(mode: str) -> int:
        return create(daemon, f'CPU=1\nMEMORY=64\nPUBLIC_CLOUD=[TYPE=flaky, MODE="{mode}"]\n')

    failing, hanging, garbage, fine = vm("fail"), vm("hang"), vm("garbage"), vm("ok")

    # A deploy that exits non-zero: one clean line, the marked message.
    error = wait_for(lambda: one.vm.info(failing).USER_TEMPLATE.get("ERROR"), timeout=20)
    assert error == ("Error deploying virtual machine: deploy: the provider refused: quota "
                     "exceeded for image small")
    assert one.vm.info(failing).LCM_STATE == BOOT_FAILURE

    # A deploy that hangs past -w 2: a timeout error, and its process is gone.
    error = wait_for(lambda: one.vm.info(hanging).USER_TEMPLATE.get("ERROR"), timeout=20)
    assert error == "Error deploying virtual machine: Timeout executing deploy after 2 s"
    pid = int((daemon.home / "var/flaky.hang.pid").read_text())
    wait_for(lambda: not process_alive(pid), timeout=10)

    # A poll that prints garbage: that VM shows the error, the other one is fine.
    running(one, fine)
    running(one, garbage)
    error = wait_for(lambda: one.vm.info(garbage).USER_TEMPLATE.get("ERROR"), timeout=20)
    assert error.startswith("Error monitoring VM: poll output is not KEY=VALUE")
    wait_for(lambda: "IP=10.9.9." in cli(daemon, "onevm", "show", str(fine)).stdout, 20)
    fine_vm = one.vm.info(fine)
    assert fine_vm.LCM_STATE == RUNNING and "ERROR" not in fine_vm.USER_TEMPLATE
    assert one.vm.info(garbage).LCM_STATE == RUNNING

    # Missing shutdown script: terminate falls back to cancel, which exists.
    cli(daemon, "onevm", "terminate", f"{failing},{hanging},{garbage},{fine}")
    for vm_id in (failing, hanging, garbage, fine):
        done(one, vm_id)
    assert "runn" not in cli(daemon, "onevm", "list").stdout


def test_probes_without_cloud_attributes_make_a_local_host(daemon: RunningDaemon,
                                                           one: pyone.OneServer) -> None:
    for name, reason in (("oops", "local: its probes reported no PUBLIC_CLOUD=YES"),
                         ("oops_nohyp", "local: its probes reported PUBLIC_CLOUD=YES but no "
                                        "HYPERVISOR")):
        host_id = int(cli(daemon, "onehost", "create", name, "im_oops", "vmm_flaky",
                          "tm_dummy").stdout.split()[-1])
        wait_for(lambda h=host_id: one.host.info(h).STATE == 2, timeout=20)
        show = cli(daemon, "onehost", "show", name).stdout
        assert f"LOCALITY                : {reason}" in show, show
        cli(daemon, "onehost", "disable", name)

"""A host whose monitoring fails is neither polled nor swept; its VMs are UNKNOWN.

What an OpenNebula 6.10.5 peer does when a host's monitoring fails: the host
goes to ERROR, its RUNNING VMs to UNKNOWN, and its monitoring is tried again.
The daemon here runs real driver scripts (a ``shaky`` provider whose probe
fails while one flag file exists, and whose poll says every instance is gone
while another does, as an API answering an empty listing would) and a kvm host with no libvirtd
(kvm sweeps for orphans), all driven over the XML-RPC API, with monitoring and
polling every second.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from burst_helpers import write_script
from daemon_fixture import RunningDaemon, start_daemon, wait_for

pytestmark = pytest.mark.e2e

CONF = """
MONITORING_INTERVAL = 1
VM_POLLING_INTERVAL = 1
IM_MAD = [ name = "im_shaky", executable = "one_im_sh", arguments = "shaky" ]
VM_MAD = [ name = "vmm_shaky", executable = "one_vmm_sh", arguments = "shaky", type = "xml" ]
"""

#: Host states and VM (LCM) states of OpenNebula's numbering.
HOST_MONITORED, HOST_ERROR = 2, 3
ACTIVE, RUNNING, POWEROFF, UNKNOWN = 3, 3, 8, 16


def shaky_provider(remotes: Path) -> None:
    """The probe fails while ``$CLOUDBURST_HOME/var/shaky.down`` exists, the poll says
    "gone" while ``var/shaky.empty`` does; every poll is counted in ``var/shaky.polls``."""
    write_script(remotes / "im/shaky.d/probe", """
        #!/usr/bin/env bash
        if [ -e "$CLOUDBURST_HOME/var/shaky.down" ]; then
            echo "cannot reach the provider API" >&2
            exit 1
        fi
        echo HYPERVISOR=shaky TOTALCPU=1000 TOTALMEMORY=10485760
        """)
    write_script(remotes / "vmm/shaky/deploy", f"#!{sys.executable}\n" + """
        import sys
        print("sh-" + sys.argv[3])
        """)
    write_script(remotes / "vmm/shaky/poll", """
        #!/usr/bin/env bash
        echo "$1" >> "$CLOUDBURST_HOME/var/shaky.polls"
        if [ -e "$CLOUDBURST_HOME/var/shaky.empty" ]; then echo STATE=d; exit 0; fi
        echo "STATE=a IP=10.0.0.$3"
        """)
    for action in ("shutdown", "cancel"):
        write_script(remotes / f"vmm/shaky/{action}", "#!/bin/sh\nexit 0\n")


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path, oned_conf_extra=CONF) as running:
        shaky_provider(running.home / "remotes")
        yield running


def polls(daemon: RunningDaemon) -> int:
    path = daemon.home / "var" / "shaky.polls"
    return len(path.read_text().splitlines()) if path.exists() else 0


def wait_monitorings(one: pyone.OneServer, host_id: int, seconds: int) -> None:
    """Wait until the host's monitoring time moved ``seconds`` on: still monitored."""
    first = one.host.info(host_id).MONITORING.TIMESTAMP
    wait_for(lambda: one.host.info(host_id).MONITORING.TIMESTAMP - first >= seconds, 30)


def test_vms_of_a_host_whose_monitoring_fails_are_unknown_and_not_polled(
        daemon: RunningDaemon) -> None:
    one = pyone.OneServer(daemon.url, session=daemon.session)
    host_id = one.host.allocate("shaky", "im_shaky", "vmm_shaky", -1)
    wait_for(lambda: one.host.info(host_id).STATE == HOST_MONITORED, 30)
    vms = [one.vm.allocate("NAME = v CPU = 1 MEMORY = 128", False) for _ in range(2)]
    for vm_id in vms:
        wait_for(lambda vm_id=vm_id: one.vm.info(vm_id).LCM_STATE == RUNNING, 30)
    wait_for(lambda: polls(daemon) >= 2, 10)

    down, empty = daemon.home / "var" / "shaky.down", daemon.home / "var" / "shaky.empty"
    down.touch()
    wait_for(lambda: one.host.info(host_id).STATE == HOST_ERROR, 30)
    empty.touch()
    for vm_id in vms:  # not POWEROFF, as the poll script would have them
        shown = wait_for(lambda vm_id=vm_id: (vm := one.vm.info(vm_id)).LCM_STATE == UNKNOWN
                         and vm, 10)
        assert shown.STATE == ACTIVE
        assert "host shaky cannot be monitored (" in shown.USER_TEMPLATE["ERROR"]
    asked = polls(daemon)
    wait_monitorings(one, host_id, 3)
    assert polls(daemon) == asked  # three polling intervals went by unasked
    assert [one.vm.info(vm_id).LCM_STATE for vm_id in vms] == [UNKNOWN, UNKNOWN]
    assert "polling VMs of host shaky" not in daemon.output()

    empty.unlink()
    down.unlink()
    wait_for(lambda: one.host.info(host_id).STATE == HOST_MONITORED, 30)
    for vm_id in vms:  # polled as soon as the host answers again
        wait_for(lambda vm_id=vm_id: one.vm.info(vm_id).LCM_STATE == RUNNING, 10)
    assert polls(daemon) > asked


def test_a_host_whose_monitoring_fails_is_not_swept_for_orphans(
        daemon: RunningDaemon) -> None:
    one = pyone.OneServer(daemon.url, session=daemon.session)
    host_id = one.host.allocate("dead", "kvm", "kvm", -1)
    one.host.update(host_id, 'LIBVIRT_URI = "qemu+unix:///system?socket=/nonexistent/sock"', 1)
    wait_for(lambda: one.host.info(host_id).STATE == HOST_ERROR
             and "libvirtd" in one.host.info(host_id).TEMPLATE.get("ERROR", ""), 30)
    started = time.monotonic()
    wait_monitorings(one, host_id, 3)
    assert time.monotonic() - started >= 2  # at least two polling intervals
    assert "orphan sweep of host dead" not in daemon.output(), daemon.output()

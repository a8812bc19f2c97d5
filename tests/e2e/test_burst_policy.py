"""The burst policy end to end (issue 14): a real daemon, a local dummy host and two
sites of a script provider whose probes report different ``PRICE_PER_HOUR``.

VMs fill the local host first, then the cheaper site, then the dearer one (the
dearer has the lower id, so the order is the price's); every placement and
every waiting VM says why in ``onevm show``; VMs show their price and cost,
sites their spending; a user's hourly budget (a quota) stops their VMs with a
message naming it.
"""

from __future__ import annotations

import json
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

import pyone
import pytest
from burst_helpers import RunningDaemon, cli, conf_text, running_daemon, wait_for, write_script

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CONF = """
IM_MAD = [ name = "im_burst", executable = "one_im_sh", arguments = "burst" ]
VM_MAD = [ name = "vmm_burst", executable = "one_vmm_sh", arguments = "burst", type = "xml" ]
"""

#: One CPU each: the local host takes 2, each site 2.
VM = 'NAME="b" CPU=1 MEMORY=128 PUBLIC_CLOUD=[ TYPE="burst" ]'
RUNNING, ACTIVE, PENDING = 3, 3, 1


def burst_provider(remotes: Path) -> None:
    """A provider whose site named ``dear*`` charges 0.10 an hour and the others 0.02."""
    write_script(remotes / "im/burst.d/probe", """
        #!/usr/bin/env bash
        site="${@: -1}"
        price=0.02
        case "$site" in dear*) price=0.10 ;; esac
        echo PUBLIC_CLOUD=YES HYPERVISOR=burst TOTALCPU=200 TOTALMEMORY=8388608
        echo "PRICE_PER_HOUR=$price"
        """)
    write_script(remotes / "vmm/burst/deploy", """
        #!/usr/bin/env bash
        echo "burst-$3-$CLOUDBURST_VM_ID"
        """)
    write_script(remotes / "vmm/burst/poll", """
        #!/usr/bin/env bash
        # poll <deploy id> <host> <vm id> <host>: CPU from var/cpu.<vm id>, else busy.
        cpu=50
        [ -e "$CLOUDBURST_HOME/var/cpu.$3" ] && cpu=$(cat "$CLOUDBURST_HOME/var/cpu.$3")
        echo "STATE=a CPU=$cpu"
        """)
    for action in ("shutdown", "cancel"):
        write_script(remotes / f"vmm/burst/{action}", "#!/usr/bin/env bash\nexit 0\n")


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    root = tmp_path_factory.mktemp("burst_policy")
    with running_daemon(root, conf_text(CONF)) as running:
        burst_provider(running.home / "remotes")
        yield running


@pytest.fixture(scope="module")
def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


@pytest.fixture(scope="module")
def hosts(daemon: RunningDaemon, one: pyone.OneServer) -> dict[str, int]:
    """local (2 CPUs), then ``dear`` before ``cheap``: ids do not follow prices."""
    found: dict[str, int] = {}
    for name, drivers in (("local", ("dummy", "dummy")), ("dear", ("im_burst", "vmm_burst")),
                          ("cheap", ("im_burst", "vmm_burst"))):
        out = cli(daemon, "onehost", "create", name, "-i", drivers[0], "-v", drivers[1]).stdout
        found[name] = int(out.split()[-1])
    cli(daemon, "onehost", "update", "local", "-", "--append", stdin="DUMMY_TOTALCPU=200\n")
    for name, host_id in found.items():
        wait_for(lambda host_id=host_id: one.host.info(host_id).STATE == 2
                 and int(one.host.info(host_id).HOST_SHARE.TOTAL_CPU) == 200, timeout=60)
        if name != "local":
            wait_for(lambda host_id=host_id: "PRICE_PER_HOUR" in cli(
                daemon, "onehost", "show", str(host_id)).stdout, timeout=60)
    return found


def create(daemon: RunningDaemon, text: str, *extra: str) -> int:
    path = daemon.home.parent / f"vm-{time.monotonic_ns()}.one"
    path.write_text(text)
    return int(cli(daemon, "onevm", "create", str(path), *extra).stdout.split()[-1])


def running_on(one: pyone.OneServer, vm_id: int) -> int:
    vm = wait_for(lambda: (info := one.vm.info(vm_id)).LCM_STATE == RUNNING and info,
                  timeout=60)
    return int(vm.HISTORY_RECORDS.HISTORY[-1].HID)


def placed_on(one: pyone.OneServer, vm_id: int) -> int:
    """The host of ``vm_id``'s first stay, once it has one, whatever its state now (a
    short lease may end the VM before a look sees it RUNNING)."""
    vm = wait_for(lambda: (info := one.vm.info(vm_id)).HISTORY_RECORDS is not None
                  and info.HISTORY_RECORDS.HISTORY and info, timeout=60)
    return int(vm.HISTORY_RECORDS.HISTORY[0].HID)


def show(daemon: RunningDaemon, vm_id: int, *extra: str) -> dict[str, object]:
    return dict(json.loads(cli(daemon, "onevm", "show", str(vm_id), "--json", *extra).stdout))


def terminate_all(daemon: RunningDaemon, one: pyone.OneServer, ids: list[int]) -> None:
    cli(daemon, "onevm", "terminate", "--hard", ",".join(map(str, ids)))
    for vm_id in ids:
        wait_for(lambda vm_id=vm_id: one.vm.info(vm_id).STATE == 6, timeout=60)


def test_local_first_then_the_cheaper_site_then_the_dearer_with_reasons(
        daemon: RunningDaemon, one: pyone.OneServer, hosts: dict[str, int]) -> None:
    ids = [create(daemon, VM) for _ in range(6)]
    placed = [running_on(one, vm_id) for vm_id in ids]
    assert placed == [hosts["local"]] * 2 + [hosts["cheap"]] * 2 + [hosts["dear"]] * 2

    extra = create(daemon, VM)
    waiting = wait_for(lambda: (vm := show(daemon, extra))["PLACEMENT"] and vm, timeout=60)
    assert waiting["STATE"] == "PENDING"
    placement = waiting["PLACEMENT"]
    assert placement["MESSAGE"] == "No host with enough capacity to deploy the VM"
    assert placement["CONSIDERED"] == 3
    assert placement["REFUSED"] == [{"KIND": "capacity", "COUNT": 3,
                                     "HOSTS": ["local", "cheap", "dear"]}]

    local, cheap, dear = show(daemon, ids[0]), show(daemon, ids[2]), show(daemon, ids[4])
    assert local["PLACEMENT"]["TIER"] == "local"
    assert local["COST"] == {"PRICE_PER_HOUR": None, "ACCRUED": 0}
    assert (cheap["PLACEMENT"]["TIER"], cheap["PLACEMENT"]["PRICE"]) == ("cloud", 0.02)
    assert cheap["COST"]["PRICE_PER_HOUR"] == 0.02
    assert dear["PLACEMENT"]["PRICE"] == 0.1
    assert dear["PLACEMENT"]["ORDER"] == "tier, price, RANK"
    assert {"KIND": "capacity", "COUNT": 2, "HOSTS": ["local", "cheap"]} in \
        dear["PLACEMENT"]["REFUSED"]
    text = cli(daemon, "onevm", "show", str(ids[4])).stdout
    assert "PLACEMENT AND COST" in text
    assert "Placed on dear (cloud tier, 0.1/h" in text
    assert "REFUSED (capacity)  : 2: local, cheap" in text
    site = cli(daemon, "onehost", "show", "cheap").stdout
    assert 'HOURLY="0.04"' in site.replace(" ", "")
    terminate_all(daemon, one, [*ids, extra])


def test_an_hourly_budget_stops_bursts_with_a_message_naming_it(
        daemon: RunningDaemon, one: pyone.OneServer, hosts: dict[str, int]) -> None:
    cli(daemon, "oneuser", "create", "alice", "pw-alice")
    cli(daemon, "oneuser", "quota", "alice", "-", stdin="VM = [ HOURLY_COST = 0.03 ]\n")
    as_alice = ("--user", "alice", "--password", "pw-alice")
    ids = [create(daemon, VM, *as_alice) for _ in range(3)]
    placed = [running_on(one, vm_id) for vm_id in ids]
    # Local VMs cost nothing; one at the cheap site costs 0.02 an hour.
    assert placed == [hosts["local"]] * 2 + [hosts["cheap"]]
    over = create(daemon, VM, *as_alice)
    message = "User [2] : user [2] budget of 0.03 reached for HOURLY_COST quota in VM."

    def refused_by_budget(vm_id: int) -> dict[str, object] | None:
        info = show(daemon, vm_id)
        placement = info["PLACEMENT"]
        kinds = {refused["KIND"]: refused["HOSTS"] for refused in placement["REFUSED"]}
        return info if sorted(kinds.get("budget", [])) == ["cheap", "dear"] else None

    # The cheap site refuses it (0.04 > 0.03), then the dear one (0.12 > 0.03).
    vm = wait_for(lambda: refused_by_budget(over), timeout=60)
    assert vm["STATE"] == "PENDING"
    assert vm["PLACEMENT"]["MESSAGE"] == message
    assert one.vm.info(over).USER_TEMPLATE["SCHED_MESSAGE"] == message
    # Another VM of the same shape skips the sites the budget refused, with the same words.
    another = create(daemon, VM, *as_alice)
    assert wait_for(lambda: refused_by_budget(another), timeout=60)["STATE"] == "PENDING"
    assert one.vm.info(another).USER_TEMPLATE["SCHED_MESSAGE"] == message
    user = cli(daemon, "oneuser", "show", "alice").stdout
    assert "BUDGETS (cloud spending)" in user
    assert "0.02 /    0.03" in user
    terminate_all(daemon, one, [*ids, over, another])


def test_a_site_budget_stops_new_bursts_there(
        daemon: RunningDaemon, one: pyone.OneServer, hosts: dict[str, int]) -> None:
    cluster = int(cli(daemon, "onecluster", "create", "dear-site").stdout.split()[-1])
    cli(daemon, "onecluster", "addhost", "dear-site", "dear")
    # An hour at the dear site (0.10) no longer fits its month's budget.
    cli(daemon, "onecluster", "quota", "dear-site", "-", stdin="VM = [ MONTHLY_COST = 0.05 ]\n")
    try:
        ids = [create(daemon, VM) for _ in range(5)]
        assert [running_on(one, vm_id) for vm_id in ids[:4]] == \
            [hosts["local"]] * 2 + [hosts["cheap"]] * 2
        message = f"Cluster [{cluster}] : budget of 0.05 reached for MONTHLY_COST quota in VM."
        waiting = wait_for(lambda: (vm := show(daemon, ids[4]))["PLACEMENT"] and
                           vm["PLACEMENT"]["MESSAGE"] == message and vm, timeout=60)
        assert waiting["STATE"] == "PENDING"
        shown = cli(daemon, "onecluster", "show", "dear-site").stdout
        assert "BUDGETS (cloud spending)" in shown and " /    0.05" in shown
        refused = cli(daemon, "onecluster", "quota", "dear-site", "-",
                      stdin="VM = [ VMS = 2 ]\n", check=False)
        assert refused.returncode == 1
        assert "A cluster's quota holds its budgets only" in refused.stderr
        terminate_all(daemon, one, ids)
    finally:
        cli(daemon, "onecluster", "quota", "dear-site", "-", stdin="VM = [ MONTHLY_COST = -2 ]\n")
        cli(daemon, "onecluster", "delhost", "dear-site", "dear")


# -- leases and idle rules ---------------------------------------------------------------

ON_CHEAP = VM + ' SCHED_REQUIREMENTS="NAME = \\"cheap\\""'


def vm_log(daemon: RunningDaemon, vm_id: int) -> str:
    path = daemon.home / "vms" / str(vm_id) / "vm.log"
    return path.read_text() if path.exists() else ""


def test_leases_and_idle_rules_end_cloud_vms_with_a_warning_first(
        daemon: RunningDaemon, one: pyone.OneServer, hosts: dict[str, int]) -> None:
    leased = create(daemon, ON_CHEAP + ' LEASE="4"')
    parked = create(daemon, ON_CHEAP + ' LEASE="3" LEASE_ACTION="poweroff"')
    idle = create(daemon, ON_CHEAP + ' IDLE_CPU="10" IDLE_TIME="3"')
    busy = create(daemon, ON_CHEAP + ' IDLE_CPU="10" IDLE_TIME="3"')
    (daemon.home / "var").mkdir(exist_ok=True)
    (daemon.home / "var" / f"cpu.{idle}").write_text("1\n")
    for vm_id in (leased, parked, idle, busy):
        assert placed_on(one, vm_id) == hosts["cheap"]

    wait_for(lambda: one.vm.info(leased).STATE == 6, timeout=60)
    proxy = xmlrpc.client.ServerProxy(daemon.url)
    document = ElementTree.fromstring(proxy.one.vm.info(daemon.session, leased)[1])
    proxy("close")()
    stay = document.findall("HISTORY_RECORDS/HISTORY")[-1]
    # The stay records a terminate-hard (ACTION 28 in 6.x) asked for the user (REASON 2).
    assert (stay.findtext("ACTION"), stay.findtext("REASON")) == ("28", "2")
    assert int(stay.findtext("ETIME") or 0) - int(stay.findtext("STIME") or 0) >= 4
    text = wait_for(lambda: "Lease of 4 s ended" in (log := vm_log(daemon, leased)) and log,
                    timeout=30)
    assert text.index("Lease of 4 s ends in") < text.index("Lease of 4 s ended")

    wait_for(lambda: one.vm.info(parked).STATE == 8, timeout=60)  # POWEROFF
    wait_for(lambda: one.vm.info(idle).STATE == 6, timeout=60)
    text = wait_for(lambda: "Idle rule" in (log := vm_log(daemon, idle)) and
                    "ended" in log and log, timeout=30)
    assert text.index("ends in") < text.index("ended: terminate-hard")
    busy_vm = one.vm.info(busy)
    assert (busy_vm.STATE, busy_vm.LCM_STATE) == (ACTIVE, RUNNING)
    assert "Idle rule" not in vm_log(daemon, busy)
    terminate_all(daemon, one, [leased, parked, idle, busy])


# -- coming back home ---------------------------------------------------------------------

RECALL_CONF = CONF + """
RECALL = [ PER_MINUTE = 1, MIN_CLOUD_TIME = 1 ]
"""
LOCAL_VM = 'NAME="l" CPU=1 MEMORY=128'
RECALL_VM = VM + ' RECALL="YES"'


def replacement_of(one: pyone.OneServer, vm_id: int) -> int | None:
    for vm in one.vmpool.infoextended(-2, -1, -1, -1).VM:
        if str(vm.USER_TEMPLATE.get("RECALL_OF", "")) == str(vm_id):
            return int(vm.ID)
    return None


def test_recall_brings_cloud_vms_home_within_the_rate_limit(
        tmp_path_factory: pytest.TempPathFactory) -> None:
    root = tmp_path_factory.mktemp("recall")
    with running_daemon(root, conf_text(RECALL_CONF)) as daemon:
        burst_provider(daemon.home / "remotes")
        one = pyone.OneServer(daemon.url, session=daemon.session)
        local = int(cli(daemon, "onehost", "create", "local", "-i", "dummy", "-v", "dummy")
                    .stdout.split()[-1])
        cli(daemon, "onehost", "update", "local", "-", "--append", stdin="DUMMY_TOTALCPU=200\n")
        site = int(cli(daemon, "onehost", "create", "cheap", "-i", "im_burst", "-v",
                       "vmm_burst").stdout.split()[-1])
        for host_id in (local, site):
            wait_for(lambda host_id=host_id: int(one.host.info(host_id).HOST_SHARE.TOTAL_CPU)
                     == 200, timeout=60)
        fillers = [create(daemon, LOCAL_VM) for _ in range(2)]
        assert [running_on(one, vm_id) for vm_id in fillers] == [local, local]
        first, second = create(daemon, RECALL_VM), create(daemon, RECALL_VM)
        assert [running_on(one, vm_id) for vm_id in (first, second)] == [site, site]

        terminate_all(daemon, one, fillers)  # two local slots free at once
        replacement = wait_for(lambda: replacement_of(one, first), timeout=60)
        assert running_on(one, replacement) == local
        wait_for(lambda: one.vm.info(first).STATE == 6, timeout=60)
        shown = cli(daemon, "onevm", "show", str(replacement)).stdout
        assert f'RECALL_OF="{first}"' in shown.replace(" ", "")
        # One recall per minute: the second VM stays in the cloud although a local
        # slot is free (the recall manager looks every few seconds).
        time.sleep(8)
        assert replacement_of(one, second) is None
        vm = one.vm.info(second)
        assert (vm.STATE, vm.LCM_STATE) == (ACTIVE, RUNNING)
        assert int(vm.HISTORY_RECORDS.HISTORY[-1].HID) == site


def test_no_recall_before_the_minimum_time_in_the_cloud_while_capacity_comes_and_goes(
        daemon: RunningDaemon, one: pyone.OneServer, hosts: dict[str, int]) -> None:
    """The module's daemon keeps the default MIN_CLOUD_TIME (600 s): local room that
    comes and goes must not move a VM that just burst."""
    fillers = [create(daemon, LOCAL_VM) for _ in range(2)]
    assert [running_on(one, vm_id) for vm_id in fillers] == [hosts["local"]] * 2
    burst = create(daemon, RECALL_VM)
    assert running_on(one, burst) == hosts["cheap"]
    for _ in range(3):  # local room comes and goes a few times
        terminate_all(daemon, one, fillers[:1])
        time.sleep(2)
        fillers[0] = create(daemon, LOCAL_VM)
        assert running_on(one, fillers[0]) == hosts["local"]
    terminate_all(daemon, one, fillers)
    time.sleep(6)  # more than one look of the recall manager with local room free
    assert replacement_of(one, burst) is None
    vm = one.vm.info(burst)
    assert (vm.STATE, vm.LCM_STATE, int(vm.HISTORY_RECORDS.HISTORY[-1].HID)) == (
        ACTIVE, RUNNING, hosts["cheap"])
    assert len(vm.HISTORY_RECORDS.HISTORY) == 1
    terminate_all(daemon, one, [burst])

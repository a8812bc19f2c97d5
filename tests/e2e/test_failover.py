"""Several daemons on one real PostgreSQL: the leader dies or loses the database.

Each daemon is a real ``oned -f`` process with its own home and API port and the
same ``DB = [ BACKEND = "postgresql" ]`` store; EC2 is a real ``moto_server``
behind the counting proxy of ``ec2_sites``. Which daemon leads is read from
the lease row (its holder names the process id).
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pyone
import pytest
from burst_helpers import conf_text, ec2_etc, kill, start, write_script
from daemon_fixture import RunningDaemon, stop, wait_for

import pg_server
from ec2_sites import FaultProxy, MotoServer, instances_by_vm, moto_servers
from seed_templates import EC2_IM_MAD, ec2_vm_mad

postgres = pg_server.session_fixture()

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

#: The default lease (3 s, renewed every 0.75 s, retried every 0.5 s): failover < 5 s.
FAILOVER_BOUND = 5.0
VM_TEMPLATE = 'CPU=0.5\nMEMORY=128\nEC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair" ]\n'


def leader_pid(url: str) -> tuple[int, int] | None:
    """(pid, epoch) of the daemon holding an unexpired lease, if any."""
    with psycopg.connect(url, autocommit=True, connect_timeout=2) as connection:
        row = connection.execute(
            "SELECT holder, epoch FROM leases WHERE name = 'leader' "
            "AND expires > extract(epoch from clock_timestamp())").fetchone()
    return None if row is None else (int(row[0].split(":")[1]), int(row[1]))


def running_in_store(url: str) -> int:
    """VMs RUNNING in the store, read directly."""
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as connection:
        row = connection.execute("SELECT count(*) FROM vms WHERE lcm_state = 3").fetchone()
    return int(row[0]) if row else 0


def start_group(root: Path, count: int, conf: str, etc: Path | None = None
                ) -> list[RunningDaemon]:
    """Start ``count`` daemons one after the other on one store (the first creates it)."""
    daemons: list[RunningDaemon] = []
    try:
        for index in range(count):
            home = root / f"d{index}" / "home"
            if etc is not None:
                shutil.copytree(etc, home / "etc", dirs_exist_ok=True)
            if daemons:  # the store's oneadmin, whose session the first daemon wrote
                home.mkdir(parents=True, exist_ok=True)
                shutil.copy(daemons[0].auth_file, home / "one_auth")
            daemons.append(start(root / f"d{index}", conf))
    except BaseException:
        for daemon in daemons:
            stop(daemon.process)
        raise
    return daemons


class Reader(threading.Thread):
    """Reads the pools through one daemon until stopped, keeping every error."""

    def __init__(self, daemon: RunningDaemon) -> None:
        super().__init__(daemon=True)
        self.server = pyone.OneServer(daemon.url, session=daemon.session)
        self.errors: list[str] = []
        self.calls = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                pool = self.server.vmpool.info(-2, -1, -1, -1).VM
                if pool:
                    self.server.vm.info(pool[-1].ID)
                self.calls += 1
            except Exception as exc:
                self.errors.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)


def allocate(daemon: RunningDaemon, count: int, errors: list[str]) -> list[int]:
    """Allocate ``count`` VMs through ``daemon`` with 4 clients at once."""
    ids: list[int] = []
    lock = threading.Lock()

    def client(share: int) -> None:
        server = pyone.OneServer(daemon.url, session=daemon.session)
        for _ in range(share):
            try:
                vm_id = server.vm.allocate(VM_TEMPLATE, False)
            except Exception as exc:
                with lock:
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            with lock:
                ids.append(vm_id)

    threads = [threading.Thread(target=client, args=(count // 4,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return ids


@pytest.fixture
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as servers:
        yield servers[0]


@pytest.mark.timeout(600)
def test_sigkill_of_the_leader_during_a_burst_of_200_ec2_vms(
        tmp_path: Path, postgres: pg_server.PostgresServer, site: MotoServer) -> None:
    url = postgres.create_database("failover")
    etc = tmp_path / "etc"
    ec2_etc(etc, small_instances=400,
            rc_extra="EC2_RETRY_BASE_DELAY=0.1\nEC2_RETRY_MAX_DELAY=1\nEC2_RATE_SCALE=10\n")
    with FaultProxy(site.url) as proxy:
        proxy.set_delay("RunInstances", 0.3)  # launches still on the wire at the kill
        conf = conf_text(EC2_IM_MAD + ec2_vm_mad("vmm_ec2", proxy.url, flags="-t 10 "),
                         DB=f'[ BACKEND = "postgresql", URL = "{url}" ]',
                         VM_POLLING_INTERVAL="5", MONITORING_INTERVAL="5")
        daemons = start_group(tmp_path, 3, conf, etc)
        reader: Reader | None = None
        try:
            by_pid = {daemon.process.pid: daemon for daemon in daemons}
            pid, first_epoch = wait_for(lambda: leader_pid(url), timeout=10)
            leader = by_pid[pid]
            survivor = next(d for d in daemons if d is not leader)
            server = pyone.OneServer(survivor.url, session=survivor.session)
            host_id = server.host.allocate("ec2", "im_ec2", "vmm_ec2", -1)
            wait_for(lambda: server.host.info(host_id).STATE == 2, timeout=30)
            reader = Reader(survivor)
            reader.start()
            errors: list[str] = []
            vm_ids = allocate(survivor, 100, errors)
            try:  # kill while launches are on the wire (EC2 may batch them)
                wait_for(lambda: proxy.counts["RunInstances"] >= 1, timeout=60, interval=0.02)
            except TimeoutError:
                first_vm = server.vm.info(vm_ids[0])
                raise AssertionError(f"no burst: {proxy.counts}, VM {first_vm.STATE}/"
                                     f"{first_vm.LCM_STATE} {first_vm.USER_TEMPLATE}\n"
                                     + leader.output()[-3000:]) from None
            killed_at = time.monotonic()
            kill(leader)
            running_at_kill = running_in_store(url)
            # The other half arrives while there is no leader.
            later: list[int] = []
            second_half = threading.Thread(
                target=lambda: later.extend(allocate(survivor, 100, errors)))
            second_half.start()
            new_pid, epoch = wait_for(
                lambda: (found := leader_pid(url)) and found[0] != pid and found,
                timeout=15, interval=0.05)
            failover = time.monotonic() - killed_at
            second_half.join(timeout=120)
            vm_ids += later
            assert new_pid in by_pid and epoch > first_epoch
            assert failover < FAILOVER_BOUND, f"a new leader took {failover:.1f} s"
            assert running_at_kill < 100, "the kill came too late to test anything"

            def states() -> dict[int, tuple[int, int]]:
                return {vm.ID: (vm.STATE, vm.LCM_STATE)
                        for vm in server.vmpool.info(-2, -1, -1, -1).VM}

            def all_running() -> bool:
                now = states()
                return all(now.get(vm_id) == (3, 3) for vm_id in vm_ids)

            try:
                wait_for(all_running, timeout=360, interval=1.0)
            except TimeoutError:
                stuck = {i: s for i, s in states().items() if s != (3, 3)}
                raise AssertionError(f"VMs not RUNNING: {stuck}\n"
                                     + by_pid[new_pid].output()[-4000:]) from None
            time.sleep(1.5)  # any late launch lands before counting
            reader.done.set()
            reader.join(timeout=10)
            assert errors == [] and reader.errors == [], (errors, reader.errors[:5])
            assert reader.calls > 0
            assert len(vm_ids) == 200
            by_vm = instances_by_vm(site.client())
            assert None not in by_vm, "an instance without a VM"
            assert sorted(by_vm) == sorted(vm_ids), "an instance leaked or a VM has none"
            assert {vm_id: ids for vm_id, ids in by_vm.items() if len(ids) != 1} == {}
            for vm in server.vmpool.info(-2, -1, -1, -1).VM:
                assert by_vm[vm.ID] == [vm.DEPLOY_ID]
        finally:
            if reader is not None:
                reader.done.set()
            for daemon in daemons:
                stop(daemon.process)


class CuttableProxy:
    """A TCP forwarder whose :meth:`cut` drops every connection and refuses new ones."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._open = threading.Event()
        self._open.set()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self._open.is_set():
                client.close()
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets.update((client, server))
            for source, target in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, target), daemon=True).start()

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while chunk := source.recv(65536):
                target.sendall(chunk)
        for end in (source, target):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self._open.clear()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for end in sockets:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
            end.close()

    def restore(self) -> None:
        self._open.set()

    def close(self) -> None:
        self._closed = True
        self.cut()
        self.listener.close()


@pytest.mark.timeout(300)
def test_a_leader_cut_from_the_database_gives_up_the_lease_and_recovers(
        tmp_path: Path, postgres: pg_server.PostgresServer) -> None:
    url = postgres.create_database("cut")
    proxy = CuttableProxy((postgres.host, postgres.port))
    through_proxy = url.replace(f":{postgres.port}/", f":{proxy.port}/")
    direct = conf_text(DB=f'[ BACKEND = "postgresql", URL = "{url}" ]')
    cut_conf = conf_text(DB=f'[ BACKEND = "postgresql", URL = "{through_proxy}" ]')
    first = start(tmp_path / "cut", cut_conf)
    daemons = [first]
    try:
        home = tmp_path / "direct" / "home"
        home.mkdir(parents=True)
        shutil.copy(first.auth_file, home / "one_auth")
        second = start(tmp_path / "direct", direct)
        daemons.append(second)
        assert wait_for(lambda: leader_pid(url), timeout=10)[0] == first.process.pid
        server = pyone.OneServer(second.url, session=second.session)
        server.host.allocate("node", "dummy", "dummy", -1)
        before = server.vm.allocate("CPU=0.1 MEMORY=16", False)
        wait_for(lambda: server.vm.info(before).LCM_STATE == 3, timeout=30)

        proxy.cut()
        cut_at = time.monotonic()
        wait_for(
            lambda: (found := leader_pid(url)) and found[0] == second.process.pid,
            timeout=15, interval=0.05)
        assert time.monotonic() - cut_at < FAILOVER_BOUND
        during = server.vm.allocate("CPU=0.1 MEMORY=16", False)
        wait_for(lambda: server.vm.info(during).LCM_STATE == 3, timeout=30)
        wait_for(lambda: "stops leading" in first.output(), timeout=10)

        proxy.restore()
        # Back on the database, the old leader serves again, as a follower.
        old = pyone.OneServer(first.url, session=first.session)
        after = wait_for(lambda: old.vm.allocate("CPU=0.1 MEMORY=16", False), timeout=20,
                         interval=0.5)
        wait_for(lambda: old.vm.info(after).LCM_STATE == 3, timeout=30)
        assert leader_pid(url)[0] == second.process.pid
        assert {vm.ID for vm in old.vmpool.info(-2, -1, -1, -1).VM} == {before, during, after}
        assert first.process.poll() is None
    finally:
        for daemon in daemons:
            stop(daemon.process)
        proxy.close()


#: Script drivers whose every call logs "<action> <parent pid> <wall clock> <vm id>"; one
#: VM action at a time (``-t 1``), so that a deploy can wait for the one before it.
LOGGED_DRIVERS = """
IM_MAD = [ name = "im_logged", executable = "one_im_sh", arguments = "logged" ]
VM_MAD = [ name = "vmm_logged", executable = "one_vmm_sh", arguments = "-t 1 logged",
           type = "xml" ]
"""


def logged_provider(remotes: Path, calls: Path) -> None:
    """The ``logged`` probe and actions, appending to ``calls`` (shared by the daemons);
    a deploy takes a second."""
    def line(action: str, vm_id: str) -> str:
        return f'echo "{action} $PPID $(date +%s.%N) {vm_id}" >> "{calls}"'

    write_script(remotes / "im/logged.d/probe", f"""
        #!/usr/bin/env bash
        {line("monitor", "-")}
        echo TOTALCPU=800 TOTALMEMORY=8388608
        """)
    write_script(remotes / "vmm/logged/deploy", f"""
        #!/usr/bin/env bash
        {line("deploy", "$3")}
        sleep 1
        echo "lg-$3"
        """)
    write_script(remotes / "vmm/logged/poll", f"""
        #!/usr/bin/env bash
        {line("poll", "$3")}
        echo "STATE=a"
        """)
    for action in ("shutdown", "cancel"):
        write_script(remotes / f"vmm/logged/{action}", f"""
            #!/usr/bin/env bash
            {line(action, "$3")}
            """)


def logged_calls(calls: Path) -> list[tuple[str, int, float, str]]:
    """The driver calls so far: (action, the calling daemon's pid, when, VM id)."""
    found = []
    for text in calls.read_text().splitlines() if calls.exists() else []:
        action, pid, at, vm_id = text.split()
        found.append((action, int(pid), float(at), vm_id))
    return found


@pytest.mark.timeout(300)
def test_a_frozen_leader_is_replaced_and_once_resumed_steps_down_without_acting(
        tmp_path: Path, postgres: pg_server.PostgresServer) -> None:
    # STALL = 3: the keeper stops renewing 3 s after the daemon's last heartbeat.
    url = postgres.create_database("frozen")
    conf = conf_text(LOGGED_DRIVERS, DB=f'[ BACKEND = "postgresql", URL = "{url}" ]',
                     LEADER_LEASE="[ DURATION = 3, RENEW = 0.75, RETRY = 0.5, STALL = 3 ]")
    calls = tmp_path / "calls"
    first, second = daemons = start_group(tmp_path, 2, conf)
    try:
        for daemon in daemons:
            logged_provider(daemon.home / "remotes", calls)
        assert wait_for(lambda: leader_pid(url), timeout=10) == (first.process.pid, 1)
        server = pyone.OneServer(second.url, session=second.session)
        server.host.allocate("node", "im_logged", "vmm_logged", -1)
        vms = [server.vm.allocate("CPU=0.1 MEMORY=16", False) for _ in range(4)]
        # Frozen while it runs one deploy and the next waits for the driver's slot.
        wait_for(lambda: any(action == "deploy" and pid == first.process.pid
                             for action, pid, _, _ in logged_calls(calls)), timeout=30,
                 interval=0.02)
        first.process.send_signal(signal.SIGSTOP)  # its keeper process runs on
        frozen_at = time.monotonic()
        try:
            taken = wait_for(lambda: (found := leader_pid(url)) and found[0] != first.process.pid
                             and found, timeout=30, interval=0.05)
            # STALL (seen at a renewal), then DURATION until the lease ends, then a RETRY.
            assert taken == (second.process.pid, 2)
            assert time.monotonic() - frozen_at < 3 + 0.75 + 3 + 0.5 + 3  # 3 s of slack
            wait_for(lambda: all(server.vm.info(vm).LCM_STATE == 3 for vm in vms), timeout=60)
        finally:
            resumed_at = time.time()
            first.process.send_signal(signal.SIGCONT)
        wait_for(lambda: "this daemon stops leading (epoch 1)" in first.output(), timeout=10)
        time.sleep(3)  # three of its monitoring and polling intervals
        late = [call for call in logged_calls(calls)
                if call[1] == first.process.pid and call[2] >= resumed_at]
        assert late == [], late
        assert leader_pid(url) == (second.process.pid, 2)
        # It serves on, as a follower: its VM is deployed by the new leader.
        old = pyone.OneServer(first.url, session=first.session)
        vm_id = wait_for(lambda: old.vm.allocate("CPU=0.1 MEMORY=16", False), timeout=20)
        wait_for(lambda: old.vm.info(vm_id).LCM_STATE == 3, timeout=30)
        assert [pid for action, pid, _, vm in logged_calls(calls)
                if action == "deploy" and vm == str(vm_id)] == [second.process.pid]
    finally:
        for daemon in daemons:
            stop(daemon.process)

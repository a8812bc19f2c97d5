"""A lost PostgreSQL store is noticed and restored with pg_dump/pg_restore (issue 15, finding 2);
a PostgreSQL server that stops answering is named and recovered from (finding 6).

The same path as ``test_lost_store.py`` on a real PostgreSQL server the test
session starts (``pg_server``): the daemon's store is a database owned by a
role with a password. ``cloudburst backup`` runs ``pg_dump`` while the daemon
runs; the store's tables are then dropped under it: writes are refused with
"Store lost", a restart refuses to create a new store over it, and
``cloudburst restore`` (``pg_restore``) brings back the same VMs, hosts,
oneadmin session and installation id. The password never shows in the tools'
output, even when they fail.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import quote

import psycopg
import pyone
import pytest
from daemon_fixture import RunningDaemon, daemon_environment, free_port, start_daemon, wait_for

import pg_server

postgres = pg_server.session_fixture()

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.slow]

VM = "CPU = 0.1\nMEMORY = 16\n"
PASSWORD = "s3cret/pw-lost-store"
#: Generous bounds for a loaded 2-core machine (the store is checked every 2 s).
NOTICE_TIMEOUT = 60.0


def _store(postgres: pg_server.PostgresServer, name: str) -> tuple[str, str]:
    """A database owned by a role with a password: (its URL with the password, admin URL)."""
    admin_url = postgres.create_database(name)
    database = admin_url.rsplit("/", 1)[1]
    role = f"owner_{database}"
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PASSWORD}'")
        connection.execute(f'ALTER DATABASE "{database}" OWNER TO {role}')
        connection.execute(f"ALTER SCHEMA public OWNER TO {role}")
    url = (f"postgresql://{role}:{quote(PASSWORD, safe='')}@{postgres.host}:{postgres.port}"
           f"/{database}")
    return url, admin_url


def _conf(url: str) -> str:
    return f'DB = [ BACKEND = "postgresql", URL = "{url}" ]\n'


def _tool(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``cloudburst ARGS`` with the home's oned.conf (which names the PostgreSQL store)."""
    return subprocess.run([sys.executable, "-m", "cloudburst.cli.tool", *args],
                          env=daemon_environment(home, free_port()), capture_output=True,
                          text=True, timeout=300, check=False)


def _drop_every_table(admin_url: str, owner: str) -> None:
    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute("SET lock_timeout = '60s'")
        # The drop locks table after table while the daemon's reads lock several at once:
        # PostgreSQL may break that deadlock by aborting the drop, which the "operator" retries.
        for attempt in range(5):
            try:
                connection.execute("DROP SCHEMA public CASCADE")
                break
            except psycopg.errors.DeadlockDetected:
                if attempt == 4:
                    raise
        connection.execute(f"CREATE SCHEMA public AUTHORIZATION {owner}")


def test_a_lost_postgresql_store_is_refused_and_restored_with_pg_restore(
        tmp_path: Path, postgres: pg_server.PostgresServer) -> None:
    url, admin_url = _store(postgres, "lost")
    backup = tmp_path / "one.pgdump"
    with start_daemon(tmp_path, oned_conf_extra=_conf(url)) as daemon:
        home = daemon.home
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        host_id = one.host.allocate("h0", "dummy", "dummy")
        vm_id = one.vm.allocate(VM)
        wait_for(lambda: one.vm.info(vm_id).LCM_STATE == 3, timeout=NOTICE_TIMEOUT)
        result = _tool(home, "backup", str(backup))
        assert result.returncode == 0, result.stderr
        assert backup.read_bytes()[:5] == b"PGDMP"  # pg_dump's custom format
        assert backup.stat().st_mode & 0o077 == 0
        assert PASSWORD not in result.stdout + result.stderr
        installation = json.loads((home / "store-identity").read_text())["installation_id"]
        # Made after the backup: gone once it is restored.
        later = one.vm.allocate(VM)

        _drop_every_table(admin_url, owner=url.split("//")[1].split(":")[0])

        def refused() -> bool:
            try:
                one.vm.allocate(VM)
            except pyone.OneException as exc:
                return "Store lost" in str(exc)
            return False

        wait_for(refused, timeout=NOTICE_TIMEOUT, interval=0.5)
        wait_for(lambda: "[ERROR] cloudburst.store.identity: Store lost" in daemon.output(),
                 timeout=NOTICE_TIMEOUT)
        session = daemon.session
        assert PASSWORD not in daemon.output()

    # A restart must not quietly make a new, empty store in the emptied database.
    started = subprocess.run([sys.executable, "-m", "cloudburst.daemon.main", "-f"],
                             env=daemon_environment(home, free_port()), capture_output=True,
                             text=True, timeout=120, check=False)
    assert started.returncode == 1, started.stderr
    verdict = started.stderr.strip().splitlines()[-1]
    assert "missing or empty" in verdict and "cloudburst restore" in verdict, verdict
    assert PASSWORD not in started.stderr

    result = _tool(home, "restore", str(backup))
    assert result.returncode == 0, result.stderr
    assert PASSWORD not in result.stdout + result.stderr
    with start_daemon(tmp_path, oned_conf_extra=_conf(url), keep_conf=True) as daemon:
        assert daemon.session == session
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        assert one.host.info(host_id).NAME == "h0"
        assert one.vm.info(vm_id).STATE == 3
        with pytest.raises(pyone.OneNoExistsException):
            one.vm.info(later)
        assert json.loads((home / "store-identity").read_text())["installation_id"] == \
            installation
        # The restored store takes writes again.
        assert one.vm.allocate(VM) > vm_id


def test_pg_restore_of_a_broken_backup_fails_in_one_line_without_the_password(
        tmp_path: Path, postgres: pg_server.PostgresServer) -> None:
    url, _ = _store(postgres, "broken")
    with start_daemon(tmp_path, oned_conf_extra=_conf(url)) as daemon:
        home = daemon.home
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        vm_id = one.vm.allocate(VM)
    junk = tmp_path / "junk.pgdump"
    junk.write_bytes(b"not a dump at all\n" * 10)
    result = _tool(home, "restore", str(junk))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "pg_restore failed" in lines[0], result.stderr
    assert "Command was" not in lines[0]  # the tool's error line, not the statement
    assert PASSWORD not in result.stdout + result.stderr
    # Nothing was touched: the store still has its VM.
    with start_daemon(tmp_path, keep_conf=True) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
        assert one.vm.info(vm_id).STATE == 1  # PENDING, as it was left (no host)


class EventStream(threading.Thread):
    """A daemon's ``/api/v1/events`` read over HTTP (Basic credentials) until closed:
    the VMs' last short states by name, and how many ``resync`` events came."""

    def __init__(self, daemon: RunningDaemon) -> None:
        super().__init__(daemon=True)
        self.connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=300)
        token = base64.b64encode(daemon.session.encode()).decode()
        self.connection.request("GET", "/api/v1/events",
                                headers={"Authorization": f"Basic {token}"})
        response = self.connection.getresponse()
        assert response.status == 200
        self.response = response
        self.states: dict[str, str] = {}
        self.resyncs = 0
        self.start()

    def run(self) -> None:
        event = ""
        with contextlib.suppress(OSError, ValueError, http.client.HTTPException):
            for line in self.response:
                if line.startswith(b"event: "):
                    event = line[7:].strip().decode()
                    self.resyncs += event == "resync"
                elif line.startswith(b"data: ") and event == "changes":
                    for vm in json.loads(line[6:])["vms"]:
                        self.states[vm["name"]] = vm["short_state"]

    def close(self) -> None:
        sock = self.connection.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes the reading thread
        self.join(timeout=10)
        self.connection.close()


def test_a_postgresql_server_that_stops_answering_is_named_and_recovered_from(
        tmp_path: Path) -> None:
    """The server goes down under two daemons (its own server, not the shared one):
    calls are refused naming the cause, never ``Internal error``; once it is back,
    the daemons take writes and run VMs again by themselves. Each daemon's event
    stream (``/api/v1/events``, over HTTP) shows the VMs made through the other
    one, before the outage and after it (their change feeds reconnect)."""
    with pg_server.postgres_server() as server:
        url, _ = _store(server, "down")
        with contextlib.ExitStack() as stack:
            daemon = stack.enter_context(start_daemon(tmp_path / "a", oned_conf_extra=_conf(url)))
            (tmp_path / "b" / "home").mkdir(parents=True)
            shutil.copy(daemon.auth_file, tmp_path / "b" / "home" / "one_auth")
            follower = stack.enter_context(start_daemon(tmp_path / "b",
                                                        oned_conf_extra=_conf(url)))
            streams = [EventStream(daemon), EventStream(follower)]
            for stream in streams:
                stack.callback(stream.close)
            one = pyone.OneServer(daemon.url, session=daemon.session, timeout=60)
            other = pyone.OneServer(follower.url, session=follower.session, timeout=60)
            host_id = one.host.allocate("h0", "dummy", "dummy")
            # Monitored first (state 2), so the VM made after the outage need not wait
            # for the host's next MONITORING_INTERVAL.
            wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=NOTICE_TIMEOUT)
            # The first daemon leads; what is made through it shows on the follower's page.
            one.vm.allocate('NAME = "before"\n' + VM)
            wait_for(lambda: streams[1].states.get("before") == "runn", timeout=NOTICE_TIMEOUT)
            resyncs = [stream.resyncs for stream in streams]
            server.stop()
            answers: list[str] = []
            try:
                def refused() -> bool:
                    try:
                        one.vm.allocate(VM)
                    except pyone.OneException as exc:
                        answers.append(str(exc))
                        return "Store unavailable" in str(exc)
                    return False

                wait_for(refused, timeout=NOTICE_TIMEOUT, interval=0.5)
                with pytest.raises(pyone.OneException) as read:
                    one.vmpool.info(-2, -1, -1, -1)
                answers.append(str(read.value))
            finally:
                server.start()
            assert not [answer for answer in answers if "Internal error" in answer], answers
            assert "Store unavailable" in answers[-1]
            assert not [answer for answer in answers if PASSWORD in answer]
            # Both feeds reconnect (each tells its pages to reload what they show) ...
            wait_for(lambda: all(stream.resyncs > count
                                 for stream, count in zip(streams, resyncs, strict=True)),
                     timeout=NOTICE_TIMEOUT)
            # ... and carry the changes made through the other daemon after the outage,
            # whichever of the two leads now.
            wait_for(lambda: one.vm.allocate('NAME = "after-a"\n' + VM), timeout=NOTICE_TIMEOUT,
                     interval=0.5)
            wait_for(lambda: other.vm.allocate('NAME = "after-b"\n' + VM),
                     timeout=NOTICE_TIMEOUT, interval=0.5)
            for stream in streams:
                wait_for(lambda stream=stream: stream.states.get("after-a") == "runn"
                         and stream.states.get("after-b") == "runn",
                         timeout=2 * NOTICE_TIMEOUT)
            for running in (daemon, follower):
                assert running.process.poll() is None
                assert PASSWORD not in running.output()
                assert "Traceback" not in running.output()  # one line per fault, never a traceback

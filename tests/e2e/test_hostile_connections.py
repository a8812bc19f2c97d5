"""Clients that hold sockets cannot take the API down (issue 15, finding 1).

The daemon runs with an open-file limit of 256; the test opens more idle and
half-sent connections than that, then a normal call must still answer within a
second, the store must keep working and the log must not flood.
"""

from __future__ import annotations

import contextlib
import resource
import select
import socket
import time
import xmlrpc.client
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILE_LIMIT = 256


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (FILE_LIMIT, FILE_LIMIT))


@contextlib.contextmanager
def _sockets(port: int, count: int, *, source: str = "127.0.0.1",
             first_bytes: bytes = b"") -> Iterator[list[socket.socket]]:
    """``count`` connections to the API from ``source``, each having sent ``first_bytes``."""
    opened: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind((source, 0))
            sock.settimeout(5)
            sock.connect(("127.0.0.1", port))
            if first_bytes:
                sock.sendall(first_bytes)
            opened.append(sock)
        yield opened
    finally:
        for sock in opened:
            sock.close()


def _closed_by_server(sock: socket.socket) -> bool:
    """Whether the server closed ``sock`` (it reads EOF or a reset)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        return sock.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


def _timed_call(daemon: RunningDaemon) -> float:
    one = pyone.OneServer(daemon.url, session=daemon.session, timeout=5)
    started = time.monotonic()
    assert one.system.version()
    return time.monotonic() - started


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    conf = ("MAX_CONNECTIONS_PER_CLIENT = 60\nREQUEST_HEADER_TIMEOUT = 3\n"
            "REQUEST_BODY_TIMEOUT = 2\nMONITORING_INTERVAL = 1\nVM_POLLING_INTERVAL = 1\n")
    with start_daemon(tmp_path_factory.mktemp("hostile"), oned_conf_extra=conf,
                      preexec_fn=_low_file_limit) as running:
        yield running


def test_sockets_past_the_file_limit_leave_the_api_answering(daemon: RunningDaemon) -> None:
    one = pyone.OneServer(daemon.url, session=daemon.session, timeout=10)
    host_id = one.host.allocate("h0", "dummy", "dummy")
    half_request = b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Le"
    sources = [f"127.0.0.{n}" for n in range(2, 10)]
    with contextlib.ExitStack() as stack:
        for index, source in enumerate(sources):
            # Half of the clients stay silent, the others stop in the middle of a header.
            stack.enter_context(_sockets(daemon.port, 50, source=source,
                                         first_bytes=half_request if index % 2 else b""))
        # 400 connections held by clients, against 256 files: a call still answers quickly.
        assert _timed_call(daemon) < 1.0
        vm_id = one.vm.allocate('CPU = 0.1\nMEMORY = 16\n')
        wait_for(lambda: one.vm.info(vm_id).LCM_STATE == 3, timeout=30)
        assert one.host.info(host_id).STATE in (1, 2)
    output = daemon.output()
    assert "unable to open database file" not in output
    assert "out of system resource" not in output
    assert len(output.splitlines()) < 300, output[-3000:]


def test_one_client_address_gets_its_share_only(daemon: RunningDaemon) -> None:
    with _sockets(daemon.port, 100, source="127.0.0.20") as held:
        # The newest connections push the client's oldest idle ones out.
        closed = wait_for(lambda: sum(map(_closed_by_server, held)) >= 40, timeout=5)
        assert closed
        assert not any(_closed_by_server(sock) for sock in held[-60:])
        assert _timed_call(daemon) < 1.0


def test_silent_and_half_sent_connections_time_out(daemon: RunningDaemon) -> None:
    with _sockets(daemon.port, 3) as silent, \
            _sockets(daemon.port, 3, first_bytes=b"POST /RPC2 HTTP/1.1\r\nHo") as half:
        # REQUEST_HEADER_TIMEOUT = 3
        wait_for(lambda: all(map(_closed_by_server, silent + half)), timeout=10)


def test_a_body_not_sent_in_time_gets_a_fault_and_the_connection_closes(
        daemon: RunningDaemon) -> None:
    head = (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 500\r\n\r\n<?xml version='1.0'?><methodCall>")
    with _sockets(daemon.port, 1, first_bytes=head) as (sock,):
        sock.settimeout(10)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    status, _, rest = reply.partition(b"\r\n")
    assert status.startswith(b"HTTP/1.1 200")
    body = rest.split(b"\r\n\r\n", 1)[1]
    with pytest.raises(xmlrpc.client.Fault, match="REQUEST_BODY_TIMEOUT"):
        xmlrpc.client.loads(body)


def test_a_flood_of_one_warning_is_logged_a_few_times(daemon: RunningDaemon,
                                                      tmp_path: Path) -> None:
    before = daemon.output().count("connection limit reached")
    with _sockets(daemon.port, 200, source="127.0.0.30"):
        time.sleep(0.5)
    assert daemon.output().count("connection limit reached") - before <= 6


def test_a_client_leaving_mid_request_costs_one_log_line(daemon: RunningDaemon) -> None:
    head = (b"POST /RPC2 HTTP/1.1\r\nHost: x\r\nContent-Type: text/xml\r\n"
            b"Content-Length: 500\r\n\r\n<?xml version='1.0'?><methodCall>")
    before = len(daemon.output().splitlines())
    with _sockets(daemon.port, 1, first_bytes=head):
        time.sleep(0.2)
    wait_for(lambda: "disconnected before its request was read" in daemon.output(), timeout=5)
    time.sleep(0.5)
    new_lines = daemon.output().splitlines()[before:]
    assert len(new_lines) == 1, new_lines
    assert _timed_call(daemon) < 1.0

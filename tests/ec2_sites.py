"""Real EC2 endpoints for tests and benchmarks: ``moto_server`` processes and a proxy.

A plain module (import it; there is no conftest)::

    from ec2_sites import FaultProxy, moto_servers

    with moto_servers(2) as (east, west), FaultProxy(east.url) as proxy:
        proxy.add_fault("RunInstances", "throttle", times=2)
        ... point a driver at proxy.url, count proxy.counts["RunInstances"] ...

* :func:`moto_servers` starts ``moto_server -H 127.0.0.1 -p PORT`` processes on
  free loopback ports, waits until each answers and always stops them. They run
  without moto's catalogue of about 1,300 public AMIs
  (``MOTO_EC2_LOAD_DEFAULT_AMIS=false``): moto searches it for every instance
  it launches, which halves its launch speed, and no test launches those AMIs.
* :class:`FaultProxy` is a small threaded HTTP proxy of ours in front of one
  server. It counts calls per ``Action`` and injects faults per action:
  ``throttle`` (HTTP 503 ``RequestLimitExceeded``), ``error500`` (HTTP 500
  ``InternalError``), ``capacity`` (``InsufficientInstanceCapacity``),
  ``error500_after`` (forward, so the call takes effect, then answer 500),
  ``slow`` (forward, then answer ``delay`` seconds late), ``drop`` (forward,
  then close the connection without an answer), ``drop_before`` (close without
  forwarding) and ``code`` (any status, code and message); ``skip`` lets the
  first matching calls through. :meth:`FaultProxy.set_delay` holds every call
  of an action before forwarding it (a slow server); :meth:`FaultProxy.hold`
  holds them until :meth:`FaultProxy.release` forwards or drops them (a call
  kept in flight while a test kills the daemon that sent it). It can also
  emulate EC2's ``ClientToken`` de-duplication for ``RunInstances``, which moto
  lacks, and spot interruptions (:meth:`FaultProxy.reclaim_spot`: moto never
  interrupts spot instances).
"""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3

#: Fake credentials, distinctive so tests can assert they never leak.
FAKE_ACCESS_KEY = "AKIACLOUDBURSTTEST42"
FAKE_SECRET_KEY = "cbSecret/TopSecretValue+DoNotLeak0123456789"

START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _moto_command() -> list[str]:
    found = shutil.which("moto_server")
    if found:
        return [found]
    return [sys.executable, "-m", "moto.server"]


@dataclass
class MotoServer:
    """A running ``moto_server`` process."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, region: str = "us-east-1") -> Any:
        """A boto3 EC2 client talking to this server directly (not through a proxy)."""
        return boto3.client("ec2", endpoint_url=self.url, region_name=region,
                            aws_access_key_id="test", aws_secret_access_key="test")

    def reset(self) -> None:
        """Forget every resource (``POST /moto-api/reset``)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            connection.request("POST", "/moto-api/reset")
            connection.getresponse().read()
        finally:
            connection.close()

    def answers(self) -> bool:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
            connection.request("GET", "/moto-api/data.json")
            connection.getresponse().read()
            connection.close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_moto(log_dir: Path | None = None) -> MotoServer:
    """Start one server (not yet waited for)."""
    port = free_port()
    directory = log_dir or Path(os.environ.get("TMPDIR", "/tmp"))
    log_path = directory / f"moto-{port}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen([*_moto_command(), "-H", "127.0.0.1", "-p", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=log,
                                   stderr=subprocess.STDOUT,
                                   env={**os.environ, "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"})
    return MotoServer(port, process, log_path)


def wait_until_answers(server: MotoServer, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not server.answers():
        if server.process.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"moto_server on port {server.port} did not start:\n"
                               + server.log_path.read_text(errors="replace"))
        time.sleep(0.1)


@contextlib.contextmanager
def moto_servers(count: int, log_dir: Path | None = None) -> Iterator[list[MotoServer]]:
    """Run ``count`` independent servers for the block; always stop them."""
    servers: list[MotoServer] = []
    try:
        for _ in range(count):
            servers.append(start_moto(log_dir))
        for server in servers:
            wait_until_answers(server)
        yield servers
    finally:
        for server in servers:
            server.stop()


def live_instances(client: Any, install_id: str | None = None) -> list[dict[str, Any]]:
    """Instances not terminated (nor shutting down), optionally of one installation."""
    filters = [{"Name": "instance-state-name", "Values": ["pending", "running", "stopping",
                                                          "stopped"]}]
    if install_id is not None:
        filters.append({"Name": "tag:cloudburst:installation", "Values": [install_id]})
    found: list[dict[str, Any]] = []
    for page in client.get_paginator("describe_instances").paginate(
            Filters=filters, PaginationConfig={"PageSize": 1000}):
        for reservation in page["Reservations"]:
            found.extend(reservation["Instances"])
    return found


def batch_vm_ids(tags: dict[str, str]) -> list[int]:
    """The VM ids of ``cloudburst:batch-vms`` (and its ``-2``, ``-3``... pieces)."""
    text, piece = "", 1
    while (value := tags.get("cloudburst:batch-vms" + (f"-{piece}" if piece > 1 else ""))) \
            is not None:
        text, piece = text + value, piece + 1
    ids: list[int] = []
    for run in filter(None, text.split(",")):
        low, _, high = run.partition("-")
        ids.extend(range(int(low), int(high or low) + 1))
    return ids


def vm_of(instance: dict[str, Any]) -> int | None:
    """The VM an instance belongs to: its ``cloudburst:vm-id`` tag, else the VM at its
    ``AmiLaunchIndex`` in its batch's ``cloudburst:batch-vms`` (``None``: neither)."""
    tags = {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}
    if "cloudburst:vm-id" in tags:
        return int(tags["cloudburst:vm-id"])
    members = batch_vm_ids(tags)
    index = instance.get("AmiLaunchIndex")
    return members[index] if isinstance(index, int) and index < len(members) else None


def instances_by_vm(client: Any, install_id: str | None = None) -> dict[int | None, list[str]]:
    """Live instance ids grouped by their VM (:func:`vm_of`; ``None``: no VM)."""
    grouped: dict[int | None, list[str]] = {}
    for instance in live_instances(client, install_id):
        grouped.setdefault(vm_of(instance), []).append(instance["InstanceId"])
    return grouped


# -- the fault-injecting proxy -------------------------------------------------------------

_ERROR_XML = ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{code}'
              '</Code><Message>{message}</Message></Error></Errors><RequestID>{request}'
              '</RequestID></Response>')

_KINDS = {
    "throttle": (503, "RequestLimitExceeded", "Request limit exceeded."),
    "error500": (500, "InternalError", "An internal error has occurred."),
    "capacity": (500, "InsufficientInstanceCapacity",
                 "We currently do not have sufficient capacity in the Availability Zone "
                 "you requested."),
    "limit": (400, "InstanceLimitExceeded",
              "You have requested more instances than your current instance limit allows."),
}


@dataclass
class Fault:
    """A fault for calls of ``action`` (``"*"``: any); ``times=None``: every call."""

    action: str
    kind: str
    times: int | None = 1
    delay: float = 0.0
    status: int = 400
    code: str = ""
    message: str = ""
    skip: int = 0
    hits: int = 0

    def take(self) -> bool:
        if self.skip > 0:
            self.skip -= 1
            return False
        if self.times is not None and self.hits >= self.times:
            return False
        self.hits += 1
        return True


@dataclass
class _Gate:
    """Calls held at the proxy until ``opened``; then forwarded, or dropped unanswered."""

    opened: threading.Event = field(default_factory=threading.Event)
    forward: bool = True


@dataclass
class _State:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    dedupe: bool = False
    tokens: dict[str, bytes] = field(default_factory=dict)
    delays: dict[str, float] = field(default_factory=dict)
    reclaimed: set[str] = field(default_factory=set)
    gates: dict[str, _Gate] = field(default_factory=dict)
    #: ``(action, started, answered)`` of each forwarded call, ``time.monotonic()``.
    timeline: list[tuple[str, float, float]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _ProxyServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: bytes, content_type: str = "text/xml") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _error(self, status: int, code: str, message: str) -> None:
        body = _ERROR_XML.format(code=code, message=message, request=uuid.uuid4())
        self._send(status, body.encode())

    def _forward(self, body: bytes) -> tuple[int, bytes, str]:
        host, port = self.server.state.upstream
        connection = http.client.HTTPConnection(host, port, timeout=120)
        try:
            headers = {key: value for key, value in self.headers.items()
                       if key.lower() not in ("connection", "keep-alive", "content-length")}
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            return (response.status, response.read(),
                    response.getheader("Content-Type") or "text/xml")
        finally:
            connection.close()

    def _drop(self) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def do_GET(self) -> None:
        status, body, kind = self._forward(b"")
        self._send(status, body, kind)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        fields = parse_qs(body.decode(errors="replace"))
        action = (fields.get("Action") or [""])[0]
        state = self.server.state
        with state.lock:
            state.counts[action] += 1
            fault = next((f for f in state.faults
                          if f.action in (action, "*") and f.take()), None)
            delay = state.delays.get(action, 0.0)
            token = (fields.get("ClientToken") or [""])[0] if action == "RunInstances" else ""
            cached = state.tokens.get(token) if state.dedupe and token else None
            gate = state.gates.get(action)
        if delay:
            time.sleep(delay)
        if gate is not None:
            gate.opened.wait(timeout=600)
            if not gate.forward:
                self._drop()
                return
        if cached is not None:
            self._send(200, cached)
            return
        if fault is not None:
            if fault.kind in _KINDS:
                status, code, message = _KINDS[fault.kind]
                self._error(status, fault.code or code, fault.message or message)
                return
            if fault.kind == "code":
                self._error(fault.status, fault.code, fault.message)
                return
            if fault.kind == "drop_before":
                self._drop()
                return
        started = time.monotonic()
        status, answer, content_type = self._forward(body)
        with state.lock:
            state.timeline.append((action, started, time.monotonic()))
        if status == 200 and token and state.dedupe:
            with state.lock:
                state.tokens.setdefault(token, answer)
        if action == "DescribeInstances" and state.reclaimed:
            with state.lock:
                answer = _as_reclaimed(answer, state.reclaimed)
        if fault is not None and fault.kind == "drop":
            self._drop()
            return
        if fault is not None and fault.kind == "error500_after":
            self._error(*_KINDS["error500"])
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        self._send(status, answer, content_type)


_STATE_REASON = re.compile(rb"<stateReason>.*?</stateReason>", re.S)
_SPOT_REASON = (b"<stateReason><code>Server.SpotInstanceTermination</code><message>"
                b"Server.SpotInstanceTermination: Spot instance termination</message>"
                b"</stateReason>")


def _as_reclaimed(answer: bytes, instance_ids: set[str]) -> bytes:
    """``answer`` (DescribeInstances XML) with the state reason of ``instance_ids``
    replaced by EC2's spot interruption reason.

    moto writes an instance's ``stateReason`` before its ``instanceId``: cut the
    answer after every ``</instanceId>``; the last state reason of a piece is
    that of the instance whose id ends the piece.
    """
    parts = re.split(rb"(?<=</instanceId>)", answer)
    for index, part in enumerate(parts):
        match = re.search(rb"<instanceId>([^<]+)</instanceId>$", part)
        if match and match.group(1).decode() in instance_ids:
            found = list(_STATE_REASON.finditer(part))
            if found:
                last = found[-1]
                parts[index] = part[:last.start()] + _SPOT_REASON + part[last.end():]
    return b"".join(parts)


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, state: _State) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.state = state


class FaultProxy:
    """A counting, fault-injecting HTTP proxy in front of one EC2 endpoint."""

    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        self._state = _State(upstream=(parts.hostname or "127.0.0.1", parts.port or 80))
        self._server = _ProxyServer(self._state)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fault-proxy", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def counts(self) -> Counter[str]:
        """Calls received per ``Action`` (a copy)."""
        with self._state.lock:
            return Counter(self._state.counts)

    def reset_counts(self) -> None:
        with self._state.lock:
            self._state.counts.clear()
            self._state.timeline.clear()

    @property
    def timeline(self) -> list[tuple[str, float, float]]:
        """``(action, started, answered)`` of each call forwarded upstream since the
        last :meth:`reset_counts`, ``time.monotonic()`` (a copy)."""
        with self._state.lock:
            return list(self._state.timeline)

    def add_fault(self, action: str, kind: str, *, times: int | None = 1, delay: float = 0.0,
                  status: int = 400, code: str = "", message: str = "", skip: int = 0) -> Fault:
        if kind not in (*_KINDS, "code", "slow", "drop", "drop_before", "error500_after"):
            raise ValueError(f"unknown fault kind {kind!r}")
        fault = Fault(action, kind, times, delay, status, code, message, skip)
        with self._state.lock:
            self._state.faults.append(fault)
        return fault

    def clear_faults(self) -> None:
        with self._state.lock:
            self._state.faults.clear()

    def set_delay(self, action: str, seconds: float) -> None:
        """Hold every ``action`` call ``seconds`` before handling it (0: no delay)."""
        with self._state.lock:
            self._state.delays[action] = seconds

    def hold(self, action: str) -> None:
        """Hold every ``action`` call at the proxy (counted, not forwarded) until
        :meth:`release`: a call in flight for as long as a test needs."""
        with self._state.lock:
            self._state.gates[action] = _Gate()

    def release(self, action: str, *, forward: bool = True) -> None:
        """Let the held ``action`` calls go on to the server (``forward``), or drop them
        unanswered without forwarding (``forward=False``: they never happened at
        EC2). Later calls pass freely."""
        with self._state.lock:
            gate = self._state.gates.pop(action, None)
        if gate is not None:
            gate.forward = forward
            gate.opened.set()

    def reclaim_spot(self, instance_ids: list[str]) -> None:
        """Answer ``DescribeInstances`` as if EC2 had reclaimed these spot instances:
        their state reason becomes ``Server.SpotInstanceTermination`` (terminate
        them upstream first, so that their state is ``terminated``)."""
        with self._state.lock:
            self._state.reclaimed.update(instance_ids)

    def dedupe_client_tokens(self, enabled: bool = True) -> None:
        """Answer a repeated ``RunInstances`` ``ClientToken`` with the first answer."""
        with self._state.lock:
            self._state.dedupe = enabled

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# -- driver configuration files --------------------------------------------------------------

def write_rc(path: Path, *, region: str = "us-east-1", extra: str = "",
             access_key: str = FAKE_ACCESS_KEY, secret_key: str = FAKE_SECRET_KEY) -> Path:
    """A ``vmm_ec2rc`` with fake keys (mode 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"AWS_ACCESS_KEY_ID={access_key}\nAWS_SECRET_ACCESS_KEY={secret_key}\n"
                    f"AWS_DEFAULT_REGION={region}\n{extra}", encoding="utf-8")
    path.chmod(0o600)
    return path


#: The retry pauses every test daemon's EC2 driver uses (a second at most, not minutes).
FAST_RETRIES = "EC2_RETRY_BASE_DELAY=0.1\nEC2_RETRY_MAX_DELAY=1\n"
#: ``vmm_ec2.conf`` defaulting every VM to m1.small.
SMALL_BY_DEFAULT = "<TEMPLATE><EC2><INSTANCETYPE>m1.small</INSTANCETYPE></EC2></TEMPLATE>\n"


def write_ec2_etc(root: Path, *, small_instances: int = 4, im_conf: str | None = None,
                  vmm_conf: str = SMALL_BY_DEFAULT, rc_extra: str = "",
                  rc_names: tuple[str, ...] = ("vmm_ec2",)) -> Path:
    """The EC2 drivers' files under ``root/home/etc`` (returned): ``im_ec2.conf``
    (``im_conf``, else ``small_instances`` m1.small slots), ``vmm_ec2.conf`` and one
    rc file with fake keys, :data:`FAST_RETRIES` and ``rc_extra`` per name in
    ``rc_names`` (``<name>rc``)."""
    etc = root / "home" / "etc"
    (etc / "im_ec2").mkdir(parents=True, exist_ok=True)
    (etc / "vmm_ec2").mkdir(parents=True, exist_ok=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text(
        im_conf if im_conf is not None else f"SMALL_INSTANCES={small_instances}\n",
        encoding="utf-8")
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(vmm_conf, encoding="utf-8")
    for name in rc_names:
        write_rc(etc / "vmm_ec2" / f"{name}rc", extra=FAST_RETRIES + rc_extra)
    return etc

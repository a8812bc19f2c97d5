"""The lease renewals of a leading daemon, made by a small process of their own.

A daemon on a PostgreSQL store starts one :class:`LeaseKeeper` child
(``python -m cloudburst.daemon.lease_keeper``). While the daemon leads, the
child renews its epoch's lease every ``RENEW`` seconds and writes, in memory
both processes share, when the last accepted renewal was *sent* and whether a
renewal was refused (another daemon took the lease). The daemon reads that
memory (:meth:`LeaseKeeper.failure`) and stops driving once the last renewal
is ``DURATION - RENEW`` seconds old: before the lease can expire in the
database, as before.

Why a process: renewals made by a thread of the daemon need its interpreter
lock, and a busy daemon can keep it from them for seconds. Measured at 20,000
VMs on a machine at load 10, full garbage collections held it 0.3-1 s each
(longer as the heap grows) and the renewing thread woke 3.2 s late, while a
separate process's identical UPDATE took under 0.2 s. The child has a small
heap, runs nothing else, and keeps the lease while the daemon lives and
reaches the database: it dies with the daemon (``PR_SET_PDEATHSIG``, and it
exits when its command pipe closes), and it stops renewing when no thread of
the daemon has run for ``LEADER_LEASE STALL`` seconds (a thread of the daemon
beats every half second): a stopped or wedged daemon loses the lease to a
follower, a collecting one does not.

Commands go down the child's stdin, one line each: the settings (JSON) first,
then ``lead <epoch> <sent>`` and ``follow``. Times are ``time.monotonic()``
values, one clock for every process of the machine.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import mmap
import os
import select
import signal
import struct
import subprocess
import sys
import threading
import time

from sqlalchemy import Connection, Engine, create_engine

from cloudburst import metrics
from cloudburst.config.settings import LeaseSettings
from cloudburst.store import lease
from cloudburst.store.database import postgres_url

log = logging.getLogger(__name__)

#: Seconds one lease statement may take before the attempt counts as failed.
STATEMENT_TIMEOUT = 2.0

#: Seconds the child may take to start before the daemon gives up on it.
START_TIMEOUT = 60.0

#: Seconds between the daemon's heartbeats.
BEAT = 0.5

#: The shared memory, field by field: the child is ready; the epoch it renews; when
#: that epoch's last accepted renewal was sent; an epoch whose renewal was refused;
#: renewals made; the last one's seconds (sent to answered) and lateness (due to sent);
#: the daemon's last heartbeat.
_FIELDS = {"ready": "q", "epoch": "q", "renewed": "d", "taken": "q", "count": "q",
           "took": "d", "late": "d", "beat": "d"}
_LAYOUT = struct.Struct("<" + "".join(_FIELDS.values()))
_INDEX = {name: index for index, name in enumerate(_FIELDS)}


def lease_engine(url: str) -> Engine:
    """A small engine for lease statements, quick to notice a dead connection."""
    return create_engine(
        postgres_url(url), pool_size=2, max_overflow=2, pool_pre_ping=True,
        pool_timeout=STATEMENT_TIMEOUT,
        connect_args={
            "connect_timeout": max(1, int(STATEMENT_TIMEOUT)),
            "tcp_user_timeout": int(STATEMENT_TIMEOUT * 1000),
            "keepalives": 1, "keepalives_idle": 1, "keepalives_interval": 1,
            "keepalives_count": 2,
            "options": f"-c statement_timeout={int(STATEMENT_TIMEOUT * 1000)}",
        })


class _Shared:
    """The shared memory as named fields (each 8 bytes, aligned: read or written whole)."""

    def __init__(self, memory: mmap.mmap) -> None:
        self.memory = memory

    def read(self) -> dict[str, float]:
        return dict(zip(_FIELDS, _LAYOUT.unpack_from(self.memory), strict=True))

    def write(self, **fields: float) -> None:
        # Field by field: each process writes its own fields while the other writes its.
        for name, value in fields.items():
            kind = _FIELDS[name]
            struct.pack_into("<" + kind, self.memory, 8 * _INDEX[name],
                             int(value) if kind == "q" else float(value))


class LeaseKeeper:
    """The daemon's side: starts the child, tells it when to renew, reads how it went."""

    def __init__(self, url: str, holder: str, settings: LeaseSettings) -> None:
        self.url = url
        self.holder = holder
        self.settings = settings
        #: Stop driving before the database can expire the lease: a renewal sent at
        #: t keeps it until at least t + duration on the server.
        self.margin = settings.duration - settings.renew
        self._process: subprocess.Popen[bytes] | None = None
        self._shared: _Shared | None = None
        self._epoch = 0
        self._asked_at = 0.0
        self._seen = 0
        self._beating = threading.Event()

    @property
    def pid(self) -> int | None:
        """The child's process id, None when it is not running."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        """Start the child (if it is not running) and wait until it is ready.

        Raises:
            RuntimeError: it did not start within :data:`START_TIMEOUT`.
        """
        if self._process is not None and self._process.poll() is None:
            return
        self.close()
        descriptor = os.memfd_create("cloudburst-lease", os.MFD_CLOEXEC)
        try:
            os.ftruncate(descriptor, _LAYOUT.size)
            memory = mmap.mmap(descriptor, _LAYOUT.size)
            process = subprocess.Popen(
                [sys.executable, "-m", "cloudburst.daemon.lease_keeper"],
                stdin=subprocess.PIPE, pass_fds=(descriptor,))
        finally:
            os.close(descriptor)
        self._process, self._shared = process, _Shared(memory)
        self._shared.write(beat=time.monotonic())
        self._beating = threading.Event()
        threading.Thread(target=self._beat, args=(self._shared, self._beating),
                         name="lease-beat", daemon=True).start()
        self._send(json.dumps({
            "url": self.url, "holder": self.holder, "duration": self.settings.duration,
            "renew": self.settings.renew, "stall": self.settings.stall,
            "parent": os.getpid(), "memory": descriptor}))
        deadline = time.monotonic() + START_TIMEOUT
        while not self._shared.read()["ready"]:
            if process.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError("the lease keeper process did not start")
            time.sleep(0.02)

    @staticmethod
    def _beat(shared: _Shared, stop: threading.Event) -> None:
        while not stop.wait(BEAT):
            shared.write(beat=time.monotonic())

    def lead(self, epoch: int, asked_at: float) -> None:
        """Renew ``epoch``'s lease, taken by a request sent at ``asked_at``."""
        self._epoch, self._asked_at = epoch, asked_at
        self._send(f"lead {epoch} {asked_at!r}")

    def follow(self) -> None:
        """Stop renewing."""
        self._epoch = 0
        self._send("follow")

    def failure(self) -> str | None:
        """Why this daemon must stop leading its epoch, or None while the lease holds."""
        shared = self._shared
        if shared is None or self._process is None or self._process.poll() is not None:
            return "the lease keeper process is gone"
        values = shared.read()
        if values["count"] != self._seen:  # (the last renewal's figures, not every one's)
            self._seen = int(values["count"])
            metrics.LEASE_RENEW_SECONDS.observe(values["took"])
            metrics.LEASE_RENEW_LATE_SECONDS.observe(values["late"])
        return self._lapse(values)

    def lapsed(self) -> str | None:
        """:meth:`failure`'s answer from the shared memory alone (a few microseconds):
        whether the lease may have lapsed, e.g. while the daemon was stopped."""
        shared = self._shared
        return "the lease keeper process is gone" if shared is None else \
            self._lapse(shared.read())

    def _lapse(self, values: dict[str, float]) -> str | None:
        if self._epoch and values["taken"] == self._epoch:
            return "the lease was taken by another daemon"
        # Until the child has read the command, the lease counts from the request.
        renewed = values["renewed"] if values["epoch"] == self._epoch else self._asked_at
        if time.monotonic() - renewed >= self.margin:
            return f"the lease could not be renewed for {self.margin:g} s"
        return None

    def close(self) -> None:
        """Stop the child (it exits when its pipe closes; killed if it lingers)."""
        process, self._process = self._process, None
        self._beating.set()
        if process is not None:
            with contextlib.suppress(OSError):
                assert process.stdin is not None
                process.stdin.close()
            try:
                process.wait(timeout=STATEMENT_TIMEOUT + 1)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if self._shared is not None:
            self._shared.memory.close()
            self._shared = None

    def _send(self, line: str) -> None:
        process = self._process
        if process is None or process.stdin is None:
            return
        try:
            process.stdin.write(line.encode() + b"\n")
            process.stdin.flush()
        except OSError as exc:  # the child is gone: failure() says so
            log.warning("lease keeper unreachable: %s", exc)


# -- the child --------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """Be killed when the daemon dies, however it dies (Linux); exit if it already did.

    A Ctrl-C or a service manager's SIGTERM to the whole group is the daemon's to
    handle: it keeps leading until it has stopped driving, so the child ignores them
    and ends when the daemon closes its pipe.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        sys.exit(0)


def _serve() -> None:
    source = sys.stdin.fileno()
    pending = b""
    while b"\n" not in pending:
        chunk = os.read(source, 65536)
        if not chunk:
            return
        pending += chunk
    first, _, pending = pending.partition(b"\n")
    config = json.loads(first)
    _die_with(int(config["parent"]))
    shared = _Shared(mmap.mmap(int(config["memory"]), _LAYOUT.size))
    engine = lease_engine(str(config["url"]))
    holder, duration, renew = str(config["holder"]), float(config["duration"]), \
        float(config["renew"])
    stall = float(config["stall"])
    epoch, due = 0, 0.0
    connection: Connection | None = None
    shared.write(ready=1)
    try:
        while True:
            wait = max(0.0, due - time.monotonic()) if epoch else None
            if select.select([source], [], [], wait)[0]:
                chunk = os.read(source, 65536)
                if not chunk:
                    return  # the daemon closed the pipe, or died
                pending += chunk
                while b"\n" in pending:
                    line, _, pending = pending.partition(b"\n")
                    words = line.decode().split()
                    if words and words[0] == "lead":
                        epoch, sent = int(words[1]), float(words[2])
                        due = sent + renew
                        # The time first: the daemon reads it once it sees the epoch.
                        shared.write(renewed=sent, epoch=epoch)
                    elif words == ["follow"]:
                        epoch = 0
                        shared.write(epoch=0)
                continue
            if not epoch:
                continue
            started = time.monotonic()
            if started - shared.read()["beat"] > stall:
                log.warning("no thread of the daemon ran for %g s: lease renewals stop", stall)
                epoch = 0
                shared.write(epoch=0)
                continue
            late, due = started - due, started + renew
            try:
                if connection is None:
                    # One autocommit UPDATE per renewal: no pool check-out, ping, BEGIN.
                    connection = engine.connect().execution_options(
                        isolation_level="AUTOCOMMIT")
                held = lease.renew(connection, holder, epoch, duration)
            except Exception as exc:
                log.warning("lease renew failed: %s", str(exc).splitlines()[0])
                if connection is not None:
                    with contextlib.suppress(Exception):
                        connection.invalidate()
                        connection.close()
                connection = None
                continue
            took = time.monotonic() - started
            if late + took > renew:
                log.warning("lease renewal slow: started %.2f s late, answered after %.2f s",
                            late, took)
            count = int(shared.read()["count"]) + 1
            if held:
                shared.write(renewed=started, count=count, took=took, late=max(0.0, late))
            else:
                shared.write(taken=epoch, count=count, took=took, late=max(0.0, late))
                epoch = 0
    finally:
        if connection is not None:
            with contextlib.suppress(Exception):
                connection.close()
        engine.dispose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s:%(name)s:%(message)s")
    _serve()

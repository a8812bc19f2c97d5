"""A real OpenNebula 6.10.5 peer for tests: started, used, always stopped.

The peer is the prebuilt OpenNebula in ``shared/opennebula-peer`` (oned, the
scheduler, the monitor with dummy probes and the Ruby CLI). It is found through
``CLOUDBURST_PEER_DIR``, else as ``shared/opennebula-peer`` in the repository's
parent directory or one of its ancestors (CI keeps ``shared`` beside the clone).
``scripts/test`` runs its ``install-peer-deps`` so a fresh machine has the
packages.

Usage (a plain module: import it, there is no conftest)::

    from one_peer import OnePeer, peer_fixture

    one_peer = peer_fixture()             # a module-scoped fixture named one_peer

    def test_something(one_peer: OnePeer) -> None:
        one = one_peer.client()           # pyone, as oneadmin
        host_id = one_peer.add_host("h1") # a dummy host, waited until MONITORED
        out = one_peer.cli("onehost", "list")  # the Ruby CLI, returns its stdout
        alice = one_peer.add_user("alice", "secret")  # an ordinary account
        one_peer.client(alice.session).vmpool.info(-1, -1, -1, -1)
        one_peer.cli("onevm", "list", session=alice.session)

Or without pytest, ``with start_peer(tmp_dir) as peer: ...``.

Contracts:
- Each peer gets its own fresh directory and four consecutive free ports
  (PORT..PORT+3); ``start-peer`` is retried on another base port if one was
  taken meanwhile.
- The peer is stopped when the block (or the fixture's scope) ends, even after
  a failure: ``stop-peer`` (clean, about 7 s) unless ``fast_stop`` (the
  default; SIGKILL, well under a second: nothing of a test peer is kept).
- Objects are not cleaned between tests sharing a module-scoped peer: each test
  removes what it created (``peer.cleanup_vms()`` terminates every VM).
- ``peer.env`` is the environment for the Ruby CLI (``PATH`` with ``DIR/bin``
  first, ``ONE_LOCATION``, ``ONE_XMLRPC``, ``ONE_AUTH``); ``peer.cli_env(session)``
  is the same for another account, or for another endpoint with ``xmlrpc=``
  (e.g. the Ruby CLI against cloudburst).
- ``with peer.scheduler_paused():`` holds the peer's scheduler (VMs stay PENDING).
- ``peer.kill()`` takes the peer down (SIGKILL); ``peer.restart()`` brings it
  back on the same port with its database (objects, ids, password) kept.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyone
import pytest

REPO = Path(__file__).resolve().parents[1]

#: Seconds allowed for start-peer and stop-peer.
START_TIMEOUT = 120.0
STOP_TIMEOUT = 60.0

#: Host states of a real oned (``one.host.info`` HOST/STATE).
HOST_MONITORED = 2
#: VM states and LCM states of a real oned.
VM_ACTIVE, VM_POWEROFF, VM_DONE = 3, 8, 6
LCM_RUNNING = 3


def peer_dir() -> Path:
    """Where ``start-peer`` lives: ``CLOUDBURST_PEER_DIR``, else ``shared/opennebula-peer``
    beside the repository or beside one of its ancestors.

    Raises:
        FileNotFoundError: none of those holds ``start-peer``.
    """
    configured = os.environ.get("CLOUDBURST_PEER_DIR")
    candidates = [Path(configured)] if configured else [
        parent / "shared" / "opennebula-peer" for parent in REPO.parents]
    for candidate in candidates:
        if (candidate / "start-peer").is_file():
            return candidate.resolve()
    raise FileNotFoundError(
        "the OpenNebula peer was not found: set CLOUDBURST_PEER_DIR to the directory "
        f"holding start-peer (looked in {', '.join(map(str, candidates))})")


def _port_free(port: int) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def free_port_block(size: int = 4) -> int:
    """A base port such that base..base+size-1 were all free a moment ago."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - size)
        if all(_port_free(base + offset) for offset in range(size)):
            return base
    raise RuntimeError(f"no block of {size} free ports found")


@dataclass(frozen=True)
class PeerUser:
    """An ordinary account on the peer."""

    id: int
    name: str
    password: str

    @property
    def session(self) -> str:
        return f"{self.name}:{self.password}"


@dataclass
class OnePeer:
    """A running OpenNebula peer (see the module docstring).

    Attributes:
        dir: its ONE_LOCATION (the unpacked tree, its state and logs).
        port: the XML-RPC port (PORT+1..PORT+3 are also the peer's).
        url: ``http://127.0.0.1:<port>/RPC2``.
        session: ``oneadmin:<password>``.
        env: the Ruby CLI environment as oneadmin.
    """

    dir: Path
    port: int
    url: str
    session: str
    env: dict[str, str] = field(repr=False)

    @property
    def auth_file(self) -> Path:
        return self.dir / "one_auth"

    def client(self, session: str | None = None) -> Any:
        """A pyone client, as oneadmin or as ``session`` (``user:password``)."""
        return pyone.OneServer(self.url, session=session or self.session, timeout=30)

    def cli_env(self, session: str | None = None, xmlrpc: str | None = None) -> dict[str, str]:
        """The Ruby CLI environment for ``session`` (default oneadmin) and endpoint
        ``xmlrpc`` (default this peer). A session other than oneadmin's is written to
        a private auth file in the peer's directory."""
        env = dict(self.env)
        if session is not None and session != self.session:
            auth = self.dir / f"auth_{abs(hash((session, xmlrpc)))}"
            auth.touch(mode=0o600)
            auth.write_text(session + "\n", encoding="utf-8")
            env["ONE_AUTH"] = str(auth)
        if xmlrpc is not None:
            env["ONE_XMLRPC"] = xmlrpc
        return env

    def cli(self, *argv: str, session: str | None = None, xmlrpc: str | None = None,
            check: bool = True, timeout: float = 60.0) -> str:
        """Run a Ruby CLI command (``onevm``, ``onehost``, ...) from the peer; its stdout.

        Raises:
            subprocess.CalledProcessError: it failed and ``check`` (stderr is attached).
        """
        result = subprocess.run(
            [str(self.dir / "bin" / argv[0]), *argv[1:]], env=self.cli_env(session, xmlrpc),
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, argv, result.stdout,
                                                result.stderr)
        return result.stdout

    def add_host(self, name: str, timeout: float = 30.0) -> int:
        """A dummy host (``-i dummy -v dummy``) in cluster 0, once it is MONITORED."""
        one = self.client()
        host_id = int(one.host.allocate(name, "dummy", "dummy", -1))
        wait_until(lambda: one.host.info(host_id).STATE == HOST_MONITORED, timeout,
                   f"host {name} monitored")
        return host_id

    def add_user(self, name: str, password: str, *, quota: str | None = None) -> PeerUser:
        """An ordinary account (group ``users``), with ``quota`` template if given
        (e.g. ``VM = [ CPU = 4, MEMORY = 4096, VMS = 10 ]``)."""
        one = self.client()
        user_id = int(one.user.allocate(name, password, "core", []))
        if quota is not None:
            one.user.quota(user_id, quota)
        return PeerUser(id=user_id, name=name, password=password)

    def vms(self, session: str | None = None) -> list[Any]:
        """Every VM the account can see that is not DONE (extended bodies)."""
        pool = self.client(session).vmpool.infoextended(-2, -1, -1, -1)
        return list(pool.VM)

    def cleanup_vms(self, timeout: float = 30.0) -> None:
        """Terminate (hard) every VM and wait until none is left."""
        one = self.client()
        for vm in self.vms():
            with contextlib.suppress(pyone.OneException):
                one.vm.action("terminate-hard", vm.ID)
        wait_until(lambda: not self.vms(), timeout, "every peer VM gone")

    @contextlib.contextmanager
    def scheduler_paused(self) -> Iterator[None]:
        """Hold the peer's scheduler (SIGSTOP of mm_sched) for the block: new VMs stay
        PENDING there, as with a slow or busy scheduler; it runs again afterwards."""
        pid = int((self.dir / "var" / "sched.pid").read_text(encoding="ascii"))
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def kill(self) -> None:
        """SIGKILL the peer (oned, scheduler, monitor, drivers): it is down."""
        _stop(self.dir, fast=True)

    def restart(self) -> None:
        """Start the peer again on the same directory and port, keeping its database
        (``PEER_KEEP=1``) and so its objects and password.

        Raises:
            RuntimeError: it did not start.
        """
        env = {**self.env, "PEER_KEEP": "1"}
        # A killed oned leaves its lock file behind, and a new oned refuses to start on it.
        (self.dir / "var" / "lock" / ".lock").unlink(missing_ok=True)
        result = subprocess.run([str(peer_dir() / "start-peer"), str(self.dir), str(self.port)],
                                env=env, capture_output=True, text=True, timeout=START_TIMEOUT,
                                stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            raise RuntimeError("the OpenNebula peer did not restart:\n" + result.stderr[-3000:])

    def log(self) -> str:
        """The tail of oned.log (for failure messages)."""
        path = self.dir / "var" / "oned.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""


def wait_until(predicate: Callable[[], object], timeout: float, what: str,
               interval: float = 0.2) -> None:
    """Poll ``predicate`` (exceptions count as "not yet") until truthy.

    Raises:
        TimeoutError: naming ``what``, with the last exception chained.
    """
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except Exception as exc:
            last = exc
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout:g} s") from last


def _stop(directory: Path, fast: bool) -> None:
    script = peer_dir() / "stop-peer"
    argv = [str(script), str(directory), *(["--kill"] if fast else [])]
    subprocess.run(argv, capture_output=True, timeout=STOP_TIMEOUT, check=False)


@contextlib.contextmanager
def start_peer(directory: Path | None = None, *, fast_stop: bool = True,
               env: dict[str, str] | None = None) -> Iterator[OnePeer]:
    """Run a peer for the duration of the block (see the module docstring).

    Args:
        directory: a new or empty directory; default a fresh temporary one
            (removed afterwards).
        fast_stop: stop with SIGKILL instead of a clean shutdown.
        env: extra environment for start-peer (``PEER_SCHED_INTERVAL``, ...).

    Raises:
        RuntimeError: the peer did not start (start-peer's output is in the message).
    """
    with contextlib.ExitStack() as stack:
        if directory is None:
            directory = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="onepeer-")))
        directory.mkdir(parents=True, exist_ok=True)
        script = peer_dir() / "start-peer"
        run_env = {**os.environ, **(env or {})}
        for key in ("ONE_XMLRPC", "ONE_AUTH", "ONE_LOCATION"):
            run_env.pop(key, None)
        stack.callback(_stop, directory, fast_stop)
        errors: list[str] = []
        for _ in range(3):
            port = free_port_block()
            result = subprocess.run([str(script), str(directory), str(port)], env=run_env,
                                    capture_output=True, text=True, timeout=START_TIMEOUT,
                                    stdin=subprocess.DEVNULL)
            if result.returncode == 0:
                break
            errors.append(result.stderr[-3000:])
        else:
            raise RuntimeError("the OpenNebula peer did not start:\n" + "\n".join(errors))
        session = (directory / "one_auth").read_text(encoding="utf-8").split()[0]
        url = f"http://127.0.0.1:{port}/RPC2"
        cli_env = dict(run_env)
        cli_env.update({
            "PATH": f"{directory / 'bin'}{os.pathsep}{run_env.get('PATH', '')}",
            "ONE_LOCATION": str(directory), "ONE_XMLRPC": url,
            "ONE_AUTH": str(directory / "one_auth")})
        yield OnePeer(dir=directory, port=port, url=url, session=session, env=cli_env)


def peer_fixture(scope: str = "module", **options: Any) -> Any:
    """A pytest fixture named ``one_peer`` of ``scope`` yielding a :class:`OnePeer`.

    Assign it in the test module: ``one_peer = peer_fixture()``. ``options`` go
    to :func:`start_peer` (``fast_stop``, ``env``).
    """

    @pytest.fixture(scope=scope, name="one_peer")  # type: ignore[call-overload,misc]
    def fixture(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnePeer]:
        with start_peer(tmp_path_factory.mktemp("onepeer"), **options) as peer:
            yield peer

    return fixture

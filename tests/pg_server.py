"""A throw-away PostgreSQL server for the test session.

``postgres_server()`` runs ``initdb`` into a fresh temporary directory, starts
the server on a free port of 127.0.0.1 (its unix socket also in that directory,
so it never collides with a system cluster), creates a database and yields a
:class:`PostgresServer`. On exit the server is stopped with
``pg_ctl stop -m immediate`` and the directory removed, whatever happened.

Running as root (CI does), ``initdb`` and ``pg_ctl`` refuse to work, so they
run as the ``postgres`` system user through ``runuser`` and the directory is
handed to that user.

No PostgreSQL binaries at all is a broken test machine, not a reason to skip:
``scripts/test`` installs them (``apt-get install postgresql``). The tests then
fail with a message that says so.

Use from a test module::

    postgres = pg_server.session_fixture()       # fixture named "postgres"

    def test_x(postgres):
        url = postgres.create_database()          # an empty database of its own
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

SERVER_USER = "postgres"
SUPERUSER = "postgres"
START_TIMEOUT = 60

MISSING_MESSAGE = (
    "PostgreSQL server binaries (initdb, pg_ctl) were not found on PATH or in "
    "/usr/lib/postgresql/*/bin. The store tests need a real PostgreSQL server: "
    "scripts/test installs it (apt-get install postgresql); on this machine run "
    "`apt-get install -y postgresql` and try again."
)


class PostgresUnavailable(RuntimeError):
    """The binaries are missing or the server would not start."""


def find_binaries() -> tuple[Path, Path]:
    """``initdb`` and ``pg_ctl`` of one installation (PATH first, newest version next)."""
    initdb = shutil.which("initdb")
    pg_ctl = shutil.which("pg_ctl")
    if initdb and pg_ctl:
        return Path(initdb).resolve(), Path(pg_ctl).resolve()

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.parent.name
        return tuple(int(part) for part in name.split(".") if part.isdigit())

    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidate = Path(bin_dir)
        if (candidate / "initdb").is_file() and (candidate / "pg_ctl").is_file():
            return candidate / "initdb", candidate / "pg_ctl"
    raise PostgresUnavailable(MISSING_MESSAGE)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class PostgresServer:
    """A running server; ``url`` names the database created at start."""

    host: str
    port: int
    database: str
    directory: Path
    _names: Iterator[int] = field(default_factory=lambda: itertools.count(1))
    #: ``pg_ctl start`` arguments that bring this server up again (see :meth:`start`).
    _start: list[str] = field(default_factory=list)
    _stop: list[str] = field(default_factory=list)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{database}"

    @property
    def url(self) -> str:
        return self.url_for(self.database)

    def stop(self) -> None:
        """Take the server down (``-m immediate``), keeping its data: clients see a
        store that no longer answers. :meth:`start` brings it back."""
        _run(self._stop, "pg_ctl stop")

    def start(self) -> None:
        """Start the server again on the same port and data (after :meth:`stop`)."""
        _run(self._start, "pg_ctl start", self.directory / "server.log")

    def create_database(self, prefix: str = "t") -> str:
        """Create a new, empty database and return its SQLAlchemy URL."""
        name = f"{prefix}_{next(self._names)}"
        _create_database(self.url_for("postgres"), name)
        return self.url_for(name)


def _create_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')


def _as_server_user(argv: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return argv
    runuser = shutil.which("runuser")
    if runuser is None:
        raise PostgresUnavailable("running as root but `runuser` is missing; cannot start "
                                  "PostgreSQL as the postgres user")
    return [runuser, "-u", SERVER_USER, "--", *argv]


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    result = subprocess.run(_as_server_user(argv), capture_output=True, text=True,
                            timeout=START_TIMEOUT, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()
        if log is not None and log.exists():
            detail += "\n--- server log ---\n" + log.read_text(errors="replace")[-4000:]
        raise PostgresUnavailable(f"{what} failed (exit {result.returncode}): {detail}")


@contextlib.contextmanager
def postgres_server() -> Iterator[PostgresServer]:
    """Start a private server, yield it, and always stop and remove it."""
    initdb, pg_ctl = find_binaries()
    directory = Path(tempfile.mkdtemp(prefix="cloudburst-pg-"))
    data = directory / "data"
    sockets = directory / "socket"
    log = directory / "server.log"
    started = False
    try:
        sockets.mkdir()
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(SERVER_USER)
            except KeyError:
                raise PostgresUnavailable(
                    f"running as root but there is no {SERVER_USER!r} system user to run "
                    f"PostgreSQL as; {MISSING_MESSAGE}") from None
            for path in (directory, sockets):
                os.chown(path, account.pw_uid, account.pw_gid)
        _run([str(initdb), "-D", str(data), "-U", SUPERUSER, "--auth=trust",
              "--encoding=UTF8", "-N"], "initdb")
        port = free_port()
        options = " ".join([
            f"-p {port}",
            "-c listen_addresses=127.0.0.1",
            f"-c unix_socket_directories={sockets}",
            "-c fsync=off",
            "-c synchronous_commit=off",
            "-c full_page_writes=off",
            "-c max_connections=100",
        ])
        started = True
        start = [str(pg_ctl), "-D", str(data), "-l", str(log), "-w", "-t", str(START_TIMEOUT),
                 "-o", options, "start"]
        _run(start, "pg_ctl start", log)
        server = PostgresServer("127.0.0.1", port, "cloudburst", directory, _start=start,
                                _stop=[str(pg_ctl), "-D", str(data), "-m", "immediate", "-w",
                                       "stop"])
        _create_database(server.url_for("postgres"), server.database)
        yield server
    finally:
        if started:  # (already stopped by a test: pg_ctl says so and exits 1)
            with contextlib.suppress(Exception):
                subprocess.run(_as_server_user([str(pg_ctl), "-D", str(data), "-m", "immediate",
                                                "-w", "stop"]),
                               capture_output=True, timeout=START_TIMEOUT, check=False)
        shutil.rmtree(directory, ignore_errors=True)


def session_fixture(name: str = "postgres") -> Callable[..., Any]:
    """A session-scoped fixture called ``name`` that yields a :class:`PostgresServer`.

    Assign it at module level of a test module (``postgres = session_fixture()``).
    A missing installation or a server that will not start fails the tests that
    use the fixture, with the reason.
    """

    @pytest.fixture(scope="session", name=name)
    def _server() -> Iterator[PostgresServer]:
        context = postgres_server()
        try:
            server = context.__enter__()
        except PostgresUnavailable as exc:
            pytest.fail(str(exc), pytrace=False)
        try:
            yield server
        finally:
            context.__exit__(None, None, None)

    return _server

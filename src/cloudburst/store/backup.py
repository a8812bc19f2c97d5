"""Online, consistent backups of the store, and restoring one (``cloudburst backup/restore``).

* SQLite: SQLite's online backup API copies a consistent snapshot while the
  daemon keeps running and writing; restoring copies the backup into place
  the same way (the daemon must be stopped: its lock on the store is checked).
* PostgreSQL: ``pg_dump --format=custom`` and ``pg_restore --clean``. The
  password goes to the tools in ``PGPASSWORD``, never on their command line.

A restore also rewrites ``CLOUDBURST_HOME/store-identity`` (see
:mod:`cloudburst.store.identity`) so the daemon accepts the restored store.
docs/recovery.md tells the whole recovery path.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
from pathlib import Path

from sqlalchemy import make_url, text

from cloudburst.errors import CloudburstError, StoreInUseError
from cloudburst.store.database import make_engine
from cloudburst.store.identity import MARKER_NAME, Marker, sqlite_path
from cloudburst.store.lease import sole_store_lock

__all__ = ["BackupError", "backup", "restore"]


class BackupError(CloudburstError):
    """A backup or restore could not be done; the message says why."""


def backup(url: str, target: Path) -> Marker:
    """Write a consistent copy of the store ``url`` to ``target`` (mode 0600); return its ids.

    Raises:
        BackupError: the store cannot be read or ``target`` written.
    """
    path = sqlite_path(url)
    temporary = target.with_name(target.name + ".partial")
    temporary.unlink(missing_ok=True)
    try:
        os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        if path is None:
            _pg_tool(url, ["pg_dump", "--format=custom", "--no-owner", "--file",
                           str(temporary)])
            ids = _pg_ids(url)
        else:
            if not path.exists():
                raise BackupError(f"there is no store at {path}")
            with _connect(path) as source, _connect(temporary) as copy:
                source.backup(copy)
            ids = _sqlite_ids(temporary)
        os.replace(temporary, target)
    except OSError as exc:
        raise BackupError(f"cannot write {target}: {exc.strerror or exc}") from None
    finally:
        temporary.unlink(missing_ok=True)
    return ids


def restore(url: str, source: Path, home: Path) -> Marker:
    """Replace the store ``url`` by the backup ``source``; the daemon must be stopped.

    Raises:
        BackupError: ``source`` is not a cloudburst backup, the daemon runs, or the
            copy fails.
    """
    if not source.is_file():
        raise BackupError(f"there is no backup at {source}")
    path = sqlite_path(url)
    if path is None:
        _pg_tool(url, ["pg_restore", "--clean", "--if-exists", "--no-owner",
                       "--single-transaction", str(source)], target_flag="--dbname")
        ids = _pg_ids(url)
    else:
        ids = _sqlite_ids(source)
        try:
            lock = sole_store_lock(url)
        except StoreInUseError:
            raise BackupError(f"oned is running on {path}: stop it before restoring") from None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with _connect(source) as backup_copy, _connect(path) as store:
                backup_copy.backup(store)
            os.chmod(path, 0o600)
        except (OSError, sqlite3.Error) as exc:
            raise BackupError(f"cannot restore into {path}: {exc}") from None
        finally:
            if lock is not None:
                lock.release()
    ids.write(home / MARKER_NAME)
    return ids


def _connect(path: Path) -> sqlite3.Connection:
    # A plain path, never a URI: '%' and '?' in a home directory are just characters.
    connection = sqlite3.connect(str(path), timeout=30)
    connection.execute("PRAGMA busy_timeout=30000")
    return connection


def _sqlite_ids(path: Path) -> Marker:
    try:
        with _connect(path) as connection:
            rows = dict(connection.execute(
                "SELECT key, value FROM meta WHERE key IN ('store_id', 'installation_id')"))
    except sqlite3.Error as exc:
        raise BackupError(f"{path} is not a cloudburst store backup ({exc})") from None
    return _ids(rows, path)


def _ids(rows: dict[str, str], where: object) -> Marker:
    if "installation_id" not in rows:
        raise BackupError(f"{where} is not a cloudburst store backup (no installation id)")
    return Marker(rows.get("store_id") or "", rows["installation_id"])


def _pg_ids(url: str) -> Marker:
    engine = make_engine(url, writer=False)
    try:
        with engine.connect() as connection:
            rows = {str(key): str(value) for key, value in connection.execute(text(
                "SELECT key, value FROM meta WHERE key IN ('store_id', 'installation_id')"))}
    finally:
        engine.dispose()
    return _ids(rows, "the PostgreSQL store")


def _pg_tool(url: str, argv: list[str], *, target_flag: str = "--dbname") -> None:
    """Run a PostgreSQL client tool against ``url``, the password in the environment."""
    parsed = make_url(url)
    environment = dict(os.environ)
    if parsed.password:
        environment["PGPASSWORD"] = str(parsed.password)
    connection = parsed.set(drivername="postgresql", password=None)
    dsn = connection.render_as_string(hide_password=False)
    command = [*argv[:1], target_flag, dsn, *argv[1:]]
    try:
        result = subprocess.run(command, env=environment, capture_output=True, text=True,
                                check=False, timeout=3600)
    except FileNotFoundError:
        raise BackupError(f"{argv[0]} is not installed (Debian: postgresql-client)") from None
    if result.returncode != 0:
        raise BackupError(f"{argv[0]} failed: {_tool_error(result.stderr)}")


def _tool_error(stderr: str) -> str:
    """The line of a PostgreSQL tool's output that says what went wrong: its first
    ``error:`` line (the tools follow it with the statement, "Command was: ..."),
    else the last line."""
    lines = [line.strip() for line in stderr.strip().splitlines() if line.strip()]
    for line in lines:
        _, marker, detail = line.partition("error: ")
        if marker:
            return detail
    return lines[-1] if lines else "failed"

"""Which store belongs to this home, and what survives when the store is lost.

``CLOUDBURST_HOME/store-identity`` (mode 0600, JSON) is written beside the
store when the daemon first opens it and kept up to date::

    {"store_id": "st-…", "installation_id": "cb-…"}

* ``store_id`` is written into the store's ``meta`` table when the store is
  created. At start, a home whose marker names a store that is now missing
  (empty) or another one (a different ``store_id``) refuses to start with one
  line saying so: the daemon never silently re-creates a store that existed
  (which would forget every VM and write a new ``oneadmin`` password).
* ``installation_id`` tags the cloud resources the daemon launches. Because it
  lives beside the store too, a new store started on purpose (``oned
  --new-store``) or a restored backup keeps it, so orphans the old store
  launched are still found and swept.

While the daemon runs, :class:`StoreWatch` notices a SQLite file deleted or
replaced under it (a ``stat`` before each write batch, and periodically) and a
PostgreSQL store whose ``store_id`` changed or vanished (periodically); from
then on every write is refused with :class:`~cloudburst.errors.StoreLostError`.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, make_url
from sqlalchemy.exc import DBAPIError, OperationalError, ProgrammingError

from cloudburst.errors import StoreLostError
from cloudburst.store.sequences import get_meta, installation_id, set_meta

log = logging.getLogger(__name__)

__all__ = ["Marker", "StoreWatch", "open_store_identity", "sqlite_path"]

MARKER_NAME = "store-identity"


@dataclass(frozen=True, slots=True)
class Marker:
    """What ``store-identity`` records."""

    store_id: str
    installation_id: str

    @classmethod
    def read(cls, path: Path) -> Marker | None:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(str(data["store_id"]), str(data["installation_id"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StoreLostError(f"{path} is unreadable ({exc}); it names the store this home "
                                 "uses: restore it or remove it") from None

    def write(self, path: Path) -> None:
        temporary = path.with_name(path.name + ".new")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            json.dump({"store_id": self.store_id, "installation_id": self.installation_id},
                      handle)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)


def _missing_table(exc: DBAPIError) -> bool:
    """Whether ``exc`` says a table does not exist (PostgreSQL, SQLite)."""
    if isinstance(exc, ProgrammingError):
        return getattr(exc.orig, "sqlstate", None) == "42P01"  # undefined_table
    return isinstance(exc, OperationalError) and "no such table" in str(exc.orig)


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other stores and in-memory SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database \
            or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def store_exists(engine: Engine) -> bool:
    """Whether the store behind ``engine`` holds a cloudburst schema (before migrations)."""
    path = sqlite_path(str(engine.url))
    if path is not None and (not path.exists() or path.stat().st_size == 0):
        return False
    return inspect(engine).has_table("meta")


def open_store_identity(engine: Engine, marker_path: Path, migrate: Callable[[], None], *,
                        new_store: bool) -> Marker:
    """Check the store against the home's marker, migrate it, give it its ids, update the marker.

    The check comes first, so a lost store is refused before anything is created.

    Args:
        engine: the store.
        marker_path: ``CLOUDBURST_HOME/store-identity``.
        migrate: creates or upgrades the schema.
        new_store: the operator asked to start a new, empty store (``oned --new-store``):
            it takes the marker's installation id.

    Raises:
        StoreLostError: the marker names a store that is missing or not this one.
    """
    marker = Marker.read(marker_path)
    existed = store_exists(engine)
    found = _stored_id(engine) if existed else None
    where = engine.url.render_as_string(hide_password=True)
    if marker is not None and not new_store:
        if not existed:
            raise StoreLostError(
                f"The store {where} is missing or empty, but this home used store "
                f"{marker.store_id} (see {marker_path}): restore it (cloudburst restore BACKUP) "
                "or start a new store on purpose (oned --new-store); see docs/recovery.md")
        if found != marker.store_id:
            raise StoreLostError(
                f"The store {where} is store {found or '(without id)'}, not store "
                f"{marker.store_id} that this home used (see {marker_path}): restore the right "
                "one, or start with oned --new-store to adopt it; see docs/recovery.md")
    migrate()
    with engine.begin() as connection:
        store_id = _ensure_ids(connection, found, marker, fresh=not existed)
        identity = Marker(store_id, installation_id(connection))
    if marker is not None and identity.installation_id != marker.installation_id:
        log.warning("the store's installation id %s differs from %s recorded in %s: cloud "
                    "resources tagged with the old one are no longer swept by this store",
                    identity.installation_id, marker.installation_id, marker_path)
    if identity != marker:
        identity.write(marker_path)
    return identity


def _stored_id(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return get_meta(connection, "store_id")


def _ensure_ids(connection: Connection, found: str | None, marker: Marker | None, *,
                fresh: bool) -> str:
    """The store's id (created now if it has none); a new store inherits the installation id."""
    if fresh and marker is not None:
        set_meta(connection, "installation_id", marker.installation_id)
    if found is not None:
        return found
    store_id = "st-" + secrets.token_hex(8)
    set_meta(connection, "store_id", store_id)
    return store_id


class StoreWatch:
    """Notices the store being deleted or replaced under the running daemon."""

    def __init__(self, engine: Engine, store_id: str) -> None:
        self._engine = engine
        self._store_id = store_id
        self._path = sqlite_path(str(engine.url))
        self._inode = self._identity() if self._path is not None else None
        self.lost: str | None = None

    def _identity(self) -> tuple[int, int] | None:
        assert self._path is not None
        try:
            status = self._path.stat()
        except FileNotFoundError:
            return None
        return status.st_dev, status.st_ino

    def check(self) -> None:
        """Cheap check before each write batch (a ``stat`` for SQLite).

        Raises:
            StoreLostError: the store is gone or replaced (now or before).
        """
        if self.lost is None and self._path is not None and self._identity() != self._inode:
            self._lose(f"the store file {self._path} was deleted or replaced while the "
                       "daemon ran")
        if self.lost is not None:
            raise StoreLostError(self.lost)

    def check_thoroughly(self, connection: Connection) -> None:
        """The periodic check: :meth:`check` plus the store's own id (any backend)."""
        try:
            self.check()
        except StoreLostError:
            return
        try:
            found = get_meta(connection, "store_id")
        except DBAPIError as exc:
            if not _missing_table(exc):
                raise  # the store did not answer: not a sign it was lost
            found = f"unreadable ({type(exc).__name__})"
        if found != self._store_id:
            self._lose(f"the store now has id {found}, not {self._store_id}: it was "
                       "replaced or emptied while the daemon ran")

    def explain(self, connection: Connection) -> None:
        """After a statement failed for no known store-level reason: raise
        :class:`~cloudburst.errors.StoreLostError` if the reason is that the store
        was lost (its tables dropped, another store put in its place)."""
        self.check_thoroughly(connection)
        self.check()

    def _lose(self, cause: str) -> None:
        self.lost = (f"Store lost: {cause}; writes are refused. Stop oned, restore the store "
                     "(cloudburst restore BACKUP), then start it again (docs/recovery.md)")
        log.error("%s", self.lost)

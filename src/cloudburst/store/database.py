"""Engines and the asynchronous gateway to the store.

The daemon is one asyncio loop; the database is blocking. :class:`Database`
bridges them:

* :meth:`Database.read` runs a function on a pooled connection in a thread.
* :meth:`Database.write` queues a function for the single writer thread. The
  writer drains everything queued into **one** transaction (group commit), with
  a savepoint around each function so that one failing write does not undo the
  others. This is what lets thousands of small state changes per second land
  without one fsync each.
* ``write(..., urgent=True)`` takes a lane of its own: urgent writes are
  committed before the queued ones, and a running group commit stops taking
  more of its jobs (it commits those it ran) as soon as one is waiting. A write
  that something outside waits on (an EC2 batch's journal note, written before
  its ``RunInstances``) then does not queue behind a scheduler pass's deploys.

SQLite runs in WAL mode with ``synchronous=NORMAL`` (durable across process
crashes; the last transactions may be lost only on power loss) and
``BEGIN IMMEDIATE`` for writes. On PostgreSQL, inserts of many rows are sent as
``COPY`` (:mod:`cloudburst.store.copy_inserts`).

A daemon that leads a shared PostgreSQL store sets :attr:`Database.fence`: it
runs first in every write transaction and refuses the whole batch once the
lease has changed hands (:func:`cloudburst.store.lease.fence`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import logging
import queue
import threading
import time
import typing
from collections.abc import Callable, Coroutine, Hashable, Iterator, Sized
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.pool import NullPool

from cloudburst import metrics
from cloudburst.errors import LeaseLostError, StoreLostError, StoreUnavailableError
from cloudburst.store import copy_inserts, migrate

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Most writes committed in one transaction.
MAX_BATCH = 1000
#: API read lanes on a networked store (threads, each with a loop and a connection).
API_LANES: Final = 2
#: Results kept per reader connection by :meth:`Database.read_unchanged`, and the most
#: items (rows) a kept result may have.
_UNCHANGED_KEPT: Final = 8
_UNCHANGED_MOST: Final = 20_000
#: Seconds a write batch waits for a lock while the previous batch already found it taken.
_BUSY_RETRY_WAIT: Final = 0.1


def postgres_url(url: str) -> str:
    """``url`` with the psycopg (3) driver named, as SQLAlchemy needs it."""
    url = url.replace("postgres://", "postgresql://", 1)
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    return url


def make_engine(url: str, *, writer: bool, busy_timeout: float = 30.0,
                idle_limit: float | None = None) -> Engine:
    """Create an engine for ``url``; ``writer`` selects SQLite's write locking.

    ``busy_timeout``: seconds SQLite waits for a lock another process holds.
    ``idle_limit``: seconds a PostgreSQL session may sit idle inside a transaction
    before the server ends it and releases its locks (``None``: no limit).
    """
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            poolclass=NullPool if url.endswith(":memory:") else None,
            connect_args={"check_same_thread": False, "timeout": busy_timeout},
        )
        begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not pysqlite, control transactions (savepoints work).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
            cursor.close()

        @event.listens_for(engine, "begin")
        def _on_begin(connection: Connection) -> None:
            if connection.get_execution_options().get("isolation_level") != "AUTOCOMMIT":
                connection.exec_driver_sql(begin)

        return engine
    if url.startswith("postgres"):
        options = ({} if idle_limit is None else {"options": (
            f"-c idle_in_transaction_session_timeout={max(1, int(idle_limit * 1000))}")})
        engine = create_engine(postgres_url(url), pool_size=8, max_overflow=8,
                               pool_pre_ping=True, connect_args=options)
        if writer:
            copy_inserts.install(engine)
        return engine
    return create_engine(url)


@dataclass(slots=True)
class _Job:
    function: Callable[[Connection], Any]
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


_STOP = object()
#: Wakes the writer for an urgent job (the urgent lane is a queue of its own).
_WAKE = object()


class Database:
    """Asynchronous access to the store: pooled reads, group-committed writes."""

    def __init__(self, url: str, *, readers: int = 4, store_timeout: float = 30.0,
                 idle_limit: float | None = None) -> None:
        """``idle_limit`` (PostgreSQL): seconds a write transaction may sit idle, its
        process stopped, before the server ends it. A leader frozen inside one would
        otherwise keep its fence's lock on the lease row, and so the lease, for ever."""
        self.url = url
        #: Seconds a write (or read) waits for a lock another process holds on the store.
        self.store_timeout = store_timeout
        #: The last write batch found the store locked (writer thread only).
        self._store_busy = False
        self.write_engine = make_engine(url, writer=True, busy_timeout=store_timeout,
                                        idle_limit=idle_limit)
        self.read_engine = make_engine(url, writer=False, busy_timeout=store_timeout)
        self._readers = ThreadPoolExecutor(max_workers=readers, thread_name_prefix="db-read")
        self._sqlite = self.write_engine.dialect.name == "sqlite"
        #: :meth:`lookup`'s connections, one per thread that looks up (SQLite only).
        self._kept = threading.local()
        self._kept_all: list[Connection] = []
        self._kept_lock = threading.Lock()
        #: API read lanes (networked stores; see in_read_lane), taken in turn.
        self._lanes = [_ReadLane(self, f"db-api-{index}") for index in range(API_LANES)]
        self._lane_turn = itertools.count()
        self._queue: queue.SimpleQueue[_Job | object] = queue.SimpleQueue()
        #: The urgent lane (see write); the writer looks at it before each job.
        self._urgent: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        #: Jobs taken from the queue that a group commit gave back for an urgent one.
        self._carry: collections.deque[_Job] = collections.deque()
        self._writer = threading.Thread(target=self._write_loop, name="db-write", daemon=True)
        self._started = False
        self._closed = False
        # Orders "is the writer accepting work?" with the stop marker, so that no
        # write can be queued behind it (it would never run and never resolve).
        self._accepting = threading.Lock()
        #: Runs first in each write transaction; raising refuses the batch.
        self.fence: Callable[[Connection], None] | None = None
        #: Runs before each write batch (no connection yet); raising
        #: :class:`StoreUnavailableError` refuses the batch, e.g. once the store is lost.
        self.store_check: Callable[[], None] | None = None
        #: Runs on a fresh connection when a read or write failed for no known
        #: store-level reason; raises :class:`StoreLostError` when the reason is
        #: that the store was lost (its tables dropped under the daemon).
        self.store_explain: Callable[[Connection], None] | None = None

    @property
    def is_sqlite(self) -> bool:
        return self._sqlite

    def create_schema(self) -> None:
        """Create the store or upgrade it in place to the newest schema revision.

        Idempotent; call before :meth:`start`. See :mod:`cloudburst.store.migrate`.
        """
        migrate.upgrade(self.write_engine)

    def start(self) -> None:
        if not self._started:
            self._started = True
            self._writer.start()

    async def read(self, function: Callable[[Connection], T]) -> T:
        """Run ``function(connection)`` in a read transaction on a thread.

        In an API read lane (:meth:`in_read_lane`) it runs there at once, as a
        :meth:`lookup` does (the lane's thread serves only such calls): a pool listing
        hops to the lane and back, not on to a reader thread too.
        """
        if getattr(self._kept, "lane", False):
            return await self.lookup(function)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, self.read_sync, function)

    async def read_unchanged(self, key: Hashable, function: Callable[[Connection], T]) -> T:
        """:meth:`read` of ``function``, a read whose result depends only on the store's
        data and on ``key``; the result may be one returned before (treat it as read-only).

        When nothing was committed to the store since the connection last ran the read
        of ``key``, that result is returned again: a pool listing polled in a loop
        re-reads thousands of rows that cannot have changed. Any commit, of any table,
        makes it read again: on SQLite ``PRAGMA data_version`` moves; on PostgreSQL the
        server's current snapshot (``pg_current_snapshot()``: the transactions running
        and the next id) does, whichever database or daemon committed. A result of more
        than 20,000 items is not kept.
        """
        version_sql = ("PRAGMA data_version" if self._sqlite
                       else "SELECT pg_current_snapshot()::text")

        def run(connection: Connection) -> T:
            raw: Any = connection.connection.driver_connection
            version = raw.execute(version_sql).fetchone()[0]
            memo: dict[Hashable, tuple[Any, Any]] = connection.info.setdefault(
                "unchanged", {})
            kept = memo.get(key)
            if kept is not None and kept[0] == version:
                return typing.cast(T, kept[1])
            # Read after the version: a commit landing in between is read too, and
            # changes the version seen next time (the result is then read again).
            result = function(connection)
            memo.pop(key, None)
            if isinstance(result, Sized) and len(result) > _UNCHANGED_MOST:
                return result  # not kept: memory stays bounded at any pool size
            memo[key] = (version, result)
            while len(memo) > _UNCHANGED_KEPT:
                del memo[next(iter(memo))]
            return result

        return await self.read(run)

    async def lookup(self, function: Callable[[Connection], T]) -> T:
        """:meth:`read` for a few rows found by key (a user, a VM, its owner).

        It runs at once on the calling thread, on a connection kept per thread, when
        that costs less than a hop to a reader thread and back: always on SQLite (such
        a read costs tens of microseconds there and a WAL reader does not wait for the
        writer), and on a networked store in an API read lane (:meth:`in_read_lane`),
        whose thread does nothing else. Elsewhere it goes to a reader thread like
        :meth:`read` (round trips must not stall the daemon's loop).
        Never pass a read whose size grows with the pools.
        """
        if not self._sqlite and not getattr(self._kept, "lane", False):
            return await self.read(function)
        for attempt in (1, 2):
            with self.failures():
                connection = self._kept_connection()
            try:
                with connection.begin():
                    return function(connection)
            except DBAPIError as exc:
                self._drop_kept_connection(connection)
                if attempt == 1 and exc.connection_invalidated and not self._sqlite:
                    continue  # the server restarted since: once more on a new connection
                with self.failures():
                    raise
            except StoreUnavailableError:
                self._drop_kept_connection(connection)
                raise
        raise AssertionError("unreachable")

    async def in_read_lane(self, call: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``call()``, a coroutine that only reads, in an API read lane.

        On a networked store every :meth:`lookup` is otherwise a hop to a reader
        thread and back (shared with the daemon's background reads); an API call
        makes several (authentication, the access check, the read itself). A read
        lane is a thread with its own event loop and connection: the call makes one
        hop to it and back, and its lookups and reads run there at once. On SQLite the call
        runs here (its lookups are already at once).
        """
        if self._sqlite:
            return await call()
        lane = self._lanes[next(self._lane_turn) % len(self._lanes)]
        return await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(call(), lane.started()))

    def _kept_connection(self) -> Connection:
        """This thread's read connection for :meth:`lookup` (kept open: checking one out
        of the pool for every lookup costs more than the lookup)."""
        connection: Connection | None = getattr(self._kept, "connection", None)
        if connection is None or connection.closed:
            # A lookup is a statement or two by key: without BEGIN and COMMIT (two round
            # trips to a networked server; two more statements on SQLite) each statement
            # reads committed data alone.
            connection = self.read_engine.connect().execution_options(
                isolation_level="AUTOCOMMIT")
            with self._kept_lock:
                if self._closed:
                    connection.close()
                    raise RuntimeError("the database is closed")
                self._kept_all.append(connection)
            self._kept.connection = connection
        return connection

    def _drop_kept_connection(self, connection: Connection) -> None:
        """Forget a kept connection that failed (the next lookup opens a new one)."""
        self._kept.connection = None
        with self._kept_lock:
            if connection in self._kept_all:
                self._kept_all.remove(connection)
        with contextlib.suppress(Exception):
            connection.invalidate()

    def read_sync(self, function: Callable[[Connection], T]) -> T:
        """Blocking form of :meth:`read`, for threads and start-up code."""
        with self.failures(), self.read_engine.connect() as connection, connection.begin():
            return function(connection)

    @contextlib.contextmanager
    def failures(self) -> Iterator[None]:
        """Turn store-level database errors (busy, full, read-only, ...) into
        :class:`StoreUnavailableError` naming the cause; others pass unchanged."""
        try:
            yield
        except DBAPIError as exc:
            cause = store_failure(exc, self.url, self.store_timeout) or self._lost(exc)
            if cause is None:
                raise
            raise cause from None

    def _lost(self, exc: BaseException) -> StoreLostError | None:
        """The :class:`StoreLostError` explaining the database error ``exc``, if the
        store was lost (see :attr:`store_explain`)."""
        if self.store_explain is None or not isinstance(exc, DBAPIError):
            return None
        try:
            with self.read_engine.connect() as connection:
                self.store_explain(connection)
        except StoreLostError as lost:
            return lost
        except Exception:  # the check could not run: keep the original error
            return None
        return None

    async def write(self, function: Callable[[Connection], T], *, urgent: bool = False) -> T:
        """Run ``function(connection)`` in the next group commit.

        The function runs inside a savepoint: if it raises, its own changes are
        rolled back, the exception is re-raised here and the rest of the batch
        commits. The returned value is delivered after the commit succeeded.
        ``urgent``: commit it ahead of the queued writes (keep such writes small).
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._accepting:
            if self._closed:
                raise RuntimeError("the database is closed")
            if not self._started:
                raise RuntimeError("Database.start() was not called")
            if urgent:
                self._urgent.put(_Job(function, future, loop))
                self._queue.put(_WAKE)
            else:
                self._queue.put(_Job(function, future, loop))
        return await future

    def write_sync(self, function: Callable[[Connection], T]) -> T:
        """Blocking write outside the loop (start-up, tools); not batched."""
        with self.write_engine.begin() as connection:
            return function(connection)

    def close(self) -> None:
        """Finish queued writes, stop the writer and dispose of the engines."""
        with self._accepting:
            self._closed = True
            started, self._started = self._started, False
            if started:
                self._queue.put(_STOP)
        if started:
            self._writer.join(timeout=30)
        self._readers.shutdown(wait=True)
        for lane in self._lanes:
            lane.stop()
        with self._kept_lock:
            kept, self._kept_all = self._kept_all, []
        for connection in kept:
            with contextlib.suppress(Exception):
                connection.close()
        self.write_engine.dispose()
        self.read_engine.dispose()

    # -- writer thread ----------------------------------------------------------

    def _write_loop(self) -> None:
        stop = False
        while True:
            urgent = _drained(self._urgent)
            if urgent:
                self._commit_batch(urgent, yielding=False)
                continue
            if not self._carry:
                if stop:
                    return
                first = self._queue.get()
                if first is _STOP:
                    stop = True
                    continue  # the urgent lane is emptied first
                if isinstance(first, _Job):
                    self._carry.append(first)
                continue
            batch: list[_Job] = []
            while self._carry and len(batch) < MAX_BATCH:
                batch.append(self._carry.popleft())
            while len(batch) < MAX_BATCH and not stop:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                elif isinstance(item, _Job):
                    batch.append(item)
            left = self._commit_batch(batch, yielding=True)
            self._carry.extendleft(reversed(left))

    def _commit_batch(self, batch: list[_Job], *, yielding: bool) -> list[_Job]:
        """Commit ``batch`` in one transaction; returns the jobs given back, not run
        (``yielding``: the batch stops taking jobs once an urgent one waits).

        Fast path: run every job without savepoints. If any job raises, roll
        the whole transaction back and run the batch again with a savepoint
        around each job, so only the failing ones are undone. Jobs are pure
        functions of the database, so running them twice is safe.
        """
        started = time.perf_counter()
        left: list[_Job] = []
        try:
            outcomes = self._run_batch(batch, isolate=False, yielding=yielding)
            if len(outcomes) < len(batch):  # cut short for the urgent lane
                batch, left = batch[:len(outcomes)], batch[len(outcomes):]
        except _JobFailed:
            outcomes = None
        except (LeaseLostError, StoreUnavailableError) as exc:
            outcomes = [(job, False, exc) for job in batch]
        except Exception as exc:  # the commit itself failed: nothing landed
            outcomes = self._failed_batch(batch, exc)
        if outcomes is None:
            try:
                outcomes = self._run_batch(batch, isolate=True, yielding=False)
            except (LeaseLostError, StoreUnavailableError) as exc:
                outcomes = [(job, False, exc) for job in batch]
            except Exception as exc:
                outcomes = self._failed_batch(batch, exc)
        if any(not ok and isinstance(value, DBAPIError) for _, ok, value in outcomes):
            lost = self._lost(next(value for _, ok, value in outcomes
                                   if not ok and isinstance(value, DBAPIError)))
            if lost is not None:
                outcomes = [(job, ok, lost if not ok else value)
                            for job, ok, value in outcomes]
        metrics.STORE_COMMIT_SECONDS.observe(time.perf_counter() - started)
        metrics.STORE_COMMIT_WRITES.observe(len(batch))
        # One callback per loop for the whole batch: each call_soon_threadsafe writes to
        # the loop's wake-up socket, giving up the GIL and waiting to get it back.
        answers: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], bool, Any]]] = {}
        for job, ok, value in outcomes:
            answers.setdefault(job.loop, []).append((job.future, ok, value))
        for loop, answered in answers.items():
            loop.call_soon_threadsafe(_resolve_all, answered)
        return left

    def _failed_batch(self, batch: list[_Job], exc: Exception
                      ) -> list[tuple[_Job, bool, Any]]:
        """Every job of a batch whose transaction failed gets the failure, named if known."""
        cause = (store_failure(exc, self.url, self.store_timeout) or self._lost(exc)) \
            if isinstance(exc, DBAPIError) else None
        if cause is None:
            log.exception("database commit failed for %d writes", len(batch))
            return [(job, False, exc) for job in batch]
        self._store_busy = cause.message.startswith("Store busy")
        log.warning("%s: %d writes refused", cause.message, len(batch))
        return [(job, False, cause) for job in batch]

    def _run_batch(self, batch: list[_Job], *, isolate: bool, yielding: bool
                   ) -> list[tuple[_Job, bool, Any]]:
        fence = self.fence
        if self.store_check is not None:
            self.store_check()
        with self.write_engine.connect() as connection:
            if self.is_sqlite:
                # While another process holds the store, later batches fail fast instead of
                # each waiting STORE_TIMEOUT again: an action is answered within one timeout.
                wait = _BUSY_RETRY_WAIT if self._store_busy else self.store_timeout
                raw = connection.connection.dbapi_connection
                assert raw is not None
                raw.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
            with connection.begin():
                outcomes = self._run_jobs(connection, batch, fence, isolate=isolate,
                                          yielding=yielding)
        self._store_busy = False
        return outcomes

    def _run_jobs(self, connection: Connection, batch: list[_Job],
                  fence: Callable[[Connection], None] | None, *,
                  isolate: bool, yielding: bool) -> list[tuple[_Job, bool, Any]]:
        outcomes: list[tuple[_Job, bool, Any]] = []
        if fence is not None:
            fence(connection)
        for job in batch:
            if isolate:
                outcomes.append(self._run_isolated(connection, job))
                continue
            try:
                outcomes.append((job, True, job.function(connection)))
            except Exception as exc:
                raise _JobFailed from exc
            if yielding and not self._urgent.empty():
                break  # commit what ran; the rest goes after the urgent jobs
        return outcomes

    @staticmethod
    def _run_isolated(connection: Connection, job: _Job) -> tuple[_Job, bool, Any]:
        savepoint = connection.begin_nested()
        try:
            value = job.function(connection)
        except Exception as exc:
            savepoint.rollback()
            return job, False, exc
        savepoint.commit()
        return job, True, value


class _ReadLane:
    """A thread running an event loop for API calls that only read (started on first
    use); its :meth:`Database.lookup`-s run on its own kept connection."""

    def __init__(self, database: Database, name: str) -> None:
        self._database = database
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def started(self) -> asyncio.AbstractEventLoop:
        """The lane's loop, running."""
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(target=self._run, args=(self._loop,),
                                                name=self._name, daemon=True)
                self._thread.start()
            return self._loop

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        self._database._kept.lane = True
        asyncio.set_event_loop(loop)
        try:
            loop.run_forever()
        finally:
            for task in asyncio.all_tasks(loop):
                task.cancel()
            loop.run_until_complete(asyncio.sleep(0))
            loop.close()

    def stop(self) -> None:
        """Cancel the calls in the lane and end its thread."""
        with self._lock:
            loop, thread, self._loop, self._thread = self._loop, self._thread, None, None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=30)


def _drained(lane: queue.SimpleQueue[_Job]) -> list[_Job]:
    """Every job waiting in ``lane`` (at most :data:`MAX_BATCH`)."""
    jobs: list[_Job] = []
    while len(jobs) < MAX_BATCH:
        try:
            jobs.append(lane.get_nowait())
        except queue.Empty:
            break
    return jobs


class _JobFailed(Exception):
    """A job of an optimistic batch raised: the batch is retried job by job."""


def _resolve_all(answered: list[tuple[asyncio.Future[Any], bool, Any]]) -> None:
    for future, ok, value in answered:
        _resolve(future, ok, value)


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


#: SQLite's messages (lower case) and what they mean for the operator.
_SQLITE_CAUSES: Final = (
    ("locked", "Store busy: another process holds a lock on {where} (STORE_TIMEOUT = "
               "{timeout:g} s)"),
    ("disk is full", "Store full: no space left on the disk holding {where}"),
    ("readonly", "Store read-only: {where} cannot be written (read-only file or file system)"),
    ("unable to open", "Store unavailable: {where} cannot be opened (deleted directory, "
                       "permissions or no file descriptor left)"),
    ("disk i/o error", "Store unavailable: disk I/O error on {where}"),
)


def store_failure(exc: DBAPIError, url: str, timeout: float) -> StoreUnavailableError | None:
    """The store-level cause of a database error, as one line; None for other errors.

    Store-level: the store is busy, full, read-only or unreachable; the request
    itself was fine and may succeed later.
    """
    text = str(exc.orig).lower()
    if url.startswith("sqlite"):
        where = make_url(url).database or "the store"
        for needle, message in _SQLITE_CAUSES:
            if needle in text:
                return StoreUnavailableError(message.format(where=where, timeout=timeout))
        return None
    if isinstance(exc, OperationalError):
        if "no space left" in text or "disk full" in text:
            return StoreUnavailableError("Store full: the PostgreSQL server has no space left")
        first = (str(exc.orig).strip().splitlines() or ["no answer"])[0][:200]
        return StoreUnavailableError(f"Store unavailable: the PostgreSQL store does not "
                                     f"answer ({first})")
    return None

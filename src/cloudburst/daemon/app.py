"""Wiring: the :class:`Daemon` builds every part from :class:`Settings` and runs them.

Start order: store (schema, installation id, ``oneadmin``), drivers (every
``oned.conf`` section is built now so a bad one stops the start), life-cycle
manager, services, leadership, then the API server. Stop order is the reverse.

Only the leader (:mod:`cloudburst.daemon.leadership`) drives: when this daemon
is elected it recovers interrupted work and starts the scheduler and monitor
loops; when deposed it stops them and every driver task at once. A follower's
API calls hand their driver work to the leader (:mod:`cloudburst.daemon.handoff`).
"""

from __future__ import annotations

import asyncio
import logging
import math
from typing import Any

from cloudburst.api.documents import vm_pool_entry
from cloudburst.config.settings import Settings
from cloudburst.daemon.change_feed import ChangeFeed
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.files import VmFiles
from cloudburst.daemon.handoff import Adopter, Listener, Notifier, hosts_in
from cloudburst.daemon.leadership import Leadership
from cloudburst.daemon.lease_keeper import lease_engine
from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.monitor import Monitor
from cloudburst.daemon.recovery import recover
from cloudburst.daemon.scheduler import SchedulerLoop
from cloudburst.events import EventBus
from cloudburst.model.records import VmRecord
from cloudburst.service.access import AccessService
from cloudburst.service.audit import AuditService
from cloudburst.service.facade import API_VERSION
from cloudburst.service.groups import GroupService
from cloudburst.service.hosts import HostService
from cloudburst.service.quotas import QuotaService
from cloudburst.service.templates import TemplateService
from cloudburst.service.users import UserService, bootstrap_admin
from cloudburst.service.vms import TemplateCheck, VmService
from cloudburst.store.database import Database
from cloudburst.store.identity import (
    MARKER_NAME,
    StoreWatch,
    open_store_identity,
)
from cloudburst.store.lease import sole_store_lock

log = logging.getLogger(__name__)

#: Seconds between two checks that the store was not deleted or replaced (SQLite
#: is also checked before every write batch).
STORE_WATCH_INTERVAL = 2.0

VERSION = API_VERSION
"""The OpenNebula API version cloudburst speaks (``one.system.version``)."""


def _vm_document(vm: VmRecord, uname: str, gname: str) -> str:
    """The VM's ``one.vm.info`` document without cloudburst's additions (placement,
    cost): what ``$TEMPLATE`` in a CONTEXT encodes, as oned's has only its own."""
    return vm_pool_entry(vm, extended=True, uname=uname, gname=gname)


class Daemon:
    """One cloudburst daemon: pools, scheduler, monitor, drivers and API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for directory in (settings.home, settings.etc_dir, settings.var_dir, settings.vms_dir,
                          settings.log_dir, settings.remotes_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self._sole_lock = sole_store_lock(settings.database_url)
        # Frozen inside a write transaction, a leader is replaced as one frozen outside
        # it is (the lease keeper's STALL): the server ends that transaction.
        self.db = Database(settings.database_url, store_timeout=settings.store_timeout,
                           idle_limit=settings.lease.stall)
        with self.db.failures():
            identity = open_store_identity(self.db.write_engine, settings.home / MARKER_NAME,
                                           self.db.create_schema, new_store=settings.new_store)
        self.install_id = identity.installation_id
        self.store_watch = StoreWatch(self.db.write_engine, identity.store_id)
        self.db.store_check = self.store_watch.check
        self.db.store_explain = self.store_watch.explain
        self.admin_created = bootstrap_admin(self.db, settings.auth_file)
        self.dispatcher = Dispatcher(settings, self.install_id)
        self.dispatcher.build_all()
        self.files = VmFiles(settings.vms_dir, self.db)
        self.scheduler: SchedulerLoop
        #: Committed VM and host changes, for the dashboard and other consumers.
        self.events = EventBus()
        self.lifecycle = LifecycleManager(
            self.db, self.dispatcher, self.files, settings, self.install_id,
            on_capacity_freed=lambda: self._wake_scheduler(), events=self.events)
        self.scheduler = SchedulerLoop(self.db, self.lifecycle, settings.scheduler,
                                       events=self.events)
        self.monitor = Monitor(
            self.db, self.dispatcher, self.lifecycle,
            monitoring_interval=settings.monitoring_interval,
            polling_interval=settings.vm_polling_interval,
            on_host_changed=self.scheduler.wake,
            orphan_grace_period=settings.orphan_grace_period)
        self.vms = VmService(self.db, self.lifecycle, self._new_vms,
                             checks=self._template_checks, document=_vm_document,
                             vm_mads=lambda: [driver.name for driver in settings.drivers
                                              if driver.kind == "VM_MAD"])
        self.hosts = HostService(self.db, self.dispatcher, self._monitor_now,
                                 self._wake_scheduler, self.events,
                                 reschedule=self.vms.reschedule_host)
        self.templates = TemplateService(self.db, self.vms)
        self.users = UserService(self.db, settings.logins)
        self.leadership = Leadership(self.db, settings.lease, elected=self._lead,
                                     deposed=self._follow)
        self.notifier = Notifier(self.db)
        self.adopter = Adopter(self.db, self.lifecycle)
        self.lifecycle.drives = lambda: self.leadership.is_leader
        self.dispatcher.refusal = self.leadership.refusal
        self.lifecycle.hand_off = self._hand_off
        self.access = AccessService(self.db)
        self.groups = GroupService(self.db)
        self.quotas = QuotaService(self.db)
        self.audit = AuditService(self.db)
        self._tasks: list[asyncio.Task[Any]] = []
        self._watching: asyncio.Task[None] | None = None
        self._listener: Listener | None = None
        #: Other daemons' changes for this one's dashboard (shared stores only).
        self.change_feed: ChangeFeed | None = None
        self._closed = False
        self.api: Any = None

    def _template_checks(self) -> list[TemplateCheck]:
        """Driver-specific template rules (e.g. EC2's mandatory AMI)."""
        return [driver.check_template for driver in self.dispatcher.vm_drivers()]

    def _new_vms(self) -> None:
        if self.leadership.is_leader:
            self.scheduler.new_vms()
        else:
            self.notifier.notify()

    def _wake_scheduler(self) -> None:
        if self.leadership.is_leader:
            self.scheduler.wake()
        else:
            self.notifier.notify()

    def _monitor_now(self, host_id: int) -> None:
        if self.leadership.is_leader:
            self.monitor.monitor_now(host_id)
        else:
            self.notifier.notify(monitor=host_id)

    def _hand_off(self) -> None:
        """Work is journalled for the leader: wake it (this daemon's adopter if it leads)."""
        if self.leadership.is_leader:
            self._work_notified("")
        else:
            self.notifier.notify()

    def _work_notified(self, payload: str) -> None:
        for host_id in hosts_in(payload):
            self.monitor.monitor_now(host_id)
        self.scheduler.wake()
        self.adopter.wake()

    async def start(self, *, serve_api: bool = True) -> None:
        """Start competing for leadership (and serving the API unless ``serve_api``
        is false). On SQLite, or when the lease is free, this daemon leads on return."""
        self.db.start()
        self._watching = asyncio.get_running_loop().create_task(self._watch_store(),
                                                                name="store-watch")
        if self.leadership.shared:
            self.change_feed = ChangeFeed(lease_engine(self.settings.database_url),
                                          self.events, self.leadership.holder)
            self.change_feed.start()
        await self.leadership.start()
        if serve_api:
            from cloudburst.api.server import ApiServer

            self.api = ApiServer(self)
            await self.api.start()

    async def _watch_store(self) -> None:
        """Check every few seconds that the store is still the one we opened."""
        while self.store_watch.lost is None:
            await asyncio.sleep(STORE_WATCH_INTERVAL)
            try:
                await self.db.read(self.store_watch.check_thoroughly)
            except Exception as exc:  # a read failing is the business of its callers
                log.debug("store check could not read the store: %s", exc)

    async def _lead(self) -> None:
        """Elected: resume interrupted work, then run the scheduler and monitor."""
        if math.isfinite(self.leadership.quiet):
            self.dispatcher.took_over(self.leadership.quiet)
        await recover(self.db, self.lifecycle)
        loop = asyncio.get_running_loop()
        self._tasks = [self.scheduler.start(), self.monitor.start()]
        if self.leadership.shared:
            self._tasks.append(loop.create_task(self.adopter.run(), name="adopter"))
            self._listener = Listener(self.leadership.engine, self._work_notified)
            self._listener.start()
        self.scheduler.wake()

    async def _follow(self) -> None:
        """Deposed (or stopping): stop every loop and every driver task now."""
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
        self.scheduler.stop()
        await self.monitor.close()
        await self.lifecycle.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    async def stop(self) -> None:
        """Stop serving, step down, let in-flight writes land, close (once)."""
        if self._closed:
            return
        self._closed = True
        self.events.close_all()  # ends live streams, so the server stops at once
        if self.api is not None:
            await self.api.stop()
        if self._watching is not None:
            self._watching.cancel()
        await self.leadership.stop()
        await self._follow()
        await self.dispatcher.close()
        await self.files.close()
        if self.change_feed is not None:
            await self.change_feed.close()
        self.users.close()
        await asyncio.to_thread(self.db.close)
        if self._sole_lock is not None:
            self._sole_lock.release()

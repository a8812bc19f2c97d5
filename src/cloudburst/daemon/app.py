"""Wiring: the :class:`Daemon` builds every part from :class:`Settings` and runs them.

Start order: store (schema, installation id, ``oneadmin``), drivers (every
``oned.conf`` section is built now so a bad one stops the start), life-cycle
manager, services, recovery of interrupted work, then the scheduler and
monitor loops and the API server. Stop order is the reverse.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from cloudburst.config.settings import Settings
from cloudburst.daemon.dispatcher import Dispatcher
from cloudburst.daemon.files import VmFiles
from cloudburst.daemon.lifecycle import LifecycleManager
from cloudburst.daemon.monitor import Monitor
from cloudburst.daemon.recovery import recover
from cloudburst.daemon.scheduler import SchedulerLoop
from cloudburst.events import EventBus
from cloudburst.service.hosts import HostService
from cloudburst.service.templates import TemplateService
from cloudburst.service.users import UserService, bootstrap_admin
from cloudburst.service.vms import TemplateCheck, VmService
from cloudburst.store.database import Database
from cloudburst.store.sequences import installation_id

log = logging.getLogger(__name__)

VERSION = "6.10.0"
"""The OpenNebula API version cloudburst speaks (``one.system.version``)."""


class Daemon:
    """One cloudburst daemon: pools, scheduler, monitor, drivers and API."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        for directory in (settings.home, settings.etc_dir, settings.var_dir, settings.vms_dir,
                          settings.log_dir, settings.remotes_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.db = Database(settings.database_url)
        self.db.create_schema()
        self.install_id = self.db.write_sync(installation_id)
        self.admin_created = bootstrap_admin(self.db, settings.auth_file)
        self.dispatcher = Dispatcher(settings, self.install_id)
        self.dispatcher.build_all()
        self.files = VmFiles(settings.vms_dir)
        self.scheduler: SchedulerLoop
        #: Committed VM and host changes, for the dashboard and other consumers.
        self.events = EventBus()
        self.lifecycle = LifecycleManager(
            self.db, self.dispatcher, self.files, settings, self.install_id,
            on_capacity_freed=lambda: self.scheduler.wake(), events=self.events)
        self.scheduler = SchedulerLoop(self.db, self.lifecycle, settings.scheduler)
        self.monitor = Monitor(
            self.db, self.dispatcher, self.lifecycle,
            monitoring_interval=settings.monitoring_interval,
            polling_interval=settings.vm_polling_interval,
            on_host_changed=self.scheduler.wake,
            orphan_grace_period=settings.orphan_grace_period)
        self.vms = VmService(self.db, self.lifecycle, self.scheduler.new_vms,
                             checks=self._template_checks)
        self.hosts = HostService(self.db, self.dispatcher, self.monitor.monitor_now,
                                 self.scheduler.wake, self.events)
        self.templates = TemplateService(self.db, self.vms)
        self.users = UserService(self.db)
        self._tasks: list[asyncio.Task[Any]] = []
        self.api: Any = None

    def _template_checks(self) -> list[TemplateCheck]:
        """Driver-specific template rules (e.g. EC2's mandatory AMI)."""
        return [driver.check_template for driver in self.dispatcher.vm_drivers()]

    async def start(self, *, serve_api: bool = True) -> None:
        """Start the loops (and the API server unless ``serve_api`` is false)."""
        self.db.start()
        await recover(self.db, self.lifecycle)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.scheduler.run(), name="scheduler"),
            loop.create_task(self.monitor.run(), name="monitor"),
        ]
        self.scheduler.wake()
        if serve_api:
            from cloudburst.api.server import ApiServer

            self.api = ApiServer(self)
            await self.api.start()

    async def stop(self) -> None:
        """Stop serving, stop the loops, let in-flight writes land, close."""
        self.events.close_all()  # ends live streams, so the server stops at once
        if self.api is not None:
            await self.api.stop()
        self.scheduler.stop()
        await self.monitor.close()
        await self.lifecycle.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.dispatcher.close()
        self.files.close()
        await asyncio.to_thread(self.db.close)

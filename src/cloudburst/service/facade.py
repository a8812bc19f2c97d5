"""The services facade: what the API, the dashboard and other front ends may use.

Front ends (``cloudburst.api``, ``cloudburst.web``) depend on this protocol,
never on the daemon's wiring object (``cloudburst.daemon.app.Daemon``), which
satisfies it. Every use case lives in one of these services; each is where
the authorization hook asks ``authorize(caller, operation, object)`` before
acting (:class:`~cloudburst.service.access.AccessService`).
"""

from __future__ import annotations

from typing import Final, Protocol

from cloudburst.config.settings import Settings
from cloudburst.events import EventBus
from cloudburst.service.access import AccessService
from cloudburst.service.audit import AuditService
from cloudburst.service.groups import GroupService
from cloudburst.service.hosts import HostService
from cloudburst.service.quotas import QuotaService
from cloudburst.service.templates import TemplateService
from cloudburst.service.users import UserService
from cloudburst.service.vms import VmService
from cloudburst.store.database import Database

#: The OpenNebula API version cloudburst speaks (``one.system.version``).
API_VERSION: Final = "6.10.0"


class Services(Protocol):
    """The use cases, the event bus and the settings, as the daemon wires them."""

    @property
    def settings(self) -> Settings: ...
    @property
    def db(self) -> Database: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def vms(self) -> VmService: ...
    @property
    def hosts(self) -> HostService: ...
    @property
    def templates(self) -> TemplateService: ...
    @property
    def users(self) -> UserService: ...
    @property
    def groups(self) -> GroupService: ...
    @property
    def quotas(self) -> QuotaService: ...
    @property
    def access(self) -> AccessService: ...
    @property
    def audit(self) -> AuditService: ...

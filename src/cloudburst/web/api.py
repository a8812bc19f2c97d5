"""The JSON API under ``/api/v1``: the dashboard's only way to the daemon.

Every handler authenticates the caller (:mod:`cloudburst.web.auth`) and
calls the same service methods as the XML-RPC API, so both APIs answer and
refuse alike; errors are the services' one-line messages
(:mod:`cloudburst.web.http`). ``openapi.json`` beside this module documents
every route; a test keeps the two in step.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from dataclasses import replace
from importlib import resources
from typing import Final

from aiohttp import web

from cloudburst.auth import permissions
from cloudburst.errors import ApiArgumentError, AuthenticationError, NotFoundError
from cloudburst.events import Change
from cloudburst.model.cost import vm_figures
from cloudburst.model.records import GroupRecord, HostRecord, UserRecord
from cloudburst.model.states import VmState, vm_short_state
from cloudburst.service.facade import Services
from cloudburst.store.vm_search import SORT_KEYS, VmSearch
from cloudburst.web import live, shapes
from cloudburst.web.access import Guard
from cloudburst.web.auth import Caller, authenticate
from cloudburst.web.http import Body, error_middleware, json_response, query_int
from cloudburst.web.sessions import COOKIE, SessionStore
from cloudburst.web.timeline import Timeline

__all__ = ["ROUTES", "build_api"]

#: Largest page of a table.
MAX_PAGE: Final = 500
#: Timeline entries an overview returns.
OVERVIEW_TIMELINE: Final = 100
#: VM log lines a VM page shows.
LOG_LINES: Final = 200
_STATE_NAMES: Final = {state.name.lower(): state for state in VmState}


class Api:
    """The ``/api/v1`` handlers over ``services`` (see the module docstring)."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.sessions = SessionStore()
        # Names and cloud flags only: a burst's resyncs reload them (with every VM placed,
        # each reload read the whole VM pool).
        self.timeline = Timeline(services.events, services.hosts.pool_rows)
        self.guard = Guard(services.access, services.audit)

    async def caller(self, request: web.Request) -> Caller:
        return await authenticate(request, self.services.users, self.sessions)

    # -- session ------------------------------------------------------------------------------

    async def login(self, request: web.Request) -> web.Response:
        body = await Body.read(request)
        name, password = body.string("username"), body.string("password")
        if not name or ":" in name or not password:
            raise AuthenticationError("User couldn't be authenticated, aborting call.")
        user = await self.services.users.authenticate(f"{name}:{password}",
                                                      client=request.remote or "")
        session = self.sessions.create(user.id)
        response = json_response({"user": shapes.user_shape(user),
                                  "csrf_token": session.csrf_token})
        response.set_cookie(COOKIE, session.id, httponly=True, samesite="Strict", path="/",
                            secure=request.secure)
        return response

    async def session(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        return json_response({
            "user": shapes.user_shape(caller.user),
            "csrf_token": caller.session.csrf_token if caller.session is not None else None,
            "idle_timeout": self.sessions.idle_seconds,
        })

    async def logout(self, request: web.Request) -> web.Response:
        caller = await self.caller(request)
        if caller.session is not None:
            self.sessions.end(caller.session.id)
        response = json_response({"logged_out": True})
        response.del_cookie(COOKIE, path="/")
        return response

    # -- reads --------------------------------------------------------------------------------

    async def _names(self) -> Callable[[int], str]:
        names = await self.services.users.names()
        return lambda uid: names.get(uid, str(uid))

    async def _visible_vm_ids(self, user: UserRecord, search: VmSearch) -> list[int] | None:
        """The VMs ``search`` matches that ``user`` may see, in order (``None``: all of them)."""
        if self.guard.is_admin(user):
            return None
        sees = await self.guard.visible(user, "VM")
        return [vm_id for vm_id, uid, gid, perms in await self.services.vms.search_owners(search)
                if sees(vm_id, uid, gid, perms)]

    async def _visible_hosts(self, user: UserRecord) -> list[HostRecord]:
        sees = await self.guard.visible(user, "HOST")
        return [host for host in await self.services.hosts.pool() if sees(host.id, 0, 0, None)]

    async def overview(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        hosts = await self._visible_hosts(user)
        visible = await self._visible_vm_ids(user, VmSearch())
        counts = await self.services.vms.counts(visible)
        cloud = [host for host in hosts if host.is_public_cloud]
        local = [host for host in hosts if not host.is_public_cloud]
        cloud_ids = {host.id for host in cloud}
        known = {host.id for host in hosts}
        costs = await self.services.vms.hourly_costs(sorted(cloud_ids))
        if visible is not None:
            allowed = set(visible)
            costs = {vm_id: cost for vm_id, cost in costs.items() if vm_id in allowed}
        by_state: dict[str, int] = {}
        by_where = {"local": 0, "cloud": 0, "unplaced": 0}
        for count in counts:
            label = vm_short_state(count.state, count.lcm_state)
            by_state[label] = by_state.get(label, 0) + count.count
            if count.host_id is None or count.host_id not in known:
                by_where["unplaced"] += count.count
            else:
                by_where["cloud" if count.host_id in cloud_ids else "local"] += count.count
        sees = await self.guard.change_filter(user)
        entries = [entry for entry in self.timeline.entries
                   if sees(Change(0, "vm", int(str(entry["vm_id"])), entry, 0.0))]
        return json_response({
            "local": _site_totals(local),
            "cloud": _site_totals(cloud),
            "vms_total": sum(count.count for count in counts),
            "vms_by_state": dict(sorted(by_state.items())),
            "vms_by_where": by_where,
            "cost": {"per_hour": round(sum(costs.values()), 6) if costs else None,
                     "priced_vms": len(costs), "cloud_vms": by_where["cloud"]},
            "timeline": entries[-OVERVIEW_TIMELINE:],
        })

    async def hosts(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        cooloffs = await self.services.vms.cooloffs()
        hosts = await self._visible_hosts(user)
        # Cloud sites (few) and hosts that refused VMs are read with their spending and
        # stored per-instance-type cool-offs (HostService.info adds them).
        detailed = set(cooloffs) | await self.services.hosts.cooling()
        hosts = [await self.services.hosts.info(host.id)
                 if host.is_public_cloud or host.id in detailed else host for host in hosts]
        return json_response({"hosts": [shapes.host_shape(host, cooloffs.get(host.id))
                                        for host in hosts]})

    async def host(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        host_id = _path_id(request)
        await self.guard.check(user, "one.host.info", (host_id,))
        host = await self.services.hosts.info(host_id)
        cooloff = (await self.services.vms.cooloffs()).get(host.id)
        return json_response({**shapes.host_shape(host, cooloff), "vm_ids": list(host.vm_ids)})

    async def vms(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        query = request.query
        # Names and kinds of hosts as the event bus keeps them current (no host read).
        hosts = self.timeline.hosts
        sort = query.get("sort", "id")
        if sort not in SORT_KEYS:
            raise ApiArgumentError(f"Unknown sort key {sort!r} (use {', '.join(SORT_KEYS)})")
        order = query.get("order", "asc")
        if order not in ("asc", "desc"):
            raise ApiArgumentError("Query parameter 'order' must be asc or desc")
        search = VmSearch(
            text=query.get("q", "")[:200],
            states=_states(query.get("state", "")),
            host_ids=_host_ids(query.get("where", ""), query.get("host", ""), hosts),
            sort=sort, descending=order == "desc",
            offset=query_int(request, "offset", 0, low=0, high=2**31 - 1),
            limit=query_int(request, "limit", 50, low=1, high=MAX_PAGE),
        )
        visible = await self._visible_vm_ids(user, search)
        if visible is None:
            total, rows = await self.services.vms.search(search)
        else:
            # Filtered by permission first, then paged, as the vmpool listing does.
            page = visible[search.offset:search.offset + search.limit]
            _, rows = await self.services.vms.search(
                replace(search, ids=page, offset=0, limit=len(page)))
            total = len(visible)
        names = await self._names()
        return json_response({"total": total, "offset": search.offset, "limit": search.limit,
                              "vms": [shapes.vm_row(row, hosts, names) for row in rows]})

    async def vm(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        await self.guard.check(user, "one.vm.info", (vm_id,))
        vm = await self.services.vms.info(vm_id)
        host: HostRecord | None = None
        if vm.host_id is not None:
            with contextlib.suppress(NotFoundError):
                host = await self.services.hosts.info(vm.host_id)
        log = await self.services.vms.log_tail(vm.id, LOG_LINES)
        return json_response(shapes.vm_detail(vm, host, await self._names(), log=log,
                                              cost=vm_figures(vm)[0]))

    async def templates(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        offset = query_int(request, "offset", 0, low=0, high=2**31 - 1)
        limit = query_int(request, "limit", 100, low=1, high=MAX_PAGE)
        sees = await self.guard.visible(user, "TEMPLATE")
        records = [record for record in await self.services.templates.pool()
                   if sees(record.id, record.uid, record.gid, record.perms)]
        names = await self._names()
        return json_response({"offset": offset, "limit": limit, "total": len(records),
                              "templates": [shapes.template_shape(r, names)
                                            for r in records[offset:offset + limit]]})

    async def _visible_users(self, user: UserRecord) -> list[UserRecord]:
        """The users ``one.userpool.info`` lists to ``user`` (itself at least)."""
        sees = await self.guard.visible(user, "USER")
        return [other for other in await self.services.users.pool()
                if sees(other.id, other.id, other.gid, permissions.USER_SELF)]

    async def _visible_groups(self, user: UserRecord) -> list[GroupRecord]:
        """The groups ``one.grouppool.info`` lists to ``user``."""
        sees = await self.guard.visible(user, "GROUP")
        return [group for group in await self.services.groups.pool()
                if sees(group.id, -1, group.id, permissions.GROUP_MEMBERS)]

    async def users(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        return json_response({"users": [shapes.user_shape(other)
                                         for other in await self._visible_users(user)]})

    async def groups(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        return json_response({"groups": [
            {"id": group.id, "name": group.name, "users": list(group.users),
             "admins": list(group.admins)}
            for group in await self._visible_groups(user)]})

    async def quotas(self, request: web.Request) -> web.Response:
        """The quotas ``one.userpool.info`` and ``one.grouppool.info`` show the caller."""
        user = (await self.caller(request)).user
        quotas = self.services.quotas
        owners = {"user": [(u.id, u.name) for u in await self._visible_users(user)],
                  "group": [(g.id, g.name) for g in await self._visible_groups(user)]}
        answer: dict[str, object] = {}
        defaults: dict[str, object] = {}
        for kind, listed in owners.items():
            limits, default = await quotas.all_limits(kind), await quotas.limits(kind, -1)
            answer[f"{kind}s"] = [
                shapes.quota_owner(owner_id, name, limits.get(owner_id, {}),
                                   await quotas.usage(kind, owner_id), default)
                for owner_id, name in listed]
            defaults[kind] = shapes.quota_defaults(default)
        return json_response({**answer, "defaults": defaults})

    async def audit(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        await self.guard.check(user, "one.audit.info", ())
        since = query_int(request, "since", 0, low=0, high=2**53)
        uid = query_int(request, "uid", -1, low=-1, high=2**31 - 1)
        limit = query_int(request, "limit", 200, low=1, high=10_000)
        entries = await self.services.audit.entries(
            since=float(since), uid=None if uid < 0 else uid, limit=limit)
        return json_response({"entries": [shapes.audit_entry(entry) for entry in entries]})

    async def acl(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        await self.guard.check(user, "one.acl.info", ())
        return json_response({"rules": [{"id": rule.id, "rule": str(rule)}
                                        for rule in await self.services.access.rules()]})

    async def events(self, request: web.Request) -> web.StreamResponse:
        caller = await self.caller(request)
        return await live.stream(request, caller, self.services.events, self.sessions,
                                 self.timeline,
                                 lambda: self.guard.change_filter(caller.user))

    # -- actions ------------------------------------------------------------------------------

    async def create_vm(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        body = await Body.read(request)
        text, hold = body.string("template"), body.boolean("hold", False)
        vm_id = await self.guard.act(user, "one.vm.allocate", (text, hold), lambda: (
            self.services.vms.allocate(text, hold=hold, uid=user.id, gid=user.gid)))
        return json_response({"id": vm_id}, status=201)

    async def vm_action(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        body = await Body.read(request)
        action = body.string("action")
        await self.guard.act(user, "one.vm.action", (action, vm_id),
                             lambda: self.services.vms.action(action, vm_id))
        return json_response({"id": vm_id, "action": action})

    async def vm_deploy(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        body = await Body.read(request)
        host_id, enforce = body.integer("host_id"), body.boolean("enforce", False)
        await self.guard.act(user, "one.vm.deploy", (vm_id, host_id, enforce),
                             lambda: self.services.vms.deploy(vm_id, host_id, enforce=enforce))
        return json_response({"id": vm_id, "action": "deploy"})

    async def vm_migration_targets(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        await self.guard.check(user, "one.vm.info", (vm_id,))
        targets = await self.services.vms.migration_targets(vm_id)
        sees = await self.guard.visible(user, "HOST")
        return json_response({
            "cold": targets.cold, "live": targets.live,
            "hosts": [shapes.migration_target(host) for host in targets.hosts
                      if sees(host.id, 0, 0, None)]})

    async def vm_migrate(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        body = await Body.read(request)
        host_id = body.integer("host_id")
        live, enforce = body.boolean("live", False), body.boolean("enforce", False)
        await self.guard.act(user, "one.vm.migrate", (vm_id, host_id, live, enforce),
                             lambda: self.services.vms.migrate(vm_id, host_id, live=live,
                                                               enforce=enforce))
        return json_response({"id": vm_id, "action": "live-migrate" if live else "migrate"})

    async def vm_recover(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        vm_id = _path_id(request)
        body = await Body.read(request)
        name = body.string("operation")
        operation = shapes.RECOVER_OPERATIONS.get(name)
        if operation is None:
            raise ApiArgumentError(f"Unknown recover operation {name[:40]!r} (use "
                                   f"{', '.join(shapes.RECOVER_OPERATIONS)})")
        await self.guard.act(user, "one.vm.recover", (vm_id, operation),
                             lambda: self.services.vms.recover(vm_id, operation))
        return json_response({"id": vm_id, "action": f"recover-{name}"})

    async def instantiate(self, request: web.Request) -> web.Response:
        user = (await self.caller(request)).user
        template_id = _path_id(request)
        body = await Body.read(request)
        count = body.integer("count", 1)
        if not 1 <= count <= 100:
            raise ApiArgumentError("Field 'count' must be between 1 and 100")
        name, hold = body.string("name", ""), body.boolean("hold", False)
        extra = body.string("extra", "")
        ids = [await self.guard.act(
                   user, "one.template.instantiate", (template_id, name, hold, extra),
                   lambda: self.services.templates.instantiate(
                       template_id, name, hold=hold, extra=extra, uid=user.id, gid=user.gid))
               for _ in range(count)]
        return json_response({"ids": ids}, status=201)

    async def openapi(self, request: web.Request) -> web.Response:
        return web.Response(body=openapi_document(), content_type="application/json")


def openapi_document() -> bytes:
    """The OpenAPI document shipped beside this module."""
    return resources.files("cloudburst.web").joinpath("openapi.json").read_bytes()


def _site_totals(hosts: list[HostRecord]) -> dict[str, int]:
    return {
        "hosts": len(hosts),
        "hosts_in_error": sum(1 for host in hosts if host.error),
        "max_cpu": sum(host.max_cpu for host in hosts),
        "cpu_usage": sum(host.cpu_usage for host in hosts),
        "max_mem": sum(host.max_mem for host in hosts),
        "mem_usage": sum(host.mem_usage for host in hosts),
        "running_vms": sum(host.running_vms for host in hosts),
    }


def _path_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not text.isdigit() or len(text) > 10 or int(text) >= 2**31:
        raise ApiArgumentError(f"Invalid id {text[:20]!r}: expected a non-negative integer")
    return int(text)


def _states(text: str) -> list[VmState] | None:
    """``state=pending,active`` as states; empty means any but DONE, ``any`` everything."""
    if not text:
        return None
    if text == "any":
        return list(VmState)
    states = []
    for name in text.lower().split(","):
        if name not in _STATE_NAMES:
            raise ApiArgumentError(f"Unknown VM state {name!r} (use "
                                   f"{', '.join(_STATE_NAMES)} or any)")
        states.append(_STATE_NAMES[name])
    return states


def _host_ids(where: str, host: str, hosts: Mapping[int, tuple[str, bool]]
              ) -> list[int] | None:
    """The hosts a VM search is limited to by ``where`` (local/cloud) and ``host`` (an id)."""
    selected: set[int] | None = None
    if where:
        if where not in ("local", "cloud"):
            raise ApiArgumentError("Query parameter 'where' must be local or cloud")
        selected = {host_id for host_id, (_name, cloud) in hosts.items()
                    if cloud == (where == "cloud")}
    if host:
        if not host.isdigit() or len(host) > 10:
            raise ApiArgumentError(f"Query parameter 'host' must be a host id, got {host!r}")
        selected = {int(host)} if selected is None else selected & {int(host)}
    return None if selected is None else sorted(selected)


#: Every route: ``(method, path under /api/v1, name of the Api handler)``.
ROUTES: Final = (
    ("POST", "/session", "login"),
    ("GET", "/session", "session"),
    ("DELETE", "/session", "logout"),
    ("GET", "/overview", "overview"),
    ("GET", "/hosts", "hosts"),
    ("GET", "/hosts/{id}", "host"),
    ("GET", "/vms", "vms"),
    ("POST", "/vms", "create_vm"),
    ("GET", "/vms/{id}", "vm"),
    ("POST", "/vms/{id}/action", "vm_action"),
    ("POST", "/vms/{id}/deploy", "vm_deploy"),
    ("GET", "/vms/{id}/migrate", "vm_migration_targets"),
    ("POST", "/vms/{id}/migrate", "vm_migrate"),
    ("POST", "/vms/{id}/recover", "vm_recover"),
    ("GET", "/templates", "templates"),
    ("POST", "/templates/{id}/instantiate", "instantiate"),
    ("GET", "/users", "users"),
    ("GET", "/groups", "groups"),
    ("GET", "/acl", "acl"),
    ("GET", "/quotas", "quotas"),
    ("GET", "/audit", "audit"),
    ("GET", "/events", "events"),
    ("GET", "/openapi.json", "openapi"),
)


def build_api(services: Services) -> tuple[web.Application, Api]:
    """The ``/api/v1`` application (mount it with ``add_subapp``) and its handlers."""
    api = Api(services)
    app = web.Application(middlewares=[error_middleware])
    for method, path, name in ROUTES:
        app.router.add_route(method, path, getattr(api, name))

    async def start_timeline(_app: web.Application) -> None:
        await api.timeline.start()

    async def stop_timeline(_app: web.Application) -> None:
        await api.timeline.stop()

    app.on_startup.append(start_timeline)
    app.on_cleanup.append(stop_timeline)
    return app, api

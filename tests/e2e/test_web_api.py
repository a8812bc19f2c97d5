"""The JSON API and the dashboard's HTTP side, against a real daemon over HTTP.

Login and its cookie, CSRF on every change, Basic credentials for scripts,
one-line errors with the right statuses, server-side search/sort/paging, the
live event stream, logout, the assets and their headers, and the OpenAPI
document kept in step with the routes.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import xmlrpc.client
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pyone
import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for
from tenancy_xml import audit_ids, vm_quota

from cloudburst.web.api import ROUTES

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
STATIC = REPO / "src" / "cloudburst" / "web" / "static"


@dataclass
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict[str, object]:
        value = json.loads(self.body)
        assert isinstance(value, dict)
        return value


@dataclass
class Client:
    """A tiny HTTP client that keeps the session cookie, like a browser."""

    port: int
    cookie: str | None = None
    csrf: str | None = None
    extra: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: object = None, *,
                headers: dict[str, str] | None = None, raw: bytes | None = None) -> Answer:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        sent = {"Accept": "application/json", **self.extra, **(headers or {})}
        data = raw
        if body is not None:
            data = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        if self.cookie:
            sent["Cookie"] = f"cloudburst_session={self.cookie}"
        try:
            connection.request(method, path, body=data, headers=sent)
            response = connection.getresponse()
            answer = Answer(response.status, response.headers, response.read())
        finally:
            connection.close()
        for header in answer.headers.get_all("Set-Cookie") or []:
            morsel = SimpleCookie(header).get("cloudburst_session")
            if morsel is not None:
                self.cookie = morsel.value or None
        return answer

    def change(self, method: str, path: str, body: object = None) -> Answer:
        """A request that changes something, with the session's CSRF token."""
        assert self.csrf
        return self.request(method, path, body, headers={"X-CSRF-Token": self.csrf})

    def log_in(self, session: str) -> Answer:
        user, password = session.split(":", 1)
        answer = self.request("POST", "/api/v1/session", {"username": user, "password": password})
        if answer.status == 200:
            self.csrf = str(answer.json()["csrf_token"])
        return answer


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("web")) as running:
        yield running


@pytest.fixture
def client(daemon: RunningDaemon) -> Client:
    client = Client(daemon.port)
    assert client.log_in(daemon.session).status == 200
    return client


def test_login_sets_a_strict_httponly_cookie_and_bad_logins_get_one_line(
        daemon: RunningDaemon) -> None:
    client = Client(daemon.port)
    refused = client.request("POST", "/api/v1/session",
                             {"username": "oneadmin", "password": "wrong"})
    assert refused.status == 401
    assert refused.json()["error"] == "User couldn't be authenticated, aborting call."
    assert client.cookie is None
    assert client.request("GET", "/api/v1/overview").status == 401

    answer = client.log_in(daemon.session)
    assert answer.status == 200
    cookie = answer.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert answer.json()["user"] == {"id": 0, "name": "oneadmin", "gid": 0,
                                     "auth_driver": "core", "enabled": True}
    assert "password" not in answer.body.decode()
    session = client.request("GET", "/api/v1/session").json()
    assert session["csrf_token"] == client.csrf


def test_every_change_needs_the_csrf_token_of_its_session(daemon: RunningDaemon,
                                                         client: Client) -> None:
    body = {"template": "CPU = 1\nMEMORY = 64", "hold": True}
    before = client.request("GET", "/api/v1/vms?state=any").json()["total"]
    missing = client.request("POST", "/api/v1/vms", body)
    assert missing.status == 403 and "CSRF" in str(missing.json()["error"])
    other = Client(daemon.port)
    other.log_in(daemon.session)
    wrong = client.request("POST", "/api/v1/vms", body, headers={"X-CSRF-Token": other.csrf or ""})
    assert wrong.status == 403
    foreign = client.request("POST", "/api/v1/vms", body,
                             headers={"X-CSRF-Token": client.csrf or "",
                                      "Origin": "http://evil.example"})
    assert foreign.status == 403 and "Cross-origin" in str(foreign.json()["error"])
    assert client.request("GET", "/api/v1/vms?state=any").json()["total"] == before

    created = client.change("POST", "/api/v1/vms", body)
    assert created.status == 201
    vm_id = created.json()["id"]
    assert client.request("POST", f"/api/v1/vms/{vm_id}/action",
                          {"action": "terminate-hard"}).status == 403
    logout = client.request("DELETE", "/api/v1/session")
    assert logout.status == 403  # logging out is a change too
    assert client.change("DELETE", "/api/v1/session").status == 200
    assert client.request("GET", "/api/v1/overview").status == 401


def test_scripts_use_basic_credentials_without_csrf(daemon: RunningDaemon) -> None:
    token = base64.b64encode(daemon.session.encode()).decode()
    script = Client(daemon.port, extra={"Authorization": f"Basic {token}"})
    created = script.request("POST", "/api/v1/vms", {"template": "CPU=1 MEMORY=32", "hold": True})
    assert created.status == 201
    bad = base64.b64encode(b"oneadmin:nope").decode()
    refused = Client(daemon.port, extra={"Authorization": f"Basic {bad}"}).request(
        "GET", "/api/v1/vms")
    assert refused.status == 401
    garbage = Client(daemon.port, extra={"Authorization": "Basic !!!"}).request(
        "GET", "/api/v1/vms")
    assert garbage.status == 401 and garbage.json()["error"] == "Malformed Basic credentials"


def test_bad_input_gets_one_clear_line_and_the_daemon_keeps_serving(client: Client) -> None:
    held = client.change("POST", "/api/v1/vms", {"template": "CPU = 1\nMEMORY = 16", "hold": True})
    assert held.status == 201, held.json()
    vm_id = held.json()["id"]
    cases = [
        (client.change("POST", "/api/v1/vms", {"template": "CPU = 1"}), 400, "MEMORY"),
        (client.change("POST", "/api/v1/vms", {"template": 'CPU = "1\nMEMORY = 2'}), 400,
         "line"),
        (client.change("POST", "/api/v1/vms", {"template": 5}), 400,
         "Field 'template' must be a string"),
        (client.request("POST", "/api/v1/vms", headers={"X-CSRF-Token": client.csrf or "",
                                                        "Content-Type": "application/json"},
                        raw=b"{not json"), 400, "not valid JSON"),
        (client.request("GET", "/api/v1/vms/999999"), 404, "VM 999999"),
        (client.request("GET", "/api/v1/vms/x1"), 400, "Invalid id"),
        (client.request("GET", "/api/v1/vms?sort=password"), 400, "Unknown sort key"),
        (client.request("GET", "/api/v1/vms?limit=100000"), 400, "'limit'"),
        (client.request("GET", "/api/v1/vms?state=sleepy"), 400, "Unknown VM state"),
        (client.change("POST", "/api/v1/vms/999999/action", {"action": "terminate"}), 404,
         "VM 999999"),
        (client.change("POST", f"/api/v1/vms/{vm_id}/action", {"action": "fly"}), 409,
         'Action "fly" is not supported'),
    ]
    for answer, status, words in cases:
        error = answer.json()["error"]
        assert answer.status == status, (status, error)
        assert isinstance(error, str) and words in error and "\n" not in error
        assert error != "Internal error"
    assert client.request("GET", "/api/v1/overview").status == 200


def test_vms_are_searched_sorted_and_paged_by_the_server(daemon: RunningDaemon,
                                                        client: Client) -> None:
    one = pyone.OneServer(daemon.url, session=daemon.session)
    ids = [one.vm.allocate(f'NAME = "web-{n:02d}"\nCPU = 0.1\nMEMORY = 16', True)
           for n in range(12)]
    page = client.request("GET", "/api/v1/vms?q=web-&sort=name&order=desc&limit=5").json()
    assert page["total"] == 12
    assert [vm["name"] for vm in page["vms"]] == [f"web-{n:02d}" for n in (11, 10, 9, 8, 7)]
    second = client.request(
        "GET", "/api/v1/vms?q=WEB-&sort=name&order=desc&limit=5&offset=10").json()
    assert [vm["name"] for vm in second["vms"]] == ["web-01", "web-00"]
    held = client.request("GET", "/api/v1/vms?q=web-&state=hold&limit=500").json()
    assert held["total"] == 12 and {vm["short_state"] for vm in held["vms"]} == {"hold"}
    assert client.request("GET", "/api/v1/vms?q=web-&state=active").json()["total"] == 0
    assert client.request("GET", "/api/v1/vms?q=web-&where=cloud").json()["total"] == 0
    by_id = client.request("GET", f"/api/v1/vms?q={ids[3]}").json()
    assert ids[3] in [vm["id"] for vm in by_id["vms"]]
    # A LIKE wildcard is searched for literally.
    assert client.request("GET", "/api/v1/vms?q=%25").json()["total"] == 0

    detail = client.request("GET", f"/api/v1/vms/{ids[0]}").json()
    assert detail["name"] == "web-00" and detail["state_name"] == "HOLD"
    assert "release" in detail["actions"] and "New state is HOLD" in detail["log"][-1]
    released = client.change("POST", f"/api/v1/vms/{ids[0]}/action", {"action": "release"})
    assert released.status == 200
    assert client.request("GET", f"/api/v1/vms/{ids[0]}").json()["state_name"] == "PENDING"


def test_the_event_stream_pushes_changes_as_they_are_written(daemon: RunningDaemon,
                                                            client: Client) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
    connection.request("GET", "/api/v1/events",
                       headers={"Cookie": f"cloudburst_session={client.cookie}"})
    response = connection.getresponse()
    try:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        assert response.readline() == b"retry: 2000\n"
        assert response.readline() == b"event: hello\n"
        one = pyone.OneServer(daemon.url, session=daemon.session)
        vm_id = one.vm.allocate('NAME = "streamed"\nCPU = 1\nMEMORY = 8', True)
        started = time.monotonic()
        seen = None
        while time.monotonic() - started < 5 and seen is None:
            line = response.readline()
            if line.startswith(b"data: ") and b'"streamed"' in line:
                seen = json.loads(line[6:])
        assert seen is not None, "the change was not pushed"
        assert time.monotonic() - started < 1.5
        vm = next(vm for vm in seen["vms"] if vm["id"] == vm_id)
        assert vm["short_state"] == "hold" and "template" not in vm
    finally:
        connection.close()
    anonymous = Client(client.port).request("GET", "/api/v1/events")
    assert anonymous.status == 401


def test_dashboard_assets_are_local_and_the_xmlrpc_api_is_unchanged(daemon: RunningDaemon,
                                                                   client: Client) -> None:
    page = client.request("GET", "/")
    assert page.status == 200 and b"<title>cloudburst</title>" in page.body
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    for path in sorted(STATIC.rglob("*")):
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "http://" not in text and "https://" not in text, path
            served = client.request("GET", f"/static/{path.relative_to(STATIC).as_posix()}")
            assert served.status == 200 and served.body == path.read_bytes()
    assert client.request("GET", "/static/../web/api.py").status == 404
    one = pyone.OneServer(f"http://127.0.0.1:{daemon.port}/", session=daemon.session)
    assert one.system.version()


def test_the_openapi_document_names_every_route_and_its_copy_in_docs_matches(
        client: Client) -> None:
    served = client.request("GET", "/api/v1/openapi.json")
    assert served.status == 200
    document = json.loads(served.body)
    assert served.body == (REPO / "docs" / "api-v1.openapi.json").read_bytes()
    documented = {(method.upper(), path) for path, operations in document["paths"].items()
                  for method in operations}
    assert documented == {(method, path) for method, path, _ in ROUTES}


def test_a_host_without_room_shows_its_cooloff_and_the_recall_on_the_timeline(
        tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session)
        host_id = one.host.allocate("full-1", "dummy", "dummy", -1)
        one.host.update(host_id, "DUMMY_DEPLOY = capacity", 1)
        client = Client(daemon.port)
        client.log_in(daemon.session)

        def monitored() -> bool:
            host = client.request("GET", f"/api/v1/hosts/{host_id}").json()
            return host["short_state"] == "on" and host["attributes"].get(  # type: ignore[union-attr]
                "DUMMY_DEPLOY") == "capacity"

        wait_for(monitored, timeout=20)
        vm_id = one.vm.allocate("CPU = 1\nMEMORY = 64", False)

        def cooling() -> dict[str, object] | None:
            host = client.request("GET", "/api/v1/hosts").json()["hosts"][0]  # type: ignore[index]
            return host["cooloff"]  # type: ignore[no-any-return]

        cooloff = wait_for(cooling, timeout=20)
        # (CAPACITY_COOLOFF, 120 s by default)
        assert cooloff["vms"] == 1 and 0 < float(str(cooloff["seconds_left"])) <= 120
        listed = client.request("GET", "/api/v1/hosts").json()["hosts"][0]  # type: ignore[index]
        detail = client.request("GET", f"/api/v1/hosts/{host_id}").json()
        for shown in (listed, detail):
            site = shown["site_cooloffs"]  # type: ignore[index]
            assert [c["INSTANCE_TYPE"] for c in site] == ["*"]  # type: ignore[union-attr]
            assert "no capacity" in site[0]["REASON"]  # type: ignore[index]
        timeline = client.request("GET", "/api/v1/overview").json()["timeline"]
        kinds = [(entry["kind"], entry["vm_id"]) for entry in timeline]  # type: ignore[union-attr]
        assert kinds[:2] == [("local", vm_id), ("recalled", vm_id)]
        vm = client.request("GET", f"/api/v1/vms/{vm_id}").json()
        assert vm["state_name"] == "PENDING"
        assert "its stay on full-1 ended: no capacity" in str(vm["placement"])


def test_another_user_sees_and_acts_only_on_what_the_acls_allow(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session)
        user_id = one.user.allocate("alice", "alice-secret-1", "core", [])
        admin = Client(daemon.port)
        admin.log_in(daemon.session)
        theirs = admin.change("POST", "/api/v1/vms",
                              {"template": 'NAME="admins"\nCPU=1\nMEMORY=64', "hold": True})
        admin_vm = theirs.json()["id"]

        alice = Client(daemon.port)
        assert alice.log_in("alice:alice-secret-1").status == 200
        stream = http.client.HTTPConnection("127.0.0.1", daemon.port, timeout=10)
        stream.request("GET", "/api/v1/events",
                       headers={"Cookie": f"cloudburst_session={alice.cookie}"})
        events = stream.getresponse()
        try:
            assert events.readline() == b"retry: 2000\n"
            assert events.readline() == b"event: hello\n"
            assert events.readline().startswith(b"data: ")
            mine = alice.change("POST", "/api/v1/vms",
                                {"template": 'NAME="alices"\nCPU=1\nMEMORY=64', "hold": True})
            assert mine.status == 201
            alice_vm = mine.json()["id"]
            admin.change("POST", f"/api/v1/vms/{admin_vm}/action", {"action": "release"})
            admin.change("POST", "/api/v1/vms",
                         {"template": 'NAME="admins-2"\nCPU=1\nMEMORY=64', "hold": True})
            pushed = b""
            deadline = time.monotonic() + 3
            while time.monotonic() < deadline and b'"alices"' not in pushed:
                pushed += events.readline()
            time.sleep(1)  # anything about oneadmin's VMs would have come by now
        finally:
            stream.close()
        assert b'"alices"' in pushed and b'"admins' not in pushed

        listed = alice.request("GET", "/api/v1/vms?state=any").json()
        assert [vm["id"] for vm in listed["vms"]] == [alice_vm] and listed["total"] == 1
        assert alice.request("GET", "/api/v1/overview").json()["vms_total"] == 1
        hidden = alice.request("GET", f"/api/v1/vms/{admin_vm}")
        assert hidden.status == 403 and "Not authorized" in str(hidden.json()["error"])
        refused = alice.change("POST", f"/api/v1/vms/{admin_vm}/action",
                               {"action": "terminate-hard"})
        assert refused.status == 403
        assert one.vm.info(admin_vm).STATE != 6
        assert alice.change("POST", f"/api/v1/vms/{admin_vm}/deploy",
                            {"host_id": 0}).status in (403, 404)
        users = alice.request("GET", "/api/v1/users").json()["users"]
        assert [u["name"] for u in users] == ["alice"]  # type: ignore[index]
        assert alice.request("GET", "/api/v1/acl").status == 403
        rules = admin.request("GET", "/api/v1/acl").json()["rules"]
        assert rules and all("@" in rule["rule"] or "*" in rule["rule"]  # type: ignore[index]
                             for rule in rules)  # type: ignore[union-attr]
        groups = admin.request("GET", "/api/v1/groups").json()["groups"]
        assert {"oneadmin", "users"} <= {g["name"] for g in groups}  # type: ignore[index,union-attr]
        users_group = next(g for g in groups if g["name"] == "users")  # type: ignore[index,union-attr]
        assert user_id in users_group["users"]  # type: ignore[index]
        assert admin.request("GET", f"/api/v1/vms/{alice_vm}").status == 200

        # Both APIs write one audit trail, under the same method names.
        ok, text, _ = xmlrpc.client.ServerProxy(daemon.url).one.audit.info(
            daemon.session, 0, user_id, 100)
        assert ok and "one.vm.allocate" in text and "one.vm.action" in text


def test_migrate_to_a_host_of_the_same_driver_and_recover_a_failed_boot(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session)
        first, second = (one.host.allocate(name, "dummy", "dummy", -1)
                         for name in ("mig-1", "mig-2"))
        one.host.status(second, 1)  # disabled while the VM is placed: it lands on mig-1
        wait_for(lambda: one.host.info(first).STATE == 2, timeout=30)
        admin = Client(daemon.port)
        admin.log_in(daemon.session)
        vm_id = admin.change("POST", "/api/v1/vms", {"template": "CPU=0.5\nMEMORY=64"}
                             ).json()["id"]
        wait_for(lambda: one.vm.info(vm_id).LCM_STATE == 3, timeout=30)
        assert first == one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-1].HID
        detail = admin.request("GET", f"/api/v1/vms/{vm_id}").json()
        assert detail["migrate"] == {"cold": True, "live": True}
        assert "retry" not in detail["recover"] and "delete" in detail["recover"]  # type: ignore[operator]
        # A disabled host is no target; once enabled it is the only one (not the VM's own).
        assert admin.request("GET", f"/api/v1/vms/{vm_id}/migrate").json()["hosts"] == []
        one.host.status(second, 0)
        targets = admin.request("GET", f"/api/v1/vms/{vm_id}/migrate").json()
        assert targets["cold"] and targets["live"]
        assert [host["name"] for host in targets["hosts"]] == ["mig-2"]  # type: ignore[union-attr,index]

        refusals = [
            (admin.change("POST", f"/api/v1/vms/{vm_id}/migrate", {"host_id": first}), 409,
             "already on host mig-1"),
            (admin.change("POST", f"/api/v1/vms/{vm_id}/migrate", {"host_id": 999}), 404,
             "HOST 999"),
            (admin.change("POST", f"/api/v1/vms/{vm_id}/migrate", {"host_id": "x"}), 400,
             "Field 'host_id' must be an integer"),
            (admin.change("POST", f"/api/v1/vms/{vm_id}/recover", {"operation": "reboot"}),
             400, "Unknown recover operation 'reboot'"),
            (admin.change("POST", f"/api/v1/vms/{vm_id}/recover", {"operation": "retry"}),
             409, "not available for state ACTIVE/RUNNING"),
            (admin.request("POST", f"/api/v1/vms/{vm_id}/migrate", {"host_id": second}), 403,
             "CSRF"),
        ]
        for answer, status, words in refusals:
            error = str(answer.json()["error"])
            assert answer.status == status and words in error, (status, error)
        moved = admin.change("POST", f"/api/v1/vms/{vm_id}/migrate",
                             {"host_id": second, "live": True})
        assert moved.status == 200 and moved.json()["action"] == "live-migrate"

        def on_second() -> bool:
            vm = one.vm.info(vm_id)
            return vm.LCM_STATE == 3 and second == vm.HISTORY_RECORDS.HISTORY[-1].HID

        wait_for(on_second, timeout=30)

        # A boot that fails leaves BOOT_FAILURE; recover --retry boots it again.
        one.host.update(first, "DUMMY_DEPLOY = failure", 1)
        failing = admin.change("POST", "/api/v1/vms", {"template": "CPU=0.5\nMEMORY=64",
                                                       "hold": True}).json()["id"]
        admin.change("POST", f"/api/v1/vms/{failing}/deploy", {"host_id": first})
        wait_for(lambda: one.vm.info(failing).LCM_STATE == 36, timeout=30)  # BOOT_FAILURE
        failed = admin.request("GET", f"/api/v1/vms/{failing}").json()
        assert "retry" in failed["recover"] and "success" in failed["recover"]  # type: ignore[operator]
        assert failed["migrate"] == {"cold": False, "live": False}
        assert admin.request("GET", f"/api/v1/vms/{failing}/migrate").json() == {
            "cold": False, "live": False, "hosts": []}
        one.host.update(first, "DUMMY_DEPLOY = success", 1)
        retried = admin.change("POST", f"/api/v1/vms/{failing}/recover", {"operation": "retry"})
        assert retried.status == 200 and retried.json()["action"] == "recover-retry"
        wait_for(lambda: one.vm.info(failing).LCM_STATE == 3, timeout=30)

        # Another user may not migrate or recover oneadmin's VMs; both calls are audited.
        user_id = one.user.allocate("carol", "carol-secret-1", "core", [])
        carol = Client(daemon.port)
        assert carol.log_in("carol:carol-secret-1").status == 200
        assert carol.change("POST", f"/api/v1/vms/{vm_id}/migrate",
                            {"host_id": first}).status == 403
        assert carol.change("POST", f"/api/v1/vms/{failing}/recover",
                            {"operation": "delete"}).status == 403
        assert carol.request("GET", f"/api/v1/vms/{vm_id}/migrate").status == 403
        assert one.vm.info(failing).STATE == 3
        ok, text, _ = xmlrpc.client.ServerProxy(daemon.url).one.audit.info(
            daemon.session, 0, -1, 1000)
        assert ok and "one.vm.migrate" in text and "one.vm.recover" in text
        _, carols, _ = xmlrpc.client.ServerProxy(daemon.url).one.audit.info(
            daemon.session, 0, user_id, 100)
        assert "one.vm.migrate" in carols and "<SUCCESS>0</SUCCESS>" in carols


def _json_quota(owner: dict[str, object]) -> dict[int, dict[str, tuple[float, float]]]:
    """A ``/quotas`` owner as ``{cluster: {metric: (limit as set, used)}}``."""
    return {int(quota["cluster_id"]): {  # type: ignore[index]
                str(m["metric"]): (float(m["limit"]), float(m["used"]))  # type: ignore[index]
                for m in quota["metrics"]}  # type: ignore[index]
            for quota in owner["quotas"]}  # type: ignore[attr-defined]


def test_quotas_and_the_audit_trail_match_the_xmlrpc_side(tmp_path: Path) -> None:
    with start_daemon(tmp_path) as daemon:
        one = pyone.OneServer(daemon.url, session=daemon.session)
        dave = one.user.allocate("dave", "dave-secret-1", "core", [])
        one.user.quota(dave, "VM = [ VMS = 2, CPU = 1.5, HOURLY_COST = 0.5, "
                             "MONTHLY_COST = 20 ]\nVM = [ CLUSTER_ID = 0, VMS = 1 ]")
        one.group.quota(1, "VM = [ VMS = 10 ]")
        one.userquota.update("VM = [ MEMORY = 4096 ]")
        user = Client(daemon.port)
        assert user.log_in("dave:dave-secret-1").status == 200
        assert user.change("POST", "/api/v1/vms", {"template": "CPU=0.5\nMEMORY=64",
                                                   "hold": True}).status == 201
        over = user.change("POST", "/api/v1/vms", {"template": "CPU=2\nMEMORY=64"})
        assert over.status == 403 and "CPU quota" in str(over.json()["error"])  # as oned: 512
        admin = Client(daemon.port)
        admin.log_in(daemon.session)

        listed = admin.request("GET", "/api/v1/quotas").json()
        users = {u["name"]: u for u in listed["users"]}  # type: ignore[union-attr,index]
        assert users["oneadmin"]["exempt"] and not users["dave"]["exempt"]
        shown = _json_quota(users["dave"])
        assert shown == vm_quota(daemon.url, daemon.session, "user", dave)
        assert shown[-1]["VMS"] == (2.0, 1.0) and shown[-1]["HOURLY_COST"] == (0.5, 0.0)
        assert shown[0]["VMS"] == (1.0, 0.0)
        # MEMORY is not set for dave: the default applies.
        memory = next(m for m in users["dave"]["quotas"][0]["metrics"]  # type: ignore[index]
                      if m["metric"] == "MEMORY")
        assert memory["limit"] == -1 and memory["effective"] == 4096 and memory["used"] == 64
        groups = {g["name"]: g for g in listed["groups"]}  # type: ignore[union-attr,index]
        assert _json_quota(groups["users"]) == vm_quota(daemon.url, daemon.session, "group", 1)
        assert listed["defaults"]["user"] == [  # type: ignore[index]
            {"cluster_id": -1, "limits": {"MEMORY": 4096}}]

        # A user sees its own quota and its group's, nobody else's, and no audit trail.
        own = user.request("GET", "/api/v1/quotas").json()
        assert [u["name"] for u in own["users"]] == ["dave"]  # type: ignore[union-attr,index]
        assert [g["name"] for g in own["groups"]] == ["users"]  # type: ignore[union-attr,index]
        refused = user.request("GET", "/api/v1/audit")
        assert refused.status == 403 and "Not authorized" in str(refused.json()["error"])

        trail = admin.request("GET", f"/api/v1/audit?uid={dave}").json()["entries"]
        assert [e["id"] for e in trail] == audit_ids(  # type: ignore[union-attr,index]
            daemon.url, daemon.session, dave)
        assert [(e["method"], e["success"]) for e in trail] == [  # type: ignore[union-attr,index]
            ("one.vm.allocate", True), ("one.vm.allocate", False)]
        assert "CPU quota" in str(trail[-1]["message"])  # type: ignore[index]
        everyone = admin.request("GET", "/api/v1/audit?limit=3").json()["entries"]
        assert [e["id"] for e in everyone] == audit_ids(  # type: ignore[union-attr,index]
            daemon.url, daemon.session, -1, 3)
        bad = admin.request("GET", "/api/v1/audit?uid=dave")
        assert bad.status == 400 and "'uid' must be an integer" in str(bad.json()["error"])

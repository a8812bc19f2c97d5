"""The dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

One real daemon with two small local dummy hosts and the shipped
``example_py`` cloud provider. The browser logs in with oneadmin's password,
then watches a burst happen live: VMs created over XML-RPC (as another
client would) appear on the local hosts, then, once those are full, on the
cloud site, pushed by the daemon's event stream (the page is never
reloaded). It screenshots the overview during the burst, terminates a VM from
its page (with the confirmation), and fails to act without the CSRF token.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyone
import pytest
from burst_helpers import RunningDaemon, conf_text, running_daemon, wait_for
from playwright.sync_api import Browser, Page, expect, sync_playwright
from tenancy_xml import audit_ids, vm_quota

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
#: Where screenshots are kept for the team's notes (when that folder exists).
NOTES = Path("/work/notes")

PROVIDER = """
IM_MAD = [ name = "im_example_py", executable = "one_im_sh", arguments = "-t 1 -r 0 example_py" ]
VM_MAD = [ name = "vmm_example_py", executable = "one_vmm_sh",
           arguments = "-t 15 -r 0 -w 60 example_py", type = "xml" ]
"""
#: Fits once on each local host (100 = one CPU), else bursts to example_py.
BURSTABLE = ('CPU = 1\nMEMORY = 128\nCPU_COST = 0.05\nMEMORY_COST = 0.0001\n'
             'PUBLIC_CLOUD = [ TYPE = "example_py", IMAGE = "debian-12" ]\n')
RUNNING = 3


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[RunningDaemon]:
    with running_daemon(tmp_path, conf_text(PROVIDER)) as running:
        yield running


@pytest.fixture
def one(daemon: RunningDaemon) -> pyone.OneServer:
    return pyone.OneServer(daemon.url, session=daemon.session)


def _hosts(one: pyone.OneServer) -> tuple[list[int], int]:
    local = []
    for name in ("local-1", "local-2"):
        host_id = one.host.allocate(name, "dummy", "dummy", -1)
        one.host.update(host_id, "DUMMY_TOTALCPU = 100", 1)
        local.append(host_id)
    cloud = one.host.allocate("cloud-py", "im_example_py", "vmm_example_py", -1)
    for host_id in (*local, cloud):
        wait_for(lambda h=host_id: one.host.info(h).STATE == 2
                 and one.host.info(h).HOST_SHARE.MAX_CPU in (100, 500), timeout=30)
    return local, cloud


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


def _log_in(page: Page, daemon: RunningDaemon) -> None:
    user, password = daemon.session.split(":", 1)
    page.goto(f"http://127.0.0.1:{daemon.port}/")
    page.get_by_label("User").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("heading", name="Overview").wait_for()


def _screenshot(page: Page, tmp_path: Path, name: str) -> None:
    """A full-page screenshot in the test's directory, copied to the team's notes."""
    shot = tmp_path / name
    page.screenshot(path=str(shot), full_page=True)
    if NOTES.is_dir():
        shutil.copyfile(shot, NOTES / name)


def test_login_burst_live_terminate_and_csrf(daemon: RunningDaemon, one: pyone.OneServer,
                                            browser: Browser, tmp_path: Path) -> None:
    local, cloud = _hosts(one)
    context = browser.new_context(viewport={"width": 1366, "height": 860})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _log_in(page, daemon)

    cookie = next(c for c in context.cookies() if c["name"] == "cloudburst_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
    page.get_by_text("● live").wait_for()
    # A marker on the page's window: it survives only if the page is never reloaded,
    # so every later change seen on it was pushed.
    page.evaluate("window.__notReloaded = true")

    # Fill the local hosts: one VM each.
    first = [one.vm.allocate(BURSTABLE, False) for _ in range(2)]
    timeline = page.get_by_role("list", name="Placement timeline")
    wait_for(lambda: timeline.get_by_text("placed locally").count() == 2, timeout=30)
    page.get_by_test_id("local-vms").filter(has_text="2").wait_for()

    # The next ones burst to the cloud site.
    burst = [one.vm.allocate(BURSTABLE, False) for _ in range(3)]
    wait_for(lambda: timeline.get_by_text("burst to cloud").count() == 3, timeout=30)
    page.get_by_test_id("cloud-vms").filter(has_text="3").wait_for(timeout=15000)
    # 3 cloud VMs x (CPU 1 x 0.05 + 128 MB x 0.0001) per hour
    page.get_by_text("$0.1884").wait_for(timeout=15000)
    _screenshot(page, tmp_path, "dashboard-overview.png")
    for vm_id in first:
        assert one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-1].HID in local
    for vm_id in burst:
        assert cloud == one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-1].HID
    assert page.evaluate("window.__notReloaded") is True
    for vm_id in first + burst:
        wait_for(lambda v=vm_id: one.vm.info(v).LCM_STATE == RUNNING, timeout=30)

    # Without the CSRF token the daemon refuses to act, whatever the cookie says.
    victim = burst[0]
    refused = page.evaluate("""async (id) => {
        const answer = await fetch(`/api/v1/vms/${id}/action`, {method: "POST",
            headers: {"Content-Type": "application/json"},
            body: JSON.stringify({action: "terminate-hard"})});
        return [answer.status, (await answer.json()).error];
    }""", victim)
    assert refused[0] == 403 and "CSRF" in refused[1]
    assert one.vm.info(victim).LCM_STATE == RUNNING

    # Terminate it from its page, confirming in the dialog; the page follows live.
    page.get_by_role("link", name="VMs").click()
    page.get_by_role("link", name=re.compile(rf"^one-{victim}$")).click()
    page.get_by_role("heading", name=re.compile(rf"^VM {victim}:")).wait_for()
    page.get_by_role("button", name="terminate", exact=True).click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"terminate VM {victim}").wait_for()
    dialog.get_by_role("button", name="Confirm").click()
    wait_for(lambda: one.vm.info(victim).STATE == 6, timeout=30)
    page.locator(".facts").get_by_text("DONE").wait_for(timeout=10000)
    assert page.evaluate("window.__notReloaded") is True

    # Logging out ends the session: the API refuses the old cookie.
    page.get_by_role("button", name="Log out").click()
    page.get_by_role("heading", name="Log in to cloudburst").wait_for()
    status = page.evaluate("async () => (await fetch('/api/v1/overview')).status")
    assert status == 401

    # Another user sees none of oneadmin's VMs, on any page.
    one.user.allocate("bob", "bob-secret-1", "core", [])
    page.get_by_label("User").fill("bob")
    page.get_by_label("Password").fill("bob-secret-1")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    page.get_by_role("link", name="Overview").click()
    page.get_by_role("heading", name="VMs: 0").wait_for()
    page.get_by_role("link", name="VMs", exact=True).click()
    page.get_by_role("status").filter(has_text="0 VMs").wait_for()
    page.goto(f"http://127.0.0.1:{daemon.port}/#/vms/{first[0]}")
    page.get_by_role("alert").filter(has_text="Not authorized").wait_for()
    assert page.get_by_role("heading", name=re.compile(r"^VM \d+:")).count() == 0
    assert errors == []
    context.close()


#: Form controls without a label (by ``for``, wrapping ``<label>`` or ``aria-label``).
UNLABELLED = """() => [...document.querySelectorAll("input, select, textarea")]
    .filter((e) => e.type !== "hidden" && !e.closest("label") && !e.getAttribute("aria-label")
            && !(e.id && document.querySelector(`label[for="${e.id}"]`)))
    .map((e) => e.outerHTML)"""


def test_instantiate_search_deploy_and_keyboard(daemon: RunningDaemon, one: pyone.OneServer,
                                              browser: Browser) -> None:
    host_id = one.host.allocate("only-local", "dummy", "dummy", -1)
    wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=30)
    template_id = one.template.allocate('NAME = "web-small"\nCPU = 0.5\nMEMORY = 64\n')
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _log_in(page, daemon)

    # Keyboard only: the skip link comes first, then the navigation.
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Hosts"
    page.keyboard.press("Enter")
    page.get_by_role("heading", name="only-local").wait_for()

    # Instantiate three held VMs from the template's form.
    page.get_by_role("link", name="Templates").click()
    form = page.get_by_role("form", name="Instantiate web-small")
    form.get_by_label("VM name").fill("shop")
    form.get_by_label("Count").fill("3")
    form.get_by_label("on hold").check()
    form.get_by_role("button", name="Instantiate").click()
    page.get_by_role("alert").filter(has_text="Created VMs").wait_for()
    assert page.evaluate(UNLABELLED) == []
    created = [vm for vm in one.vmpool.info(-2, -1, -1, -1).VM if vm.NAME == "shop"]
    assert len(created) == 3 and {vm.STATE for vm in created} == {2}
    assert {int(vm.TEMPLATE.get("TEMPLATE_ID", template_id)) for vm in created} == {template_id}

    # Find them by search and state filter; the table is sorted and paged by the server.
    page.get_by_role("link", name="VMs").click()
    page.get_by_label("Search").fill("sho")
    page.get_by_label("State").select_option("hold")
    page.get_by_role("status").filter(has_text="3 VMs").wait_for()
    assert page.evaluate(UNLABELLED) == []
    page.get_by_role("button", name="ID ▲").click()  # sorted by id ascending at first
    page.get_by_role("button", name="ID ▼").wait_for()
    assert page.get_by_role("columnheader", name="ID ▼").get_attribute("aria-sort") == \
        "descending"
    first_row = page.locator("tbody tr").first
    newest = max(vm.ID for vm in created)
    # The header turns at the click; the rows follow when the server's sorted page arrives.
    expect(first_row).to_have_attribute("data-vm", str(newest), timeout=20000)

    # Deploy a held VM to the chosen host from its page; the page follows it to RUNNING.
    first_row.get_by_role("link").click()
    page.get_by_label("Deploy to").select_option(str(host_id))
    page.get_by_role("button", name="Deploy").click()
    page.locator(".facts").get_by_text("RUNNING").wait_for(timeout=20000)
    assert host_id == one.vm.info(newest).HISTORY_RECORDS.HISTORY[-1].HID
    # An action the state refuses shows the API's one-line message.
    answer = page.evaluate("""async (id) => {
        const session = await (await fetch("/api/v1/session")).json();
        const r = await fetch(`/api/v1/vms/${id}/action`, {method: "POST",
            headers: {"Content-Type": "application/json", "X-CSRF-Token": session.csrf_token},
            body: JSON.stringify({action: "release"})});
        return [r.status, (await r.json()).error];
    }""", newest)
    assert answer[0] == 409 and "release" in answer[1] and "RUNNING" in answer[1]

    # oneadmin's pages: users, groups and ACL rules.
    page.get_by_role("link", name="Users").click()
    page.get_by_role("heading", name="ACL rules").wait_for()
    assert page.get_by_role("table", name="Groups").get_by_role("cell", name="users").count() == 1
    assert page.get_by_role("table", name="ACL rules").locator("tbody tr").count() >= 1
    assert errors == []
    page.close()


def test_vm_page_actions_migrate_and_recover(daemon: RunningDaemon, one: pyone.OneServer,
                                            browser: Browser, tmp_path: Path) -> None:
    local, _cloud = _hosts(one)
    vm_id = one.vm.allocate('NAME = "mover"\nCPU = 0.5\nMEMORY = 64', True)
    one.vm.deploy(vm_id, local[0])
    wait_for(lambda: one.vm.info(vm_id).LCM_STATE == RUNNING, timeout=30)
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _log_in(page, daemon)
    page.goto(f"http://127.0.0.1:{daemon.port}/#/vms/{vm_id}")
    facts = page.locator(".facts").first
    facts.get_by_text("RUNNING").wait_for(timeout=20000)

    # The state's actions are buttons (from the transition table); poweroff asks first.
    actions = page.get_by_role("group", name="Actions")
    for name in ("poweroff", "suspend", "stop", "undeploy", "reboot", "terminate"):
        assert actions.get_by_role("button", name=name, exact=True).count() == 1, name
    actions.get_by_role("button", name="poweroff", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm").click()
    wait_for(lambda: one.vm.info(vm_id).STATE == 8, timeout=30)  # POWEROFF
    facts.get_by_text("POWEROFF").wait_for(timeout=20000)
    assert page.get_by_role("form", name="Migrate").count() == 0  # only RUNNING VMs move
    actions.get_by_role("button", name="resume", exact=True).click()
    wait_for(lambda: one.vm.info(vm_id).LCM_STATE == RUNNING, timeout=30)
    facts.get_by_text("RUNNING").wait_for(timeout=20000)

    # Migrate through the form: the other dummy host is the only choice; live is allowed.
    form = page.get_by_role("form", name="Migrate")
    form.get_by_label("Migrate to").select_option(str(local[1]))
    assert form.get_by_label("Migrate to").locator("option").count() == 1
    form.get_by_label("live", exact=True).check()
    assert page.evaluate(UNLABELLED) == []
    form.get_by_role("button", name="Migrate").click()

    def moved() -> bool:
        vm = one.vm.info(vm_id)
        return vm.LCM_STATE == RUNNING and local[1] == vm.HISTORY_RECORDS.HISTORY[-1].HID

    wait_for(moved, timeout=30)
    facts.get_by_text("on local-2, local").wait_for(timeout=20000)
    # The stay that ended records how (OpenNebula history action 2: live-migrate).
    assert one.vm.info(vm_id).HISTORY_RECORDS.HISTORY[-2].ACTION == 2

    # A boot that fails: the page offers recover, a destructive choice asks first,
    # --retry boots it again once the host is fixed.
    one.host.update(local[0], "DUMMY_DEPLOY = failure", 1)
    failing = one.vm.allocate('NAME = "fails"\nCPU = 0.5\nMEMORY = 64', True)
    one.vm.deploy(failing, local[0])
    wait_for(lambda: one.vm.info(failing).LCM_STATE == 36, timeout=30)  # BOOT_FAILURE
    page.goto(f"http://127.0.0.1:{daemon.port}/#/vms/{failing}")
    recover = page.get_by_role("form", name="Recover")
    recover.wait_for(timeout=20000)
    assert recover.is_visible()  # opened by itself for a failed VM
    _screenshot(page, tmp_path, "dashboard-vm-recover.png")
    recover.get_by_role("radio", name=re.compile(r"^delete ")).check()
    recover.get_by_role("button", name="Recover").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(f"recover --delete VM {failing}").wait_for()
    dialog.get_by_role("button", name="Cancel").click()
    assert one.vm.info(failing).LCM_STATE == 36
    one.host.update(local[0], "DUMMY_DEPLOY = success", 1)
    recover.get_by_role("radio", name=re.compile(r"^retry ")).check()
    recover.get_by_role("button", name="Recover").click()
    wait_for(lambda: one.vm.info(failing).LCM_STATE == RUNNING, timeout=30)
    page.locator(".facts").first.get_by_text("RUNNING").wait_for(timeout=20000)

    # A host that answers "no capacity" cools off; its card on the hosts page says so.
    one.host.update(local[0], "DUMMY_DEPLOY = capacity", 1)
    refused = one.vm.allocate('NAME = "no-room"\nCPU = 0.5\nMEMORY = 64', True)
    one.vm.deploy(refused, local[0])
    wait_for(lambda: one.host.info(local[0]).TEMPLATE.get("COOLOFF"), timeout=30)
    page.get_by_role("link", name="Hosts").click()
    card = page.get_by_role("article", name=re.compile(r"^local-1"))
    card.get_by_role("heading", name="Instance types cooling off").wait_for(timeout=20000)
    assert "no capacity" in card.get_by_role("listitem").filter(has_text="s left").inner_text()
    assert errors == []
    page.close()


def test_quotas_and_audit_pages_show_what_xmlrpc_says(daemon: RunningDaemon,
                                                      one: pyone.OneServer,
                                                      browser: Browser, tmp_path: Path) -> None:
    _local, cloud = _hosts(one)
    one.host.update(cloud, "PRICE_PER_HOUR = 0.25", 1)
    erin = one.user.allocate("erin", "erin-secret-1", "core", [])
    one.user.quota(erin, "VM = [ VMS = 4, CPU = 3, HOURLY_COST = 1, MONTHLY_COST = 100 ]")
    one.group.quota(1, "VM = [ VMS = 10 ]")
    # Three of erin's VMs: two fill the local hosts, the third bursts at 0.25 an hour.
    as_erin = pyone.OneServer(daemon.url, session="erin:erin-secret-1")
    erins = [as_erin.vm.allocate(BURSTABLE, False) for _ in range(3)]
    for vm_id in erins:
        wait_for(lambda v=vm_id: one.vm.info(v).LCM_STATE == RUNNING, timeout=60)
    assert cloud in {one.vm.info(v).HISTORY_RECORDS.HISTORY[-1].HID for v in erins}
    quota = vm_quota(daemon.url, daemon.session, "user", erin)[-1]
    assert quota["HOURLY_COST"] == (1.0, 0.25) and quota["VMS"] == (4.0, 3.0)

    page = browser.new_page(viewport={"width": 1366, "height": 860})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    _log_in(page, daemon)
    page.get_by_role("link", name="Quotas").click()
    users = page.get_by_role("table", name="User quotas")
    row = users.locator(f'tr[data-owner="{erin}"][data-cluster="-1"]')
    row.wait_for(timeout=20000)
    # Every figure of the row is what one.user.info says (limit as set, use); the
    # month's cost grows by the second, so it lies between a read before and after.
    after = vm_quota(daemon.url, daemon.session, "user", erin)[-1]
    for metric, (limit, used) in quota.items():
        cell = row.locator(f'td[data-metric="{metric}"]')
        shown = float(cell.get_attribute("data-used") or "nan")
        if metric == "MONTHLY_COST":
            assert used <= shown <= after[metric][1]
        else:
            assert shown == pytest.approx(used), metric
        assert float(cell.get_attribute("data-limit") or "nan") == limit, metric
    assert row.locator('td[data-metric="HOURLY_COST"]').inner_text() == "$0.25 / $1"
    assert row.locator('td[data-metric="VMS"]').inner_text() == "3 / 4"
    assert users.locator('tr[data-owner="0"]').get_by_text("no quotas apply").count() == 1
    groups = page.get_by_role("table", name="Group quotas")
    assert groups.locator('tr[data-owner="1"] td[data-metric="VMS"]').inner_text() == "3 / 10"
    _screenshot(page, tmp_path, "dashboard-quotas.png")

    # The audit trail page lists the records one.audit.info gives, newest first.
    page.get_by_role("link", name="Audit").click()
    table = page.get_by_role("table", name="Audit trail")
    table.locator("tbody tr").first.wait_for(timeout=20000)
    expected = audit_ids(daemon.url, daemon.session)
    shown = [int(i) for i in table.locator("tbody tr").evaluate_all(
        "(rows) => rows.map((row) => row.dataset.id)")]
    assert shown == list(reversed(expected))
    page.get_by_label("Caller").select_option(str(erin))
    page.get_by_role("status").filter(has_text="3 records").wait_for(timeout=20000)
    assert table.get_by_text("one.vm.allocate").count() == 3
    assert page.evaluate(UNLABELLED) == []

    # erin sees her own quota and her group's only, and no audit trail.
    page.get_by_role("button", name="Log out").click()
    page.get_by_label("User").fill("erin")
    page.get_by_label("Password").fill("erin-secret-1")
    page.get_by_role("button", name="Log in").click()
    page.get_by_role("button", name="Log out").wait_for()
    assert page.get_by_role("link", name="Audit").is_hidden()
    page.get_by_role("link", name="Quotas").click()
    mine = page.get_by_role("table", name="User quotas")
    mine.locator(f'tr[data-owner="{erin}"]').first.wait_for(timeout=20000)
    owners = mine.locator("tbody tr").evaluate_all("(rows) => rows.map((r) => r.dataset.owner)")
    assert set(owners) == {str(erin)}
    page.goto(f"http://127.0.0.1:{daemon.port}/#/audit")
    page.get_by_role("alert").filter(has_text="Not authorized").wait_for()
    assert page.get_by_role("table", name="Audit trail").count() == 0
    assert errors == []
    page.close()

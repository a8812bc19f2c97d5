"""The read path over real HTTP: ``one.vm.info`` and ``one.vmpool.info`` answer what was
just written, page in oned's order, and authorize every call.

The reads run at once on the daemon's loop on SQLite (``Database.lookup``) and the
pool listing reuses rendered entries keyed by each VM's stamp (version, scheduler
message, owner's and group's names): these tests pin what that must never change.
"""

from __future__ import annotations

import re
import time
import xmlrpc.client
from collections.abc import Iterator

import pytest
from daemon_fixture import RunningDaemon, start_daemon, wait_for

pytestmark = pytest.mark.e2e

HELD = 'NAME = "r"\nCPU = 0.1\nMEMORY = 32\n'


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningDaemon]:
    with start_daemon(tmp_path_factory.mktemp("reads")) as running:
        yield running


class Api:
    """Raw XML-RPC calls with one session; ``ok`` asserts success, ``fail`` failure."""

    def __init__(self, url: str, session: str) -> None:
        self.proxy = xmlrpc.client.ServerProxy(url)
        self.session = session

    def reply(self, method: str, *params: object) -> list[object]:
        answer: list[object] = getattr(self.proxy, method)(self.session, *params)
        return answer

    def ok(self, method: str, *params: object) -> object:
        answer = self.reply(method, *params)
        assert answer[0] is True, answer
        return answer[1]

    def fail(self, method: str, *params: object) -> str:
        answer = self.reply(method, *params)
        assert answer[0] is False, answer
        return str(answer[1])


def ids_in(pool: object) -> list[int]:
    return [int(found) for found in re.findall(r"<VM><ID>(\d+)</ID>", str(pool))]


def field(document: object, name: str) -> list[str]:
    return re.findall(rf"<{name}>([^<]*)</{name}>", str(document))


def admin(daemon: RunningDaemon) -> Api:
    return Api(daemon.url, daemon.session)


def user(daemon: RunningDaemon, name: str, group: int = -1) -> tuple[Api, int]:
    oneadmin = admin(daemon)
    groups = [] if group < 0 else [group]
    uid = int(str(oneadmin.ok("one.user.allocate", name, "pw-" + name, "core", groups)))
    return Api(daemon.url, f"{name}:pw-{name}"), uid


def test_a_read_after_a_write_sees_the_write(daemon: RunningDaemon) -> None:
    oneadmin = admin(daemon)
    vm_id = int(str(oneadmin.ok("one.vm.allocate", HELD, True)))
    # Fill the pool cache with the VM as it is now, in both pool forms.
    for method in ("one.vmpool.info", "one.vmpool.infoextended"):
        assert vm_id in ids_in(oneadmin.ok(method, -2, -1, -1, -1))
    oneadmin.ok("one.vm.rename", vm_id, "renamed")
    assert field(oneadmin.ok("one.vm.info", vm_id), "NAME")[0] == "renamed"
    for method in ("one.vmpool.info", "one.vmpool.infoextended"):
        pool = str(oneadmin.ok(method, -2, vm_id, vm_id, -1))
        assert field(pool, "NAME")[0] == "renamed", method

    # A new owner and group show at once in the document and in both pool forms.
    gid = int(str(oneadmin.ok("one.group.allocate", "readers")))
    _, uid = user(daemon, "reader", gid)
    oneadmin.ok("one.vm.chown", vm_id, uid, gid)
    info = oneadmin.ok("one.vm.info", vm_id)
    assert field(info, "UNAME")[0] == "reader" and field(info, "GNAME")[0] == "readers"
    for method in ("one.vmpool.info", "one.vmpool.infoextended"):
        pool = oneadmin.ok(method, -2, vm_id, vm_id, -1)
        assert (field(pool, "UNAME")[0], field(pool, "GNAME")[0]) == ("reader", "readers")

    oneadmin.ok("one.vm.chown", vm_id, 0, 0)
    pool = oneadmin.ok("one.vmpool.info", -2, vm_id, vm_id, -1)
    assert (field(pool, "UNAME")[0], field(pool, "GNAME")[0]) == ("oneadmin", "oneadmin")

    # A terminated VM leaves the default pool at once and shows DONE by id.
    oneadmin.ok("one.vm.action", "terminate-hard", vm_id)
    assert vm_id not in ids_in(oneadmin.ok("one.vmpool.info", -2, -1, -1, -1))
    assert field(oneadmin.ok("one.vm.info", vm_id), "STATE")[0] == "6"


def test_pool_entries_rendered_ahead_carry_markup_intact(daemon: RunningDaemon) -> None:
    # Pool entries are kept escaped for the reply and rendered ahead of the listings
    # once a VM is quiet (vm_pool_cache.QUIET, 2 s): both must give the client the
    # document vm.info gives, markup characters included.
    oneadmin = admin(daemon)
    vm_id = int(str(oneadmin.ok("one.vm.allocate", HELD, True)))
    oneadmin.ok("one.vm.rename", vm_id, "a<b>&\"c'&amp;")
    shown = field(oneadmin.ok("one.vm.info", vm_id), "NAME")
    assert shown and "&lt;b&gt;&amp;" in shown[0]
    for listed_after in (0.0, 3.0):  # rendered by the listing, then by the warmer
        time.sleep(listed_after)
        for method in ("one.vmpool.info", "one.vmpool.infoextended"):
            pool = oneadmin.ok(method, -2, vm_id, vm_id, -1)
            assert field(pool, "NAME") == shown, (method, listed_after)
    oneadmin.ok("one.vm.action", "terminate-hard", vm_id)
    time.sleep(3.0)  # the warmer forgets a DONE VM; a listing of DONE VMs renders it
    assert ids_in(oneadmin.ok("one.vmpool.info", -2, vm_id, vm_id, 6)) == [vm_id]


def test_pages_come_in_descending_ids_and_cover_the_pool_once(daemon: RunningDaemon) -> None:
    oneadmin = admin(daemon)
    pager, uid = user(daemon, "pager")
    for _ in range(7):
        pager.ok("one.vm.allocate", HELD, True)
    oneadmin.ok("one.vm.allocate", HELD, True)
    for api, flag in ((oneadmin, -2), (pager, -3), (pager, -1), (pager, -2), (oneadmin, uid)):
        whole = ids_in(api.ok("one.vmpool.info", flag, -1, -1, -1))
        assert whole == sorted(whole, reverse=True) and whole
        pages = [ids_in(api.ok("one.vmpool.info", flag, offset, -3, -1))
                 for offset in range(0, len(whole) + 3, 3)]
        assert all(len(page) <= 3 for page in pages)
        assert [vm for page in pages for vm in page] == whole, (flag, pages)
    mine = ids_in(pager.ok("one.vmpool.info", -3, -1, -1, -1))
    assert len(mine) == 7
    # The filtered listing (a user, not oneadmin) never shows another user's VM.
    assert ids_in(pager.ok("one.vmpool.info", -2, -1, -1, -1)) == mine


def test_every_read_is_authorized(daemon: RunningDaemon) -> None:
    oneadmin = admin(daemon)
    owner, _ = user(daemon, "owner")
    other, other_uid = user(daemon, "other")
    vm_id = int(str(owner.ok("one.vm.allocate", HELD, True)))
    own_id = int(str(other.ok("one.vm.allocate", HELD, True)))
    assert field(owner.ok("one.vm.info", vm_id), "ID")[0] == str(vm_id)

    refused = other.fail("one.vm.info", vm_id)
    assert refused.startswith("[one.vm.info] User [") and "Not authorized" in refused
    assert vm_id not in ids_in(other.ok("one.vmpool.info", -2, -1, -1, -1))
    assert other.fail("one.vm.info", 999_999) == \
        "[one.vm.info] Error getting virtual machine [999999]."

    # A wrong password, a disabled user: refused on the very next call.
    wrong = Api(daemon.url, "other:not-the-password")
    assert "authenticated" in wrong.fail("one.vm.info", own_id)
    oneadmin.ok("one.user.enable", other_uid, False)
    assert "authenticated" in other.fail("one.vm.info", own_id)
    assert "authenticated" in other.fail("one.vmpool.info", -2, -1, -1, -1)
    oneadmin.ok("one.user.enable", other_uid, True)
    assert field(other.ok("one.vm.info", own_id), "ID")[0] == str(own_id)

    # Permissions changed by chmod take effect on the next read.
    oneadmin.ok("one.vm.chmod", vm_id, -1, -1, -1, -1, -1, -1, 1, -1, -1)
    assert field(other.ok("one.vm.info", vm_id), "ID")[0] == str(vm_id)
    assert vm_id in ids_in(other.ok("one.vmpool.info", -2, -1, -1, -1))
    oneadmin.ok("one.vm.chmod", vm_id, -1, -1, -1, -1, -1, -1, 0, -1, -1)
    assert "Not authorized" in other.fail("one.vm.info", vm_id)
    assert vm_id not in ids_in(other.ok("one.vmpool.info", -2, -1, -1, -1))


def host_entry(pool: object, host_id: int) -> str:
    """The ``HOST`` element of host ``host_id`` in a host pool document."""
    found = re.search(rf"<HOST><ID>{host_id}</ID>.*?</HOST>", str(pool))
    assert found is not None, pool
    return found.group(0)


def test_the_host_pool_shows_each_change_at_once(daemon: RunningDaemon) -> None:
    # Host entries are kept rendered, keyed by a stamp (the row's version, the last
    # monitoring time, the cluster's name, the VMs placed there): each change of any
    # of them shows in the next listing.
    oneadmin = admin(daemon)
    host_id = int(str(oneadmin.ok("one.host.allocate", "reads-host", "dummy", "dummy", -1)))
    wait_for(lambda: field(oneadmin.ok("one.host.info", host_id), "STATE") == ["2"], 60)
    listed = host_entry(oneadmin.ok("one.hostpool.info"), host_id)
    assert "<VMS></VMS>" in listed and field(listed, "RUNNING_VMS") == ["0"]

    vm_id = int(str(oneadmin.ok("one.vm.allocate", HELD, True)))
    oneadmin.ok("one.vm.deploy", vm_id, host_id)
    wait_for(lambda: field(oneadmin.ok("one.vm.info", vm_id), "LCM_STATE") == ["3"], 60)
    listed = host_entry(oneadmin.ok("one.hostpool.info"), host_id)
    assert f"<VMS><ID>{vm_id}</ID></VMS>" in listed
    assert field(listed, "RUNNING_VMS") == ["1"] and field(listed, "CPU_USAGE") == ["10"]

    oneadmin.ok("one.host.rename", host_id, "reads-renamed")
    cluster_id = int(str(oneadmin.ok("one.cluster.allocate", "reads-cluster")))
    oneadmin.ok("one.cluster.addhost", cluster_id, host_id)
    listed = host_entry(oneadmin.ok("one.hostpool.info"), host_id)
    assert field(listed, "NAME")[0] == "reads-renamed"
    assert (field(listed, "CLUSTER_ID"), field(listed, "CLUSTER")) == (
        [str(cluster_id)], ["reads-cluster"])
    oneadmin.ok("one.cluster.rename", cluster_id, "reads-cluster-2")
    assert field(host_entry(oneadmin.ok("one.hostpool.info"), host_id), "CLUSTER") == [
        "reads-cluster-2"]

    oneadmin.ok("one.vm.action", "terminate-hard", vm_id)
    wait_for(lambda: field(oneadmin.ok("one.vm.info", vm_id), "STATE") == ["6"], 60)
    listed = host_entry(oneadmin.ok("one.hostpool.info"), host_id)
    assert "<VMS></VMS>" in listed and field(listed, "RUNNING_VMS") == ["0"]
    oneadmin.ok("one.host.status", host_id, 1)
    assert field(host_entry(oneadmin.ok("one.hostpool.info"), host_id), "STATE") == ["4"]
    oneadmin.ok("one.cluster.delhost", cluster_id, host_id)
    oneadmin.ok("one.host.delete", host_id)
    assert f"<HOST><ID>{host_id}</ID>" not in str(oneadmin.ok("one.hostpool.info"))

"""``one.vm.info`` authorizes from the VM row it shows, on SQLite and a real PostgreSQL.

The access check of ``one.vm.info`` reads the VM whole (with its history, owner and
group names and its host's cluster) and takes the owner, group, permissions and
cluster from that row; the handler renders the same row. Here the real daemon (no
API server: :func:`cloudburst.api.xmlrpc.dispatch` in-process) answers each caller on
each VM as the check that reads the owner alone decides (owner, group with ``640``,
another group, an ACL rule on the VM's cluster, oneadmin, a missing VM), and the
document shows what the store holds, its cluster-placed history included.
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

import pg_server
from cloudburst.api import xmlrpc
from cloudburst.auth import acl
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.errors import CloudburstError
from cloudburst.model.states import HostState, LcmState
from cloudburst.store import acl_pool

postgres = pg_server.session_fixture()

pytestmark = [pytest.mark.postgres]

TEMPLATE = 'NAME = "v"\nCPU = 0.1\nMEMORY = 64\n'


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest) -> Iterator[str]:
    if request.param == "sqlite":
        yield ""
    else:
        server: pg_server.PostgresServer = request.getfixturevalue("postgres")
        yield server.create_database()


@asynccontextmanager
async def running(home: Path, url: str) -> AsyncIterator[Daemon]:
    settings, _ = load_settings(home)
    daemon = Daemon(dataclasses.replace(settings, db_url=url, monitoring_interval=1))
    await daemon.start(serve_api=False)
    try:
        yield daemon
    finally:
        await daemon.stop()


async def until(what: str, check: object, timeout: float = 30.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not await check():  # type: ignore[operator]
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def test_vm_info_answers_each_caller_as_the_owner_check_decides(
        store_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with running(tmp_path / "home", store_url) as daemon:
            research = await daemon.groups.allocate("research")
            alice = await daemon.users.allocate("alice", "pw", "core", [])
            await daemon.users.allocate("bob", "pw", "core", [])
            await daemon.users.allocate("carol", "pw", "core", [research])
            dave = await daemon.users.allocate("dave", "pw", "core", [research])
            cluster = await daemon.groups.allocate_cluster("east")
            host = await daemon.hosts.allocate("h1", "dummy", "dummy", cluster_id=cluster)

            async def monitored() -> bool:
                return (await daemon.hosts.info(host)).state is HostState.MONITORED

            await until("the host monitored", monitored)
            # alice's VMs: one held, one shared with her group (640), one running on the
            # host in cluster "east" (dave may USE the VMs of that cluster by ACL).
            held = await daemon.vms.allocate(TEMPLATE, hold=True, uid=alice, gid=1)
            shared = await daemon.vms.allocate(TEMPLATE, hold=True, uid=alice, gid=1)
            await daemon.access.chmod("VM", shared, [1, 1, 0, 1, 0, 0, 0, 0, 0])
            placed = await daemon.vms.allocate(TEMPLATE, hold=True, uid=alice, gid=1)
            await daemon.vms.deploy(placed, host)

            async def running_vm() -> bool:
                return (await daemon.vms.info(placed)).lcm_state is LcmState.RUNNING

            await until("the placed VM running", running_vm)
            await daemon.db.write(lambda c: acl_pool.add_rule(
                c, *acl.parse(f"#{dave} VM/%{cluster} USE")))

            admin = daemon.settings.auth_file.read_text(encoding="utf-8").split()[0]
            sessions = {"oneadmin": admin, "alice": "alice:pw", "bob": "bob:pw",
                        "carol": "carol:pw", "dave": "dave:pw"}
            allowed_seen = refused_seen = 0
            for name, session in sessions.items():
                user = await daemon.users.authenticate(session)
                for vm_id in (held, shared, placed, 999):
                    reply = await xmlrpc.dispatch(daemon, "one.vm.info", [session, vm_id])
                    try:  # the decision of the check that reads the owner alone
                        await daemon.access.require(user, "one.vm.info", [vm_id])
                    except CloudburstError as exc:
                        assert reply[0] is False, (name, vm_id, reply)
                        assert exc.message in str(reply[1]) or vm_id == 999, (name, vm_id)
                        refused_seen += vm_id != 999
                        continue
                    assert reply[0] is True, (name, vm_id, reply)
                    document = str(reply[1])
                    assert f"<ID>{vm_id}</ID>" in document
                    assert "<UNAME>alice</UNAME><GNAME>users</GNAME>" in document
                    allowed_seen += 1
                    if vm_id == placed:
                        assert re.search(r"<HOSTNAME>h1</HOSTNAME>", document), document
            # Every caller but carol sees something; carol, bob and dave are refused some.
            assert (allowed_seen, refused_seen) == (3 + 3 + 1 + 0 + 1, 0 + 0 + 2 + 3 + 2)
            missing = await xmlrpc.dispatch(daemon, "one.vm.info", [admin, 999])
            assert missing[0] is False and "999" in str(missing[1])

    asyncio.run(main())

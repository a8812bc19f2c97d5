"""The ``one`` VM driver against real partners, through a proxy that loses replies.

Each test runs twice: against a second cloudburst daemon (as oneadmin), and
against a real OpenNebula 6.10.5 (``one_peer``) with an ordinary account. The
driver is used directly (as the dispatcher would), so each failure mode is
reproduced exactly: the partner creates the VM but its reply never arrives,
the daemon restarts and must find the VM, the credentials are wrong, the rc
file is readable by others, the partner is down.
"""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import pyone
import pytest
from burst_helpers import PARTNER_HOST, partner_driver, partner_spec
from daemon_fixture import free_port, start_daemon, wait_for

from cloudburst.drivers.base import (
    PollState,
    VmRef,
)
from cloudburst.errors import DriverAuthError, DriverError, TransientDriverError
from one_peer import start_peer

pytestmark = pytest.mark.e2e

class LossyProxy:
    """Forwards XML-RPC posts to ``target``; drops the reply of the next N allocations."""

    def __init__(self, target: str) -> None:
        self.target = urlsplit(target)
        self.drop_allocations = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                connection = http.client.HTTPConnection(proxy.target.hostname or "",
                                                        proxy.target.port, timeout=30)
                connection.request("POST", proxy.target.path, body,
                                   {"Content-Type": "text/xml"})
                reply = connection.getresponse()
                data = reply.read()
                connection.close()
                if b"one.vm.allocate" in body and proxy.drop_allocations > 0:
                    proxy.drop_allocations -= 1
                    self.close_connection = True  # the partner did it; we never hear so
                    return
                self.send_response(reply.status)
                self.send_header("Content-Type", "text/xml")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/RPC2"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@dataclass(frozen=True)
class Partner:
    """A partner cloud: its endpoint and the account the driver uses."""

    url: str
    session: str


@pytest.fixture(scope="module", params=["cloudburst", "opennebula"])
def partner(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[Partner]:
    if request.param == "cloudburst":
        with start_daemon(tmp_path_factory.mktemp("partner")) as running:
            one = pyone.OneServer(running.url, session=running.session)
            host_id = one.host.allocate("node1", "dummy", "dummy", -1)
            wait_for(lambda: one.host.info(host_id).STATE == 2, timeout=20)
            yield Partner(running.url, running.session)
        return
    with start_peer(tmp_path_factory.mktemp("onepeer")) as peer:
        peer.add_host("node1")
        burst = peer.add_user("burst", "burst-secret",
                              quota="VM = [ CPU = 4, MEMORY = 2048, VMS = 8 ]")
        yield Partner(peer.url, burst.session)


def with_token(partner: Partner, token: str) -> list[int]:
    one = pyone.OneServer(partner.url, session=partner.session)
    return [vm.ID for vm in one.vmpool.infoextended(-2, -1, -1, -2).VM
            if (vm.USER_TEMPLATE or {}).get("CLOUDBURST_TOKEN") == token]


def test_a_lost_reply_is_found_by_token_not_created_twice(partner: Partner,
                                                          tmp_path: Path) -> None:
    proxy = LossyProxy(partner.url)
    rc = f"ONE_XMLRPC={proxy.url}\nONE_AUTH={partner.session}\nTIMEOUT=10\nPOLL_INTERVAL=0.3\n"

    async def scenario() -> None:
        driver = partner_driver(tmp_path, rc)
        spec = partner_spec(41, "cb-test0001-vm41-0", tmp_path)
        proxy.drop_allocations = 1
        with pytest.raises(TransientDriverError, match="is unreachable"):
            await driver.deploy(spec)
        assert len(with_token(partner, spec.token)) == 1  # the partner did create it
        deploy_id = await driver.deploy(spec)  # the dispatcher's retry
        assert with_token(partner, spec.token) == [int(deploy_id.removeprefix("one-"))]

        # After a restart, a new driver finds it by its token.
        restarted = partner_driver(tmp_path, rc)
        assert await restarted.find(spec) == deploy_id
        assert await restarted.deploy(spec) == deploy_id
        results = await restarted.poll([VmRef(41, deploy_id, PARTNER_HOST)])
        assert results[41].state is PollState.ACTIVE
        assert results[41].info["PARTNER_STATE"] == "runn"

        ref = VmRef(41, deploy_id, PARTNER_HOST)
        await restarted.cancel(ref)
        await restarted.cancel(ref)  # already gone: still a success
        assert (await restarted.poll([ref]))[41].state is PollState.GONE
        assert await restarted.find(spec) is None
        await driver.close()
        await restarted.close()

    try:
        asyncio.run(scenario())
    finally:
        proxy.close()
    one = pyone.OneServer(partner.url, session=partner.session)
    partner_vms = [vm for vm in one.vmpool.infoextended(-2, -1, -1, -2).VM
                   if (vm.USER_TEMPLATE or {}).get("CLOUDBURST_ORIGIN") == "cb-test0001:41"]
    assert len(partner_vms) == 1 and partner_vms[0].USER_TEMPLATE["FLAVOUR"] == "tiny"
    # the VM's CONTEXT reached the partner VM's template (where the partner contextualizes)
    shown = one.vm.info(partner_vms[0].ID)
    context = (shown.TEMPLATE or {}).get("CONTEXT") or (shown.USER_TEMPLATE or {}).get("CONTEXT")
    assert context is not None and context["GREETING"] == "hello partner", shown.TEMPLATE


def test_credentials_and_failures_stay_secret(partner: Partner, tmp_path: Path) -> None:
    password = partner.session.partition(":")[2]

    async def scenario() -> None:
        spec = partner_spec(5, "cb-test0001-vm5-0", tmp_path)
        wrong = partner_driver(tmp_path / "wrong", f"ONE_XMLRPC={partner.url}\n"
                                               "ONE_AUTH=oneadmin:not-the-password\n")
        with pytest.raises(DriverAuthError) as refused:
            await wrong.deploy(spec)
        assert "refused the credentials" in str(refused.value)
        assert "not-the-password" not in str(refused.value)

        down = partner_driver(tmp_path / "down", f"ONE_XMLRPC=http://127.0.0.1:{free_port()}/RPC2\n"
                                             f"ONE_AUTH={partner.session}\n")
        with pytest.raises(TransientDriverError, match="is unreachable") as unreachable:
            await down.poll([VmRef(5, "one-5", PARTNER_HOST)])
        assert password not in str(unreachable.value)

        loose = partner_driver(tmp_path / "loose", f"ONE_XMLRPC={partner.url}\n"
                                               f"ONE_AUTH={partner.session}\n")
        (tmp_path / "loose/etc/one/partnerrc").chmod(0o644)
        with pytest.raises(DriverError, match="chmod 600") as permissive:
            await loose.deploy(spec)
        assert password not in str(permissive.value)
        for driver in (wrong, down, loose):
            await driver.close()

    asyncio.run(scenario())

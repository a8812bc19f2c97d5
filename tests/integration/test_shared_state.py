"""What a leader knows is in the store: a new leader on a real PostgreSQL server uses it.

Two in-process daemons share one database (the first leads; stopping it hands
the lease to the second at once): orphan sightings and VM logs written under
one leader are what the next one continues and shows.
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest
from test_handover import daemon_on, leader_and_follower
from test_lease import until

import pg_server
from cloudburst.daemon.app import Daemon
from cloudburst.daemon.main import load_settings
from cloudburst.events import Subscription
from cloudburst.model.states import HostState, LcmState
from cloudburst.store import orphans
from ec2_sites import MotoServer, moto_servers, write_ec2_etc
from seed_templates import EC2_IM_MAD, ec2_vm_mad

postgres = pg_server.session_fixture()

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

#: The two daemons' homes under ``tmp_path`` (see :func:`ec2_home`).
HOMES = ("a/home", "b/home")

#: Seconds the first leader watches an orphan before handing over.
WATCHED = 4.0


@pytest.fixture
def pg_url(postgres: pg_server.PostgresServer) -> str:
    return postgres.create_database()


@pytest.fixture
def moto(tmp_path_factory: pytest.TempPathFactory) -> MotoServer:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as (server,):
        yield server


def ec2_home(root: Path, moto_url: str, **values: str) -> Path:
    """``root/home`` with the seed's EC2 drivers sent to ``moto_url``, 1 s timers and
    the ``oned.conf`` ``values`` given."""
    write_ec2_etc(root)
    home = root / "home"
    load_settings(home)  # the default oned.conf
    conf = home / "etc" / "oned.conf"
    text = conf.read_text()
    for name, value in {"MONITORING_INTERVAL": "1", "VM_POLLING_INTERVAL": "1",
                        **values}.items():
        text, count = re.subn(rf"(?m)^{name}\s*=.*$", f"{name} = {value}", text)
        if not count:
            text += f"\n{name} = {value}\n"
    conf.write_text(text + EC2_IM_MAD + ec2_vm_mad("vmm_ec2", moto_url))
    return home


async def sighting(daemon: Daemon, host_id: int, orphan: str) -> tuple[float, int] | None:
    return (await daemon.db.read(lambda c: orphans.sightings(c, host_id))).get(orphan)


def test_a_new_leader_continues_an_orphans_grace_period(
        pg_url: str, tmp_path: Path, moto: MotoServer,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="cloudburst.daemon.monitor")
    for name in ("a", "b"):
        ec2_home(tmp_path / name, moto.url, ORPHAN_GRACE_PERIOD="600")

    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url, homes=HOMES) as (first, second):
            host_id = await first.hosts.allocate("ec2", "im_ec2", "vmm_ec2")
            await until(lambda: _monitored(first, host_id), 60, "the EC2 host monitored")
            orphan = await asyncio.to_thread(_stray_instance, moto, first.install_id, host_id)
            seen = await until(lambda: sighting(first, host_id, orphan), 60,
                               "the leader's sweep to see the orphan")
            await asyncio.sleep(WATCHED)
            await first.stop()  # hands the lease over at once
            handed_over = len(caplog.records)
            await until(lambda: second.leadership.is_leader, 10, "the follower to lead")

            def reported_ages() -> list[float]:
                return [float(found.group(1)) for record in caplog.records[handed_over:]
                        if (found := re.search(rf"instance {orphan} carries our tags .*"
                                               r"\(seen for (\d+) s", record.getMessage()))]

            age = (await until(reported_ages, 60, "the new leader's sweep to report the "
                               "orphan"))[0]
            # The grace period runs on from the first leader's sighting, not from zero.
            assert age >= WATCHED - 1
            assert (await sighting(second, host_id, orphan))[0] == seen[0]

    asyncio.run(main())


async def _monitored(daemon: Daemon, host_id: int) -> bool:
    return (await daemon.hosts.info(host_id)).state is HostState.MONITORED


def _stray_instance(moto: MotoServer, install_id: str, host_id: int) -> str:
    """An instance carrying this installation's tags for a VM it does not have."""
    instance = moto.client().run_instances(
        ImageId="ami-00bafcb5", MinCount=1, MaxCount=1, TagSpecifications=[{
            "ResourceType": "instance", "Tags": [
                {"Key": "cloudburst:installation", "Value": install_id},
                {"Key": "cloudburst:host-id", "Value": str(host_id)},
                {"Key": "cloudburst:vm-id", "Value": "9999"}]}])["Instances"][0]
    return str(instance["InstanceId"])


def test_every_daemon_shows_a_vms_whole_log(pg_url: str, tmp_path: Path) -> None:
    """A VM created through the follower, deployed by the first leader and terminated by
    the second: each daemon's log of it has every line, whichever daemon wrote it."""
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url) as (first, second):
            await first.hosts.allocate("node", "dummy", "dummy")
            vm_id = await second.vms.allocate(VM)
            await until(lambda: _running(first, vm_id), 30, "the VM to run")
            shown = await until(lambda: _log_with(first, vm_id, "Deployed"), 30,
                                "the deploy in the log")
            created, deployed = _index(shown, "New state is PENDING"), _index(shown, "Deployed")
            assert created < deployed  # the follower's line, then the leader's
            assert await second.vms.log_tail(vm_id) == shown

            await first.stop()
            await until(lambda: second.leadership.is_leader, 10, "the follower to lead")
            await second.vms.action("terminate-hard", vm_id)
            final = await until(lambda: _log_with(second, vm_id, "New state is DONE"), 30,
                                "the terminate in the log")
            assert final[:len(shown)] == shown  # the first leader's lines, then the new ones
            # This daemon's own file has only what it wrote itself.
            own = second.files.log_path(vm_id).read_text()
            assert "New state is PENDING" in own and "Deployed" not in own

    asyncio.run(main())


VM = "CPU=0.1 MEMORY=16"


async def _running(daemon: Daemon, vm_id: int) -> bool:
    return (await daemon.vms.info(vm_id)).lcm_state is LcmState.RUNNING


async def _log_with(daemon: Daemon, vm_id: int, text: str) -> list[str] | None:
    lines = await daemon.vms.log_tail(vm_id)
    return lines if any(text in line for line in lines) else None


def _index(lines: list[str], text: str) -> int:
    return next(number for number, line in enumerate(lines) if text in line)


def test_a_new_leader_does_not_burst_past_the_providers_rate_limits(
        pg_url: str, tmp_path: Path, moto: MotoServer) -> None:
    """AWS's buckets are per account: a new leader's start as drained as the previous
    leader may have left them (here: a graceful handover, so empty a moment ago)."""
    for name in ("a", "b"):
        ec2_home(tmp_path / name, moto.url)

    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url, homes=HOMES) as (first, second):
            host_id = await first.hosts.allocate("ec2", "im_ec2", "vmm_ec2")
            await until(lambda: _monitored(first, host_id), 60, "the EC2 host monitored")
            resources = _launch_bucket(first)
            assert resources == 1000  # AWS's default, full: nobody led before
            await first.stop()
            await until(lambda: second.leadership.is_leader, 10, "the follower to lead")
            assert second.leadership.quiet < 60
            # It refills at 2 instances a second from empty (500 s to full).
            assert _launch_bucket(second) < 500

    asyncio.run(main())


def _launch_bucket(daemon: Daemon) -> float:
    """Instances the daemon's EC2 driver may launch now without waiting."""
    driver = daemon.dispatcher.vm_driver("vmm_ec2")
    bucket = driver.site.limiter.bucket("RUNINSTANCES_RESOURCE")  # type: ignore[attr-defined]
    assert bucket is not None
    return float(bucket.tokens)


def test_every_daemons_dashboard_sees_every_daemons_changes(pg_url: str,
                                                             tmp_path: Path) -> None:
    """The event bus the dashboard streams from: the follower sees the VM the leader
    deploys, the leader sees the VM created through the follower, each change once."""
    async def main() -> None:
        async with leader_and_follower(tmp_path, pg_url) as (first, second):
            leader_sees = first.events.subscribe(("vm",))
            follower_sees = second.events.subscribe(("vm",))
            await first.hosts.allocate("node", "dummy", "dummy")
            vm_id = await second.vms.allocate(VM)
            await until(lambda: _running(first, vm_id), 30, "the VM to run")
            for subscription in (leader_sees, follower_sees):
                seen: list[str] = []

                def running(subscription: Subscription = subscription,
                            seen: list[str] = seen) -> bool:
                    seen.extend(str(change.data["short_state"])
                                for change in subscription.drain() if change.object_id == vm_id)
                    return bool(seen) and seen[-1] == "runn"

                await until(running, 30, "the VM's changes on both buses")
                assert seen[0] == "pend" and seen.count("pend") == 1, seen  # no echo

    asyncio.run(main())


def test_a_deleted_hosts_orphan_sightings_go_with_it(pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        daemon = daemon_on(tmp_path / "a", pg_url)
        try:
            await daemon.start(serve_api=False)
            kept, deleted = [await daemon.hosts.allocate(name, "dummy", "dummy")
                             for name in ("kept", "deleted")]
            for host_id in (kept, deleted):
                await daemon.db.write(lambda c, h=host_id: orphans.keep(
                    c, h, {"i-1": (1.0, 2)}))
            await daemon.hosts.delete(deleted)
            assert await daemon.db.read(lambda c: orphans.sightings(c, deleted)) == {}
            assert await daemon.db.read(lambda c: orphans.sightings(c, kept)) == {
                "i-1": (1.0, 2)}
        finally:
            await daemon.stop()

    asyncio.run(main())

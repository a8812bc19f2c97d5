"""The EC2 driver against real ``moto_server`` processes over HTTP, through boto3.

Two servers are two independent sites; a fault-injecting proxy of ours
(:mod:`ec2_sites`) sits in front of the first, counting calls per action and
injecting throttling, server errors, capacity errors and dropped answers.
Nothing of the driver is mocked.
"""

from __future__ import annotations

import asyncio
import base64
import email
import logging
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3
import pytest
import yaml

from cloudburst.daemon.backlog import WorkBacklog
from cloudburst.daemon.deploy_notes import JournalNotes
from cloudburst.drivers.base import (
    DeploySpec,
    DriverContext,
    DriverOptions,
    HostInfo,
    HostRef,
    PollState,
    ResizeSpec,
    VmRef,
)
from cloudburst.drivers.ec2.config import X509_NOTICE, normalize_endpoint, region_from_endpoint
from cloudburst.drivers.ec2.env_file import parse_env_text
from cloudburst.drivers.ec2.information import Ec2InformationDriver
from cloudburst.drivers.ec2.limits import BucketSpec, RateLimiter
from cloudburst.drivers.ec2.pricing import default_price_file, load_price_file
from cloudburst.drivers.ec2.vm import Ec2VmDriver
from cloudburst.drivers.orphans import OrphanSightings
from cloudburst.errors import (
    CapacityError,
    ConfigError,
    DriverAuthError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    ValidationError,
)
from cloudburst.model.cloud_sections import cloud_sections, section_for
from cloudburst.model.offers import Offer, offers_of
from cloudburst.store import journal
from cloudburst.store.database import Database
from cloudburst.template import parse
from ec2_sites import (
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    FaultProxy,
    MotoServer,
    instances_by_vm,
    live_instances,
    moto_servers,
    write_rc,
)
from seed_templates import SEED_IM_EC2_CONF

T = TypeVar("T")

INSTALL = "cb-0123456789abcdef"
HOST = HostRef(id=3, name="ec2")
SEED_EC2 = ('EC2 = [ AMI="ami-00bafcb5", KEYPAIR="gsg-keypair", AUTHORIZED_PORTS="22", '
            "INSTANCETYPE=m1.small ]")
# moto is slow on a loaded machine, and it ignores ClientToken: a launch that
# outlasts the read timeout and lands after the look-up would be sent twice.
FAST = ("EC2_RETRY_BASE_DELAY=0.05\nEC2_RETRY_MAX_DELAY=0.2\nEC2_READ_TIMEOUT=30\n"
        "EC2_RATE_LIMITS=off\n")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coroutine)


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[MotoServer]]:
    with moto_servers(2, tmp_path_factory.mktemp("moto")) as servers:
        yield servers


@pytest.fixture
def site(sites: list[MotoServer]) -> MotoServer:
    for server in sites:
        server.reset()
    return sites[0]


@pytest.fixture
def proxy(site: MotoServer) -> Iterator[FaultProxy]:
    with FaultProxy(site.url) as running:
        yield running


def make_home(tmp_path: Path, *, defaults: str = "<INSTANCETYPE>m1.small</INSTANCETYPE>",
              rc_extra: str = FAST, rc: bool = True) -> Path:
    """``etc/`` with ``vmm_ec2.conf`` (the seed's layout) and a ``vmm_ec2rc``."""
    etc = tmp_path / "home" / "etc"
    (etc / "vmm_ec2").mkdir(parents=True, exist_ok=True)
    (etc / "im_ec2").mkdir(parents=True, exist_ok=True)
    (etc / "vmm_ec2" / "vmm_ec2.conf").write_text(
        "<!--\n Default configuration attributes for the EC2 driver\n-->\n\n<TEMPLATE>\n"
        f"  <EC2>\n    {defaults}\n  </EC2>\n</TEMPLATE>\n", encoding="utf-8")
    if rc:
        write_rc(etc / "vmm_ec2" / "vmm_ec2rc", extra=rc_extra)
    return etc


def context(etc: Path, url: str | None, *, name: str = "vmm_ec2",
            flags: tuple[str, ...] = ()) -> DriverContext:
    endpoint = ("-u", url) if url else ()
    return DriverContext(
        name=name, executable="one_vmm_ec2",
        arguments=(*flags, *endpoint, "vmm_ec2/vmm_ec2.conf"),
        options=DriverOptions(threads=15), etc_dir=etc, remotes_dir=etc.parent / "remotes",
        var_dir=etc.parent / "var", install_id=INSTALL)


def driver_for(tmp_path: Path, url: str, **home: Any) -> Ec2VmDriver:
    return Ec2VmDriver(context(make_home(tmp_path, **home), url))


def spec(vm_id: int, template: str, *, host: HostRef = HOST, token: str | None = None,
         cpu: float = 0.5, memory: int = 128, sites: int = 1) -> DeploySpec:
    """The deploy the core would hand over: the section for ``host`` chosen by the one
    rule (:func:`section_for`, ``sites`` EC2 sites defined)."""
    parsed = parse(f"CPU = {cpu}\nMEMORY = {memory}\n{template}\n")
    parsed.set("VMID", str(vm_id))
    chosen = section_for(cloud_sections(parsed), host.name, "ec2", sites)
    return DeploySpec(vm_id=vm_id, host=host, deployment_file=Path("/nonexistent"),
                      template=parsed, token=token or f"{INSTALL}-vm{vm_id}-0",
                      memory_mb=memory, cpu=cpu,
                      section=None if chosen is None else chosen.attributes)


def describe(server: MotoServer, instance_id: str) -> dict[str, Any]:
    reservations = server.client().describe_instances(InstanceIds=[instance_id])
    instance: dict[str, Any] = reservations["Reservations"][0]["Instances"][0]
    return instance


def tags_of(instance: dict[str, Any]) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])}


# -- lifecycle --------------------------------------------------------------------------


def test_deploy_poll_reboot_shutdown_cancel(tmp_path: Path, site: MotoServer,
                                            proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(7, SEED_EC2))
        assert deploy_id.startswith("i-")
        instance = describe(site, deploy_id)
        tags = tags_of(instance)
        assert tags["cloudburst:installation"] == INSTALL
        assert tags["cloudburst:vm-id"] == "7"
        assert tags["cloudburst:token"] == f"{INSTALL}-vm7-0"
        assert tags["cloudburst:host-id"] == "3"
        assert tags["Name"] == "one-7"
        assert instance["ImageId"] == "ami-00bafcb5"
        assert instance["KeyName"] == "gsg-keypair"
        assert instance["InstanceType"] == "m1.small"
        assert instance["ClientToken"] == f"{INSTALL}-vm7-0"

        ref = VmRef(vm_id=7, deploy_id=deploy_id, host=HOST)
        polled = await driver.poll([ref])
        assert polled[7].state is PollState.ACTIVE
        assert polled[7].info["IP"].startswith("ec2-")
        assert polled[7].info["IP"].endswith(".compute-1.amazonaws.com")
        assert polled[7].info["PRIVATE_IP"] == instance["PrivateIpAddress"]
        assert polled[7].info["AWS_INSTANCE_TYPE"] == "m1.small"

        await driver.reboot(ref)
        await driver.reset(ref)
        await driver.shutdown(ref)
        assert describe(site, deploy_id)["State"]["Name"] == "terminated"
        assert (await driver.poll([ref]))[7].state is PollState.GONE
        await driver.cancel(ref)  # already terminated: still a success
        await driver.cancel(VmRef(vm_id=8, deploy_id="i-0123456789abcdef0", host=HOST))
        with pytest.raises(InstanceNotFoundError):
            await driver.reboot(VmRef(vm_id=8, deploy_id="i-0123456789abcdef0", host=HOST))
        await driver.close()

    run(scenario())
    counts = proxy.counts
    assert counts["RunInstances"] == 1
    assert counts["RebootInstances"] == 3
    assert counts["TerminateInstances"] == 3


def test_instance_terminated_outside_is_gone(tmp_path: Path, site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(1, SEED_EC2))
        site.client().terminate_instances(InstanceIds=[deploy_id])
        result = (await driver.poll([VmRef(1, deploy_id, HOST)]))[1]
        assert result.state is PollState.GONE
        assert result.info["AWS_STATE"] == "terminated"
        missing = (await driver.poll([VmRef(2, "i-00000000000000000", HOST)]))[2]
        assert missing.state is PollState.GONE
        await driver.close()

    run(scenario())


def test_deploy_uses_the_section_the_core_chose(tmp_path: Path, site: MotoServer) -> None:
    """The driver launches the section handed over in the spec (chosen by
    :mod:`cloudburst.model.cloud_sections`, unit-tested in test_cloud_sections.py)."""
    driver = driver_for(tmp_path, site.url)
    two_sites = ('EC2 = [ CLOUD="ec2_eu_west", AMI="ami-0022c769", KEYPAIR="k", '
                 'AUTHORIZED_PORTS="22" ]\n'
                 'EC2 = [ CLOUD="ec2_eu_east", AMI="ami-03324cc9", KEYPAIR="k", '
                 'AUTHORIZED_PORTS="22" ]')
    east = HostRef(id=5, name="EC2_EU_EAST")

    async def image(vm_id: int, template: str, host: HostRef) -> str:
        return str(describe(site, await driver.deploy(spec(vm_id, template, host=host,
                                                           sites=2)))["ImageId"])

    async def scenario() -> None:
        assert await image(1, two_sites, east) == "ami-03324cc9"
        assert await image(2, two_sites, HostRef(id=6, name="ec2_eu_west")) == "ami-0022c769"
        five = ('PUBLIC_CLOUD = [ TYPE="ec2", HOST="ec2_eu_west", AMI="ami-5x", KEYPAIR="k" ]\n'
                'PUBLIC_CLOUD = [ TYPE="ec2", HOST="ec2_eu_east", AMI="ami-5y", KEYPAIR="k" ]\n'
                'PUBLIC_CLOUD = [ TYPE="azure", AMI="nope" ]')
        assert await image(5, five, east) == "ami-5y"
        # Nothing handed over (no section applies there): the driver does not choose.
        with pytest.raises(DriverError, match="no EC2 section was chosen for site other"):
            await driver.deploy(spec(6, two_sites, host=HostRef(id=7, name="other"), sites=2))
        assert instances_by_vm(site.client(), INSTALL).keys() == {1, 2, 5}
        await driver.close()

    run(scenario())


def test_defaults_merged_under_the_section(tmp_path: Path, site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url, defaults=(
        "    <KEYPAIR>gsg-keypair</KEYPAIR>\n    <AUTHORIZEDPORTS>22</AUTHORIZEDPORTS>\n"
        "    <INSTANCETYPE>m1.large</INSTANCETYPE>\n"))

    async def scenario() -> None:
        first = describe(site, await driver.deploy(spec(1, 'EC2 = [ AMI="ami-1", '
                                                           'INSTANCETYPE="" ]')))
        assert first["KeyName"] == "gsg-keypair"
        assert first["InstanceType"] == "m1.large"
        assert [g["GroupName"] for g in first["SecurityGroups"]] == [
            f"cloudburst-{INSTALL}-tcp-22"]
        second = describe(site, await driver.deploy(spec(2, 'EC2 = [ AMI="ami-2", '
                                                            'KEYPAIR="mine", '
                                                            'INSTANCETYPE="c1.medium" ]')))
        assert (second["KeyName"], second["InstanceType"]) == ("mine", "c1.medium")
        await driver.close()

    run(scenario())


def test_check_template_refuses_incomplete_sections(tmp_path: Path, site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)

    def check(text: str) -> None:
        driver.check_template(parse(text))

    check("CPU=1\nMEMORY=64\n")  # no EC2 part: not the driver's business
    check(SEED_EC2)
    with pytest.raises(ValidationError, match="AMI is missing"):
        check('EC2 = [ KEYPAIR="k" ]')
    with pytest.raises(ValidationError, match="KEYPAIR is missing"):
        check('EC2 = [ AMI="ami-1" ]')
    with pytest.raises(ValidationError, match=r"for CLOUD=west: INSTANCETYPE 'm9\.huge'"):
        check('EC2 = [ CLOUD="west", AMI="ami-1", KEYPAIR="k", INSTANCETYPE="m9.huge" ]')
    with pytest.raises(ValidationError, match="AUTHORIZED_PORTS"):
        check('EC2 = [ AMI="ami-1", KEYPAIR="k", AUTHORIZED_PORTS="ssh" ]')
    with pytest.raises(ValidationError, match="KEYPAIR is missing"):
        check('PUBLIC_CLOUD = [ TYPE="ec2", AMI="ami-1" ]')
    check('PUBLIC_CLOUD = [ TYPE="azure", IMAGE="x" ]')
    check('EC2 = [ AMI="ami-1", KEYPAIR="k", INSTANCETYPE="t3.micro" ]')
    run(driver.close())

    # A default KEYPAIR makes it optional.
    other = Ec2VmDriver(context(make_home(tmp_path / "b", defaults="<KEYPAIR>d</KEYPAIR>"),
                                site.url))
    other.check_template(parse('EC2 = [ AMI="ami-1" ]'))
    run(other.close())


def test_authorized_ports_group_created_then_removed(tmp_path: Path, site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)
    template = 'EC2 = [ AMI="ami-1", KEYPAIR="k", AUTHORIZED_PORTS="22-90" ]'
    name = f"cloudburst-{INSTALL}-tcp-22-90"
    client = site.client()

    def groups() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = client.describe_security_groups(
            Filters=[{"Name": "group-name", "Values": [name]}])["SecurityGroups"]
        return found

    sightings = OrphanSightings()

    async def cycle(refs: list[VmRef], live: frozenset[int]) -> None:
        await driver.poll(refs)
        await driver.sweep(HOST, live, 600, sightings)

    async def scenario() -> None:
        first = await driver.deploy(spec(1, template))
        second = await driver.deploy(spec(2, template))
        [group] = groups()
        assert {(p["IpProtocol"], p["FromPort"], p["ToPort"]) for p in group["IpPermissions"]} \
            == {("tcp", 22, 90)}
        assert tags_of(group)["cloudburst:installation"] == INSTALL
        for instance_id in (first, second):
            assert [g["GroupId"] for g in describe(site, instance_id)["SecurityGroups"]] == [
                group["GroupId"]]
        refs = [VmRef(1, first, HOST), VmRef(2, second, HOST)]
        await driver.cancel(refs[0])
        await cycle(refs[1:], frozenset({2}))
        assert groups(), "still used by VM 2"
        await driver.cancel(refs[1])
        await cycle([], frozenset())
        assert groups() == []
        # Needed again: created again.
        third = await driver.deploy(spec(3, template))
        assert groups() and describe(site, third)["SecurityGroups"]
        await driver.close()

    run(scenario())


def test_elastic_ip_associated_when_running_and_released(tmp_path: Path, site: MotoServer,
                                                         proxy: FaultProxy) -> None:
    client = site.client()
    address = client.allocate_address(Domain="vpc")
    ip = address["PublicIp"]
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(1, f'EC2 = [ AMI="ami-1", KEYPAIR="k", '
                                                f'ELASTICIP="{ip}" ]'))
        assert proxy.counts["AssociateAddress"] == 0  # only once the instance runs
        ref = VmRef(1, deploy_id, HOST)
        first = (await driver.poll([ref]))[1]
        assert first.state is PollState.ACTIVE and first.info["IP"] == ip
        [associated] = client.describe_addresses(PublicIps=[ip])["Addresses"]
        assert associated["InstanceId"] == deploy_id
        again = (await driver.poll([ref]))[1]
        assert again.info["AWS_IP_ADDRESS"] == ip
        assert proxy.counts["AssociateAddress"] == 1
        await driver.cancel(ref)
        assert proxy.counts["DisassociateAddress"] == 1
        [released] = client.describe_addresses(PublicIps=[ip])["Addresses"]
        assert "InstanceId" not in released or not released["InstanceId"]

        # An allocation id works too; an unknown address is reported, not fatal.
        allocation = client.allocate_address(Domain="vpc")
        other = await driver.deploy(spec(2, f'EC2 = [ AMI="ami-1", KEYPAIR="k", '
                                            f'ELASTICIP="{allocation["AllocationId"]}" ]'))
        result = (await driver.poll([VmRef(2, other, HOST)]))[2]
        assert result.info["IP"] == allocation["PublicIp"]
        bad = await driver.deploy(spec(3, 'EC2 = [ AMI="ami-1", KEYPAIR="k", '
                                          'ELASTICIP="198.51.100.7" ]'))
        result = (await driver.poll([VmRef(3, bad, HOST)]))[3]
        assert result.state is PollState.ACTIVE
        assert "ELASTICIP 198.51.100.7" in result.info["ERROR"]
        await driver.close()

    run(scenario())


# -- never twice -------------------------------------------------------------------------


def test_deploy_with_the_same_token_launches_once(tmp_path: Path, site: MotoServer,
                                                  proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        first = await driver.deploy(spec(4, SEED_EC2))
        assert await driver.deploy(spec(4, SEED_EC2)) == first
        # After a restart (a new driver, nothing in memory): find, then deploy.
        restarted = driver_for(tmp_path / "again", proxy.url)
        assert await restarted.find(spec(4, SEED_EC2)) == first
        assert await restarted.deploy(spec(4, SEED_EC2)) == first
        assert await restarted.find(spec(4, SEED_EC2, token="other-token")) is None
        await restarted.close()
        await driver.close()

    run(scenario())
    assert proxy.counts["RunInstances"] == 1
    assert instances_by_vm(site.client(), INSTALL) == {4: [first_id(site)]}


def first_id(site: MotoServer) -> str:
    [[instance_id]] = instances_by_vm(site.client(), INSTALL).values()
    return instance_id


@pytest.mark.parametrize("kind", ["drop", "error500", "slow"])
def test_lost_run_instances_answer_is_not_launched_twice(tmp_path: Path, site: MotoServer,
                                                         proxy: FaultProxy, kind: str) -> None:
    """The answer of a RunInstances that took effect is lost; the retry finds it."""
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST.replace(
        "EC2_READ_TIMEOUT=30", "EC2_READ_TIMEOUT=4"))
    if kind == "error500":
        proxy.add_fault("RunInstances", "error500_after")  # launched, then a 500
    elif kind == "slow":
        proxy.add_fault("RunInstances", "slow", delay=8)  # answer later than the timeout
    else:
        proxy.add_fault("RunInstances", "drop")  # launched, then the connection drops

    deploy_id = run(_deploy_and_close(driver, spec(9, SEED_EC2)))
    assert instances_by_vm(site.client(), INSTALL) == {9: [deploy_id]}


async def _deploy_and_close(driver: Ec2VmDriver, deploy: DeploySpec) -> str:
    try:
        return await driver.deploy(deploy)
    finally:
        await driver.close()


def test_answer_dropped_before_launch_is_resent(tmp_path: Path, site: MotoServer,
                                                proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)
    proxy.add_fault("RunInstances", "drop_before")
    deploy_id = run(_deploy_and_close(driver, spec(9, SEED_EC2)))
    assert proxy.counts["RunInstances"] == 2
    assert instances_by_vm(site.client(), INSTALL) == {9: [deploy_id]}


def test_client_token_deduplication_of_real_ec2_is_used(tmp_path: Path, site: MotoServer,
                                                        proxy: FaultProxy) -> None:
    """When the look-up fails too, the resend carries the same ClientToken, which real
    EC2 (emulated by the proxy) de-duplicates."""
    proxy.dedupe_client_tokens()
    proxy.add_fault("RunInstances", "drop")
    proxy.add_fault("DescribeInstances", "error500", times=None)
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST + "EC2_MAX_ATTEMPTS=3\n")
    deploy_id = run(_deploy_and_close(driver, spec(9, SEED_EC2)))
    assert proxy.counts["RunInstances"] == 2
    assert instances_by_vm(site.client(), INSTALL) == {9: [deploy_id]}

    # A deploy retried when nothing can be looked up fails cleanly instead of guessing.
    proxy.clear_faults()
    proxy.add_fault("RunInstances", "error500", times=None)
    proxy.add_fault("DescribeInstances", "error500", times=None)
    driver = driver_for(tmp_path / "b", proxy.url, rc_extra=FAST + "EC2_MAX_ATTEMPTS=2\n")

    async def twice() -> None:
        try:
            with pytest.raises(TransientDriverError, match="InternalError"):
                await driver.deploy(spec(10, SEED_EC2))
            proxy.reset_counts()
            with pytest.raises(TransientDriverError, match=r"DescribeInstances.*InternalError"):
                await driver.deploy(spec(10, SEED_EC2))
            assert proxy.counts["RunInstances"] == 0
        finally:
            await driver.close()

    run(twice())


# -- throttling, capacity, faults --------------------------------------------------------------


def test_throttling_is_retried_with_backoff(tmp_path: Path, site: MotoServer,
                                            proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST.replace(
        "EC2_RETRY_BASE_DELAY=0.05", "EC2_RETRY_BASE_DELAY=0.2").replace(
        "EC2_RETRY_MAX_DELAY=0.2", "EC2_RETRY_MAX_DELAY=2"))
    proxy.add_fault("RunInstances", "throttle", times=2)
    proxy.add_fault("DescribeSecurityGroups", "error500", times=1)
    started = time.monotonic()
    deploy_id = run(_deploy_and_close(driver, spec(1, SEED_EC2)))
    elapsed = time.monotonic() - started
    counts = proxy.counts
    assert counts["RunInstances"] == 3
    assert counts["DescribeInstances"] == 0  # a first deploy looks nothing up
    # Waits: 0.1-0.2 (500), 0.1-0.2 and 0.2-0.4 (throttles): at least 0.4 s in all.
    assert elapsed >= 0.4
    assert instances_by_vm(site.client(), INSTALL) == {1: [deploy_id]}

    # Throttled for good: a transient error naming the code, after EC2_MAX_ATTEMPTS tries.
    proxy.reset_counts()
    proxy.add_fault("RebootInstances", "throttle", times=None)
    driver = driver_for(tmp_path / "b", proxy.url, rc_extra=FAST + "EC2_MAX_ATTEMPTS=3\n")
    with pytest.raises(TransientDriverError, match="RequestLimitExceeded"):
        run(driver.reboot(VmRef(1, deploy_id, HOST)))
    assert proxy.counts["RebootInstances"] == 3
    run(driver.close())


def test_capacity_errors_become_capacity_error(tmp_path: Path, site: MotoServer,
                                               proxy: FaultProxy) -> None:
    proxy.add_fault("RunInstances", "capacity")
    proxy.add_fault("RunInstances", "limit")
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        with pytest.raises(CapacityError, match="InsufficientInstanceCapacity"):
            await driver.deploy(spec(1, SEED_EC2))
        with pytest.raises(CapacityError, match="InstanceLimitExceeded"):
            await driver.deploy(spec(2, SEED_EC2))
        await driver.close()

    run(scenario())
    assert proxy.counts["RunInstances"] == 2  # not retried: another site may have room
    assert instances_by_vm(site.client(), INSTALL) == {}


def test_client_side_rate_limits() -> None:
    limiter = RateLimiter({"RUNINSTANCES": BucketSpec(5, 2),
                           "RUNINSTANCES_RESOURCE": BucketSpec(1000, 2),
                           "NON_MUTATING": BucketSpec(100, 20)})
    delays = [limiter.reserve("RunInstances") for _ in range(7)]
    assert delays[:5] == [0.0] * 5
    assert delays[5] == pytest.approx(0.5, abs=0.05)
    assert delays[6] == pytest.approx(1.0, abs=0.05)
    assert limiter.reserve("DescribeInstances") == 0.0
    limiter.penalize("DescribeInstances")
    assert limiter.reserve("DescribeInstances") == pytest.approx(0.05, abs=0.02)
    assert RateLimiter(None).reserve("RunInstances") == 0.0


def test_rate_limits_pace_launches(tmp_path: Path, site: MotoServer,
                                   proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST.replace(
        "EC2_RATE_LIMITS=off\n", "EC2_RATE_RUNINSTANCES=2/10\n"))

    async def scenario() -> float:
        started = time.monotonic()
        # Six different AMIs: six launch requests that cannot share a call.
        await asyncio.gather(*(driver.deploy(spec(vm_id, SEED_EC2.replace(
            "ami-00bafcb5", f"ami-0000000{vm_id}"))) for vm_id in range(6)))
        await driver.close()
        return time.monotonic() - started

    # Burst of 2, then 10 per second: 4 launches wait at least 0.4 s.
    assert run(scenario()) >= 0.38
    assert proxy.counts["RunInstances"] == 6


# -- batches ---------------------------------------------------------------------------------


def test_concurrent_deploys_share_one_call_and_are_bound_by_launch_index(
        tmp_path: Path, site: MotoServer, proxy: FaultProxy) -> None:
    """40 VMs of one template: one RunInstances of 40, each instance tagged with its
    batch at creation and bound to its VM by AmiLaunchIndex; ELASTICIP goes alone;
    the terminations go out together."""
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST.replace("EC2_RATE_LIMITS=off\n", ""))
    vm_ids = [*range(10, 30), *range(50, 70)]

    async def scenario() -> dict[int, str]:
        ids = await asyncio.gather(*(driver.deploy(spec(vm_id, SEED_EC2)) for vm_id in vm_ids))
        alone = await driver.deploy(spec(99, SEED_EC2.replace(
            "]", 'ELASTICIP="eipalloc-00000000000000000" ]')))
        deployed = dict(zip(vm_ids, ids, strict=True))
        assert proxy.counts["RunInstances"] == 2
        assert list(driver.launcher.batches.sizes) == [40, 1]
        polled = await driver.poll([VmRef(vm_id, deploy_id, HOST)
                                    for vm_id, deploy_id in deployed.items()])
        assert {result.state for result in polled.values()} == {PollState.ACTIVE}
        await asyncio.gather(*(driver.cancel(VmRef(vm_id, deploy_id, HOST))
                               for vm_id, deploy_id in deployed.items()))
        assert proxy.counts["TerminateInstances"] == 1
        await driver.cancel(VmRef(99, alone, HOST))
        await driver.close()
        return deployed

    deployed = run(scenario())
    first = describe(site, deployed[10])
    tags = tags_of(first)
    assert tags["cloudburst:batch-vms"] == "10-29,50-69"
    assert tags["cloudburst:batch"].startswith(INSTALL)
    assert "cloudburst:vm-id" not in tags
    assert first["AmiLaunchIndex"] == 0
    assert describe(site, deployed[50])["AmiLaunchIndex"] == 20
    assert first["ClientToken"] == tags["cloudburst:batch"]
    assert all(describe(site, deploy_id)["State"]["Name"] == "terminated"
               for deploy_id in deployed.values())


def test_work_on_its_way_keeps_launch_and_terminate_batches_open(
        tmp_path: Path, site: MotoServer, proxy: FaultProxy) -> None:
    """The daemon's backlog says 24 deploys for the host are on their way; they reach
    the driver one by one, further apart than EC2_BATCH_WINDOW: one RunInstances of
    24. Their terminations trickle in the same way: one TerminateInstances."""
    backlog = WorkBacklog()
    driver = Ec2VmDriver(replace(context(make_home(tmp_path), proxy.url), backlog=backlog))
    for coalescer in (driver.launcher.batches, driver.terminations):
        coalescer.hold = 30.0  # only the backlog emptying may close these batches
    vm_ids = range(200, 224)

    async def reach_driver(label: str, vm_id: int, delay: float,
                           action: Callable[[], Awaitable[T]]) -> T:
        # What the life-cycle manager does: note the work, later hand it over.
        backlog.add(HOST.id, label, vm_id)
        await asyncio.sleep(delay)
        backlog.discard(HOST.id, vm_id)
        return await action()

    async def scenario() -> dict[int, str]:
        ids = await asyncio.wait_for(asyncio.gather(*(
            reach_driver("deploy", vm_id, 0.04 * index,
                         partial(driver.deploy, spec(vm_id, SEED_EC2)))
            for index, vm_id in enumerate(vm_ids))), timeout=25)
        deployed = dict(zip(vm_ids, ids, strict=True))
        assert proxy.counts["RunInstances"] == 1
        assert list(driver.launcher.batches.sizes) == [24]
        await asyncio.wait_for(asyncio.gather(*(
            reach_driver("cancel", vm_id, 0.04 * index,
                         partial(driver.cancel, VmRef(vm_id, deploy_id, HOST)))
            for index, (vm_id, deploy_id) in enumerate(deployed.items()))), timeout=25)
        assert proxy.counts["TerminateInstances"] == 1
        await driver.close()
        return deployed

    deployed = run(scenario())
    assert instances_by_vm(site.client(), INSTALL) == {}
    assert all(describe(site, deploy_id)["State"]["Name"] == "terminated"
               for deploy_id in deployed.values())


def test_a_poll_waits_for_the_launches_in_flight(tmp_path: Path, site: MotoServer,
                                                 proxy: FaultProxy) -> None:
    """A listing amid a launch would be stale and cost the site as much: the poll
    waits until the launch has answered, and then sees its instance."""
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        first = await driver.deploy(spec(1, SEED_EC2))
        proxy.set_delay("RunInstances", 1.0)
        launch = asyncio.ensure_future(driver.deploy(spec(2, SEED_EC2)))
        while proxy.counts["RunInstances"] < 2:  # the second launch is at the site
            await asyncio.sleep(0.02)
        polled = await driver.poll([VmRef(1, first, HOST)])
        assert launch.done()
        assert proxy.counts["DescribeInstances"] == 1
        second = launch.result()
        assert driver.listings.known(second) is not None  # listed after its launch
        assert polled[1].state is PollState.ACTIVE
        await driver.close()

    run(scenario())


def test_lost_batch_answer_is_recovered_by_the_batch_tag(tmp_path: Path, site: MotoServer,
                                                        proxy: FaultProxy) -> None:
    proxy.add_fault("RunInstances", "drop")  # launched, then the connection drops
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> list[str]:
        try:
            return list(await asyncio.gather(*(driver.deploy(spec(vm_id, SEED_EC2))
                                               for vm_id in range(8))))
        finally:
            await driver.close()

    ids = run(scenario())
    assert proxy.counts["RunInstances"] == 1
    assert instances_by_vm(site.client(), INSTALL) == {
        vm_id: [deploy_id] for vm_id, deploy_id in enumerate(ids)}


def test_batch_is_journalled_before_the_call_and_found_after_a_crash(
        tmp_path: Path, site: MotoServer, proxy: FaultProxy) -> None:
    """The journal notes name each VM's batch and launch index before RunInstances is
    sent; a new driver (a restarted daemon) finds every VM's instance from them."""
    db = Database(f"sqlite:///{tmp_path / 'one.db'}")
    db.create_schema()
    db.start()
    notes = JournalNotes(db)
    tokens = {vm_id: f"{INSTALL}-vm{vm_id}-0" for vm_id in range(6)}
    for vm_id, token in tokens.items():
        db.write_sync(lambda connection, vm_id=vm_id, token=token: journal.start(
            connection, vm_id=vm_id, host_id=HOST.id, seq=0, action="deploy", token=token))
    proxy.set_delay("RunInstances", 1.0)
    driver = driver_for(tmp_path, proxy.url)

    def with_notes(vm_id: int) -> DeploySpec:
        return replace(spec(vm_id, 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]'), notes=notes)

    async def crash() -> dict[str, str]:
        deploys = [asyncio.ensure_future(driver.deploy(with_notes(vm_id))) for vm_id in tokens]
        while proxy.counts["RunInstances"] == 0:  # until the call is on the wire
            await asyncio.sleep(0.02)
        journalled = await notes.read(list(tokens.values()))
        await driver.close()  # the daemon dies; the request already sent still lands
        outcomes = await asyncio.gather(*deploys, return_exceptions=True)
        assert all(isinstance(outcome, asyncio.CancelledError) for outcome in outcomes)
        return journalled

    journalled = run(crash())
    assert len({note.split()[1] for note in journalled.values()}) == 1
    assert sorted(int(note.split()[2]) for note in journalled.values()) == list(range(6))
    deadline = time.monotonic() + 30
    while len(live_instances(site.client(), INSTALL)) < 6:  # the call still lands at EC2
        assert time.monotonic() < deadline
        time.sleep(0.1)
    restarted = driver_for(tmp_path / "again", proxy.url)

    async def recover() -> dict[int, str | None]:
        found = await asyncio.gather(*(restarted.find(with_notes(vm_id)) for vm_id in tokens))
        await restarted.close()
        return dict(zip(tokens, found, strict=True))

    found = run(recover())
    db.close()
    assert instances_by_vm(site.client(), INSTALL) == {
        vm_id: [deploy_id] for vm_id, deploy_id in found.items()}
    assert proxy.counts["RunInstances"] == 1


# -- polling in bulk -------------------------------------------------------------------------


def test_polling_300_instances_costs_one_call(tmp_path: Path, site: MotoServer,
                                              proxy: FaultProxy) -> None:
    launched = site.client().run_instances(
        ImageId="ami-1", MinCount=300, MaxCount=300, TagSpecifications=[{
            "ResourceType": "instance",
            "Tags": [{"Key": "cloudburst:installation", "Value": INSTALL}]}])
    refs = [VmRef(index, instance["InstanceId"], HOST)
            for index, instance in enumerate(launched["Instances"])]
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        results = await driver.poll(refs)
        assert len(results) == 300
        assert all(result.state is PollState.ACTIVE for result in results.values())
        assert proxy.counts["DescribeInstances"] == 1
        # The sweep that follows the poll reuses its listing.
        report = await driver.sweep(HOST, frozenset(range(300)), 600, OrphanSightings())
        assert report is not None and report.orphans == {}
        assert proxy.counts["DescribeInstances"] == 1
        await driver.close()

    run(scenario())


# -- orphans ----------------------------------------------------------------------------------


def test_sweep_terminates_orphans_after_the_grace_period(tmp_path: Path, site: MotoServer,
                                                         proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)
    other_host = HostRef(id=4, name="ec2_other")

    async def scenario() -> None:
        kept = await driver.deploy(spec(1, SEED_EC2))
        orphan = await driver.deploy(spec(2, SEED_EC2))
        elsewhere = await driver.deploy(spec(3, SEED_EC2, host=other_host))
        # A second instance of VM 1 (say, launched by hand with our tags): a duplicate.
        duplicate = await driver.deploy(spec(1, SEED_EC2, token="older-token"))
        await driver.poll([VmRef(1, kept, HOST)])
        sightings = OrphanSightings()
        first = await driver.sweep(HOST, frozenset({1}), 0.5, sightings)
        assert first is not None
        assert set(first.orphans) == {orphan, duplicate}
        assert first.terminated == []
        await asyncio.sleep(0.6)
        second = await driver.sweep(HOST, frozenset({1}), 0.5, sightings)
        assert second is not None
        assert set(second.terminated) == {orphan, duplicate}
        assert second.orphans[orphan] >= 0.5
        third = await driver.sweep(HOST, frozenset({1}), 0.5, sightings)
        assert third is not None and third.orphans == {}
        await driver.close()
        states = {instance_id: describe(site, instance_id)["State"]["Name"]
                  for instance_id in (kept, orphan, elsewhere, duplicate)}
        assert states == {kept: "running", orphan: "terminated", elsewhere: "running",
                          duplicate: "terminated"}

    run(scenario())


def test_two_sites_are_independent(tmp_path: Path, sites: list[MotoServer]) -> None:
    for server in sites:
        server.reset()
    etc = make_home(tmp_path)
    west = Ec2VmDriver(context(etc, sites[0].url, name="vmm_amazon_eu_west"))
    east = Ec2VmDriver(context(etc, sites[1].url, name="vmm_amazon_eu_east"))

    async def scenario() -> None:
        template = ('EC2 = [ CLOUD="ec2_eu_west", AMI="ami-0022c769", KEYPAIR="k" ]\n'
                    'EC2 = [ CLOUD="ec2_eu_east", AMI="ami-03324cc9", KEYPAIR="k" ]')
        one = await west.deploy(spec(1, template, host=HostRef(1, "ec2_eu_west")))
        two = await east.deploy(spec(2, template, host=HostRef(2, "ec2_eu_east")))
        assert describe(sites[0], one)["ImageId"] == "ami-0022c769"
        assert describe(sites[1], two)["ImageId"] == "ami-03324cc9"
        assert instances_by_vm(sites[0].client(), INSTALL) == {1: [one]}
        assert instances_by_vm(sites[1].client(), INSTALL) == {2: [two]}
        await west.close()
        await east.close()

    run(scenario())


# -- configuration and secrets ------------------------------------------------------------------


def test_credentials_never_appear(tmp_path: Path, site: MotoServer, proxy: FaultProxy,
                                  caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    echo = (f"The request signature we calculated does not match. Credential={FAKE_ACCESS_KEY}"
            f"/20250101/us-east-1/ec2/aws4_request, secret {FAKE_SECRET_KEY}, key "
            f"{FAKE_ACCESS_KEY}")
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST + "EC2_MAX_ATTEMPTS=2\n")
    messages: list[str] = [repr(driver), repr(driver.config), str(driver.config),
                           repr(driver.config.credentials), repr(driver.site)]

    async def scenario() -> None:
        proxy.add_fault("*", "code", status=403, code="SignatureDoesNotMatch", message=echo)
        with pytest.raises(DriverAuthError) as auth:
            await driver.deploy(spec(1, SEED_EC2))
        messages.append(str(auth.value))
        proxy.clear_faults()
        proxy.add_fault("*", "code", status=503, code="Unavailable", message=echo, times=None)
        with pytest.raises(TransientDriverError) as transient:
            await driver.reboot(VmRef(1, "i-0123456789abcdef0", HOST))
        messages.append(str(transient.value))
        proxy.clear_faults()
        proxy.add_fault("*", "code", status=400, code="InvalidParameterValue", message=echo)
        with pytest.raises(DriverError) as other:
            await driver.reboot(VmRef(1, "i-0123456789abcdef0", HOST))
        messages.append(str(other.value))
        proxy.clear_faults()
        deploy_id = await driver.deploy(spec(2, SEED_EC2))
        polled = await driver.poll([VmRef(2, deploy_id, HOST)])
        messages.append(repr(polled))
        await driver.close()

    run(scenario())
    assert "SignatureDoesNotMatch" in messages[5]
    text = "\n".join(messages) + caplog.text
    assert FAKE_ACCESS_KEY not in text
    assert FAKE_SECRET_KEY not in text
    assert "cbSecret" not in text


def test_x509_settings_get_a_clear_notice(tmp_path: Path, site: MotoServer,
                                          caplog: pytest.LogCaptureFixture) -> None:
    etc = make_home(tmp_path, rc=False)
    (etc / "vmm_ec2" / "vmm_ec2rc").write_text(
        'EC2_HOME="/opt/ec2-api-tools"\nEC2_PRIVATE_KEY="/home/one/.ec2/pk.pem"\n'
        'EC2_CERT="/home/one/.ec2/cert.pem"\n', encoding="utf-8")
    with caplog.at_level(logging.WARNING):
        driver = Ec2VmDriver(context(etc, site.url, flags=("-c", "/home/user/.ec2/cert.pem")))
    assert X509_NOTICE in driver.config.notes
    assert "no longer accepted by AWS" in caplog.text
    assert not driver.config.credentials.explicit  # the standard AWS chain is used
    run(driver.close())


def test_per_site_rc_file_and_region(tmp_path: Path) -> None:
    etc = make_home(tmp_path)
    write_rc(etc / "vmm_ec2" / "vmm_amazon_eu_westrc", region="eu-west-1",
             access_key="AKIAOTHERSITEKEY0001")
    west = Ec2VmDriver(context(etc, None, name="vmm_amazon_eu_west"))
    assert west.config.rc_path == etc / "vmm_ec2" / "vmm_amazon_eu_westrc"
    assert west.config.region == "eu-west-1"
    derived = Ec2VmDriver(DriverContext(
        name="vmm_x", executable="one_vmm_ec2",
        arguments=("-u", "https://ec2.ap-southeast-2.amazonaws.com", "vmm_ec2/vmm_ec2.conf"),
        options=DriverOptions(), etc_dir=tmp_path / "none", remotes_dir=tmp_path,
        var_dir=tmp_path, install_id=INSTALL))
    assert derived.config.region == "ap-southeast-2"
    assert not derived.config.credentials.explicit
    with pytest.raises(ValueError, match="unknown option -z"):
        Ec2VmDriver(context(etc, None, flags=("-z", "x")))
    run(west.close())
    run(derived.close())


def test_information_driver_reports_limits(tmp_path: Path) -> None:
    etc = make_home(tmp_path)
    conf = etc / "im_ec2" / "im_ec2.conf"
    conf.write_text(SEED_IM_EC2_CONF, encoding="utf-8")
    driver = Ec2InformationDriver(DriverContext(
        name="im_ec2", executable="one_im_ec2", arguments=("im_ec2/im_ec2.conf",),
        options=DriverOptions(), etc_dir=etc, remotes_dir=tmp_path, var_dir=tmp_path))
    info = run(driver.monitor(HOST))
    assert info.attributes["TOTALCPU"] == "500"
    assert info.attributes["TOTALMEMORY"] == "8912896"
    assert info.attributes["FREEMEMORY"] == "8912896"
    assert info.attributes["HYPERVISOR"] == "ec2"
    assert info.attributes["PUBLIC_CLOUD"] == "YES"
    assert info.attributes["PRIORITY"] == "-1"
    assert info.attributes["HOSTNAME"] == "ec2"
    assert info.attributes["DEFAULT_INSTANCE_TYPE"] == "m1.small"
    assert dict(info.capacity) == {"m1.small": 5, "m1.large": 0, "m1.xlarge": 0}

    time.sleep(0.01)
    conf.write_text("SMALL_INSTANCES=4\nLARGE_INSTANCES=1\nINSTANCES_T3_MICRO=2\n",
                    encoding="utf-8")
    info = run(driver.monitor(HOST))
    assert info.capacity["t3.micro"] == 2 and info.capacity["m1.large"] == 1
    assert info.attributes["TOTALCPU"] == str(400 + 400 + 2 * 200)
    # Host attributes override the file for one site.
    tuned = HostRef(id=9, name="ec2_eu", attributes={"SMALL_INSTANCES": "1",
                                                      "EC2_DEFAULT_INSTANCE_TYPE": "t3.micro"})
    info = run(driver.monitor(tuned))
    assert info.capacity["m1.small"] == 1
    assert info.attributes["DEFAULT_INSTANCE_TYPE"] == "t3.micro"

    conf.write_text("SMALL_INSTANCES=many\n", encoding="utf-8")
    with pytest.raises(DriverError, match="SMALL_INSTANCES"):
        run(driver.monitor(HOST))


def test_template_section_keys_reach_run_instances(tmp_path: Path, site: MotoServer) -> None:
    """Every launch option as the instance moto records it."""
    driver = driver_for(tmp_path, site.url)
    client = site.client()
    subnet = client.describe_subnets()["Subnets"][0]
    group = client.create_security_group(GroupName="web", Description="web",
                                         VpcId=subnet["VpcId"])
    other = client.create_security_group(GroupName="db", Description="db",
                                         VpcId=subnet["VpcId"])
    iam = boto3.client("iam", endpoint_url=site.url, region_name="us-east-1",
                       aws_access_key_id="test", aws_secret_access_key="test")
    profile = iam.create_instance_profile(InstanceProfileName="web-role")["InstanceProfile"]

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(1, (
            f'EC2 = [ AMI="ami-1", KEYPAIR="k", SUBNETID="{subnet["SubnetId"]}", '
            f'SECURITYGROUPS="web", SECURITYGROUPIDS="{other["GroupId"]}", '
            'AUTHORIZED_PORTS="22", TAGS="team=ops,cost=42", '
            f'AVAILABILITYZONE="{subnet["AvailabilityZone"]}", USERDATA="#!/bin/sh", '
            'EBS_OPTIMIZED="yes", BLOCKDEVICEMAPPING="/dev/xvda=:30:true:gp3,/dev/sdf=:8", '
            'IAM_INSTANCE_PROFILE="web-role" ]')))
        instance = describe(site, deploy_id)
        assert instance["SubnetId"] == subnet["SubnetId"]
        groups = {g["GroupId"] for g in instance["SecurityGroups"]}
        assert {group["GroupId"], other["GroupId"]} <= groups and len(groups) == 3
        tags = tags_of(instance)
        assert (tags["team"], tags["cost"]) == ("ops", "42")
        assert instance["Placement"]["AvailabilityZone"] == subnet["AvailabilityZone"]
        assert instance["EbsOptimized"] is True
        assert instance["IamInstanceProfile"]["Arn"] == profile["Arn"]
        assert instance["MetadataOptions"]["HttpTokens"] == "required"  # IMDSv2 by default
        user_data = client.describe_instance_attribute(InstanceId=deploy_id,
                                                       Attribute="userData")["UserData"]
        assert base64.b64decode(user_data["Value"]) == b"#!/bin/sh"
        volumes = {mapping["DeviceName"]: mapping["Ebs"]
                   for mapping in instance["BlockDeviceMappings"]}
        root = client.describe_volumes(VolumeIds=[volumes["/dev/xvda"]["VolumeId"]])
        assert (root["Volumes"][0]["Size"], root["Volumes"][0]["VolumeType"]) == (30, "gp3")
        assert volumes["/dev/xvda"]["DeleteOnTermination"] is True
        extra = client.describe_volumes(VolumeIds=[volumes["/dev/sdf"]["VolumeId"]])
        assert extra["Volumes"][0]["Size"] == 8

        relaxed = await driver.deploy(spec(2, (
            'EC2 = [ AMI="ami-1", KEYPAIR="k", METADATA_TOKENS="optional", '
            f'IAMINSTANCEPROFILE="{profile["Arn"]}" ]')))
        instance = describe(site, relaxed)
        assert instance["MetadataOptions"]["HttpTokens"] == "optional"
        assert instance["IamInstanceProfile"]["Arn"] == profile["Arn"]
        assert "EbsOptimized" not in instance or instance["EbsOptimized"] is False
        await driver.close()

    run(scenario())


def test_launch_options_are_checked_at_creation_one_line_each(tmp_path: Path,
                                                              site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)
    bad = ('EC2 = [ AMI="ami-1", KEYPAIR="k", SUBNETID="net 1", SECURITYGROUPIDS="web", '
           'TAGS="team", AVAILABILITYZONE="Moon", EBS_OPTIMIZED="maybe", '
           'BLOCKDEVICEMAPPING="/dev/xvda=:huge", IAMINSTANCEPROFILE="a b", '
           'METADATA_TOKENS="v1", USERDATA="' + "x" * 17000 + '" ]')
    with pytest.raises(ValidationError) as refused:
        driver.check_template(parse(bad))
    message = refused.value.message
    assert "\n" not in message
    for expected in ("SUBNETID 'net 1' is not a subnet id",
                     "SECURITYGROUPIDS: 'web' is not a security group id",
                     "TAGS: 'team' is not KEY=VALUE",
                     "AVAILABILITYZONE 'Moon' is not a zone name",
                     "EBS_OPTIMIZED 'maybe' must be yes or no",
                     "BLOCKDEVICEMAPPING: /dev/xvda: size 'huge' must be a whole number",
                     "IAMINSTANCEPROFILE 'a b' is neither",
                     "METADATA_TOKENS 'v1' must be required",
                     "is longer than 16384 bytes"):
        assert expected in message, expected
    for mapping, problem in (("xvda", "is not DEVICE="), ("/dev/sda1=vol-1", "not a snapshot"),
                             ("/dev/sda1=::maybe", "must be true or false"),
                             ("/dev/sda1=::true:gp9", "volume type 'gp9'"),
                             ("/dev/sda1=:10::io2", "needs IOPS"),
                             ("/dev/sda1=:1,/dev/sda1=:2", "mapped twice")):
        with pytest.raises(ValidationError, match=re.escape(problem)):
            driver.check_template(parse(
                f'EC2 = [ AMI="ami-1", KEYPAIR="k", BLOCKDEVICEMAPPING="{mapping}" ]'))
    driver.check_template(parse(
        'EC2 = [ AMI="ami-1", KEYPAIR="k", '
        'BLOCKDEVICEMAPPING="/dev/sda1=snap-1:100:false:io2:3000", '
        'IAMINSTANCEPROFILE="arn:aws:iam::123456789012:instance-profile/ops/web-role", '
        'SUBNETID="subnet-0a1b2c", AVAILABILITYZONE="eu-west-1b", HTTP_TOKENS="Optional" ]'))
    run(driver.close())


def test_security_group_deleted_behind_our_back_is_recreated(tmp_path: Path,
                                                              site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)
    template = 'EC2 = [ AMI="ami-1", KEYPAIR="k", AUTHORIZED_PORTS="8080" ]'

    async def scenario() -> None:
        first = await driver.deploy(spec(1, template))
        [old] = describe(site, first)["SecurityGroups"]
        site.client().delete_security_group(GroupId=old["GroupId"])
        second = await driver.deploy(spec(2, template))
        [new] = describe(site, second)["SecurityGroups"]
        assert new["GroupName"] == old["GroupName"] and new["GroupId"] != old["GroupId"]
        await driver.close()

    run(scenario())


def test_rc_file_syntax_and_endpoints() -> None:
    env = parse_env_text('# comment\nexport AWS_ACCESS_KEY_ID="AKIA 1"\n'
                         "AWS_SECRET_ACCESS_KEY='x#y'\nEC2_URL=https://h # note\n\n",
                         Path("rc"))
    assert env.values == {"AWS_ACCESS_KEY_ID": "AKIA 1", "AWS_SECRET_ACCESS_KEY": "x#y",
                          "EC2_URL": "https://h"}
    with pytest.raises(ConfigError, match="rc:2: expected KEY=VALUE") as error:
        parse_env_text("A=1\nnot a pair secretvalue\n", Path("rc"))
    assert "secretvalue" not in str(error.value)
    assert region_from_endpoint("https://eu-west-1.ec2.amazonaws.com") == "eu-west-1"
    assert region_from_endpoint("https://ec2.us-gov-west-1.amazonaws.com") == "us-gov-west-1"
    assert region_from_endpoint("http://127.0.0.1:5000") is None
    assert normalize_endpoint("ec2.example.org:8773/services/Eucalyptus/") == \
        "https://ec2.example.org:8773/services/Eucalyptus"
    with pytest.raises(ValueError):
        normalize_endpoint("ftp://x")


# -- spot ------------------------------------------------------------------------------------

SPOT = 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k", MARKET="spot", MAX_PRICE="0.05" ]'


def test_spot_launch_and_its_interruption(tmp_path: Path, site: MotoServer,
                                          proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(1, SPOT))
        instance = describe(site, deploy_id)
        assert instance["InstanceLifecycle"] == "spot"
        assert tags_of(instance)["cloudburst:market"] == "spot"
        ref = VmRef(1, deploy_id, HOST)
        polled = (await driver.poll([ref]))[1]
        assert polled.state is PollState.ACTIVE
        assert polled.info["AWS_MARKET"] == "spot"
        # EC2 takes the instance back: the next poll says so, with the reason.
        site.client().terminate_instances(InstanceIds=[deploy_id])
        proxy.reclaim_spot([deploy_id])
        polled = (await driver.poll([ref]))[1]
        assert polled.state is PollState.RECLAIMED
        assert "Server.SpotInstanceTermination" in polled.info["REASON"]
        # Terminated by anyone else: merely gone.
        other = await driver.deploy(spec(2, SPOT))
        site.client().terminate_instances(InstanceIds=[other])
        assert (await driver.poll([VmRef(2, other, HOST)]))[2].state is PollState.GONE
        await driver.close()

    run(scenario())


@pytest.mark.parametrize("refusal", ["capacity", "price", "quota"])
def test_spot_refusal_falls_back_to_on_demand(tmp_path: Path, site: MotoServer,
                                              proxy: FaultProxy, refusal: str) -> None:
    if refusal == "capacity":
        proxy.add_fault("RunInstances", "capacity")
    elif refusal == "price":
        proxy.add_fault("RunInstances", "code", code="SpotMaxPriceTooLow",
                        message="Your Spot request price of 0.05 is lower than the minimum")
    else:
        proxy.add_fault("RunInstances", "code", code="MaxSpotInstanceCountExceeded",
                        message="Max spot instance count exceeded")
    driver = driver_for(tmp_path, proxy.url)

    async def scenario() -> list[str]:
        try:
            return list(await asyncio.gather(*(driver.deploy(spec(vm_id, SPOT))
                                               for vm_id in range(3))))
        finally:
            await driver.close()

    ids = run(scenario())
    assert proxy.counts["RunInstances"] == 2  # the spot batch, then on-demand at once
    for deploy_id in ids:
        instance = describe(site, deploy_id)
        assert instance.get("InstanceLifecycle") != "spot"
        assert tags_of(instance)["cloudburst:market"] == "on-demand"
    assert instances_by_vm(site.client(), INSTALL) == {
        vm_id: [deploy_id] for vm_id, deploy_id in enumerate(ids)}


def test_spot_without_fallback_is_a_capacity_error(tmp_path: Path, site: MotoServer,
                                                   proxy: FaultProxy) -> None:
    proxy.add_fault("RunInstances", "code", code="SpotMaxPriceTooLow", message="too low")
    driver = driver_for(tmp_path, proxy.url)
    no_fallback = SPOT.replace("]", 'SPOT_FALLBACK="none" ]')
    with pytest.raises(CapacityError, match="SpotMaxPriceTooLow"):
        run(_deploy_and_close(driver, spec(1, no_fallback)))
    assert proxy.counts["RunInstances"] == 1
    assert instances_by_vm(site.client(), INSTALL) == {}


def test_market_keys_are_checked_at_creation(tmp_path: Path, site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)
    for section, message in (
            ('MARKET="cheap"', "MARKET 'cheap' must be spot or on-demand"),
            ('MAX_PRICE="0.05"', "MAX_PRICE is only for spot instances"),
            ('MARKET="spot", MAX_PRICE="free"', "MAX_PRICE 'free' must be a price"),
            ('MARKET="spot", SPOT_FALLBACK="maybe"',
             "SPOT_FALLBACK 'maybe' must be on-demand or none")):
        template = parse(f'EC2 = [ AMI="ami-1", KEYPAIR="k", {section} ]')
        with pytest.raises(ValidationError, match=re.escape(message)):
            driver.check_template(template)
    driver.check_template(parse(SPOT))
    run(driver.close())


def test_poweroff_stops_and_poweron_starts_the_same_instance(tmp_path: Path, site: MotoServer,
                                                             proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)
    assert driver.supports("poweroff")

    async def scenario() -> None:
        deploy = spec(1, 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]')
        deploy_id = await driver.deploy(deploy)
        ref = VmRef(1, deploy_id, HOST)
        await driver.poweroff(ref, hard=False, leaving=False)
        assert describe(site, deploy_id)["State"]["Name"] == "stopped"
        polled = (await driver.poll([ref]))[1]
        assert polled.state is PollState.GONE
        assert polled.info["AWS_STATE"] == "stopped"
        await driver.poweroff(ref, hard=True, leaving=False)  # already off: still a success
        assert await driver.poweron(ref, deploy) == deploy_id
        assert describe(site, deploy_id)["State"]["Name"] == "running"
        await driver.close()

    run(scenario())
    counts = proxy.counts
    assert (counts["StopInstances"], counts["StartInstances"]) == (2, 1)


def test_save_stops_and_restore_starts_the_same_instance(tmp_path: Path, site: MotoServer,
                                                         proxy: FaultProxy) -> None:
    """suspend and stop save (StopInstances, then the instance is seen stopped);
    resume restores (StartInstances): same instance, nothing launched."""
    driver = driver_for(tmp_path, proxy.url)
    assert {"save", "restore"} <= driver.capabilities

    async def scenario() -> None:
        deploy_id = await driver.deploy(spec(1, 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k" ]'))
        ref = VmRef(1, deploy_id, HOST)
        proxy.reset_counts()
        await driver.save(ref, tmp_path / "checkpoint", leaving=False)
        assert describe(site, deploy_id)["State"]["Name"] == "stopped"
        assert (proxy.counts["StopInstances"], proxy.counts["DescribeInstances"]) == (1, 1)
        assert (await driver.poll([ref]))[1].state is PollState.GONE
        # a replay (already stopped is fine)
        await driver.save(ref, tmp_path / "checkpoint", leaving=True)
        assert await driver.restore(ref, tmp_path / "checkpoint") == deploy_id
        assert describe(site, deploy_id)["State"]["Name"] == "running"
        await driver.close()

    run(scenario())
    assert (proxy.counts["StartInstances"], proxy.counts["RunInstances"]) == (1, 0)
    assert not (tmp_path / "checkpoint").exists()


OFFERS = HostRef(id=3, name="ec2", attributes={"INSTANCE_TYPES": (
    "t3.micro:2:1024:0.0104 t3.medium:2:4096:0.0416 c5.xlarge:4:8192:0.17")})


def resize_spec(cpu: float, memory: int, section: str, vcpu: int | None = None) -> ResizeSpec:
    template = parse(f"CPU = {cpu}\nMEMORY = {memory}\n"
                     + (f"VCPU = {vcpu}\n" if vcpu else "") + section)
    section = next(value for name, value in template if name == "EC2")
    assert isinstance(section, dict)
    return ResizeSpec(cpu=cpu, vcpu=vcpu or 1, memory_mb=memory, template=template,
                      section=section)


def test_resize_changes_the_stopped_instance_type_by_the_schedulers_rule(
        tmp_path: Path, site: MotoServer, proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url)
    section = 'EC2 = [ AMI="ami-1", KEYPAIR="k" ]'
    named = 'EC2 = [ AMI="ami-1", KEYPAIR="k", INSTANCETYPE="t3.medium" ]'

    async def scenario() -> None:
        small = await driver.deploy(spec(1, section, host=OFFERS, cpu=1, memory=512))
        assert describe(site, small)["InstanceType"] == "t3.micro"
        ref = VmRef(1, small, OFFERS)
        with pytest.raises(DriverError, match=rf"^instance {small} is running, not stopped$"):
            await driver.resize(ref, resize_spec(1.5, 3000, section))
        await driver.poweroff(ref, hard=False, leaving=False)
        proxy.reset_counts()
        await driver.resize(ref, resize_spec(1.5, 3000, section))  # 2 VCPU, 3000 MB
        assert describe(site, small)["InstanceType"] == "t3.medium"
        assert (proxy.counts["DescribeInstances"],
                proxy.counts["ModifyInstanceAttribute"]) == (1, 1)
        await driver.resize(ref, resize_spec(0.5, 4096, section))  # the same type: no change
        assert proxy.counts["ModifyInstanceAttribute"] == 1
        await driver.resize(ref, resize_spec(0.5, 2048, section, vcpu=4))
        assert describe(site, small)["InstanceType"] == "c5.xlarge"
        with pytest.raises(DriverError, match=r"^VM 1: no instance type offered at ec2 fits "
                                              r"4 VCPU and 65536 MB of MEMORY \(offered: "):
            await driver.resize(ref, resize_spec(4, 65536, section))
        with pytest.raises(DriverError, match=r"^VM 1: its EC2 section names INSTANCETYPE "
                                              r"t3.medium \(2 VCPU, 4096 MB\), too small for "
                                              r"2 VCPU and 8192 MB of MEMORY"):
            await driver.resize(ref, resize_spec(2, 8192, named))
        with pytest.raises(DriverError, match=r"^VM 1: ec2 lists no instance types "):
            await driver.resize(VmRef(1, small, HOST), resize_spec(2, 8192, section))
        assert describe(site, small)["InstanceType"] == "c5.xlarge"
        await driver.resize(ref, resize_spec(1, 1024, named))  # the named type again
        assert describe(site, small)["InstanceType"] == "t3.medium"
        await driver.poweron(ref, spec(1, section, host=OFFERS))
        assert (await driver.poll([ref]))[1].info["AWS_INSTANCE_TYPE"] == "t3.medium"
        await driver.close()

    run(scenario())


# -- the cheapest type that fits ----------------------------------------------------------


def im_driver(etc: Path, conf: str) -> Ec2InformationDriver:
    (etc / "im_ec2" / "im_ec2.conf").write_text(conf, encoding="utf-8")
    return Ec2InformationDriver(DriverContext(
        name="im_ec2", executable="one_im_ec2", arguments=("im_ec2/im_ec2.conf",),
        options=DriverOptions(), etc_dir=etc, remotes_dir=etc.parent, var_dir=etc.parent))


def test_shipped_price_table_is_dated_sourced_and_complete() -> None:
    path = default_price_file()
    header = path.read_text(encoding="utf-8")[:1500]
    assert re.search(r"Dated:\s+\d{4}-\d{2}-\d{2}", header)
    assert "Source:" in header and "aws.amazon.com" in header
    prices = load_price_file(path)
    assert prices["m5.large"] == 0.096 and prices["m1.small"] == 0.044
    assert len(prices) >= 100
    names = [line.split("=")[0] for line in path.read_text(encoding="utf-8").splitlines()
             if line.startswith("PRICE_")]
    assert len(names) == len(prices)  # every key names a known type, none twice


def test_information_driver_reports_priced_offers_per_site(tmp_path: Path) -> None:
    etc = make_home(tmp_path)
    driver = im_driver(etc, "SMALL_INSTANCES=2\nINSTANCES_T3_MICRO=4\nINSTANCES_M5_LARGE=1\n"
                            "INSTANCES_C5_LARGE=0\nPRICE_T3_MICRO=0.5\n")
    info = run(driver.monitor(HOST))
    assert offers_of(info.attributes) == (
        Offer("m1.small", 1, 1741, 0.044), Offer("m5.large", 2, 8192, 0.096),
        Offer("t3.micro", 2, 1024, 0.5))  # c5.large has no room: not offered
    # the host's own prices win for that site; a bad one is one clear line
    cheap = HostRef(id=4, name="ec2_b", attributes={"PRICE_M5_LARGE": "0.01",
                                                     "PRICE_PER_HOUR": "0.5"})
    assert offers_of(run(driver.monitor(cheap)).attributes)[0] == Offer("m5.large", 2, 8192,
                                                                        0.01)
    bad = HostRef(id=5, name="ec2_c", attributes={"PRICE_M5_LARGE": "cheap"})
    with pytest.raises(DriverError, match=r"host ec2_c: PRICE_M5_LARGE: must be a price"):
        run(driver.monitor(bad))
    # an operator's own price file; a price for no known type is refused with its line
    (etc / "im_ec2" / "mine.conf").write_text("PRICE_M1_SMALL=0.001\n", encoding="utf-8")
    time.sleep(0.01)
    driver = im_driver(etc, "SMALL_INSTANCES=1\nINSTANCES_M5_LARGE=1\n"
                            "PRICES_FILE=im_ec2/mine.conf\n")
    assert offers_of(run(driver.monitor(HOST)).attributes) == (
        Offer("m1.small", 1, 1741, 0.001),)
    time.sleep(0.01)
    driver = im_driver(etc, "SMALL_INSTANCES=1\nPRICE_ZZ_TOP=1\n")
    with pytest.raises(DriverError, match=r"im_ec2.conf.*PRICE_ZZ_TOP: names no known"):
        run(driver.monitor(HOST))


def test_site_report_sizes_offers_from_the_catalogue_once(tmp_path: Path, site: MotoServer,
                                                          proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url,
                        rc_extra=FAST + "EC2_EXTRA_INSTANCE_TYPES=zz9.plural\n")
    reported = HostInfo(attributes={"HYPERVISOR": "ec2", "INSTANCE_TYPES": (
        "m1.small:1:1741:0.044 t3.micro:0:0:0.0104 zz9.plural:1:1024:0.001")})

    async def scenario() -> None:
        completed = await driver.site_report(HOST, reported)
        # moto's catalogue: m1.small has 1740 MiB, t3.micro 2 vCPUs; zz9.plural is not offered
        assert offers_of(completed.attributes) == (
            Offer("t3.micro", 2, 1024, 0.0104), Offer("m1.small", 1, 1740, 0.044))
        assert completed.attributes["HYPERVISOR"] == "ec2"
        again = await driver.site_report(HOST, reported)
        assert again == completed
        await driver.close()

    run(scenario())
    assert proxy.counts["DescribeInstanceTypes"] == 1


def test_unreachable_catalogue_keeps_the_report(tmp_path: Path, site: MotoServer,
                                                proxy: FaultProxy) -> None:
    driver = driver_for(tmp_path, proxy.url, rc_extra=FAST + "EC2_MAX_ATTEMPTS=1\n")
    proxy.add_fault("DescribeInstanceTypes", "error500", times=None)
    reported = HostInfo(attributes={"INSTANCE_TYPES": "m1.small:1:1741:0.044"})

    async def scenario() -> None:
        assert await driver.site_report(HOST, reported) is reported
        await driver.close()

    run(scenario())


def test_vm_without_a_type_runs_as_the_cheapest_that_fits(tmp_path: Path, site: MotoServer
                                                          ) -> None:
    driver = driver_for(tmp_path, site.url)
    offered = HostRef(id=3, name="ec2", attributes={"INSTANCE_TYPES": (
        "t3.small:2:2048:0.0208 t3.medium:2:4096:0.0416 m5.large:2:8192:0.096 "
        "c5.xlarge:4:8192:0.17")})
    section = 'EC2 = [ AMI="ami-1", KEYPAIR="k" ]'

    async def scenario() -> None:
        medium = await driver.deploy(spec(1, section, host=offered, cpu=1.5, memory=3000))
        xlarge = await driver.deploy(spec(2, f"VCPU=3\n{section}", host=offered, cpu=0.5,
                                          memory=512))
        named = await driver.deploy(spec(3, 'EC2 = [ AMI="ami-1", KEYPAIR="k", '
                                            'INSTANCETYPE="m5.large" ]', host=offered))
        assert describe(site, medium)["InstanceType"] == "t3.medium"
        assert describe(site, xlarge)["InstanceType"] == "c5.xlarge"
        assert describe(site, named)["InstanceType"] == "m5.large"
        polled = await driver.poll([VmRef(1, medium, offered), VmRef(3, named, offered)])
        assert polled[1].info["PRICE_PER_HOUR"] == "0.0416"
        assert polled[3].info["PRICE_PER_HOUR"] == "0.096"
        assert "PRICE_PER_HOUR" not in (await driver.poll([VmRef(1, medium, HOST)]))[1].info
        with pytest.raises(DriverError, match=r"VM 4: no instance type offered at ec2 fits "
                                              r"8 VCPU and 1024 MB of MEMORY"):
            await driver.deploy(spec(4, section, host=offered, cpu=8, memory=1024))
        # a site listing no offers keeps the defaults' type (vmm_ec2.conf: m1.small)
        plain = await driver.deploy(spec(5, section, cpu=8, memory=1024))
        assert describe(site, plain)["InstanceType"] == "m1.small"
        await driver.close()

    run(scenario())


def test_context_reaches_the_instance_as_cloud_init_user_data(tmp_path: Path,
                                                              site: MotoServer) -> None:
    driver = driver_for(tmp_path, site.url)
    context = ('CONTEXT = [ SSH_PUBLIC_KEY = "ssh-ed25519 AAAAC3Nza me@here", '
               'GREETING = "hello", START_SCRIPT = "touch /tmp/ready" ]')

    def user_data(instance_id: str) -> str:
        answer = site.client().describe_instance_attribute(InstanceId=instance_id,
                                                           Attribute="userData")
        return base64.b64decode(answer["UserData"]["Value"]).decode()

    async def scenario() -> None:
        alone = await driver.deploy(spec(1, f'{context}\nEC2 = [ AMI="ami-1", KEYPAIR="k" ]'))
        config = yaml.safe_load(user_data(alone))
        assert config["ssh_authorized_keys"] == ["ssh-ed25519 AAAAC3Nza me@here"]
        [written] = [item for item in config["write_files"]
                     if item["path"] == "/etc/one-context.d/context.sh"]
        assert "GREETING='hello'" in written["content"]
        assert config["runcmd"] == ["cd /etc/one-context.d && /bin/sh "
                                    "/etc/one-context.d/start_script"]
        both = await driver.deploy(spec(2, f'{context}\nEC2 = [ AMI="ami-1", KEYPAIR="k", '
                                           'USERDATA="#!/bin/sh\necho mine" ]'))
        parts = [part.get_content_type() for part in
                 email.message_from_string(user_data(both)).walk()
                 if not part.is_multipart()]
        assert parts == ["text/cloud-config", "text/x-shellscript"]
        await driver.close()

    run(scenario())
    with pytest.raises(ValidationError, match="START_SCRIPT_BASE64 is not base64"):
        driver.check_template(parse('CONTEXT = [ START_SCRIPT_BASE64 = "%%" ]\n'
                                    'EC2 = [ AMI="ami-1", KEYPAIR="k" ]'))
    with pytest.raises(ValidationError, match="is longer than 16384 bytes"):
        driver.check_template(parse(f'CONTEXT = [ START_SCRIPT = "{"x" * 17000}" ]\n'
                                    'EC2 = [ AMI="ami-1", KEYPAIR="k" ]'))

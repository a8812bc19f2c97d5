"""A spot VM's hourly price is its zone's spot price (``DescribeSpotPriceHistory``, cached
per site, type and zone), an on-demand one's the site's price table; a site that cannot
tell its spot prices costs one log line and the VM shows its on-demand price.

Real ``moto_server`` through boto3 and the fault proxy of :mod:`ec2_sites` (moto
prices every type and zone at US$ 0.00001 an hour). Nothing of the driver is mocked.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudburst.drivers.base import DeploySpec, DriverContext, DriverOptions, HostRef, VmRef
from cloudburst.drivers.ec2 import spot_prices
from cloudburst.drivers.ec2.vm import Ec2VmDriver
from cloudburst.template import parse
from ec2_sites import FaultProxy, MotoServer, moto_servers, write_ec2_etc

INSTALL = "cb-5b07c0ffee000001"
SECTION = 'EC2 = [ AMI="ami-00bafcb5", KEYPAIR="k", INSTANCETYPE="t3.small"{extra} ]'
SPOT = SECTION.format(extra=', MARKET="spot", MAX_PRICE="0.05"')
ON_DEMAND = SECTION.format(extra="")
#: The site's offers, as its information driver reports them.
HOST = HostRef(id=3, name="ec2", attributes={"INSTANCE_TYPES": "t3.small:2:2048:0.0208"})
#: What moto answers for every type and zone.
MOTO_SPOT_PRICE = "0.00001"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    with moto_servers(1, tmp_path_factory.mktemp("moto")) as servers:
        yield servers[0]


@pytest.fixture
def proxy(site: MotoServer) -> Iterator[FaultProxy]:
    site.reset()
    with FaultProxy(site.url) as running:
        yield running


def driver(tmp_path: Path, url: str) -> Ec2VmDriver:
    etc = write_ec2_etc(tmp_path, rc_extra="EC2_READ_TIMEOUT=30\nEC2_RATE_LIMITS=off\n")
    return Ec2VmDriver(DriverContext(
        name="vmm_ec2", executable="one_vmm_ec2", arguments=("-u", url, "vmm_ec2/vmm_ec2.conf"),
        options=DriverOptions(threads=15), etc_dir=etc, remotes_dir=etc.parent / "remotes",
        var_dir=etc.parent / "var", install_id=INSTALL))


def spec(vm_id: int, section: str) -> DeploySpec:
    template = parse(f"CPU = 1\nMEMORY = 512\nVMID = {vm_id}\n{section}\n")
    return DeploySpec(vm_id=vm_id, host=HOST, deployment_file=Path("/nonexistent"),
                      template=template, token=f"{INSTALL}-vm{vm_id}-0", memory_mb=512, cpu=1,
                      section=template.get_vector("EC2"))


def test_spot_vms_are_priced_at_the_zone_spot_price_read_once(tmp_path: Path,
                                                              proxy: FaultProxy) -> None:
    ec2 = driver(tmp_path, proxy.url)

    async def scenario() -> None:
        try:
            spot_a, spot_b, plain = await asyncio.gather(
                ec2.deploy(spec(1, SPOT)), ec2.deploy(spec(2, SPOT)),
                ec2.deploy(spec(3, ON_DEMAND)))
            refs = [VmRef(1, spot_a, HOST), VmRef(2, spot_b, HOST), VmRef(3, plain, HOST)]
            polled = await ec2.poll(refs)
            for vm_id in (1, 2):
                assert polled[vm_id].info["AWS_MARKET"] == "spot"
                assert polled[vm_id].info["PRICE_PER_HOUR"] == MOTO_SPOT_PRICE
                assert polled[vm_id].price == float(MOTO_SPOT_PRICE)  # the stay follows it
            assert polled[3].info["PRICE_PER_HOUR"] == "0.0208"  # the price table's
            assert polled[3].price is None  # nothing better than the stay's own price
            # both spot VMs share one type and zone: one call, then the cache
            assert proxy.counts["DescribeSpotPriceHistory"] == 1
            again = await ec2.poll(refs)
            assert again[1].info["PRICE_PER_HOUR"] == MOTO_SPOT_PRICE
            assert proxy.counts["DescribeSpotPriceHistory"] == 1
        finally:
            await ec2.close()

    asyncio.run(scenario())


def test_spot_fallen_back_to_on_demand_shows_the_on_demand_price(tmp_path: Path,
                                                                   proxy: FaultProxy) -> None:
    proxy.add_fault("RunInstances", "capacity")  # the spot call is refused, on-demand goes
    ec2 = driver(tmp_path, proxy.url)

    async def scenario() -> None:
        try:
            deploy_id = await ec2.deploy(spec(1, SPOT))
            polled = (await ec2.poll([VmRef(1, deploy_id, HOST)]))[1]
            assert polled.info["AWS_MARKET"] == "on-demand"
            assert polled.info["PRICE_PER_HOUR"] == "0.0208" and polled.price is None
            assert proxy.counts["DescribeSpotPriceHistory"] == 0
        finally:
            await ec2.close()

    asyncio.run(scenario())


def test_unreadable_spot_prices_cost_one_line_and_show_on_demand(
        tmp_path: Path, proxy: FaultProxy, caplog: pytest.LogCaptureFixture) -> None:
    ec2 = driver(tmp_path, proxy.url)
    proxy.add_fault("DescribeSpotPriceHistory", "code", times=None, code="UnauthorizedOperation",
                    message="You are not authorized to perform this operation.")

    async def scenario() -> None:
        try:
            deploy_id = await ec2.deploy(spec(1, SPOT))
            ref = VmRef(1, deploy_id, HOST)
            for _ in range(3):
                polled = (await ec2.poll([ref]))[1]
                assert polled.info["PRICE_PER_HOUR"] == "0.0208" and polled.price is None
            # asked once: the next try waits RETRY_SECONDS
            assert proxy.counts["DescribeSpotPriceHistory"] == 1
        finally:
            await ec2.close()

    with caplog.at_level(logging.WARNING):
        asyncio.run(scenario())
    lines = [record.getMessage() for record in caplog.records
             if "spot prices unavailable" in record.getMessage()]
    assert len(lines) == 1, lines
    assert "UnauthorizedOperation" in lines[0] and "\n" not in lines[0]
    assert spot_prices.RETRY_SECONDS >= 60

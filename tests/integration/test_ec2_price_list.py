"""``cloudburst ec2-prices``: the EC2 price table refreshed from the AWS Price List API.

The command runs as an operator runs it (a subprocess with its own
``CLOUDBURST_HOME``) against :mod:`pricing_server`, a Price List API fixture
speaking the real wire protocol to boto3 (moto has no ``pricing`` service);
the information driver then reads the file it wrote. Refused credentials and
an endpoint where nothing listens leave the table in place, in one line that
holds no credential.
"""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudburst.drivers.base import DriverContext, DriverOptions, HostRef
from cloudburst.drivers.ec2.information import Ec2InformationDriver
from cloudburst.errors import DriverError
from cloudburst.model.offers import offers_of
from ec2_sites import write_rc
from pricing_server import ACCESS_KEY, SECRET_KEY, PricingServer

HOST = HostRef(id=3, name="ec2")
IM_CONF = "INSTANCES_T3_SMALL=2\nINSTANCES_M5_LARGE=2\nINSTANCES_C5_XLARGE=1\n"


@pytest.fixture(scope="module")
def pricing() -> Iterator[PricingServer]:
    with PricingServer() as server:
        yield server


def home_with(tmp_path: Path, *, region: str, access_key: str = ACCESS_KEY,
              secret_key: str = SECRET_KEY) -> Path:
    etc = tmp_path / "home" / "etc"
    (etc / "im_ec2").mkdir(parents=True)
    (etc / "im_ec2" / "im_ec2.conf").write_text(IM_CONF, encoding="utf-8")
    write_rc(etc / "vmm_ec2" / "vmm_ec2rc", region=region, access_key=access_key,
             secret_key=secret_key)
    return etc


def ec2_prices(etc: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    env["CLOUDBURST_HOME"] = str(etc.parent)
    return subprocess.run([sys.executable, "-m", "cloudburst.cli.tool", "ec2-prices", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def offered(etc: Path) -> dict[str, float]:
    driver = Ec2InformationDriver(DriverContext(
        name="im_ec2", executable="one_im_ec2", arguments=("im_ec2/im_ec2.conf",),
        options=DriverOptions(), etc_dir=etc, remotes_dir=etc.parent, var_dir=etc.parent))
    info = asyncio.run(driver.monitor(HOST))
    return {offer.name: offer.price for offer in offers_of(info.attributes)}


def test_prices_of_the_sites_region_replace_the_table_the_driver_reads(
        tmp_path: Path, pricing: PricingServer) -> None:
    etc = home_with(tmp_path, region="eu-west-1")
    assert offered(etc)["m5.large"] == 0.096  # the shipped us-east-1 table until now
    before = len(pricing.requests)
    done = ec2_prices(etc, "--endpoint-url", pricing.url)
    assert done.returncode == 0, done.stderr
    table = etc / "im_ec2" / "ec2_prices.conf"
    assert f"Wrote 2 on-demand prices of eu-west-1 to {table}" in done.stdout
    assert stat.S_IMODE(table.stat().st_mode) == 0o600
    text = table.read_text(encoding="utf-8")
    assert re.search(r"# Dated:  \d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC", text)
    assert f"# Source: AWS Price List API {pricing.url}" in text
    assert "regionCode=eu-west-1, operatingSystem=Linux, tenancy=Shared" in text
    # Windows (0.199) and an unknown type (9.0) are not the site's Linux prices
    assert [line for line in text.splitlines() if line.startswith("PRICE_")] == [
        "PRICE_M5_LARGE=0.107", "PRICE_T3_SMALL=0.0228"]
    assert offered(etc) == {"m5.large": 0.107, "t3.small": 0.0228}  # c5.xlarge: no price
    # every filter went to the API, and the region's 150 other products took two pages
    calls = pricing.requests[before:]
    assert len(calls) == 2 and calls[1][1]["NextToken"]
    assert {(item["Field"], item["Value"]) for item in calls[0][1]["Filters"]} == {
        ("regionCode", "eu-west-1"), ("operatingSystem", "Linux"), ("tenancy", "Shared"),
        ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
        ("licenseModel", "No License required")}


def test_an_operators_prices_file_is_the_one_refreshed(tmp_path: Path,
                                                        pricing: PricingServer) -> None:
    etc = home_with(tmp_path, region="us-east-1")
    (etc / "im_ec2" / "im_ec2.conf").write_text(IM_CONF + "PRICES_FILE=im_ec2/site.conf\n",
                                                 encoding="utf-8")
    done = ec2_prices(etc, "--endpoint-url", pricing.url)
    assert done.returncode == 0, done.stderr
    assert not (etc / "im_ec2" / "ec2_prices.conf").exists()
    assert offered(etc) == {"t3.small": 0.0208, "m5.large": 0.096, "c5.xlarge": 0.17}


@pytest.mark.parametrize("wrong", ["secret", "key"])
def test_refused_credentials_leave_the_table_and_never_show(
        tmp_path: Path, pricing: PricingServer, wrong: str) -> None:
    access, secret = ACCESS_KEY, SECRET_KEY
    if wrong == "secret":
        secret = "not-the-secret-but-a-long-one-0123456789"
    else:
        access = "AKIAWRONGKEYID000042"
    etc = home_with(tmp_path, region="us-east-1", access_key=access, secret_key=secret)
    table = etc / "im_ec2" / "ec2_prices.conf"
    table.write_text("PRICE_M5_LARGE=0.5\n", encoding="utf-8")
    done = ec2_prices(etc, "--endpoint-url", pricing.url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and not done.stdout, done.stderr
    expected = "InvalidSignatureException" if wrong == "secret" else "UnrecognizedClientException"
    assert expected in lines[0] and "price table in place is unchanged" in lines[0]
    for secret_text in (access, secret, ACCESS_KEY, SECRET_KEY):
        assert secret_text not in done.stderr
    assert table.read_text(encoding="utf-8") == "PRICE_M5_LARGE=0.5\n"
    assert offered(etc)["m5.large"] == 0.5


def test_an_unreachable_api_keeps_the_shipped_table(tmp_path: Path) -> None:
    etc = home_with(tmp_path, region="us-east-1")
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}"
        done = ec2_prices(etc, "--endpoint-url", url)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot connect" in lines[0], done.stderr
    assert SECRET_KEY not in done.stderr and ACCESS_KEY not in done.stderr
    assert not (etc / "im_ec2" / "ec2_prices.conf").exists()
    assert offered(etc)["m5.large"] == 0.096  # the shipped table


def driver_of(etc: Path) -> Ec2InformationDriver:
    return Ec2InformationDriver(DriverContext(
        name="im_ec2", executable="one_im_ec2", arguments=("im_ec2/im_ec2.conf",),
        options=DriverOptions(), etc_dir=etc, remotes_dir=etc.parent, var_dir=etc.parent))


async def monitored(driver: Ec2InformationDriver) -> dict[str, float]:
    info = await driver.monitor(HOST)
    return {offer.name: offer.price for offer in offers_of(info.attributes)}


def test_the_daemon_refreshes_a_table_older_than_prices_refresh(
        tmp_path: Path, pricing: PricingServer) -> None:
    etc = home_with(tmp_path, region="eu-west-1")
    conf = etc / "im_ec2" / "im_ec2.conf"
    conf.write_text(IM_CONF + f"PRICES_REFRESH=3600\nPRICES_ENDPOINT={pricing.url}\n",
                    encoding="utf-8")
    table = etc / "im_ec2" / "ec2_prices.conf"

    async def scenario() -> None:
        driver = driver_of(etc)
        try:
            before = len(pricing.requests)
            # no table in the home yet: this monitoring reports the shipped one and
            # starts the refresh in the background; the next one reads what it wrote
            assert (await monitored(driver))["m5.large"] == 0.096
            await driver.prices.settled()
            assert len(pricing.requests) == before + 2  # two pages of eu-west-1
            assert await monitored(driver) == {"m5.large": 0.107, "t3.small": 0.0228}
            await driver.prices.settled()
            assert len(pricing.requests) == before + 2  # fresh: not fetched again
            # an hour later (the table's age is its file's) it is fetched again
            table.write_text("PRICE_M5_LARGE=0.5\n", encoding="utf-8")
            old = table.stat().st_mtime - 3601
            os.utime(table, (old, old))
            assert (await monitored(driver))["m5.large"] == 0.5
            await driver.prices.settled()
            assert len(pricing.requests) == before + 4
            assert (await monitored(driver))["m5.large"] == 0.107
        finally:
            await driver.close()

    asyncio.run(scenario())
    assert stat.S_IMODE(table.stat().st_mode) == 0o600


def test_a_refused_timed_refresh_keeps_the_table_says_so_once_and_waits(
        tmp_path: Path, pricing: PricingServer, caplog: pytest.LogCaptureFixture) -> None:
    secret = "not-the-secret-but-a-long-one-0123456789"
    etc = home_with(tmp_path, region="us-east-1", secret_key=secret)
    (etc / "im_ec2" / "im_ec2.conf").write_text(
        IM_CONF + f"PRICES_REFRESH=60\nPRICES_ENDPOINT={pricing.url}\n", encoding="utf-8")
    table = etc / "im_ec2" / "ec2_prices.conf"
    table.write_text("PRICE_M5_LARGE=0.5\n", encoding="utf-8")
    old = table.stat().st_mtime - 61
    os.utime(table, (old, old))

    async def scenario() -> None:
        driver = driver_of(etc)
        try:
            before = len(pricing.requests)
            for _ in range(3):  # refused once; not asked again at every monitoring
                assert (await monitored(driver))["m5.large"] == 0.5
                await driver.prices.settled()
            assert len(pricing.requests) == before + 1
        finally:
            await driver.close()

    with caplog.at_level("WARNING", logger="cloudburst.drivers.ec2.price_refresh"):
        asyncio.run(scenario())
    lines = [record.getMessage() for record in caplog.records
             if record.name == "cloudburst.drivers.ec2.price_refresh"]
    assert len(lines) == 1 and "InvalidSignatureException" in lines[0], lines
    assert "\n" not in lines[0] and secret not in lines[0] and ACCESS_KEY not in lines[0]
    assert table.read_text(encoding="utf-8") == "PRICE_M5_LARGE=0.5\n"


def test_prices_refresh_must_be_seconds(tmp_path: Path) -> None:
    etc = home_with(tmp_path, region="us-east-1")
    (etc / "im_ec2" / "im_ec2.conf").write_text(IM_CONF + "PRICES_REFRESH=daily\n",
                                                 encoding="utf-8")
    with pytest.raises(DriverError, match="PRICES_REFRESH: must be a whole number"):
        asyncio.run(driver_of(etc).monitor(HOST))

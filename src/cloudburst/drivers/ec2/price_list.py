"""A site's price table refreshed from the AWS Price List API (``cloudburst ec2-prices``).

The information driver reads a site's on-demand prices from the file
``PRICES_FILE`` of ``im_ec2.conf`` names (default ``im_ec2/ec2_prices.conf``;
see :mod:`.pricing`). :func:`refresh` rewrites that file from the Price List
API: ``GetProducts`` of service ``AmazonEC2`` with ``TERM_MATCH`` filters on
``regionCode`` (the site's region: no table of AWS's location names to keep
up to date), ``operatingSystem=Linux``, ``tenancy=Shared``,
``preInstalledSw=NA``, ``capacitystatus=Used`` and ``licenseModel=No License
required``, paginated (100 products a page). Each product's on-demand hourly
USD price becomes ``PRICE_<TYPE>=`` for the types cloudburst knows; the file
says when it was fetched, from where and with which filters, and is written
atomically with mode 0600.

The API answers at ``api.pricing.us-east-1.amazonaws.com`` (also
``eu-central-1`` and ``ap-south-1``) whatever the site's region, with the
site's credentials (the driver's rc file, else the AWS chain); it needs the
IAM permission ``pricing:GetProducts``. When it cannot be asked (no network,
refused credentials, an endpoint that is not the API), nothing is written: the
table in place stays (the shipped one when there is none) and the caller gets
one line saying why, without any credential in it.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from botocore.config import Config

from cloudburst.drivers.ec2 import types
from cloudburst.drivers.ec2.client import boto_session
from cloudburst.drivers.ec2.credentials import Credentials, credentials_from
from cloudburst.drivers.ec2.env_file import empty_env_file, read_env_file
from cloudburst.drivers.ec2.errors import classify
from cloudburst.drivers.ec2.im_config import load_im_config
from cloudburst.errors import DriverError
from cloudburst.model.capacity import capacity_key

__all__ = ["PRICING_REGION", "PriceList", "fetch_prices", "price_file_text", "refresh",
           "refresh_site"]

#: Where the Price List API answers by default.
PRICING_REGION: Final = "us-east-1"
#: The product attributes every price is filtered on, besides the region.
PRODUCT_FILTERS: Final = (("operatingSystem", "Linux"), ("tenancy", "Shared"),
                          ("preInstalledSw", "NA"), ("capacitystatus", "Used"),
                          ("licenseModel", "No License required"))
_PAGE: Final = 100
_MAX_PAGES: Final = 200


@dataclass(frozen=True, slots=True)
class PriceList:
    """Prices fetched for one region, and where from (for the file's header)."""

    region: str
    endpoint: str
    prices: Mapping[str, float]
    fetched_at: datetime.datetime
    products: int


def _client(credentials: Credentials, endpoint_url: str | None, timeout: float) -> Any:
    return boto_session(credentials, PRICING_REGION).client(
        "pricing", endpoint_url=endpoint_url, region_name=PRICING_REGION,
        config=Config(retries={"total_max_attempts": 3, "mode": "standard"},
                      connect_timeout=timeout, read_timeout=timeout,
                      user_agent_extra="cloudburst"))


def _hourly_usd(product: Mapping[str, Any]) -> float | None:
    """The on-demand price per hour in USD of one Price List product, if it has one."""
    for term in ((product.get("terms") or {}).get("OnDemand") or {}).values():
        for dimension in (term.get("priceDimensions") or {}).values():
            if str(dimension.get("unit", "")).lower() not in ("hrs", "hours", "hour"):
                continue
            try:
                price = float((dimension.get("pricePerUnit") or {}).get("USD", ""))
            except ValueError:
                continue
            if math.isfinite(price) and price >= 0:
                return price
    return None


def prices_of(price_list: Iterable[str]) -> tuple[dict[str, float], int]:
    """``{type: US$ per hour}`` of ``GetProducts``' ``PriceList`` strings, and how many
    products there were. Types cloudburst does not know and products without an
    hourly on-demand price are left out; a type listed twice keeps its lower price."""
    prices: dict[str, float] = {}
    count = 0
    for text in price_list:
        count += 1
        product = json.loads(text)
        kind = str(((product.get("product") or {}).get("attributes") or {})
                   .get("instanceType", "")).lower()
        price = _hourly_usd(product)
        if not types.is_known(kind) or price is None or price == 0:
            continue
        prices[kind] = min(price, prices.get(kind, price))
    return prices, count


def fetch_prices(region: str, credentials: Credentials, *, endpoint_url: str | None = None,
                 timeout: float = 30.0) -> PriceList:
    """The on-demand Linux prices of ``region`` (see the module doc).

    Raises:
        DriverError: the API could not be asked or answered nothing usable
            (``DriverAuthError`` for refused credentials); one line, no secret.
    """
    client = _client(credentials, endpoint_url, timeout)
    endpoint = str(getattr(client.meta, "endpoint_url", endpoint_url or ""))
    filters = [{"Type": "TERM_MATCH", "Field": field, "Value": value}
               for field, value in (("regionCode", region), *PRODUCT_FILTERS)]
    texts: list[str] = []
    params: dict[str, Any] = {"ServiceCode": "AmazonEC2", "Filters": filters,
                              "FormatVersion": "aws_v1", "MaxResults": _PAGE}
    try:
        for _ in range(_MAX_PAGES):
            page = client.get_products(**params)
            texts.extend(str(item) for item in page.get("PriceList") or [])
            token = page.get("NextToken")
            if not token:
                break
            params["NextToken"] = token
        prices, count = prices_of(texts)
    except (ValueError, TypeError, AttributeError) as exc:
        raise DriverError(f"AWS Price List API at {endpoint}: an answer that is not a price "
                          f"list ({type(exc).__name__})") from None
    except Exception as exc:  # botocore's failures, classified once as the EC2 calls'
        failure = classify(exc, "GetProducts", endpoint, credentials.secrets(),
                           service="AWS Price List API")
        raise failure.error from None
    finally:
        client.close()
    if not prices:
        raise DriverError(f"AWS Price List API at {endpoint}: no on-demand Linux price for "
                          f"region {region!r} ({count} products); is the region right?")
    return PriceList(region=region, endpoint=endpoint, prices=prices,
                     fetched_at=datetime.datetime.now(datetime.UTC), products=count)


def price_file_text(price_list: PriceList) -> str:
    """The price file: a dated, sourced header, then ``PRICE_<TYPE>=`` lines by name."""
    stamp = price_list.fetched_at.strftime("%Y-%m-%d %H:%M:%S UTC")
    filters = ", ".join(f"{field}={value}" for field, value in PRODUCT_FILTERS)
    header = [
        "# EC2 price table of the information driver (one_im_ec2): US$ per hour,",
        f"# On-Demand, region {price_list.region}.",
        "#",
        f"# Dated:  {stamp} (fetched by 'cloudburst ec2-prices')",
        f"# Source: AWS Price List API {price_list.endpoint}, GetProducts of AmazonEC2,",
        f"#         regionCode={price_list.region}, {filters}",
        f"#         ({price_list.products} products, {len(price_list.prices)} priced types).",
        "#",
        "# Run 'cloudburst ec2-prices' again to refresh it; im_ec2.conf's PRICE_<TYPE>",
        "# lines and a host's own PRICE_<TYPE> attributes still win over it.",
        "",
    ]
    lines = [f"PRICE_{capacity_key(kind)}={price:.10g}"
             for kind, price in sorted(price_list.prices.items())]
    return "\n".join(header + lines) + "\n"


def refresh(target: Path, region: str, credentials: Credentials, *,
            endpoint_url: str | None = None, timeout: float = 30.0) -> PriceList:
    """Fetch ``region``'s prices and replace ``target`` with them (mode 0600).

    Raises:
        DriverError: nothing was fetched; ``target`` is left as it was.
        OSError: ``target`` could not be written.
    """
    price_list = fetch_prices(region, credentials, endpoint_url=endpoint_url, timeout=timeout)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=".prices-", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(price_file_text(price_list))
        os.chmod(partial, 0o600)
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return price_list


def refresh_site(etc: Path, *, rc: str = "vmm_ec2/vmm_ec2rc", im_conf: str = "im_ec2/im_ec2.conf",
                 region: str | None = None, endpoint_url: str | None = None,
                 output: Path | None = None) -> tuple[PriceList, Path]:
    """:func:`refresh` for a home's ``etc``: credentials and region from the driver's
    rc file (``rc``, relative to ``etc``; absent: the AWS chain and us-east-1), the
    target from ``PRICES_FILE`` of ``im_conf`` (default ``im_ec2/ec2_prices.conf``)
    unless ``output`` names it. Returns what was fetched and where it went.

    Raises:
        ConfigError: the rc file or ``im_ec2.conf`` is malformed.
        DriverError: nothing was fetched; the table in place is left as it was.
        OSError: the target could not be written.
    """
    rc_path = etc / rc
    env = read_env_file(rc_path) if rc_path.is_file() else empty_env_file()
    chosen = (region or env.values.get("AWS_DEFAULT_REGION", "").strip()
              or env.values.get("AWS_REGION", "").strip() or PRICING_REGION)
    if output is None:
        conf = etc / im_conf
        named = load_im_config(conf).price_file if conf.is_file() else None
        output = etc / (named or "im_ec2/ec2_prices.conf")
    return refresh(output, chosen, credentials_from(env), endpoint_url=endpoint_url), output

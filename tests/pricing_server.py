"""A minimal AWS Price List API server for tests (the ``pricing`` service, ``GetProducts``).

moto implements no ``pricing`` service (moto 5.x), and no other local
implementation is installed here; this fixture is the stand-in. It speaks the
real wire protocol boto3 uses: ``POST /`` with ``X-Amz-Target:
AWSPriceListService.GetProducts``, an ``application/x-amz-json-1.1`` body, AWS
Signature Version 4 (verified with the fixture's own key: a wrong key id gets
``UnrecognizedClientException``, a wrong secret ``InvalidSignatureException``,
as AWS answers), ``TERM_MATCH`` filters, ``MaxResults``/``NextToken`` paging and
``PriceList`` entries that are JSON documents in strings. Its products are a
small catalogue in the Price List's shape, with the distractors a real region
has (Windows, dedicated tenancy, SQL Server pre-installed, unused capacity
reservations), so a client that forgets a filter gets wrong prices.

Usage::

    with PricingServer() as server:
        server.url, server.access_key, server.secret_key, server.requests
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

ACCESS_KEY = "AKIAPRICINGFIXTURE01"
SECRET_KEY = "pricing-fixture-secret-key-0123456789abcd"

#: (instanceType, regionCode, operatingSystem, tenancy, preInstalledSw, capacitystatus, USD)
CATALOGUE: tuple[tuple[str, str, str, str, str, str, str], ...] = (
    ("t3.small", "us-east-1", "Linux", "Shared", "NA", "Used", "0.0208000000"),
    ("t3.medium", "us-east-1", "Linux", "Shared", "NA", "Used", "0.0416000000"),
    ("m5.large", "us-east-1", "Linux", "Shared", "NA", "Used", "0.0960000000"),
    ("c5.xlarge", "us-east-1", "Linux", "Shared", "NA", "Used", "0.1700000000"),
    ("m5.large", "us-east-1", "Windows", "Shared", "NA", "Used", "0.1880000000"),
    ("m5.large", "us-east-1", "Linux", "Dedicated", "NA", "Used", "0.1060000000"),
    ("m5.large", "us-east-1", "Linux", "Shared", "SQL Std", "Used", "0.5760000000"),
    ("m5.large", "us-east-1", "Linux", "Shared", "NA", "UnusedCapacityReservation",
     "0.0960000000"),
    ("t3.small", "eu-west-1", "Linux", "Shared", "NA", "Used", "0.0228000000"),
    ("m5.large", "eu-west-1", "Linux", "Shared", "NA", "Used", "0.1070000000"),
    ("m5.large", "eu-west-1", "Windows", "Shared", "NA", "Used", "0.1990000000"),
    ("notatype.large", "eu-west-1", "Linux", "Shared", "NA", "Used", "9.0000000000"),
)
#: Products a region has beyond those priced above (so several pages are needed).
FILLER_PER_REGION = 150


def _product(sku: str, attributes: dict[str, str], usd: str) -> str:
    term = f"{sku}.JRTCKXETXF"
    return json.dumps({
        "product": {"productFamily": "Compute Instance", "sku": sku,
                    "attributes": {"servicecode": "AmazonEC2", **attributes}},
        "serviceCode": "AmazonEC2",
        "terms": {"OnDemand": {term: {
            "sku": sku, "offerTermCode": "JRTCKXETXF", "effectiveDate": "2026-11-01T00:00:00Z",
            "priceDimensions": {f"{term}.6YS6EN2CT7": {
                "unit": "Hrs", "description": "On Demand hourly rate",
                "pricePerUnit": {"USD": usd}, "rateCode": f"{term}.6YS6EN2CT7"}}}}},
        "version": "20261101000000", "publicationDate": "2026-11-01T00:00:00Z",
    })


def _products() -> list[tuple[dict[str, str], str]]:
    found: list[tuple[dict[str, str], str]] = []
    for number, (kind, region, system, tenancy, software, capacity, usd) in enumerate(CATALOGUE):
        attributes = {"instanceType": kind, "regionCode": region, "operatingSystem": system,
                      "tenancy": tenancy, "preInstalledSw": software,
                      "capacitystatus": capacity, "licenseModel": "No License required"}
        found.append((attributes, _product(f"SKU{number:04d}", attributes, usd)))
    for region in ("us-east-1", "eu-west-1"):
        for number in range(FILLER_PER_REGION):  # Linux products of other families
            attributes = {"instanceType": "", "regionCode": region, "operatingSystem": "Linux",
                          "tenancy": "Shared", "preInstalledSw": "NA", "capacitystatus": "Used",
                          "licenseModel": "No License required",
                          "usagetype": f"EBS:VolumeUsage.{number}"}
            found.append((attributes, _product(f"FILL{region}{number:04d}", attributes,
                                               "0.0000000000")))
    return found


@dataclass
class PricingServer:
    """The fixture server on a free port of 127.0.0.1 (see the module doc)."""

    access_key: str = ACCESS_KEY
    secret_key: str = SECRET_KEY
    #: Each request's (target, parsed body), in order.
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> PricingServer:
        products = _products()
        fixture = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _answer(self, status: int, document: dict[str, Any]) -> None:
                body = json.dumps(document).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/x-amz-json-1.1")
                self.send_header("x-amzn-RequestId", "00000000-0000-0000-0000-000000000000")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._answer(status, {"__type": kind, "message": message})

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                target = self.headers.get("X-Amz-Target", "")
                try:
                    document = json.loads(body or b"{}")
                except ValueError:
                    document = {}
                fixture.requests.append((target, document))
                refusal = fixture.check_signature(self, body)
                if refusal is not None:
                    self._error(400, *refusal)
                    return
                if target != "AWSPriceListService.GetProducts":
                    self._error(400, "UnknownOperationException", f"unknown target {target}")
                    return
                if document.get("ServiceCode") != "AmazonEC2":
                    self._error(400, "InvalidParameterException", "unknown ServiceCode")
                    return
                wanted = [(item["Field"], item["Value"]) for item in document.get("Filters", [])
                          if item.get("Type") == "TERM_MATCH"]
                matching = [text for attributes, text in products
                            if all(attributes.get(name) == value for name, value in wanted)]
                start = int(document.get("NextToken") or 0)
                size = min(int(document.get("MaxResults") or 100), 100)
                page: dict[str, Any] = {"FormatVersion": "aws_v1",
                                        "PriceList": matching[start:start + size]}
                if start + size < len(matching):
                    page["NextToken"] = str(start + size)
                self._answer(200, page)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def check_signature(self, handler: BaseHTTPRequestHandler,
                        body: bytes) -> tuple[str, str] | None:
        """``None`` when the request is signed with the fixture's key, else AWS's refusal
        (type, message). The messages echo the credential scope as AWS's do."""
        authorization = handler.headers.get("Authorization", "")
        parts = dict(part.strip().split("=", 1) for part in
                     authorization.removeprefix("AWS4-HMAC-SHA256 ").split(",") if "=" in part)
        scope = parts.get("Credential", "")
        if not authorization.startswith("AWS4-HMAC-SHA256 ") or not scope:
            return ("MissingAuthenticationTokenException", "Missing Authentication Token")
        key_id, _, rest = scope.partition("/")
        if key_id != self.access_key:
            return ("UnrecognizedClientException",
                    f"The security token included in the request is invalid. ({scope})")
        signed = parts.get("SignedHeaders", "").split(";")
        date, region = rest.split("/")[0], rest.split("/")[1]
        request = AWSRequest(method="POST", url=f"http://{handler.headers['Host']}{handler.path}",
                             data=body, headers={name: handler.headers[name] for name in signed
                                                 if handler.headers.get(name) is not None})
        request.context["timestamp"] = handler.headers.get("X-Amz-Date", "")
        signer = SigV4Auth(Credentials(self.access_key, self.secret_key), "pricing", region)
        expected = signer.signature(signer.string_to_sign(
            request, signer.canonical_request(request)), request)
        if not request.context["timestamp"].startswith(date) or \
                expected != parts.get("Signature"):
            return ("InvalidSignatureException",
                    "The request signature we calculated does not match the signature you "
                    f"provided. Check your AWS Secret Access Key and signing method. "
                    f"Credential={scope}")
        return None

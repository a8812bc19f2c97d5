"""botocore failures translated, once, into cloudburst's error tree.

=====================================================  ====================================
AWS / botocore                                          cloudburst
=====================================================  ====================================
``RequestLimitExceeded`` and other throttling codes     retried with backoff (the bucket is
                                                        emptied), then TransientDriverError
HTTP 5xx, ``InternalError``, ``Unavailable``            retried, then TransientDriverError
read timeouts, dropped connections                      retried, then TransientDriverError
cannot connect (refused, DNS, connect timeout)          retried, then TransientDriverError
``InsufficientInstanceCapacity``,                       CapacityError (the scheduler tries
``InstanceLimitExceeded``, ``VcpuLimitExceeded``, ...   another site)
``AuthFailure``, ``SignatureDoesNotMatch``, ...,        DriverAuthError
no credentials at all
``InvalidInstanceID.NotFound`` / ``.Malformed``         InstanceNotFoundError
anything else                                           DriverError
=====================================================  ====================================

A failure is *ambiguous* when the request may have been carried out although
no answer came back (a read timeout, a dropped connection, a 5xx): retrying a
non-idempotent call then needs a look-up first (see ``Site.call``).

Messages name the action, the site and the AWS error code; they are scrubbed
of credentials: the site's own key values, anything shaped like an access key
id, and ``Credential=``/``Signature=`` fragments that signature errors echo.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from botocore import exceptions as boto_errors

from cloudburst.errors import (
    CapacityError,
    DriverAuthError,
    DriverError,
    InstanceNotFoundError,
    TransientDriverError,
    one_line,
)

THROTTLING_CODES: Final = frozenset({
    "RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled",
    "RequestThrottledException", "TooManyRequestsException", "SlowDown",
    "PriorRequestNotComplete", "EC2ThrottledException", "BandwidthLimitExceeded",
})
CAPACITY_CODES: Final = frozenset({
    "InsufficientInstanceCapacity", "InstanceLimitExceeded", "VcpuLimitExceeded",
    "InsufficientHostCapacity", "InsufficientReservedInstanceCapacity",
    "InsufficientCapacity", "InsufficientFreeAddressesInSubnet",
    "MaxSpotInstanceCountExceeded", "InsufficientCapacityOnHost",
})
#: Refusals of a spot launch that an on-demand launch may not meet (capacity,
#: price, spot quota).
SPOT_REFUSAL_CODES: Final = CAPACITY_CODES | frozenset({
    "SpotMaxPriceTooLow", "UnfulfillableCapacity",
})
AUTH_CODES: Final = frozenset({
    "AuthFailure", "InvalidClientTokenId", "SignatureDoesNotMatch", "InvalidAccessKeyId",
    "UnrecognizedClientException", "MissingAuthenticationToken", "ExpiredToken",
    "ExpiredTokenException", "UnauthorizedOperation", "AccessDenied",
    "AccessDeniedException", "OptInRequired", "Blocked", "PendingVerification",
    "InvalidToken", "IncompleteSignature", "AuthFailure.ServiceLinkedRoleCreationNotPermitted",
    "InvalidSignatureException", "MissingAuthenticationTokenException",
})
NOT_FOUND_CODES: Final = frozenset({"InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"})
SERVER_CODES: Final = frozenset({
    "InternalError", "InternalFailure", "ServiceUnavailable", "Unavailable",
    "ServerInternal", "InsufficientAddressCapacity_Retry",
})

_ACCESS_KEY_RE: Final = re.compile(r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA|ANPA)[A-Z0-9]{12,}\b")
_SIGNATURE_RE: Final = re.compile(r"\b(Credential|Signature|SignedHeaders|X-Amz-Security-Token)"
                                  r"=[^\s,&\"']+", re.IGNORECASE)


def scrub(text: str, secrets: Sequence[str]) -> str:
    """``text`` on one line without credentials."""
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = _ACCESS_KEY_RE.sub("***", text)
    text = _SIGNATURE_RE.sub(lambda match: f"{match.group(1)}=***", text)
    return one_line(text, 400)


class AwsCodeError(DriverError):
    """An AWS error code the caller asked to handle itself (``expect=``)."""

    def __init__(self, message: str, aws_code: str) -> None:
        super().__init__(message)
        self.aws_code = aws_code


@dataclass(frozen=True, slots=True)
class Failure:
    """A classified failure of one API call.

    Attributes:
        error: what to raise if it is not retried.
        retryable: throttling, a server error or a network failure.
        throttled: the provider throttled the call (it was not carried out).
        ambiguous: the call may have been carried out although it failed.
        code: the AWS error code or the botocore exception name.
    """

    error: DriverError
    retryable: bool = False
    throttled: bool = False
    ambiguous: bool = False
    code: str = ""


def _client_error_parts(exc: boto_errors.ClientError) -> tuple[str, str, int]:
    response = getattr(exc, "response", None) or {}
    error = response.get("Error") or {}
    code = str(error.get("Code") or "Unknown")
    message = str(error.get("Message") or "")
    status = int((response.get("ResponseMetadata") or {}).get("HTTPStatusCode") or 0)
    return code, message, status


def classify(exc: BaseException, action: str, site: str, secrets: Sequence[str],
             expect: frozenset[str] = frozenset(), service: str = "EC2") -> Failure:
    """Classify ``exc`` raised by ``action`` at ``site`` (see the module table).

    ``expect``: AWS codes to hand back as :class:`AwsCodeError` instead;
    ``service``: the API's name in messages.
    """
    prefix = f"{service} {action} at {site}"
    if isinstance(exc, boto_errors.ClientError):
        code, message, status = _client_error_parts(exc)
        text = scrub(f"{prefix}: {code}: {message}" if message else f"{prefix}: {code}",
                     secrets)
        if code in expect:
            return Failure(AwsCodeError(text, code), code=code)
        if code in THROTTLING_CODES:
            return Failure(TransientDriverError(text), retryable=True, throttled=True,
                           code=code)
        if code in CAPACITY_CODES:
            return Failure(CapacityError(text), code=code)
        if code in AUTH_CODES:
            return Failure(DriverAuthError(f"{text} (check the credentials of this site)"),
                           code=code)
        if code in NOT_FOUND_CODES:
            return Failure(InstanceNotFoundError(text), code=code)
        if code in SERVER_CODES or status >= 500:
            return Failure(TransientDriverError(text), retryable=True, ambiguous=True,
                           code=code)
        return Failure(DriverError(text), code=code)
    name = type(exc).__name__
    if isinstance(exc, boto_errors.NoCredentialsError | boto_errors.PartialCredentialsError
                  | boto_errors.CredentialRetrievalError):
        return Failure(DriverAuthError(
            f"{prefix}: no usable AWS credentials: set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY in the driver's rc file (etc/vmm_ec2/vmm_ec2rc) or configure "
            "the standard AWS credential chain"), code=name)
    if isinstance(exc, boto_errors.EndpointConnectionError | boto_errors.ConnectTimeoutError):
        # Never reached the server: safe to resend.
        return Failure(TransientDriverError(scrub(f"{prefix}: cannot connect: {exc}", secrets)),
                       retryable=True, code=name)
    if isinstance(exc, boto_errors.HTTPClientError | boto_errors.ConnectionError
                  | boto_errors.ResponseStreamingError | boto_errors.IncompleteReadError
                  | ConnectionError | TimeoutError):
        return Failure(TransientDriverError(
            scrub(f"{prefix}: no answer ({name}): {exc}", secrets)),
            retryable=True, ambiguous=True, code=name)
    if isinstance(exc, boto_errors.ParamValidationError):
        return Failure(DriverError(scrub(f"{prefix}: invalid request: {exc}", secrets)),
                       code=name)
    if isinstance(exc, boto_errors.BotoCoreError):
        return Failure(DriverError(scrub(f"{prefix}: {name}: {exc}", secrets)), code=name)
    return Failure(DriverError(scrub(f"{prefix}: unexpected {name}: {exc}", secrets)),
                   code=name)

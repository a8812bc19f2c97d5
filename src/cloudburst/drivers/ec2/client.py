"""One EC2 site: a boto3 client, its thread pool, rate limits and retry policy.

boto3 blocks, so every call runs in a thread pool the site owns (bounded by
``EC2_THREADS``). botocore's own retries are **off** (``total_max_attempts=1``):
the site decides what is retried, how long it waits and what a retry of a
non-idempotent call must check first:

1. before each attempt, the call's rate-limit tokens are reserved
   (:mod:`.limits`);
2. a failure is classified once (:mod:`.errors`); throttling empties the
   bucket, so concurrent callers slow down together;
3. a retryable failure waits ``d/2 + uniform(0, d/2)``,
   ``d = min(EC2_RETRY_MAX_DELAY, EC2_RETRY_BASE_DELAY * 2**(n-1))``, and is
   retried up to ``EC2_MAX_ATTEMPTS`` tries in all; after an *ambiguous*
   failure (the call may have happened) the caller's ``recover`` hook runs
   first and may return the call's effect instead (``RunInstances`` looks the
   instance up by its tags);
4. the last failure is raised as the translated cloudburst error.

:attr:`Site.calls` counts API calls by action (attempts included), for tests
and benchmarks; the context's :class:`~cloudburst.drivers.base.CloudApiObserver`
hears of every attempt, throttle, retry and final failure (``/metrics``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import boto3
from botocore.config import Config

from cloudburst.drivers.base import UNOBSERVED, CloudApiEvent, CloudApiObserver
from cloudburst.drivers.ec2.config import SiteConfig
from cloudburst.drivers.ec2.credentials import Credentials
from cloudburst.drivers.ec2.errors import classify
from cloudburst.drivers.ec2.limits import RateLimiter, shared_limiter
from cloudburst.errors import DriverError

log = logging.getLogger(__name__)

Response = dict[str, Any]
Recover = Callable[[], Awaitable[Response | None]]

_SNAKE_RE: Final = re.compile(r"(?<!^)(?=[A-Z])")


def _quiet_sdk_loggers() -> None:
    """botocore logs request headers (with the access key id) at DEBUG: never let it."""
    for name in ("botocore", "boto3", "urllib3"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.INFO:
            logger.setLevel(logging.INFO)


def snake(action: str) -> str:
    """``RunInstances`` -> ``run_instances``."""
    return _SNAKE_RE.sub("_", action).lower()


def boto_session(credentials: Credentials, region: str) -> Any:
    """A boto3 session holding ``credentials`` (the one place they are revealed) for
    ``region``; without keys, the profile or AWS's default credential chain."""
    return boto3.session.Session(
        aws_access_key_id=(credentials.access_key_id.reveal()
                           if credentials.access_key_id else None),
        aws_secret_access_key=(credentials.secret_access_key.reveal()
                               if credentials.secret_access_key else None),
        aws_session_token=(credentials.session_token.reveal()
                           if credentials.session_token else None),
        profile_name=None if credentials.explicit else credentials.profile,
        region_name=region,
    )


class Site:
    """The client side of one EC2 endpoint, region and account."""

    def __init__(self, config: SiteConfig, observer: CloudApiObserver = UNOBSERVED) -> None:
        _quiet_sdk_loggers()
        self.config = config
        self._observed = functools.partial(observer.cloud_api, config.name)
        self._timed = functools.partial(observer.cloud_api_seconds, config.name)
        self.label = f"site {config.name} ({config.endpoint_label})"
        self._secrets = tuple(config.credentials.secrets())
        self._executor = ThreadPoolExecutor(max_workers=config.threads,
                                            thread_name_prefix=f"ec2-{config.name}")
        self._client: Any = None
        self._client_lock = threading.Lock()
        self.limiter: RateLimiter = shared_limiter(
            config.endpoint_url or "", config.region, config.credentials.fingerprint(),
            config.rate_limits)
        self.calls: Counter[str] = Counter()
        self._closed = False

    def __repr__(self) -> str:
        return f"Site({self.config.name!r}, {self.config.endpoint_label!r})"

    # -- the boto3 client --------------------------------------------------------

    def _build_client(self) -> Any:
        config = self.config
        return boto_session(config.credentials, config.region).client(
            "ec2", endpoint_url=config.endpoint_url, region_name=config.region,
            config=Config(
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=config.connect_timeout, read_timeout=config.read_timeout,
                max_pool_connections=max(10, config.threads),
                user_agent_extra="cloudburst",
            ),
        )

    def _client_now(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = self._build_client()
            return self._client

    def _invoke(self, action: str, params: Mapping[str, Any]) -> Response:
        method = getattr(self._client_now(), snake(action))
        started = time.perf_counter()
        try:
            result: Response = method(**params)
        finally:
            self._timed(action, time.perf_counter() - started)
        result.pop("ResponseMetadata", None)
        return result

    # -- calls -------------------------------------------------------------------

    async def call(self, action: str, params: Mapping[str, Any] | None = None, *,
                   resources: int = 1, recover: Recover | None = None,
                   expect: frozenset[str] = frozenset(),
                   attempts: int | None = None) -> Response:
        """Call ``action`` (e.g. ``"RunInstances"``) with rate limits and retries.

        Args:
            params: the API parameters (boto3 names).
            resources: instances the call acts on (for the resource buckets).
            recover: after an ambiguous failure, called before the retry; a
                non-``None`` result is returned as the call's result.
            expect: AWS error codes raised as ``AwsCodeError`` for the caller.
            attempts: overrides ``EC2_MAX_ATTEMPTS`` for this call.

        Raises:
            DriverError: a subclass per :mod:`.errors`; the message is scrubbed.
        """
        if self._closed:
            raise DriverError(f"EC2 {action} at {self.label}: the driver is closed")
        loop = asyncio.get_running_loop()
        policy = self.config.retry
        limit = attempts if attempts is not None else policy.max_attempts
        arguments = dict(params or {})
        attempt = 0
        while True:
            attempt += 1
            await self.limiter.acquire(action, resources)
            self.calls[action] += 1
            self._observed(action, CloudApiEvent.CALL)
            try:
                return await loop.run_in_executor(
                    self._executor, functools.partial(self._invoke, action, arguments))
            except Exception as exc:
                failure = classify(exc, action, self.label, self._secrets, expect)
            if failure.throttled:
                self.limiter.penalize(action)
                self._observed(action, CloudApiEvent.THROTTLE)
            if not failure.retryable or attempt >= limit:
                if failure.ambiguous and recover is not None:
                    recovered = await recover()
                    if recovered is not None:
                        return recovered
                self._observed(action, CloudApiEvent.ERROR)
                raise failure.error from None
            self._observed(action, CloudApiEvent.RETRY)
            delay = min(policy.max_delay, policy.base_delay * 2 ** (attempt - 1))
            delay = delay / 2 + random.uniform(0, delay / 2)
            log.info("%s failed (%s); try %d of %d in %.2f s", action, failure.code,
                     attempt + 1, limit, delay)
            await asyncio.sleep(delay)
            if failure.ambiguous and recover is not None:
                recovered = await recover()
                if recovered is not None:
                    return recovered

    async def paginate(self, action: str, params: Mapping[str, Any], *,
                       items: str = "Reservations") -> list[Any]:
        """Call a paginated ``action`` until ``NextToken`` runs out; concatenate ``items``."""
        collected: list[Any] = []
        arguments = dict(params)
        while True:
            page = await self.call(action, arguments)
            collected.extend(page.get(items) or [])
            token = page.get("NextToken")
            if not token:
                return collected
            arguments["NextToken"] = token

    async def close(self) -> None:
        self._closed = True
        self._executor.shutdown(wait=False, cancel_futures=True)
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:  # pragma: no cover - closing is best effort
                log.debug("closing the boto3 client of %s failed", self.label)

"""Client-side token buckets that keep a site under AWS's API throttling.

AWS throttles each account and region with one token bucket per API (and a
second, per-instance *resource* bucket for the instance-state APIs); a call
that finds its bucket empty fails with ``RequestLimitExceeded``. Sending no
faster than the buckets refill avoids those failures and the retries they
cost. The defaults below are AWS's published defaults (``spec/ec2.md`` 1.6,
"Request throttling for the Amazon EC2 API"); a site whose limits were raised
sets its own in ``vmm_ec2rc``::

    EC2_RATE_RUNINSTANCES=15/6      # burst / refill per second
    EC2_RATE_SCALE=3                # multiply every bucket (limit increases are <= 3x)
    EC2_RATE_LIMITS=off             # no client-side limits (e.g. a private EC2 clone)

Buckets are shared by every driver of the process that talks to the same
endpoint, region and account, since AWS counts them together. A bucket is
*reserved*: a caller takes its tokens at once (the balance may go negative)
and sleeps until the balance it left would have refilled, so callers are
served in arrival order without a lock held across the wait. When AWS throttles
anyway (another client on the account), :meth:`RateLimiter.penalize` empties
the bucket so that every caller backs off together.

**After a failover** the buckets are not taken over from the previous leader
(their levels change with every call; storing them would cost a write per
call): a new leader starts them as AWS's could be at worst, empty when the
previous leader's lease ended and refilled since (:meth:`RateLimiter.drained`).
That is exact when the previous leader had spent everything, and otherwise too
careful for at most a bucket's refill time (``burst / refill``: 2.5 s for
``RunInstances`` calls, 500 s for a full 1,000-instance resource bucket); a
daemon that leads first (no previous leader, or a lease long expired) starts
full.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final


@dataclass(frozen=True, slots=True)
class BucketSpec:
    """A bucket's size (``burst``) and refill rate (tokens per second)."""

    burst: float
    refill: float

    def scaled(self, factor: float) -> BucketSpec:
        return BucketSpec(self.burst * factor, self.refill * factor)


#: AWS's default buckets (per account and region); names are the rc-file suffixes.
DEFAULT_BUCKETS: Final[Mapping[str, BucketSpec]] = MappingProxyType({
    "RUNINSTANCES": BucketSpec(5, 2),
    "RUNINSTANCES_RESOURCE": BucketSpec(1000, 2),
    "TERMINATEINSTANCES": BucketSpec(100, 5),
    "TERMINATEINSTANCES_RESOURCE": BucketSpec(1000, 20),
    "STARTINSTANCES": BucketSpec(5, 2),
    "STARTINSTANCES_RESOURCE": BucketSpec(1000, 2),
    "STOPINSTANCES": BucketSpec(50, 5),
    "STOPINSTANCES_RESOURCE": BucketSpec(1000, 20),
    "NON_MUTATING": BucketSpec(100, 20),
    "UNPAGINATED_DESCRIBE": BucketSpec(50, 10),
    "MUTATING": BucketSpec(50, 5),
    "RESOURCE_INTENSIVE": BucketSpec(50, 5),
    "TAGS": BucketSpec(100, 10),
})

_INSTANCE_STATE_APIS: Final = frozenset(
    {"RunInstances", "TerminateInstances", "StartInstances", "StopInstances"})
_RESOURCE_INTENSIVE: Final = frozenset({
    "AuthorizeSecurityGroupIngress", "RevokeSecurityGroupIngress", "CreateKeyPair",
    "RequestSpotInstances", "CancelSpotInstanceRequests",
})
_TAGS: Final = frozenset({"CreateTags", "DeleteTags"})


def buckets_for(action: str, resources: int) -> list[tuple[str, float]]:
    """The buckets an API call draws from, and how many tokens from each.

    ``resources`` is the number of instances an instance-state call acts on.
    Our ``DescribeInstances`` calls are always filtered and paginated, so they
    draw from the ordinary non-mutating bucket.
    """
    if action in _INSTANCE_STATE_APIS:
        name = action.upper()
        return [(name, 1.0), (f"{name}_RESOURCE", float(max(1, resources)))]
    if action.startswith(("Describe", "List", "Get", "Search")):
        return [("NON_MUTATING", 1.0)]
    if action in _RESOURCE_INTENSIVE:
        return [("RESOURCE_INTENSIVE", 1.0)]
    if action in _TAGS:
        return [("TAGS", 1.0)]
    return [("MUTATING", 1.0)]


class TokenBucket:
    """One token bucket; thread-safe, never blocks."""

    def __init__(self, spec: BucketSpec) -> None:
        self.spec = spec
        self._tokens = float(spec.burst)
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def _refill(self, now: float) -> None:
        self._tokens = min(self.spec.burst, self._tokens + (now - self._stamp) * self.spec.refill)
        self._stamp = now

    def reserve(self, tokens: float) -> float:
        """Take ``tokens``; return the seconds to wait before using them."""
        with self._lock:
            now = time.monotonic()
            self._refill(now)
            # A request larger than the bucket waits for a full bucket, not forever.
            self._tokens -= min(tokens, self.spec.burst)
            if self._tokens >= 0 or self.spec.refill <= 0:
                return 0.0
            return -self._tokens / self.spec.refill

    def ready_in(self, tokens: float = 1.0) -> float:
        """Seconds until ``tokens`` could be taken without waiting (nothing is taken)."""
        with self._lock:
            self._refill(time.monotonic())
            missing = min(tokens, self.spec.burst) - self._tokens
            if missing <= 0 or self.spec.refill <= 0:
                return 0.0
            return missing / self.spec.refill

    def drained(self, seconds: float) -> None:
        """Hold at most what the bucket would have refilled in ``seconds`` from empty."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens = min(self._tokens, max(0.0, seconds) * self.spec.refill)

    def penalize(self) -> None:
        """Empty the bucket (the provider throttled us: back off together)."""
        with self._lock:
            self._refill(time.monotonic())
            self._tokens = min(self._tokens, 0.0)

    @property
    def tokens(self) -> float:
        with self._lock:
            self._refill(time.monotonic())
            return self._tokens


class RateLimiter:
    """The buckets of one endpoint, region and account."""

    def __init__(self, specs: Mapping[str, BucketSpec] | None) -> None:
        #: ``None``: limits are off.
        self._buckets = None if specs is None else {
            name: TokenBucket(spec) for name, spec in specs.items()}

    @property
    def enabled(self) -> bool:
        return self._buckets is not None

    def bucket(self, name: str) -> TokenBucket | None:
        return None if self._buckets is None else self._buckets.get(name)

    def reserve(self, action: str, resources: int = 1) -> float:
        """Reserve the tokens of one call; the seconds to wait before sending it."""
        if self._buckets is None:
            return 0.0
        delay = 0.0
        for name, tokens in buckets_for(action, resources):
            bucket = self._buckets.get(name)
            if bucket is not None:
                delay = max(delay, bucket.reserve(tokens))
        return delay

    def ready_in(self, action: str) -> float:
        """Seconds until a call of ``action`` (one instance) would not have to wait."""
        if self._buckets is None:
            return 0.0
        return max((bucket.ready_in(tokens) for name, tokens in buckets_for(action, 1)
                    if (bucket := self._buckets.get(name)) is not None), default=0.0)

    async def acquire(self, action: str, resources: int = 1) -> None:
        delay = self.reserve(action, resources)
        if delay > 0:
            await asyncio.sleep(delay)

    def drained(self, seconds: float) -> None:
        """Every bucket as if it had been emptied ``seconds`` ago (another daemon led
        until then and may have spent it: AWS's buckets are per account, not per client)."""
        for bucket in (self._buckets or {}).values():
            bucket.drained(seconds)

    def penalize(self, action: str) -> None:
        if self._buckets is None:
            return
        for name, _ in buckets_for(action, 1):
            bucket = self._buckets.get(name)
            if bucket is not None:
                bucket.penalize()


_SHARED: dict[tuple[str, str, str, tuple[tuple[str, float, float], ...] | None], RateLimiter] = {}
_SHARED_LOCK = threading.Lock()


def shared_limiter(endpoint: str, region: str, account: str,
                   specs: Mapping[str, BucketSpec] | None) -> RateLimiter:
    """The process-wide limiter of an endpoint, region and account (``account``
    is a fingerprint, never a key), created with ``specs`` on first use."""
    frozen = None if specs is None else tuple(
        sorted((name, spec.burst, spec.refill) for name, spec in specs.items()))
    key = (endpoint, region, account, frozen)
    with _SHARED_LOCK:
        limiter = _SHARED.get(key)
        if limiter is None:
            limiter = _SHARED[key] = RateLimiter(specs)
        return limiter

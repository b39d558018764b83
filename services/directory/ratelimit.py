"""Per-key token buckets: a client that floods gets ``429`` with ``Retry-After``.

Each key (an API token's id) has a bucket of ``burst`` tokens refilled at ``rate`` per
second; a request takes one token. A batch request counts as one request: the batch
limit (1000 events) and the body limit bound what one request can carry.

The buckets live in the process: with N API processes a token gets up to N times the rate.
That is the intended trade (no shared state on the hot path); put a proxy in front if a
hard cluster-wide limit is needed.

Errors::

    RateLimitedError (ImpactbusError)   the key's bucket is empty; ``retry_after`` seconds
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from schemas.errors import ImpactbusError

MAX_KEYS: Final = 10_000


class RateLimitedError(ImpactbusError):
    """Too many requests for one key; retry after :attr:`retry_after` seconds."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    @property
    def retry_after_header(self) -> str:
        """``Retry-After`` value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after)))


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token buckets keyed by a string (an API token's id).

    Args:
        rate: tokens added per second; ``<= 0`` disables limiting.
        burst: bucket size, the most requests allowed at once.
        clock: monotonic seconds (injected by tests).
    """

    def __init__(
        self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate = rate
        self.burst = max(1.0, burst)
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    @property
    def enabled(self) -> bool:
        """Whether requests are limited at all."""
        return self.rate > 0

    def wait_time(self, key: str, cost: float = 1.0) -> float:
        """Take ``cost`` tokens from ``key``'s bucket; 0.0 if allowed, else seconds to wait.

        A refused request takes nothing, so a client that waits the time it is told gets in.
        """
        if not self.enabled:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            if len(self._buckets) >= MAX_KEYS:
                self._prune(now)
            bucket = self._buckets[key] = _Bucket(self.burst, now)
        else:
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
        if bucket.tokens >= cost:
            bucket.tokens -= cost
            return 0.0
        return (cost - bucket.tokens) / self.rate

    def peek(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key``'s bucket holds ``cost`` tokens (0.0: now); takes nothing."""
        if not self.enabled:
            return 0.0
        bucket = self._buckets.get(key)
        if bucket is None:
            return 0.0
        tokens = min(self.burst, bucket.tokens + (self._clock() - bucket.updated) * self.rate)
        return max(0.0, (cost - tokens) / self.rate)

    def is_full(self, key: str) -> bool:
        """Whether ``key``'s bucket is full: it took nothing that has not been refilled."""
        return self.peek(key, self.burst) == 0.0

    def check(self, key: str, cost: float = 1.0) -> None:
        """Take ``cost`` tokens from ``key``'s bucket.

        Raises:
            RateLimitedError: the bucket is empty (``retry_after`` tells how long to wait).
        """
        wait = self.wait_time(key, cost)
        if wait > 0:
            raise RateLimitedError(
                f"rate limit of {self.rate:g} requests/s (burst {self.burst:g}) exceeded",
                wait,
            )

    def _prune(self, now: float) -> None:
        # forget buckets that have refilled completely: they hold no information
        full = [
            k
            for k, b in self._buckets.items()
            if b.tokens + (now - b.updated) * self.rate >= self.burst
        ]
        for k in full:
            del self._buckets[k]

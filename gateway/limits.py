"""Rate limits and connection caps: small, synchronous, on the monotonic clock."""

from __future__ import annotations

import math
import time
from collections import Counter


class TokenBucket:
    """Allow `rate` events per second on average, with bursts of up to `burst`."""

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = time.monotonic()

    def take(self) -> bool:
        """Spend one token if there is one; False means the event is over the limit."""
        now = time.monotonic()
        self._tokens = min(self._burst, self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now
        if self._tokens < 1:
            return False
        self._tokens -= 1
        return True

    def delay(self) -> float:
        """Seconds until the next token (0 when there is one now)."""
        missing = 1 - self._tokens - (time.monotonic() - self._stamp) * self._rate
        if missing <= 0:
            return 0.0
        return missing / self._rate if self._rate > 0 else math.inf

    def full(self) -> bool:
        """Refilled to its burst: the same as a new bucket."""
        return self._tokens + (time.monotonic() - self._stamp) * self._rate >= self._burst


class KeyedBuckets:
    """A TokenBucket per key (a principal, a remote address), at most `max_keys` of them.

    At the cap, buckets that have refilled are forgotten first (a new one is the same), then the
    longest unused: forgetting one only forgives its debt, and the table never grows.
    """

    def __init__(self, rate: float, burst: float, max_keys: int = 10_000) -> None:
        self._rate = rate
        self._burst = burst
        self._max_keys = max_keys
        self._buckets: dict[str, TokenBucket] = {}  # least recently used first

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: str) -> float:
        """Spend one of `key`'s tokens: 0.0 if there was one, else the seconds until there is."""
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            if len(self._buckets) >= self._max_keys:
                self._forget()
            bucket = TokenBucket(self._rate, self._burst)
        self._buckets[key] = bucket
        return 0.0 if bucket.take() else bucket.delay()

    def _forget(self) -> None:
        full = [key for key, bucket in self._buckets.items() if bucket.full()]
        for key in full:
            del self._buckets[key]
        if len(self._buckets) >= self._max_keys:
            del self._buckets[next(iter(self._buckets))]


class ConnectionCaps:
    """At most `total` connections in all, and for any one holder (a token; the connections of one
    address that have not authenticated yet) at most the limit its admit names."""

    def __init__(self, total: int) -> None:
        self._total = total
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open.total()

    def admit(self, holder: str, limit: int) -> str | None:
        """Count a new connection in; return which cap refused it (`total` or `holder`), or None
        when admitted."""
        if self._open.total() >= self._total:
            return "total"
        if self._open[holder] >= limit:
            return "holder"
        self._open[holder] += 1
        return None

    def release(self, holder: str) -> None:
        self._open[holder] -= 1
        if self._open[holder] <= 0:
            del self._open[holder]

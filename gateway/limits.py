"""Rate limits and connection caps: small, synchronous, on the monotonic clock."""

from __future__ import annotations

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


class ConnectionCaps:
    """At most `total` connections, and at most `per_principal` for any one token."""

    def __init__(self, total: int, per_principal: int) -> None:
        self._total = total
        self._per_principal = per_principal
        self._open: Counter[str] = Counter()

    @property
    def open(self) -> int:
        return self._open.total()

    def admit(self, principal: str) -> str | None:
        """Count a new connection in; return why it is refused, or None when admitted."""
        if self._open.total() >= self._total:
            return "connection limit reached"
        if self._open[principal] >= self._per_principal:
            return f"connection limit for {principal} reached"
        self._open[principal] += 1
        return None

    def release(self, principal: str) -> None:
        self._open[principal] -= 1
        if self._open[principal] <= 0:
            del self._open[principal]

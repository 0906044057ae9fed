"""When to reconnect and how fast to ask: the client's backoff and request pacing.

Both are plain policy objects with no I/O of their own, so the same rules can be read in one
place (docs/clients.md, "Reconnecting") and dashboard/client.js follows them line for line.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum


class CloseKind(Enum):
    """What a close of the connection means for the next attempt (protocol.md, Close codes)."""

    LOST = "lost"  # the link dropped (1006, a missed heartbeat, a client-side error)
    RESTART = "restart"  # 1001 going away, 1012 service restart: every client reconnects now
    BACK_OFF = "back_off"  # 4000-4499: the gateway asked this client to slow down
    TERMINAL = "terminal"  # 4500-4999, 1009: reconnecting cannot help


def classify_close(code: int | None) -> CloseKind:
    if code in (1001, 1012):
        return CloseKind.RESTART
    if code == 1009 or (code is not None and 4500 <= code <= 4999):
        return CloseKind.TERMINAL
    if code is not None and 4000 <= code <= 4499:
        return CloseKind.BACK_OFF
    return CloseKind.LOST


@dataclass(frozen=True, slots=True)
class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniformly in [0, min(max_s, min_s*2**n)].

    `restart_s`: after the gateway closed with 1001 or 1012 every one of its clients reconnects
    at the same moment, so the first retry is drawn from [0, restart_s] (and later ones keep
    doubling from there): N clients spread over restart_s instead of arriving together.
    `back_off_s`: the same for 4000-4499 (the gateway asked for it). `stable_s`: a connection
    that lasted this long resets the backoff."""

    min_s: float = 0.5
    max_s: float = 20.0
    restart_s: float = 8.0
    back_off_s: float = 2.0
    stable_s: float = 10.0

    def __post_init__(self) -> None:
        if not 0 < self.min_s <= self.max_s:
            raise ValueError("backoff needs 0 < min_s <= max_s")

    def window(self, attempt: int) -> float:
        """The upper end of the delay before attempt `attempt` (0 = the first retry)."""
        return min(self.max_s, self.min_s * 2.0 ** min(attempt, 62))

    def first_attempt(self, kind: CloseKind) -> int:
        """The attempt number a close of this kind starts the backoff at."""
        floor = {CloseKind.RESTART: self.restart_s, CloseKind.BACK_OFF: self.back_off_s}.get(kind)
        if not floor or floor <= self.min_s:
            return 0
        return math.ceil(math.log2(min(floor, self.max_s) / self.min_s))

    def delay(self, attempt: int, rng: Callable[[], float] = random.random) -> float:
        return rng() * self.window(attempt)


class Pacer:
    """Keeps requests below a token bucket of the gateway's (rate per second, burst), so that a
    client never trips the limit that closes its connection (4001).

    The gateway's bucket starts full when the first request reaches it, so a burst sent at once
    may arrive spread and a spread one bunched: this side spends only half the burst and 90% of
    the rate, which leaves (burst/2)/rate seconds of delay jitter (10 s at 20/s and 200) before
    the two could disagree. Waiters are served in order.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate = rate * 0.9
        self.burst = max(1.0, burst // 2)
        self._clock = clock
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now

    def wait_s(self) -> float:
        """Seconds until a token is available (0: now)."""
        self._refill()
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate

    async def take(self) -> None:
        """Wait for a token, in order with other waiters, and spend it."""
        async with self._lock:
            # A timed wait: nothing else could wake it sooner (tokens only come with time).
            while (wait := self.wait_s()) > 0:  # noqa: ASYNC110
                await asyncio.sleep(wait)
            self._tokens -= 1

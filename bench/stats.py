"""Latency histograms that merge across processes, and small summary helpers."""

from __future__ import annotations

import statistics
from array import array
from collections.abc import Iterable

FINE_S = 1e-5  # 10 µs bins below one second
FINE_BINS = 100_000
COARSE_S = 1e-3  # 1 ms bins from one second to five minutes
COARSE_BINS = 300_000


class Histogram:
    """Counts of latencies in seconds: 10 µs resolution below 1 s, 1 ms above (capped at 300 s)."""

    __slots__ = ("coarse", "count", "fine", "max")

    def __init__(self) -> None:
        self.fine = array("q", bytes(8 * FINE_BINS))
        self.coarse: dict[int, int] = {}
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        self.count += 1
        if seconds > self.max:
            self.max = seconds
        index = int(seconds / FINE_S)
        if index < FINE_BINS:
            self.fine[index if index > 0 else 0] += 1
        else:
            slot = min(int(seconds / COARSE_S), COARSE_BINS)
            self.coarse[slot] = self.coarse.get(slot, 0) + 1

    def merge(self, other: Histogram) -> None:
        for i, n in enumerate(other.fine):
            if n:
                self.fine[i] += n
        for slot, n in other.coarse.items():
            self.coarse[slot] = self.coarse.get(slot, 0) + n
        self.count += other.count
        self.max = max(self.max, other.max)

    def percentile(self, q: float) -> float | None:
        """The upper edge of the bin holding the q-th quantile (0 < q ≤ 1), in seconds."""
        if not self.count:
            return None
        rank = max(1, round(q * self.count))
        seen = 0
        for i, n in enumerate(self.fine):
            if n:
                seen += n
                if seen >= rank:
                    return (i + 1) * FINE_S
        for slot in sorted(self.coarse):
            seen += self.coarse[slot]
            if seen >= rank:
                return min((slot + 1) * COARSE_S, self.max)
        return self.max

    def to_json(self) -> dict[str, object]:
        fine = {i: n for i, n in enumerate(self.fine) if n}
        return {"fine": fine, "coarse": self.coarse, "count": self.count, "max": self.max}

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Histogram:
        hist = cls()
        fine = data["fine"]
        coarse = data["coarse"]
        assert isinstance(fine, dict)
        assert isinstance(coarse, dict)
        for i, n in fine.items():
            hist.fine[int(i)] = int(n)
        hist.coarse = {int(k): int(v) for k, v in coarse.items()}
        count, peak = data["count"], data["max"]
        assert isinstance(count, int)
        assert isinstance(peak, int | float)
        hist.count = count
        hist.max = float(peak)
        return hist

    def summary_ms(self) -> dict[str, float | None]:
        def ms(value: float | None) -> float | None:
            return None if value is None else round(value * 1000, 3)

        return {
            "p50": ms(self.percentile(0.50)),
            "p90": ms(self.percentile(0.90)),
            "p99": ms(self.percentile(0.99)),
            "max": ms(self.max if self.count else None),
            "samples": self.count,
        }


def merged(histograms: Iterable[Histogram]) -> Histogram:
    total = Histogram()
    for hist in histograms:
        total.merge(hist)
    return total


def median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None

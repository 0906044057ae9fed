"""The `memory` backend: history is the registry's rings (the newest points per metric), audit
records a bounded list. Nothing survives a restart; for tests and diskless installs."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable

from gateway.models import AuditEntry
from gateway.store.base import (
    HistoryResult,
    Point,
    RestoredSeries,
    WriteBatch,
    WriteOutcome,
    aggregate,
    bucket_width,
    is_numeric,
)

#: Looks up the in-memory points of (device, metric); None for an unknown series.
RingLookup = Callable[[str, str], Iterable[Point] | None]


class MemoryBackend:
    name = "memory"
    durable = False

    @property
    def where(self) -> str:
        return "memory (nothing is kept across restarts)"

    def __init__(self, rings: RingLookup, audit_records: int, audit_retention_s: float) -> None:
        self._rings = rings
        self._audit: deque[AuditEntry] = deque(maxlen=audit_records)
        self._audit_retention_s = audit_retention_s

    async def open(self) -> None:
        pass

    async def close(self) -> None:
        pass

    async def write(self, batch: WriteBatch) -> WriteOutcome:
        # The points are already in the registry's rings; only audit records are kept here.
        self._audit.extend(batch.audits)
        return WriteOutcome()

    async def purge_step(self, now: float) -> tuple[int, bool]:
        purged = 0
        cutoff = now - self._audit_retention_s
        while self._audit and self._audit[0].ts < cutoff:
            self._audit.popleft()
            purged += 1
        return purged, True

    async def restore(self, total_points: int, per_series: int) -> list[RestoredSeries]:
        return []

    async def query(
        self, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        ring = self._rings(device, metric)
        if ring is None:
            return None
        points = sorted(p for p in ring if start <= p[0] < end)
        if len(points) <= max_points:
            return HistoryResult(points=points)
        if not any(is_numeric(v) for _, v in points):
            return HistoryResult(points=points[-max_points:], truncated=True)
        width = bucket_width(start, end, max_points)
        return HistoryResult(buckets=aggregate(points, start, width), bucket_s=width)

    async def export(
        self, device: str, metric: str, start: float, end: float
    ) -> AsyncIterator[list[Point]]:
        ring = self._rings(device, metric)
        if ring is not None:
            yield sorted(p for p in ring if start <= p[0] < end)

    async def audit(
        self, device: str | None, allowed: Callable[[str], bool], start: float, end: float,
        limit: int,
    ) -> list[AuditEntry]:  # fmt: skip
        found = [
            e
            for e in reversed(self._audit)
            if start <= e.ts < end and (e.device == device if device else allowed(e.device))
        ]
        return found[:limit]

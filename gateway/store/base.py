"""What every history backend offers, and the plain data that crosses the store's boundary.

A backend does the I/O: it writes batches the store hands it, answers queries, purges by
retention and gives back the recent state at start. The store (gateway/store/store.py) owns the
queue, the writer task and the status; only backend modules import a database driver.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any, Protocol, runtime_checkable

import orjson

from gateway.models import AuditEntry, Reading, Value

#: (time, value): a raw point as the protocol carries it.
Point = tuple[float, Value]
#: (bucket start, min, max, avg, count): numeric points aggregated over one bucket.
Bucket = tuple[float, float, float, float, int]

#: Rollup widths kept by the durable backends, in seconds, finest first.
ROLLUP_WIDTHS_S = (60, 3600)
#: Device times outside [0, MAX_TIME_S) are not stored (counted as bad_time): they would overflow
#: the backends' time types and no chart can place them (1e11 s is the year 5138).
MAX_TIME_S = 1e11


class StoreUnavailable(Exception):
    """Raised when the backend cannot be reached or written (full disk, read-only file, the
    database gone). `reason` is a short label for /readyz and the logs."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class HistoryResult:
    """The answer to a ranged query: raw `points`, or `buckets` of `bucket_s` seconds when the
    range holds more points than asked for. `truncated`: non-numeric points (which have no
    rollups) were more than asked for, and only the newest are here."""

    points: list[Point] | None = None
    buckets: list[Bucket] | None = None
    bucket_s: float | None = None
    truncated: bool = False

    def fields(self) -> dict[str, Any]:
        """The reply's fields, as the history frame and the REST answer carry them."""
        if self.buckets is not None:
            return {"buckets": self.buckets, "bucket_s": self.bucket_s}
        fields: dict[str, Any] = {"points": self.points or []}
        if self.truncated:
            fields["truncated"] = True
        return fields


@dataclass(frozen=True, slots=True)
class RestoredSeries:
    """One series' newest points (oldest first) as the store gives them back at start."""

    device: str
    convention: str
    metric: str
    points: list[Point]


#: One message's readings as the store queues them: (its readings as JSON, `[device, metric,
#: time, value]` arrays joined by commas without the enclosing brackets; how many; the device;
#: its convention). Bytes and strings only: the collector untracks such a tuple at its first
#: pass, where a queue of reading tuples and lists, alive until the next commit, was promoted
#: to the oldest generation and made full collections of 40 to 200 ms (docs/performance.md).
QueuedMessage = tuple[bytes, int, str, str]

#: Messages per JSON text handed to a database in one statement (SQLite; a few thousand
#: readings): building the text holds the interpreter lock, so it is done in small steps.
MESSAGES_PER_CHUNK = 1000


def encode_readings(readings: Sequence[Reading]) -> tuple[bytes, int]:
    """One message's readings as queued JSON (see QueuedMessage) and how many of them could not
    be encoded (a string that is not valid Unicode; an integer past 64 bits): those are left
    out. NaN and infinities become JSON null, which the backends refuse as bad values."""
    try:
        return orjson.dumps(readings)[1:-1], 0
    except orjson.JSONEncodeError:
        kept = []
        for reading in readings:
            with contextlib.suppress(orjson.JSONEncodeError):
                kept.append(orjson.dumps(reading))
        return b",".join(kept), len(readings) - len(kept)


@dataclass(frozen=True, slots=True)
class WriteBatch:
    """What the writer hands the backend in one transaction: queued messages and audits."""

    messages: Sequence[QueuedMessage]
    audits: Sequence[AuditEntry] = ()

    @property
    def count(self) -> int:
        """Readings in the batch."""
        return sum(map(itemgetter(1), self.messages))

    def readings_json(self, start: int = 0, stop: int | None = None) -> str:
        """The readings of messages[start:stop] as one JSON array of [device, metric, time,
        value] arrays."""
        parts = filter(None, map(itemgetter(0), self.messages[start:stop]))
        return "[" + b",".join(parts).decode() + "]"

    def conventions_json(self) -> str:
        """{device: convention} of the batch's messages, as JSON (for series new to a store)."""
        devices = map(itemgetter(2), self.messages)
        conventions = map(itemgetter(3), self.messages)
        return orjson.dumps(dict(zip(devices, conventions, strict=True))).decode()


@dataclass(slots=True)
class WriteOutcome:
    written: int = 0  # points stored
    duplicates: int = 0  # points whose (series, time) was already stored: kept the first
    bad: dict[str, int] = field(default_factory=dict)  # reason -> points refused


class Backend(Protocol):
    """A history backend. Methods may raise StoreUnavailable; anything else is a bug."""

    name: str
    durable: bool  # False: nothing survives a restart (the memory backend)

    @property
    def where(self) -> str:
        """For the log: the file, or the server and database (never a password)."""

    async def open(self) -> None:
        """Connect or open, create the schema if missing. Raises StoreUnavailable."""

    async def close(self) -> None: ...

    async def write(self, batch: WriteBatch) -> WriteOutcome:
        """Store the batch in one transaction: all of it or (raising) none of it."""

    async def purge_step(self, now: float) -> tuple[int, bool]:
        """Delete one small batch of rows past retention: (rows deleted, cycle complete)."""

    async def restore(self, total_points: int, per_series: int) -> list[RestoredSeries]:
        """Every series' newest points: `per_series` each at most, `total_points` in all."""

    async def query(
        self, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        """Points with start <= t < end, or buckets when there are more than max_points;
        None when the series is unknown."""

    def export(
        self, device: str, metric: str, start: float, end: float
    ) -> AsyncIterator[list[Point]]:
        """Every raw point in the range, oldest first, in chunks of bounded size."""

    async def audit(
        self, device: str | None, allowed: Callable[[str], bool], start: float, end: float,
        limit: int,
    ) -> list[AuditEntry]:  # fmt: skip
        """Audit records in the range (newest first) for `device`, or for every device
        `allowed` accepts when `device` is None."""


@dataclass(frozen=True, slots=True)
class MemberBeat:
    """One cluster member's heartbeat: what survivors need to bound its loss if it vanishes."""

    instance: str
    host: str
    started_at: float
    heartbeat_s: float
    queued: int  # points waiting for this member's writer
    rate: float  # points/s this member took from the writer group lately
    points_per_message: float  # readings per claimed message, on average
    inflight: int  # the broker's in-flight window (messages) to this member's writer link


@dataclass(frozen=True, slots=True)
class LostMember:
    """A member whose heartbeat stopped without a clean leave; `bound` estimates the readings
    it may have taken from the group and not committed (docs/scaling.md)."""

    instance: str
    silent_s: float  # since its last heartbeat, when noticed
    queued: int
    rate: float
    heartbeat_s: float
    inflight_points: float

    @property
    def bound(self) -> int:
        """Its queue at the last heartbeat, what it took at its last rate until the heartbeat it
        missed, and the broker's in-flight window to it."""
        return math.ceil(self.queued + self.rate * self.heartbeat_s + self.inflight_points)


@dataclass(frozen=True, slots=True)
class RosterView:
    """What one heartbeat learned: the members alive, and those found lost just now (each
    reported to exactly one survivor)."""

    members: int
    lost: list[LostMember]


@runtime_checkable
class Roster(Protocol):
    """A backend several instances share keeps their membership (PostgreSQL)."""

    async def beat(self, beat: MemberBeat, missed: int) -> RosterView:
        """Record this member's heartbeat; mark and return the members silent for `missed` of
        their own heartbeats that never left. Raises StoreUnavailable."""

    async def leave(self, instance: str) -> None:
        """This member leaves cleanly (its writer flushed)."""


def bucket_width(start: float, end: float, max_points: int) -> float:
    """The narrowest bucket, in whole seconds, that covers [start, end) in max_points buckets;
    a multiple of the rollup it will be read from when it is at least that wide."""
    # One bucket fewer than allowed: aligned buckets may overhang both ends of the range.
    width = max(1.0, math.ceil((end - start) / max(1, max_points - 1)))
    for rollup in reversed(ROLLUP_WIDTHS_S):
        if width >= rollup:
            return float(math.ceil(width / rollup) * rollup)
    return width


def rollup_source(width: float) -> int | None:
    """The widest rollup that divides `width` (None: aggregate the raw points)."""
    for rollup in reversed(ROLLUP_WIDTHS_S):
        if width >= rollup and width % rollup == 0:
            return rollup
    return None


def is_numeric(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def aggregate(points: Sequence[Point], start: float, width: float) -> list[Bucket]:
    """Buckets of `width` seconds aligned on multiples of width, numeric points only."""
    buckets: dict[float, list[float]] = {}
    for t, value in points:
        if not is_numeric(value):
            continue
        v = float(value)
        key = math.floor(t / width) * width
        acc = buckets.get(key)
        if acc is None:
            buckets[key] = [v, v, v, 1.0]
        else:
            acc[0] = min(acc[0], v)
            acc[1] = max(acc[1], v)
            acc[2] += v
            acc[3] += 1
    return [
        (key, acc[0], acc[1], acc[2] / acc[3], int(acc[3]))
        for key, acc in sorted(buckets.items())
        if key + width > start
    ]

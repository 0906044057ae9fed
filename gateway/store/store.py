"""HistoryStore: the runtime's one door to history, whatever the backend.

The relay path calls `append` (and the command service `record`): O(1) per batch, no I/O, never
awaited. Batches wait in a queue bounded in points; past the bound they are dropped and counted.
One writer task commits the queue every `commit_interval_s` (or as soon as `batch_points` are
waiting) through the backend, runs retention between commits in small steps, and keeps going
when the backend fails: the store reports itself degraded with a reason, holds the batch that
failed, retries with backoff, and is ok again once a write succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncGenerator, Callable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from gateway.config import HistoryConfig
from gateway.logs import RateLimitedLog
from gateway.models import AuditEntry, Reading
from gateway.store.base import (
    Backend,
    HistoryResult,
    Point,
    QueuedMessage,
    RestoredSeries,
    Roster,
    StoreUnavailable,
    WriteBatch,
    encode_readings,
)

log = logging.getLogger(__name__)

StoreState = Literal["starting", "ok", "degraded"]

#: Backoff between retries of a failed write or open, seconds.
RETRY_MIN_S = 0.5
RETRY_MAX_S = 5.0
#: How long a shutdown waits for the last commit (a database that is gone cannot take it).
FLUSH_TIMEOUT_S = 10.0
#: History queries running at once (REST and WebSocket together); more are refused.
MAX_QUERIES = 32

#: Puts restored state back (device, convention, metric, points): the registry's restore.
RestoreTarget = Callable[[RestoredSeries], None]


@dataclass(slots=True)
class StoreStats:
    """Counters read by /metrics; the writer task alone writes them."""

    written: int = 0
    duplicates: int = 0
    dropped: Counter[str] = field(default_factory=Counter)  # queue_full, bad_time, bad_value
    commits: int = 0
    write_failures: int = 0
    longest_commit_s: float = 0.0
    purged: int = 0
    longest_purge_step_s: float = 0.0  # the writer's longest stall caused by retention
    audit_written: int = 0
    audit_dropped: int = 0
    restored_series: int = 0
    restored_points: int = 0
    restore_s: float = 0.0
    queries_refused: int = 0


class HistoryStore:
    def __init__(
        self,
        config: HistoryConfig,
        backend: Backend,
        *,
        history_length: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.backend = backend
        self.durable = backend.durable
        self._history_length = history_length
        self._clock = clock
        self._queue: deque[QueuedMessage] = deque()
        self._queued = 0
        self._audits: deque[AuditEntry] = deque()
        self._pending: WriteBatch | None = None  # taken from the queue, not yet committed
        self._due = asyncio.Event()
        self._cycled = asyncio.Event()  # set after every pass of the writer loop
        self._opened = False
        self._purge_requested = False
        self._closed = False
        self._restored = False
        self._retry_s = RETRY_MIN_S
        self._queries = 0
        self._warn = RateLimitedLog(log)
        self.state: StoreState = "starting"
        self.reason = ""
        self.stats = StoreStats()

    # --- the relay path: no I/O, never awaited ------------------------------------------------

    def append(self, readings: list[Reading], convention: str) -> None:
        """Queue one message's readings (all of one device) for the writer, as JSON: the
        backends take them so, and bytes keep the collector's work small (QueuedMessage)."""
        if not self.durable or not readings:
            return  # the memory backend answers from the registry's rings
        n = len(readings)
        if self._queued + n > self.config.queue_points:
            self.stats.dropped["queue_full"] += n
            self._warn.warning(
                "queue_full",
                "history queue full (%d points): dropping readings (%s)",
                self._queued,
                self.reason or "the writer is behind",
            )
            return
        encoded, refused = encode_readings(readings)
        if refused:
            self.stats.dropped["bad_value"] += refused
            n -= refused
        self._queue.append((encoded, n, readings[0][0], convention))
        self._queued += n
        if self._queued >= self.config.batch_points:
            self._due.set()

    def record(self, entry: AuditEntry) -> None:
        """The command service's AuditSink: keep one command's record (written with the next
        commit)."""
        if len(self._audits) >= self.config.audit_queue:
            self.stats.audit_dropped += 1
            self._warn.warning("audit_full", "audit queue full: dropping a record")
            return
        self._audits.append(entry)

    @property
    def roster(self) -> Roster | None:
        """The backend's cluster membership, when it keeps one (PostgreSQL)."""
        return self.backend if isinstance(self.backend, Roster) else None

    @property
    def queued(self) -> int:
        return self._queued + (self._pending.count if self._pending else 0)

    # --- lifecycle -----------------------------------------------------------------------------

    async def start(self, restore: RestoreTarget) -> None:
        """Open the backend and put the recent state back; on failure the store starts
        degraded and the writer keeps trying (the gateway relays meanwhile)."""
        log.info("history: %s at %s", self.backend.name, self.backend.where)
        await self._open(restore)

    async def _open(self, restore: RestoreTarget) -> bool:
        try:
            if not self._opened:
                await self.backend.open()
                self._opened = True
            if not self._restored:
                await self._restore(restore)
                self._restored = True
        except StoreUnavailable as exc:
            self._degrade(exc.reason)
            return False
        self._recover()
        return True

    async def _restore(self, restore: RestoreTarget) -> None:
        started = time.monotonic()
        series = await self.backend.restore(self.config.restore_points, self._history_length)
        for one in series:
            restore(one)
        self.stats.restored_series = len(series)
        self.stats.restored_points = sum(len(s.points) for s in series)
        self.stats.restore_s = time.monotonic() - started
        if series:
            log.info(
                "history: %d series (%d points) restored from %s in %.2fs",
                self.stats.restored_series,
                self.stats.restored_points,
                self.backend.name,
                self.stats.restore_s,
            )

    async def run(self, restore: RestoreTarget) -> None:
        """The writer task: commit, retain, retry; on cancellation, commit what is queued."""
        try:
            await self._write_loop(restore)
        finally:
            await self.close()

    async def close(self) -> None:
        """Commit what is queued (waiting FLUSH_TIMEOUT_S at most) and close the backend. The
        writer task calls it when cancelled; its owner calls it too, in case the task was
        cancelled before it ever ran."""
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(TimeoutError, StoreUnavailable):
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self._flush()
        if self.queued:
            log.warning("history: %d points not written at shutdown", self.queued)
        await self.backend.close()

    async def _write_loop(self, restore: RestoreTarget) -> None:
        loop = asyncio.get_running_loop()
        next_purge = loop.time()  # a cycle right after start catches up on downtime
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.config.commit_interval_s):
                    await self._due.wait()
            self._due.clear()
            if self.state != "ok" and not await self._open(restore):
                await self._backoff()
                continue
            if not await self._commit():
                await self._backoff()
                continue
            if loop.time() >= next_purge or self._purge_requested:
                self._purge_requested = False
                await self._purge_cycle()
                next_purge = loop.time() + self.config.purge_interval_s
            self._cycled.set()

    async def drained(self) -> None:
        """Return once everything queued before the call is committed (waits through a
        degraded spell). For tests and tools; the relay path never waits on the store."""
        while self.queued or self._audits:
            self._cycled.clear()
            self._due.set()
            await self._cycled.wait()

    async def purge(self) -> None:
        """Run a retention cycle now and return when it is over (tests and tools)."""
        self._purge_requested = True
        while self._purge_requested:
            self._cycled.clear()
            self._due.set()
            await self._cycled.wait()

    async def _backoff(self) -> None:
        await asyncio.sleep(self._retry_s)
        self._retry_s = min(RETRY_MAX_S, self._retry_s * 2)

    async def _flush(self) -> None:
        while self._queued or self._pending or self._audits:
            if not await self._commit():
                return

    def _take(self) -> WriteBatch | None:
        if self._pending is not None:
            return self._pending
        if not self._queue and not self._audits:
            return None
        queue = self._queue
        if self._queued <= self.config.batch_points:
            taken, self._queue = list(queue), deque()  # the usual case: all of it, no loop
            self._queued = 0
        else:
            # A backlog is written in steps of about batch_points, so no single commit (and no
            # shutdown flush step) holds the writer for long.
            taken = []
            points = 0
            while queue and points < self.config.batch_points:
                message = queue.popleft()
                taken.append(message)
                points += message[1]
            self._queued -= points
        audits = list(self._audits)
        self._audits.clear()
        self._pending = WriteBatch(taken, audits)
        return self._pending

    async def _commit(self) -> bool:
        """Write what is queued in one transaction; False (and degraded) if it failed."""
        batch = self._take()
        if batch is None:
            return True
        started = time.monotonic()
        try:
            outcome = await self.backend.write(batch)
        except StoreUnavailable as exc:
            self.stats.write_failures += 1
            self._degrade(exc.reason)
            return False
        took = time.monotonic() - started
        self._pending = None
        stats = self.stats
        stats.commits += 1
        stats.longest_commit_s = max(stats.longest_commit_s, took)
        stats.written += outcome.written
        stats.duplicates += outcome.duplicates
        stats.audit_written += len(batch.audits)
        for reason, n in outcome.bad.items():
            stats.dropped[reason] += n
            self._warn.warning(reason, "history: %d points refused (%s)", n, reason)
        self._recover()
        if self._queued >= self.config.batch_points:
            self._due.set()  # a backlog: the next step at once
        return True

    async def _purge_cycle(self) -> None:
        """Retention, one small step at a time, committing queued points between steps."""
        loop = asyncio.get_running_loop()
        last_commit = loop.time()
        while True:
            started = time.monotonic()
            try:
                deleted, done = await self.backend.purge_step(self._clock())
            except StoreUnavailable as exc:
                self._degrade(exc.reason)
                return
            step = time.monotonic() - started
            self.stats.purged += deleted
            self.stats.longest_purge_step_s = max(self.stats.longest_purge_step_s, step)
            if done:
                return
            if self._due.is_set() or loop.time() - last_commit >= self.config.commit_interval_s:
                self._due.clear()
                if not await self._commit():
                    return
                last_commit = loop.time()

    def _degrade(self, reason: str) -> None:
        if self.state != "degraded" or reason != self.reason:
            log.warning(
                "history store degraded (%s): readings are still relayed; %d points queued",
                reason,
                self.queued,
            )
        self.state = "degraded"
        self.reason = reason

    def _recover(self) -> None:
        if self.state == "degraded":
            log.warning("history store ok again (%s)", self.backend.name)
        self.state = "ok"
        self.reason = ""
        self._retry_s = RETRY_MIN_S

    # --- reading -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _query_slot(self) -> Iterator[None]:
        if self._queries >= MAX_QUERIES:
            self.stats.queries_refused += 1
            raise QueryLimit
        self._queries += 1
        try:
            yield
        finally:
            self._queries -= 1

    async def query(
        self, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        with self._query_slot():
            return await self.backend.query(device, metric, start, end, max_points)

    async def export(
        self, device: str, metric: str, start: float, end: float
    ) -> AsyncGenerator[list[Point], None]:
        with self._query_slot():
            async for chunk in self.backend.export(device, metric, start, end):
                yield chunk

    async def audit(
        self,
        device: str | None,
        allowed: Callable[[str], bool],
        start: float,
        end: float,
        limit: int,
    ) -> list[AuditEntry]:
        with self._query_slot():
            return await self.backend.audit(device, allowed, start, end, limit)


class QueryLimit(Exception):
    """Raised when MAX_QUERIES history queries are already running."""

"""The `sqlite` backend: one file, WAL, one writing connection on a thread of its own.

Layout (compact on purpose; docs/performance.md has the measured bytes per point):
- `series` (id, device, metric, convention): the integer id every point carries.
- `points` (series, t, v) WITHOUT ROWID, keyed by (series, t): t in integer microseconds, v as
  the value's own SQLite type (REAL, INTEGER, TEXT; a bool as a one-byte BLOB, so it comes back
  as a bool, not as 0/1).
- `rollup_60` and `rollup_3600` (series, t, lo, hi, total, n): per-minute and per-hour
  aggregates of numeric points, t in seconds, updated in the same transaction as the points.
- `audit`: one row per command.

Readers use their own connections (WAL: they never block the writer, nor it them), on a small
thread pool; export pages by key, so no read transaction stays open across chunks.

The writer shares the interpreter lock with the event loop, so it does no per-point Python: a
batch crosses into SQLite as the JSON text the store queued (a thousand messages per statement)
and everything per point (series ids, validity, duplicates, rollups) is SQL over
connection-private temporary tables, run while the sqlite3 module has released the lock. (A
Python loop per point here held the lock ~1 µs a point, and each system call of the event loop
could then wait up to the interpreter's 5 ms switch interval to get it back: docs/performance.md,
"History store".)
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import math
import os
import queue
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import orjson

from gateway.config import HistoryConfig
from gateway.models import AuditEntry, Value
from gateway.store.base import (
    MAX_TIME_S,
    MESSAGES_PER_CHUNK,
    ROLLUP_WIDTHS_S,
    HistoryResult,
    Point,
    RestoredSeries,
    StoreUnavailable,
    WriteBatch,
    WriteOutcome,
    bucket_width,
    rollup_source,
)

T = TypeVar("T")

SCHEMA_VERSION = 1
#: Times are stored in integer microseconds: readings stamped on arrival by the gateway
#: (devices without clocks) a few microseconds apart must not collide on (series, t).
US = 1_000_000
CACHE_KIB = 65536
EXPORT_CHUNK = 10000
READERS = 2
PURGE_ORDER = ("audit", "points", *(f"rollup_{w}" for w in ROLLUP_WIDTHS_S))
PURGE_SERIES_PER_STEP = 256
DAY_S = 86400.0
MAX_US = int(MAX_TIME_S * US)

SCHEMA = """
CREATE TABLE IF NOT EXISTS iotgw_meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    id INTEGER PRIMARY KEY, device TEXT NOT NULL, metric TEXT NOT NULL,
    convention TEXT NOT NULL DEFAULT '', UNIQUE (device, metric));
CREATE TABLE IF NOT EXISTS points (
    series INTEGER NOT NULL, t INTEGER NOT NULL, v, PRIMARY KEY (series, t)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, ts REAL NOT NULL, instance TEXT NOT NULL, principal TEXT NOT NULL,
    remote TEXT NOT NULL, via TEXT NOT NULL, device TEXT NOT NULL, command TEXT NOT NULL,
    params TEXT NOT NULL, command_id TEXT NOT NULL, status TEXT NOT NULL, rtt_ms REAL,
    error TEXT);
CREATE INDEX IF NOT EXISTS audit_ts ON audit (ts);
CREATE INDEX IF NOT EXISTS audit_device_ts ON audit (device, ts);
""" + "".join(
    f"""
CREATE TABLE IF NOT EXISTS rollup_{w} (
    series INTEGER NOT NULL, t INTEGER NOT NULL, lo REAL NOT NULL, hi REAL NOT NULL,
    total REAL NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (series, t)) WITHOUT ROWID;"""
    for w in ROLLUP_WIDTHS_S
)

#: The writing connection's scratch tables (in memory, private to it, emptied by every batch):
#: `incoming` the batch as it came, `fresh` its valid points new to the store, one per (series,
#: t), keyed so that grouping them by minute needs no sort, `minutes` their per-minute rollups,
#: `newest` the newest stored time per series (so that only points not newer than it are looked
#: up in `points` as possible duplicates).
SCRATCH = """
CREATE TEMP TABLE IF NOT EXISTS incoming (i INTEGER PRIMARY KEY, device, metric, t, v);
CREATE TEMP TABLE IF NOT EXISTS conventions (device PRIMARY KEY, convention) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS fresh (
    series, minute, t, v, PRIMARY KEY (series, minute, t)) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS minutes (
    series, t, lo, hi, total, n, PRIMARY KEY (series, t)) WITHOUT ROWID;
CREATE TEMP TABLE IF NOT EXISTS newest (series INTEGER PRIMARY KEY, t INTEGER NOT NULL);
DELETE FROM temp.newest;
INSERT INTO temp.newest (series, t)
    SELECT id, (SELECT max(t) FROM points WHERE series = id) AS t FROM series WHERE t IS NOT NULL;
"""
#: One JSON array of [device, metric, time, value] readings into `incoming`: times in integer
#: µs; booleans as one-byte blobs; NaN and infinities arrive as JSON null (orjson's choice).
#: (Joining the JSON rows to `series` straight away was slower: SQLite then evaluates the
#: extractions once per use.)
STAGE = f"""
INSERT INTO temp.incoming (device, metric, t, v)
SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'),
    CAST(round(json_extract(value, '$[2]') * {US}.0) AS INTEGER),
    CASE json_type(value, '$[3]')
        WHEN 'true' THEN x'01' WHEN 'false' THEN x'00' ELSE json_extract(value, '$[3]') END
FROM json_each(?)"""
VALID = f"i.t >= 0 AND i.t < {MAX_US} AND i.v IS NOT NULL"
REFUSED = f"""
SELECT coalesce(sum(t IS NULL OR t < 0 OR t >= {MAX_US}), 0),
    coalesce(sum(t >= 0 AND t < {MAX_US} AND v IS NULL), 0)
FROM temp.incoming"""
NEW_SERIES = f"""
INSERT OR IGNORE INTO series (device, metric, convention)
SELECT DISTINCT i.device, i.metric, coalesce(c.convention, '')
FROM temp.incoming i LEFT JOIN temp.conventions c ON c.device = i.device
WHERE {VALID}
    AND NOT EXISTS (SELECT 1 FROM series s WHERE s.device = i.device AND s.metric = i.metric)"""
#: The first of several points with one (series, t) in the batch is kept, as a database keeps
#: the first one written.
FRESH = f"""
INSERT OR IGNORE INTO temp.fresh (series, minute, t, v)
SELECT s.id, i.t / {60 * US} * 60, i.t, i.v
FROM temp.incoming i JOIN series s ON s.device = i.device AND s.metric = i.metric
WHERE {VALID} ORDER BY i.i"""
ALREADY_STORED = """
DELETE FROM temp.fresh
WHERE EXISTS (SELECT 1 FROM temp.newest n WHERE n.series = fresh.series AND fresh.t <= n.t)
    AND EXISTS (SELECT 1 FROM points p WHERE p.series = fresh.series AND p.t = fresh.t)"""
STORE_POINTS = "INSERT INTO points (series, t, v) SELECT series, t, v FROM temp.fresh"
NEWEST = """
INSERT INTO temp.newest (series, t) SELECT series, max(t) FROM temp.fresh WHERE true GROUP BY 1
ON CONFLICT (series) DO UPDATE SET t = max(t, excluded.t)"""
MINUTES = """
INSERT INTO temp.minutes (series, t, lo, hi, total, n)
SELECT series, minute, min(v), max(v), sum(v), count(*)
FROM temp.fresh WHERE typeof(v) IN ('real', 'integer') GROUP BY series, minute"""
ROLL_UP = {
    w: f"""
INSERT INTO rollup_{w} (series, t, lo, hi, total, n)
SELECT series, t / {w} * {w}, min(lo), max(hi), sum(total), sum(n)
FROM temp.minutes WHERE true GROUP BY 1, 2
ON CONFLICT (series, t) DO UPDATE SET
    lo = min(lo, excluded.lo), hi = max(hi, excluded.hi),
    total = total + excluded.total, n = n + excluded.n"""
    for w in ROLLUP_WIDTHS_S
}
CLEAR_SCRATCH = ("incoming", "conventions", "fresh", "minutes")

_TRUE = b"\x01"  # a stored True (STAGE writes x'01' and x'00')


def decode_value(raw: Any) -> Value:
    if isinstance(raw, bytes):
        return raw == _TRUE
    return raw  # type: ignore[no-any-return]


def _unavailable(exc: sqlite3.Error) -> StoreUnavailable:
    """A short, stable reason for /readyz: full disk, read-only file, or SQLite's own words."""
    text = str(exc)
    if "full" in text:
        return StoreUnavailable("disk full")
    if "readonly" in text or "read-only" in text:
        return StoreUnavailable("read-only")
    return StoreUnavailable(f"sqlite: {text[:120]}")


class SqliteBackend:
    name = "sqlite"
    durable = True

    def __init__(
        self, config: HistoryConfig, instance: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._path = config.sqlite_path()
        self._instance = instance
        self._clock = clock
        self._writer = concurrent.futures.ThreadPoolExecutor(1, "iotgw-history-writer")
        self._reader_pool = concurrent.futures.ThreadPoolExecutor(READERS, "iotgw-history-reader")
        self._readers: queue.SimpleQueue[sqlite3.Connection] = queue.SimpleQueue()
        self._reader_lock = threading.Lock()
        self._opened_readers: list[sqlite3.Connection] = []
        self._db: sqlite3.Connection | None = None  # the writing connection (writer thread)
        self._purge_at: tuple[str, int] | None = None  # (table, next series id) mid-cycle

    @property
    def path(self) -> Path:
        return self._path

    @property
    def where(self) -> str:
        return str(self._path.absolute())

    # --- threads -------------------------------------------------------------------------------

    async def _on_writer(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._writer, fn)

    async def _on_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(
            self._reader_pool, self._with_reader, fn
        )

    def _with_reader(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        try:
            db = self._readers.get_nowait()
        except queue.Empty:
            db = self._connect(readonly=True)
            with self._reader_lock:
                self._opened_readers.append(db)
        try:
            return fn(db)
        except sqlite3.Error as exc:
            raise _unavailable(exc) from exc
        finally:
            self._readers.put(db)

    def _connect(self, *, readonly: bool = False) -> sqlite3.Connection:
        db = sqlite3.connect(
            self._path, timeout=5.0, isolation_level=None, check_same_thread=not readonly
        )
        if readonly:
            db.execute("PRAGMA query_only = ON")
        return db

    # --- lifecycle -----------------------------------------------------------------------------

    async def open(self) -> None:
        await self._on_writer(self._open)

    def _open(self) -> None:
        if self._db is not None:
            return
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            db = self._connect()
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"cannot open {self._path}: {exc}") from exc
        try:
            # WAL: readers never block the writer. NORMAL: a commit is not fsynced; a power loss
            # may lose the last commits, never the file's consistency (sqlite.org/wal.html).
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            # Points of many series land on many B-tree leaves at once: keep them in memory
            # (64 MiB at most; the default 2 MB made every batch of 1,000 series read pages).
            db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            db.execute("PRAGMA temp_store = MEMORY")
            db.executescript(SCHEMA)
            db.execute(
                "INSERT OR IGNORE INTO iotgw_meta (key, value) VALUES ('schema', ?)",
                (SCHEMA_VERSION,),
            )
            db.executescript(SCRATCH)
        except sqlite3.Error as exc:
            db.close()
            if not self._writable():
                raise StoreUnavailable("read-only") from exc
            raise _unavailable(exc) from exc
        self._db = db

    def _writable(self) -> bool:
        """Can the file and its directory (WAL and shared-memory files) be written? (False on a
        read-only filesystem even for root.)"""
        folder = self._path.parent
        if not os.access(folder, os.W_OK):
            return False
        return not self._path.exists() or os.access(self._path, os.W_OK)

    async def close(self) -> None:
        def close_writer() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        await self._on_writer(close_writer)
        self._writer.shutdown(wait=True)
        self._reader_pool.shutdown(wait=True)
        with self._reader_lock:
            for db in self._opened_readers:
                db.close()
            self._opened_readers.clear()

    # --- writing (writer thread) ---------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> WriteOutcome:
        return await self._on_writer(lambda: self._write(batch))

    def _write(self, batch: WriteBatch) -> WriteOutcome:
        self._open()
        db = self._db
        assert db is not None
        try:
            db.execute("BEGIN IMMEDIATE")
            outcome = self._insert(db, batch)
            if batch.audits:
                db.executemany(
                    "INSERT INTO audit (ts, instance, principal, remote, via, device, command, "
                    "params, command_id, status, rtt_ms, error) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [self._audit_row(e) for e in batch.audits],
                )
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._reset()
            raise _unavailable(exc) from exc
        return outcome

    def _reset(self) -> None:
        """After a failed transaction: close (its scratch tables go with it), reopen next time."""
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _audit_row(self, e: AuditEntry) -> tuple[Any, ...]:
        params = orjson.dumps(e.params).decode()
        return (
            e.ts, self._instance, e.principal, e.remote, e.via, e.device, e.command, params,
            e.command_id, e.status, e.rtt_ms, e.error,
        )  # fmt: skip

    def _insert(self, db: sqlite3.Connection, batch: WriteBatch) -> WriteOutcome:
        """Store the batch's points and fold them into the rollups, all in SQL (see the module's
        docstring for why); points already stored are counted as duplicates, not rolled up
        twice."""
        outcome = WriteOutcome()
        for start in range(0, len(batch.messages), MESSAGES_PER_CHUNK):
            db.execute(STAGE, (batch.readings_json(start, start + MESSAGES_PER_CHUNK),))
        db.execute(
            "INSERT INTO temp.conventions (device, convention) SELECT key, value FROM json_each(?)",
            (batch.conventions_json(),),
        )
        bad_time, bad_value = db.execute(REFUSED).fetchone()
        for reason, n in (("bad_time", bad_time), ("bad_value", bad_value)):
            if n:
                outcome.bad[reason] = n
        valid = batch.count - bad_time - bad_value
        db.execute(NEW_SERIES)
        unique = db.execute(FRESH).rowcount
        stored_before = db.execute(ALREADY_STORED).rowcount
        outcome.written = db.execute(STORE_POINTS).rowcount
        outcome.duplicates = valid - unique + stored_before
        db.execute(NEWEST)
        db.execute(MINUTES)
        for width in ROLLUP_WIDTHS_S:
            db.execute(ROLL_UP[width])
        for table in CLEAR_SCRATCH:
            db.execute(f"DELETE FROM temp.{table}")
        return outcome

    # --- retention (writer thread, one small step at a time) -----------------------------------

    async def purge_step(self, now: float) -> tuple[int, bool]:
        return await self._on_writer(lambda: self._purge_step(now))

    def _cutoff(self, table: str, now: float) -> float:
        """Rows of `table` older than this (in the table's own time unit) are past retention."""
        c = self._config
        if table == "points":
            return (now - c.raw_retention_days * DAY_S) * US
        if table == "audit":
            return now - c.audit_retention_days * DAY_S
        if table == "rollup_60":
            return now - c.minute_rollup_retention_days * DAY_S
        return now - c.rollup_retention_days * DAY_S

    def _purge_step(self, now: float) -> tuple[int, bool]:
        """Delete up to purge_batch rows past retention, visiting at most PURGE_SERIES_PER_STEP
        series; return (rows deleted, whether the cycle is complete)."""
        self._open()
        db = self._db
        assert db is not None
        budget = self._config.purge_batch
        table, after = self._purge_at or (PURGE_ORDER[0], 0)
        deleted = visited = 0
        try:
            db.execute("BEGIN IMMEDIATE")
            while deleted < budget and visited < PURGE_SERIES_PER_STEP:
                cutoff = self._cutoff(table, now)
                if table == "audit":
                    left = budget - deleted
                    n = db.execute(
                        "DELETE FROM audit WHERE id IN "
                        "(SELECT id FROM audit WHERE ts < ? ORDER BY ts LIMIT ?)",
                        (cutoff, left),
                    ).rowcount
                    deleted += n
                    more: int | None = 0 if n == left else None
                else:
                    n, more, seen = self._purge_series(
                        db, table, int(cutoff), after, budget - deleted
                    )
                    deleted += n
                    visited += seen
                if more is not None:
                    after = more
                    continue
                following = PURGE_ORDER.index(table) + 1
                if following == len(PURGE_ORDER):
                    db.execute("COMMIT")
                    self._purge_at = None
                    return deleted, True
                table, after = PURGE_ORDER[following], 0
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._reset()
            raise _unavailable(exc) from exc
        self._purge_at = (table, after)
        return deleted, False

    def _purge_series(
        self, db: sqlite3.Connection, table: str, cutoff: int, after: int, budget: int
    ) -> tuple[int, int | None, int]:
        """Delete old rows of series with id >= `after`, until `budget` rows are gone or
        PURGE_SERIES_PER_STEP series were visited; return (rows deleted, the series to go on
        from or None when every series is done, series visited)."""
        deleted = 0
        ids = [
            sid
            for (sid,) in db.execute(
                "SELECT id FROM series WHERE id >= ? ORDER BY id LIMIT ?",
                (after, PURGE_SERIES_PER_STEP),
            )
        ]
        for sid in ids:
            left = budget - deleted
            if left <= 0:
                return deleted, sid, len(ids)
            # The time of the oldest row past `left`: deleting up to it deletes `left` rows.
            edge = db.execute(
                f"SELECT t FROM {table} WHERE series = ? AND t < ? ORDER BY t LIMIT 1 OFFSET ?",
                (sid, cutoff, left - 1),
            ).fetchone()
            if edge is None:
                deleted += db.execute(
                    f"DELETE FROM {table} WHERE series = ? AND t < ?", (sid, cutoff)
                ).rowcount
            else:
                deleted += db.execute(
                    f"DELETE FROM {table} WHERE series = ? AND t <= ?", (sid, edge[0])
                ).rowcount
                return deleted, sid, len(ids)  # this series may have more: go on from it
        if len(ids) == PURGE_SERIES_PER_STEP:
            return deleted, ids[-1] + 1, len(ids)
        return deleted, None, len(ids)

    # --- reading (reader threads) --------------------------------------------------------------

    async def restore(self, total_points: int, per_series: int) -> list[RestoredSeries]:
        return await self._on_reader(lambda db: self._restore(db, total_points, per_series))

    def _restore(
        self, db: sqlite3.Connection, total_points: int, per_series: int
    ) -> list[RestoredSeries]:
        rows = db.execute("SELECT id, device, metric, convention FROM series").fetchall()
        # Every series gets its last value back; the recent window shares the budget.
        each = max(1, min(per_series, total_points // max(1, len(rows))))
        restored = []
        for sid, device, metric, convention in rows:
            points = [
                (t / US, decode_value(v))
                for t, v in db.execute(
                    "SELECT t, v FROM points WHERE series = ? ORDER BY t DESC LIMIT ?",
                    (sid, each),
                )
            ]
            if points:
                points.reverse()
                restored.append(RestoredSeries(device, convention, metric, points))
        return restored

    async def query(
        self, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        return await self._on_reader(
            lambda db: self._query(db, device, metric, start, end, max_points)
        )

    def _query(
        self, db: sqlite3.Connection, device: str, metric: str, start: float, end: float,
        max_points: int,
    ) -> HistoryResult | None:  # fmt: skip
        found = db.execute(
            "SELECT id FROM series WHERE device = ? AND metric = ?", (device, metric)
        ).fetchone()
        if found is None:
            return None
        sid = found[0]
        lo, hi = _us(start), _us(end)
        rows = db.execute(
            "SELECT t, v FROM points WHERE series = ? AND t >= ? AND t < ? ORDER BY t LIMIT ?",
            (sid, lo, hi, max_points + 1),
        ).fetchall()
        width = bucket_width(start, end, max_points)
        if len(rows) <= max_points:
            rolled = self._purged(db, sid, start, end)
            if rolled is None:
                return HistoryResult(points=[(t / US, decode_value(v)) for t, v in rows])
            width = max(width, float(rolled))  # retention took raw points: rollups tell it
        source = rollup_source(width)
        buckets: list[Any] = []
        while source is not None:
            w = int(width)
            buckets = db.execute(
                f"SELECT t / {w} * {w} AS b, min(lo), max(hi), sum(total) / sum(n), sum(n) "
                f"FROM rollup_{source} WHERE series = ? AND t >= ? AND t < ? "
                "GROUP BY b ORDER BY b",
                (sid, math.floor(start / source) * source, math.ceil(end)),
            ).fetchall()
            coarser = [r for r in ROLLUP_WIDTHS_S if r > source]
            if buckets or not coarser:
                break
            # The finer rollups are past their retention here: try the coarser ones.
            width = float(math.ceil(width / coarser[0]) * coarser[0])
            source = coarser[0]
        if source is None:
            wus = int(width * US)
            buckets = db.execute(
                f"SELECT t / {wus} * {wus} AS b, min(v), max(v), avg(v), count(*) "
                "FROM points WHERE series = ? AND t >= ? AND t < ? "
                "AND typeof(v) IN ('real', 'integer') GROUP BY b ORDER BY b",
                (sid, lo, hi),
            ).fetchall()
            buckets = [(b / US, *rest) for b, *rest in buckets]
        if not buckets:
            # No numeric point in the range: these values have no rollups; the newest raw ones.
            newest = db.execute(
                "SELECT t, v FROM points WHERE series = ? AND t >= ? AND t < ? "
                "ORDER BY t DESC LIMIT ?",
                (sid, lo, hi, max_points),
            ).fetchall()
            newest.reverse()
            return HistoryResult(
                points=[(t / US, decode_value(v)) for t, v in newest], truncated=True
            )
        return HistoryResult(
            buckets=[(float(b), lo_, hi_, avg, n) for b, lo_, hi_, avg, n in buckets],
            bucket_s=width,
        )

    def _purged(self, db: sqlite3.Connection, sid: int, start: float, end: float) -> int | None:
        """When raw retention may have taken points of the range: the finest rollup width whose
        buckets over it count more numeric points than the raw ones left there (then only
        buckets tell the range), else None."""
        if start >= self._clock() - self._config.raw_retention_days * DAY_S:
            return None
        for width in ROLLUP_WIDTHS_S:
            lo, hi = math.floor(start / width) * width, math.ceil(end / width) * width
            (rolled,) = db.execute(
                f"SELECT coalesce(sum(n), 0) FROM rollup_{width} WHERE series = ? AND t >= ? "
                "AND t < ?",
                (sid, lo, hi),
            ).fetchone()
            (raw,) = db.execute(
                "SELECT count(*) FROM points WHERE series = ? AND t >= ? AND t < ? "
                "AND typeof(v) IN ('real', 'integer')",
                (sid, lo * US, hi * US),
            ).fetchone()
            if rolled > raw:
                return width
        return None

    async def export(
        self, device: str, metric: str, start: float, end: float
    ) -> AsyncIterator[list[Point]]:
        found = await self._on_reader(
            lambda db: db.execute(
                "SELECT id FROM series WHERE device = ? AND metric = ?", (device, metric)
            ).fetchone()
        )
        if found is None:
            return
        sid, after, hi = found[0], _us(start) - 1, _us(end)
        while True:
            rows = await self._on_reader(functools.partial(_page, args=(sid, after, hi)))
            if not rows:
                return
            yield [(t / US, decode_value(v)) for t, v in rows]
            if len(rows) < EXPORT_CHUNK:
                return
            after = rows[-1][0]

    async def audit(
        self, device: str | None, allowed: Callable[[str], bool], start: float, end: float,
        limit: int,
    ) -> list[AuditEntry]:  # fmt: skip
        return await self._on_reader(
            lambda db: list(_take(self._audit_rows(db, device, start, end), allowed, limit))
        )

    def _audit_rows(
        self, db: sqlite3.Connection, device: str | None, start: float, end: float
    ) -> Iterator[AuditEntry]:
        where = "ts >= ? AND ts < ?"
        args: list[object] = [start, end]
        if device is not None:
            where += " AND device = ?"
            args.append(device)
        for row in db.execute(
            "SELECT ts, principal, remote, via, device, command, params, command_id, status, "
            f"rtt_ms, error FROM audit WHERE {where} ORDER BY ts DESC, id DESC",
            args,
        ):
            yield audit_entry(row)


def audit_entry(row: tuple[Any, ...]) -> AuditEntry:
    """An AuditEntry from the row of the columns SELECTed in audit order (both SQL backends)."""
    ts, principal, remote, via, device, command, params, command_id, status, rtt, error = row
    return AuditEntry(
        ts, principal, remote, via, device, command,
        orjson.loads(params) if isinstance(params, str | bytes) else params,
        command_id, status, rtt, error,
    )  # fmt: skip


def _take(
    entries: Iterator[AuditEntry], allowed: Callable[[str], bool], limit: int
) -> Iterator[AuditEntry]:
    taken = 0
    for entry in entries:
        if taken >= limit:
            return
        if allowed(entry.device):
            taken += 1
            yield entry


def _page(db: sqlite3.Connection, args: tuple[int, int, int]) -> list[tuple[int, Any]]:
    """One export chunk: the points after a time, by key (no read transaction stays open)."""
    return db.execute(
        "SELECT t, v FROM points WHERE series = ? AND t > ? AND t < ? ORDER BY t LIMIT ?",
        (*args, EXPORT_CHUNK),
    ).fetchall()


def _us(t: float) -> int:
    return round(min(max(t, -1.0), MAX_TIME_S) * US)

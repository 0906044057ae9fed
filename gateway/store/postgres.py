"""The `postgres` backend: PostgreSQL 15+ through asyncpg; TimescaleDB when it is installed.

Tables (prefixed `iotgw_`): `series` (id, device, metric, convention), `points` keyed by
(series, t) with the value in `v` (numbers, and bools as 0/1) or `s` (strings) and its kind in
`k`, `rollup_60` and `rollup_3600` (per-minute and per-hour min, max, sum, count of numeric
points) and `audit`. One statement per batch inserts the points with ON CONFLICT DO NOTHING and
folds only the rows it really inserted into the rollups, so a batch written twice (a retry, or
several gateway instances sharing the database, issue 14) stores every point and counts it in
the rollups exactly once.

With the TimescaleDB extension created in the database (`CREATE EXTENSION timescaledb`, by its
owner), points become a hypertable of one-day chunks, compressed after two days (segmented by
series) and dropped chunk by chunk at the end of raw retention. Detected at open.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import orjson

from gateway.config import HistoryConfig
from gateway.models import AuditEntry, Value
from gateway.store.base import (
    MAX_TIME_S,
    ROLLUP_WIDTHS_S,
    HistoryResult,
    LostMember,
    MemberBeat,
    Point,
    RestoredSeries,
    RosterView,
    StoreUnavailable,
    WriteBatch,
    WriteOutcome,
    bucket_width,
    rollup_source,
)
from gateway.store.sqlite import audit_entry

EXPORT_CHUNK = 10000
DAY_S = 86400.0
CONNECT_TIMEOUT_S = 5.0
PURGE_SERIES_PER_STEP = 256
#: Tries of one commit that PostgreSQL rolled back as a deadlock (instances sharing a database).
DEADLOCK_ATTEMPTS = 3
#: How long closing waits for connections in use before cutting them.
CLOSE_TIMEOUT_S = 5.0
SESSION_SETTINGS = {
    "application_name": "iotgw",
    # JIT compiles a bucket query for longer than it runs (~50 ms on a few rows).
    "jit": "off",
    # A batch's sorts (50,000 points: ~2.5 MB each) in memory, not in temporary files.
    "work_mem": "32MB",
    # Several instances update the same rollup rows (issue 14): one that hangs inside a commit
    # (frozen, cut off from the database, stuck in shutdown) would hold its row locks and stall
    # every other instance's writer. A commit waits for a lock this long at most, then fails and
    # is retried (the store says degraded meanwhile)...
    "lock_timeout": "5s",
    # ...and a session left inside a transaction this long is ended by the server, which frees
    # its locks (the gateway runs only statements inside its transactions, never waits).
    "idle_in_transaction_session_timeout": "10s",
}
#: Value kinds in the `k` column.
FLOAT, INT, BOOL, STR = 0, 1, 2, 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS iotgw_series (
    id serial PRIMARY KEY, device text NOT NULL, metric text NOT NULL,
    convention text NOT NULL DEFAULT '', UNIQUE (device, metric));
CREATE TABLE IF NOT EXISTS iotgw_points (
    t timestamptz NOT NULL, v double precision, series integer NOT NULL, k smallint NOT NULL,
    s text, PRIMARY KEY (series, t));
CREATE TABLE IF NOT EXISTS iotgw_audit (
    id bigserial PRIMARY KEY, ts double precision NOT NULL, instance text NOT NULL,
    principal text NOT NULL, remote text NOT NULL, via text NOT NULL, device text NOT NULL,
    command text NOT NULL, params jsonb NOT NULL, command_id text NOT NULL,
    status text NOT NULL, rtt_ms double precision, error text);
CREATE INDEX IF NOT EXISTS iotgw_audit_ts ON iotgw_audit (ts);
CREATE INDEX IF NOT EXISTS iotgw_audit_device_ts ON iotgw_audit (device, ts);
CREATE TABLE IF NOT EXISTS iotgw_members (
    instance text PRIMARY KEY, host text NOT NULL, started_at double precision NOT NULL,
    beat_at double precision NOT NULL, left_at double precision, lost_at double precision,
    heartbeat_s double precision NOT NULL, queued bigint NOT NULL, rate double precision NOT NULL,
    points_per_message double precision NOT NULL, inflight integer NOT NULL);
""" + "".join(
    f"""
CREATE TABLE IF NOT EXISTS iotgw_rollup_{w} (
    series integer NOT NULL, t timestamptz NOT NULL, lo double precision NOT NULL,
    hi double precision NOT NULL, total double precision NOT NULL, n bigint NOT NULL,
    PRIMARY KEY (series, t));"""
    for w in ROLLUP_WIDTHS_S
)


def _upsert_rollup(width: int, source: str) -> str:
    return f"""
r{width} AS (
    INSERT INTO iotgw_rollup_{width} (series, t, lo, hi, total, n)
    SELECT series, date_bin('{width} seconds', t, timestamptz 'epoch'), min(lo), max(hi),
           sum(total), sum(n)
    FROM {source} GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (series, t) DO UPDATE SET
        lo = least(iotgw_rollup_{width}.lo, excluded.lo),
        hi = greatest(iotgw_rollup_{width}.hi, excluded.hi),
        total = iotgw_rollup_{width}.total + excluded.total,
        n = iotgw_rollup_{width}.n + excluded.n
    RETURNING 1)"""


#: $1: a batch's readings as the store queued them, one JSON array of [device, metric, time,
#: value] arrays (WriteBatch), taken apart by the server, so the gateway's writer does no
#: per-point Python (which would share the interpreter lock with the event loop). jsonb: parsed
#: once, where every operator on `json` parses its operand again. jsonb keeps numbers as numeric,
#: not as written: orjson writes every float with a fraction or, from 1e16 up, an exponent, and
#: integers past 2^53 never get here (conventions.common), so a number is an integer exactly when
#: it has no fraction digits and is at most 2^53.
_INCOMING = """
incoming AS (
    SELECT i, x ->> 0 AS device, x ->> 1 AS metric, (x ->> 2)::float8 AS t,
           jsonb_typeof(x -> 3) AS kind, x -> 3 AS value
    FROM jsonb_array_elements($1::jsonb) WITH ORDINALITY AS r(x, i))"""
_VALID = f"t >= 0 AND t < {MAX_TIME_S} AND kind <> 'null'"
#: Series new to the database ($2: {device: convention}), once per (device, metric), in key
#: order: instances making the same series wait for each other instead of deadlocking. Run
#: only when INSERT_POINTS found points of series it did not know (then it runs again).
NEW_SERIES = f"""
WITH {_INCOMING}
INSERT INTO iotgw_series (device, metric, convention)
SELECT device, metric, coalesce($2::jsonb ->> device, '')
FROM (SELECT DISTINCT device, metric FROM incoming WHERE {_VALID}) pairs
WHERE NOT EXISTS (
    SELECT 1 FROM iotgw_series s WHERE s.device = pairs.device AND s.metric = pairs.metric)
ORDER BY 1, 2
ON CONFLICT (device, metric) DO NOTHING"""
#: The valid points of known series, inserted with ON CONFLICT DO NOTHING (the first of several
#: with one key in the batch is kept; a second run after NEW_SERIES adds only the rest); only the
#: rows really inserted are folded into the minutes and hours, so every point counts once
#: whoever wrote it. Returns the points refused for their time, for their value (NaN and
#: infinities arrive as JSON null), those of unknown series, and those inserted.
INSERT_POINTS = f"""
WITH {_INCOMING},
known AS (
    SELECT incoming.i, s.id AS series, incoming.t, kind, value
    FROM incoming LEFT JOIN iotgw_series s
        ON s.device = incoming.device AND s.metric = incoming.metric
    WHERE {_VALID}),
ins AS (
    INSERT INTO iotgw_points (series, t, v, k, s)
    SELECT series, to_timestamp(t),
        CASE kind WHEN 'boolean' THEN value::boolean::int WHEN 'number' THEN value::float8 END,
        CASE kind WHEN 'boolean' THEN {BOOL} WHEN 'string' THEN {STR}
            WHEN 'number' THEN CASE
                WHEN scale(value::numeric) = 0 AND abs(value::numeric) <= {2**53} THEN {INT}
                ELSE {FLOAT} END END,
        CASE kind WHEN 'string' THEN value #>> '{{}}' END
    FROM known WHERE series IS NOT NULL
    ORDER BY i
    ON CONFLICT DO NOTHING
    RETURNING series, t, v, k),
minutes AS (
    SELECT series, date_bin('60 seconds', t, timestamptz 'epoch') AS t, min(v) AS lo,
           max(v) AS hi, sum(v) AS total, count(*) AS n
    FROM ins WHERE k IN ({FLOAT}, {INT}) GROUP BY 1, 2),
{_upsert_rollup(60, "minutes")},
{_upsert_rollup(3600, "minutes")}
SELECT (SELECT count(*) FROM incoming WHERE NOT coalesce(t >= 0 AND t < {MAX_TIME_S}, false)),
       (SELECT count(*) FROM incoming WHERE t >= 0 AND t < {MAX_TIME_S} AND kind = 'null'),
       (SELECT count(*) FROM known WHERE series IS NULL),
       (SELECT count(*) FROM ins)
"""

#: The database server's clock, in seconds.
NOW = "extract(epoch FROM clock_timestamp())"
BEAT = f"""
INSERT INTO iotgw_members (instance, host, started_at, beat_at, heartbeat_s, queued, rate,
                           points_per_message, inflight)
VALUES ($1, $2, $3, {NOW}, $4, $5, $6, $7, $8)
ON CONFLICT (instance) DO UPDATE SET
    host = excluded.host, started_at = excluded.started_at, beat_at = excluded.beat_at,
    left_at = NULL, lost_at = NULL, heartbeat_s = excluded.heartbeat_s,
    queued = excluded.queued, rate = excluded.rate,
    points_per_message = excluded.points_per_message, inflight = excluded.inflight"""
MARK_LOST = f"""
UPDATE iotgw_members SET lost_at = {NOW}
WHERE instance <> $1 AND left_at IS NULL AND lost_at IS NULL
    AND beat_at < {NOW} - $2 * heartbeat_s
RETURNING instance, {NOW} - beat_at AS silent_s, queued, rate, heartbeat_s, inflight,
    points_per_message"""
#: Members that left or were lost a day ago are forgotten.
FORGET_OLD_MEMBERS = f"DELETE FROM iotgw_members WHERE coalesce(left_at, lost_at) < {NOW} - {DAY_S}"

AUDIT_COLUMNS = (
    "ts, principal, remote, via, device, command, params::text, command_id, status, rtt_ms, error"
)


def decode(v: float | None, k: int, s: str | None) -> Value:
    if k == STR:
        return s or ""
    if k == BOOL:
        return bool(v)
    if k == INT and v is not None:
        return int(v)
    return v if v is not None else 0.0


def _unavailable(exc: BaseException) -> StoreUnavailable:
    if isinstance(exc, OSError | asyncpg.exceptions.ConnectionDoesNotExistError):
        return StoreUnavailable("postgres unreachable")
    if isinstance(exc, TimeoutError):
        return StoreUnavailable("postgres timed out")
    if isinstance(exc, asyncpg.exceptions.DiskFullError):
        return StoreUnavailable("disk full")
    if isinstance(exc, asyncpg.exceptions.LockNotAvailableError):
        return StoreUnavailable("postgres lock timeout (rows held by another session)")
    return StoreUnavailable(f"postgres: {type(exc).__name__}: {str(exc)[:120]}")


#: What a lost or failing server raises through asyncpg.
FAILURES = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


class PostgresBackend:
    name = "postgres"
    durable = True

    def __init__(
        self, config: HistoryConfig, instance: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._config = config
        self._dsn = config.postgres_dsn()
        self._instance = instance
        self._clock = clock
        self._pool: asyncpg.Pool | None = None
        self._purge_at: tuple[str, int] | None = None
        self.timescale = False

    @property
    def where(self) -> str:
        parts = urlsplit(self._dsn)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                self._dsn, min_size=1, max_size=4, timeout=CONNECT_TIMEOUT_S,
                command_timeout=30,
                server_settings=SESSION_SETTINGS,
            )  # fmt: skip
        except FAILURES as exc:
            raise _unavailable(exc) from exc
        try:
            # One gateway creates the schema at a time (issue 14: several share it).
            async with pool.acquire() as db, db.transaction():
                await db.execute("SELECT pg_advisory_xact_lock(7013031301)")
                await db.execute(SCHEMA)
                self.timescale = bool(
                    await db.fetchval(
                        "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'"
                    )
                )
                if self.timescale:
                    await self._timescale(db)
        except FAILURES as exc:
            await pool.close()
            raise _unavailable(exc) from exc
        self._pool = pool

    async def _timescale(self, db: Any) -> None:
        await db.execute(
            "SELECT create_hypertable('iotgw_points', 't', chunk_time_interval => "
            "interval '1 day', if_not_exists => true, migrate_data => true)"
        )
        await db.execute(
            "ALTER TABLE iotgw_points SET (timescaledb.compress, "
            "timescaledb.compress_segmentby = 'series', timescaledb.compress_orderby = 't')"
        )
        await db.execute(
            "SELECT add_compression_policy('iotgw_points', interval '2 days', "
            "if_not_exists => true)"
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                # A connection a cancelled task left inside a transaction is never released:
                # waiting for it would hold the process (and that transaction's locks).
                async with asyncio.timeout(CLOSE_TIMEOUT_S):
                    await pool.close()
            except (*FAILURES, TimeoutError):
                pool.terminate()

    def _lost(self, exc: BaseException) -> StoreUnavailable:
        """The server failed us: drop the pool (reconnect on the next try) and say why."""
        if self._pool is not None:
            self._pool.terminate()
            self._pool = None
        return _unavailable(exc)

    async def _acquire_pool(self) -> asyncpg.Pool:
        await self.open()
        assert self._pool is not None
        return self._pool

    # --- writing -------------------------------------------------------------------------------

    async def write(self, batch: WriteBatch) -> WriteOutcome:
        pool = await self._acquire_pool()
        readings = batch.readings_json()
        try:
            async with pool.acquire() as db:
                conventions = batch.conventions_json()
                for attempt in range(1, DEADLOCK_ATTEMPTS + 1):
                    try:
                        async with db.transaction():
                            await self._audits(db, batch.audits)
                            bad_time, bad_value, unknown, inserted = await db.fetchrow(
                                INSERT_POINTS, readings
                            )
                            if unknown:
                                await db.execute(NEW_SERIES, readings, conventions)
                                *_, more = await db.fetchrow(INSERT_POINTS, readings)
                                inserted += more
                        break
                    except asyncpg.exceptions.DeadlockDetectedError:
                        # Two instances' commits crossed (rows both update, taken in another
                        # order by something outside this statement): PostgreSQL rolled this
                        # one back; the next try finds the other's rows.
                        if attempt == DEADLOCK_ATTEMPTS:
                            raise
        except FAILURES as exc:
            raise self._lost(exc) from exc
        outcome = WriteOutcome(written=inserted)
        for reason, n in (("bad_time", bad_time), ("bad_value", bad_value)):
            if n:
                outcome.bad[reason] = n
        outcome.duplicates = batch.count - bad_time - bad_value - inserted
        return outcome

    async def _audits(self, db: Any, audits: Sequence[AuditEntry]) -> None:
        if audits:
            await db.executemany(
                "INSERT INTO iotgw_audit (ts, instance, principal, remote, via, device, "
                "command, params, command_id, status, rtt_ms, error) VALUES "
                "($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12)",
                [self._audit_row(e) for e in audits],
            )

    def _audit_row(self, e: AuditEntry) -> tuple[Any, ...]:
        return (
            e.ts, self._instance, e.principal, e.remote, e.via, e.device, e.command,
            orjson.dumps(e.params).decode(), e.command_id, e.status, e.rtt_ms, e.error,
        )  # fmt: skip

    # --- cluster membership (issue 14) ------------------------------------------------------
    # Times are the database server's clock: members' own clocks may disagree.

    async def beat(self, beat: MemberBeat, missed: int) -> RosterView:
        pool = await self._acquire_pool()
        try:
            async with pool.acquire() as db:
                await db.execute(BEAT, beat.instance, beat.host, beat.started_at,
                                 beat.heartbeat_s, beat.queued, beat.rate,
                                 beat.points_per_message, beat.inflight)  # fmt: skip
                # Row locks make this once per lost member: a survivor that runs it second
                # finds lost_at set and returns nothing.
                rows = await db.fetch(MARK_LOST, beat.instance, missed)
                members = await db.fetchval(
                    "SELECT count(*) FROM iotgw_members WHERE left_at IS NULL AND lost_at IS NULL"
                )
                await db.execute(FORGET_OLD_MEMBERS)
        except FAILURES as exc:
            raise self._lost(exc) from exc
        lost = [
            LostMember(r["instance"], r["silent_s"], r["queued"], r["rate"], r["heartbeat_s"],
                       r["inflight"] * r["points_per_message"])
            for r in rows
        ]  # fmt: skip
        return RosterView(members, lost)

    async def leave(self, instance: str) -> None:
        pool = await self._acquire_pool()
        try:
            async with pool.acquire() as db:
                await db.execute(
                    f"UPDATE iotgw_members SET left_at = {NOW} WHERE instance = $1", instance
                )
        except FAILURES as exc:
            raise self._lost(exc) from exc

    # --- retention -----------------------------------------------------------------------------

    async def purge_step(self, now: float) -> tuple[int, bool]:
        pool = await self._acquire_pool()
        c = self._config
        budget = c.purge_batch
        try:
            async with pool.acquire() as db:
                table, after = self._purge_at or ("audit", 0)
                if table == "audit":
                    deleted = _count(
                        await db.execute(
                            "DELETE FROM iotgw_audit WHERE id IN (SELECT id FROM iotgw_audit "
                            "WHERE ts < $1 ORDER BY ts LIMIT $2)",
                            now - c.audit_retention_days * DAY_S,
                            budget,
                        )
                    )
                    self._purge_at = ("audit", 0) if deleted == budget else ("iotgw_points", 0)
                    return deleted, False
                days = {
                    "iotgw_points": c.raw_retention_days,
                    "iotgw_rollup_60": c.minute_rollup_retention_days,
                }.get(table, c.rollup_retention_days)
                cutoff = now - days * DAY_S
                if table == "iotgw_points" and self.timescale:
                    # Whole chunks: no row-by-row delete, no bloat.
                    await db.execute(
                        "SELECT drop_chunks('iotgw_points', older_than => to_timestamp($1))",
                        cutoff,
                    )
                    deleted, more = 0, None
                else:
                    deleted, more = await self._purge_series(db, table, cutoff, after, budget)
        except FAILURES as exc:
            raise self._lost(exc) from exc
        if more is not None:
            self._purge_at = (table, more)
            return deleted, False
        order = ["iotgw_points", *(f"iotgw_rollup_{w}" for w in ROLLUP_WIDTHS_S)]
        following = order.index(table) + 1
        if following == len(order):
            self._purge_at = None
            return deleted, True
        self._purge_at = (order[following], 0)
        return deleted, False

    async def _purge_series(
        self, db: Any, table: str, cutoff: float, after: int, budget: int
    ) -> tuple[int, int | None]:
        deleted = 0
        ids = [
            r["id"]
            for r in await db.fetch(
                "SELECT id FROM iotgw_series WHERE id >= $1 ORDER BY id LIMIT $2",
                after,
                PURGE_SERIES_PER_STEP,
            )
        ]
        for sid in ids:
            left = budget - deleted
            if left <= 0:
                return deleted, sid
            n = _count(
                await db.execute(
                    f"DELETE FROM {table} WHERE series = $1 AND t IN (SELECT t FROM {table} "
                    "WHERE series = $1 AND t < to_timestamp($2) ORDER BY t LIMIT $3)",
                    sid,
                    cutoff,
                    left,
                )
            )
            deleted += n
            if n == left:
                return deleted, sid
        if len(ids) == PURGE_SERIES_PER_STEP:
            return deleted, ids[-1] + 1
        return deleted, None

    # --- reading -------------------------------------------------------------------------------

    async def restore(self, total_points: int, per_series: int) -> list[RestoredSeries]:
        pool = await self._acquire_pool()
        try:
            async with pool.acquire() as db:
                count = await db.fetchval("SELECT count(*) FROM iotgw_series")
                each = max(1, min(per_series, total_points // max(1, count)))
                rows = await db.fetch(
                    "SELECT s.id, s.device, s.metric, s.convention, "
                    "extract(epoch FROM p.t)::float8 AS t, p.v, p.k, p.s "
                    "FROM iotgw_series s CROSS JOIN LATERAL (SELECT t, v, k, s FROM iotgw_points "
                    "WHERE series = s.id ORDER BY t DESC LIMIT $1) p ORDER BY s.id, p.t",
                    each,
                )
        except FAILURES as exc:
            raise self._lost(exc) from exc
        restored: list[RestoredSeries] = []
        last = None
        for r in rows:
            if r["id"] != last:
                last = r["id"]
                restored.append(RestoredSeries(r["device"], r["convention"], r["metric"], []))
            restored[-1].points.append((r["t"], decode(r["v"], r["k"], r["s"])))
        return restored

    async def _series_of(self, db: Any, device: str, metric: str) -> int | None:
        sid: int | None = await db.fetchval(
            "SELECT id FROM iotgw_series WHERE device = $1 AND metric = $2", device, metric
        )
        return sid

    async def query(
        self, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        pool = await self._acquire_pool()
        try:
            async with pool.acquire() as db:
                return await self._query(db, device, metric, start, end, max_points)
        except FAILURES as exc:
            raise self._lost(exc) from exc

    async def _query(
        self, db: Any, device: str, metric: str, start: float, end: float, max_points: int
    ) -> HistoryResult | None:
        sid = await self._series_of(db, device, metric)
        if sid is None:
            return None
        # ORDER BY names iotgw_points.t: a bare `t` would be the output column (the float),
        # sorting every row of the range instead of reading the index in order.
        raw = (
            "SELECT extract(epoch FROM t)::float8 AS t, v, k, s FROM iotgw_points "
            "WHERE series = $1 AND t >= to_timestamp($2) AND t < to_timestamp($3) "
        )
        rows = await db.fetch(
            raw + "ORDER BY iotgw_points.t LIMIT $4", sid, start, end, max_points + 1
        )
        width = bucket_width(start, end, max_points)
        if len(rows) <= max_points:
            rolled = await self._purged(db, sid, start, end)
            if rolled is None:
                return HistoryResult(
                    points=[(r["t"], decode(r["v"], r["k"], r["s"])) for r in rows]
                )
            width = max(width, float(rolled))  # retention took raw points: rollups tell it
        source = rollup_source(width)
        buckets: list[Any] = []
        while source is not None:
            buckets = await db.fetch(
                "SELECT floor(extract(epoch FROM t) / $4) * $4 AS b, min(lo), max(hi), "
                f"sum(total) / sum(n), sum(n) FROM iotgw_rollup_{source} WHERE series = $1 "
                "AND t >= to_timestamp($2) AND t < to_timestamp($3) GROUP BY b ORDER BY b",
                sid,
                math.floor(start / source) * source,
                end,
                width,
            )
            coarser = [r for r in ROLLUP_WIDTHS_S if r > source]
            if buckets or not coarser:
                break
            # The finer rollups are past their retention here: try the coarser ones.
            width = float(math.ceil(width / coarser[0]) * coarser[0])
            source = coarser[0]
        if source is None:
            buckets = await db.fetch(
                "SELECT floor(extract(epoch FROM t) / $4) * $4 AS b, min(v), max(v), avg(v), "
                "count(*) FROM iotgw_points WHERE series = $1 AND t >= to_timestamp($2) "
                f"AND t < to_timestamp($3) AND k IN ({FLOAT}, {INT}) GROUP BY b ORDER BY b",
                sid,
                start,
                end,
                width,
            )
        if not buckets:
            newest = await db.fetch(
                raw + "ORDER BY iotgw_points.t DESC LIMIT $4", sid, start, end, max_points
            )
            return HistoryResult(
                points=[(r["t"], decode(r["v"], r["k"], r["s"])) for r in reversed(newest)],
                truncated=True,
            )
        return HistoryResult(
            buckets=[(float(b[0]), b[1], b[2], float(b[3]), int(b[4])) for b in buckets],
            bucket_s=width,
        )

    async def _purged(self, db: Any, sid: int, start: float, end: float) -> int | None:
        """When raw retention may have taken points of the range: the finest rollup width
        whose buckets over it count more numeric points than the raw ones left there, else
        None."""
        if start >= self._clock() - self._config.raw_retention_days * DAY_S:
            return None
        for width in ROLLUP_WIDTHS_S:
            lo, hi = math.floor(start / width) * width, math.ceil(end / width) * width
            rolled = await db.fetchval(
                f"SELECT coalesce(sum(n), 0) FROM iotgw_rollup_{width} WHERE series = $1 "
                "AND t >= to_timestamp($2) AND t < to_timestamp($3)",
                sid,
                lo,
                hi,
            )
            raw = await db.fetchval(
                "SELECT count(*) FROM iotgw_points WHERE series = $1 AND t >= to_timestamp($2) "
                f"AND t < to_timestamp($3) AND k IN ({FLOAT}, {INT})",
                sid,
                lo,
                hi,
            )
            if rolled > raw:
                return width
        return None

    async def export(
        self, device: str, metric: str, start: float, end: float
    ) -> AsyncIterator[list[Point]]:
        pool = await self._acquire_pool()
        try:
            async with pool.acquire() as db:
                sid = await self._series_of(db, device, metric)
        except FAILURES as exc:
            raise self._lost(exc) from exc
        if sid is None:
            return
        after: Any = None  # the last row's own timestamptz: keyset paging, exact
        while True:
            try:
                async with pool.acquire() as db:
                    rows = await db.fetch(
                        "SELECT t AS key, extract(epoch FROM t)::float8 AS t, v, k, s "
                        "FROM iotgw_points WHERE series = $1 AND t >= to_timestamp($2) "
                        "AND t < to_timestamp($3) AND ($4::timestamptz IS NULL OR t > $4) "
                        "ORDER BY iotgw_points.t LIMIT $5",
                        sid,
                        start,
                        end,
                        after,
                        EXPORT_CHUNK,
                    )
            except FAILURES as exc:
                raise self._lost(exc) from exc
            if not rows:
                return
            yield [(r["t"], decode(r["v"], r["k"], r["s"])) for r in rows]
            if len(rows) < EXPORT_CHUNK:
                return
            after = rows[-1]["key"]

    async def audit(
        self, device: str | None, allowed: Callable[[str], bool], start: float, end: float,
        limit: int,
    ) -> list[AuditEntry]:  # fmt: skip
        pool = await self._acquire_pool()
        where = "ts >= $1 AND ts < $2"
        args: list[Any] = [start, end]
        if device is not None:
            where += " AND device = $3"
            args.append(device)
        found: list[AuditEntry] = []
        try:
            async with pool.acquire() as db, db.transaction():
                cursor = db.cursor(
                    f"SELECT {AUDIT_COLUMNS} FROM iotgw_audit WHERE {where} "
                    "ORDER BY ts DESC, id DESC",
                    *args,
                )
                async for row in cursor:
                    entry = audit_entry(tuple(row))
                    if allowed(entry.device):
                        found.append(entry)
                        if len(found) >= limit:
                            break
        except FAILURES as exc:
            raise self._lost(exc) from exc
        return found


def _count(status: str) -> int:
    """Rows affected, from a command status such as 'DELETE 42'."""
    return int(status.rsplit(" ", 1)[-1])

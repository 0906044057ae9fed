"""The history store against each durable backend (SQLite file, real PostgreSQL server): what is
written comes back exactly, ranges answer raw or bucketed, bad input is refused and counted,
retention purges by the store's clock, restart restores, audit records are kept and filtered."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from gateway.config import load_config
from gateway.models import AuditEntry
from gateway.store import HistoryStore, RestoredSeries, build_store
from tests.support.history import BACKENDS, history_settings

DAY = 86400.0


@pytest.fixture(params=BACKENDS)
async def settings(request, tmp_path) -> dict[str, Any]:
    """`history.*` settings for a fresh store of each durable backend."""
    return await history_settings(request, tmp_path)


@contextlib.asynccontextmanager
async def running_store(
    settings: dict[str, Any],
    clock: Callable[[], float] = time.time,
    restored: list[RestoredSeries] | None = None,
    **more: Any,
) -> AsyncIterator[HistoryStore]:
    """A started store whose writer runs until the block ends (then it flushes and closes)."""
    config = load_config(env={}, overrides={**settings, **more})
    store = build_store(config, lambda device, metric: None, "test", clock)
    sink = restored.append if restored is not None else (lambda series: None)
    await store.start(sink)
    writer = asyncio.create_task(store.run(sink), name="test.history.writer")
    try:
        yield store
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.close()


def series(device: str, metric: str, start: float, values: list[Any], step: float = 1.0):
    return [(device, metric, start + i * step, v) for i, v in enumerate(values)]


async def test_values_come_back_exactly_with_their_types(settings):
    """Floats, ints, bools and strings are stored and read back with their own type and time."""
    now = time.time() - 60
    values = [21.5, 7, True, False, "heat", 0.0, -(2**53), 1e308, "x" * 1000]
    async with running_store(settings) as store:
        store.append(series("d1", "m", now, values, 0.25), "native")
        await store.drained()
        result = await store.query("d1", "m", now - 1, now + 10, 100)
    assert result is not None
    assert result.buckets is None
    assert [v for _, v in result.points] == values
    assert [type(v) for _, v in result.points] == [type(v) for v in values]
    assert [t for t, _ in result.points] == pytest.approx([now + i * 0.25 for i in range(9)])
    assert store.stats.written == len(values)


async def test_unknown_series_is_none(settings):
    """A query for a series never written answers None (the caller says not_found)."""
    async with running_store(settings) as store:
        assert await store.query("nobody", "m", 0, time.time(), 10) is None


async def test_a_long_range_is_answered_in_buckets_from_the_rollups(settings):
    """Two hours at 1 Hz asked for in at most 100 points: buckets of whole minutes, exact
    min/max/count, and the average of the points they cover."""
    start = math.floor(time.time() / 3600) * 3600 - 3 * 3600
    values = [float(i % 600) for i in range(7200)]
    async with running_store(settings) as store:
        store.append(series("d1", "temp", start, values), "native")
        await store.drained()
        result = await store.query("d1", "temp", start, start + 7200, 100)
    assert result is not None
    assert result.buckets is not None
    assert len(result.buckets) <= 100
    assert result.bucket_s is not None
    assert result.bucket_s % 60 == 0
    assert sum(b[4] for b in result.buckets) == 7200
    first = result.buckets[0]
    width = int(result.bucket_s)
    assert first[0] == start
    assert first[1:4] == (0.0, width - 1.0, pytest.approx((width - 1) / 2))
    assert max(b[2] for b in result.buckets) == 599.0


async def test_a_short_range_is_bucketed_from_raw_points(settings):
    """Ten minutes at 10 Hz in at most 50 points: buckets narrower than a minute, made on the
    fly from the raw points, holding every point once."""
    start = math.floor(time.time()) - 1000
    async with running_store(settings) as store:
        store.append(series("d1", "v", start, list(range(6000)), 0.1), "native")
        await store.drained()
        result = await store.query("d1", "v", start, start + 600, 50)
    assert result is not None
    assert result.buckets is not None
    assert result.bucket_s is not None
    assert result.bucket_s < 60
    assert len(result.buckets) <= 50
    assert sum(b[4] for b in result.buckets) == 6000
    assert result.buckets[-1][2] == 5999


async def test_strings_have_no_rollups_and_come_back_truncated(settings):
    """A text metric with more points than asked for: the newest ones, marked truncated."""
    start = time.time() - 100
    async with running_store(settings) as store:
        store.append(series("d1", "mode", start, [f"m{i}" for i in range(50)]), "native")
        await store.drained()
        result = await store.query("d1", "mode", start, start + 60, 10)
    assert result is not None
    assert result.truncated
    assert [v for _, v in result.points] == [f"m{i}" for i in range(40, 50)]


async def test_bad_times_and_values_are_refused_and_counted(settings):
    """NaN, infinities, negative and absurd times are not stored; each is counted by reason and
    the good points of the same batch are kept."""
    now = time.time()
    batch = [
        ("d1", "m", now, math.nan),
        ("d1", "m", now + 1, math.inf),
        ("d1", "m", -5.0, 1.0),
        ("d1", "m", 1e300, 1.0),
        ("d1", "m", now + 2, 3.0),
    ]
    async with running_store(settings) as store:
        store.append(batch, "native")
        await store.drained()
        result = await store.query("d1", "m", now - 10, now + 10, 10)
    assert result is not None
    assert result.points == [(pytest.approx(now + 2), 3.0)]
    assert store.stats.dropped == {"bad_value": 2, "bad_time": 2}


async def test_a_point_written_twice_is_stored_and_rolled_up_once(settings):
    """The same (series, time) twice, in one batch and across batches: one point, one count."""
    t = math.floor(time.time() / 60) * 60 - 120
    async with running_store(settings) as store:
        store.append([("d1", "m", t, 1.0), ("d1", "m", t, 2.0)], "native")
        await store.drained()
        store.append([("d1", "m", t, 5.0), ("d1", "m", t + 1, 3.0)], "native")
        await store.drained()
        raw = await store.query("d1", "m", t, t + 60, 10)
        bucketed = await store.query("d1", "m", t - 3600, t + 3600, 1)
    assert raw is not None
    assert raw.points == [(t, 1.0), (t + 1, 3.0)]
    assert store.stats.duplicates == 2
    assert bucketed is not None
    assert bucketed.buckets is not None
    assert sum(b[4] for b in bucketed.buckets) == 2


async def test_overflow_of_the_queue_is_dropped_and_counted(settings):
    """Past queue_points, readings are dropped (counted as queue_full), never queued."""
    now = time.time()
    async with running_store(
        settings, **{"history.queue_points": 10, "history.batch_points": 10}
    ) as store:
        store.append(series("d1", "m", now, [1.0] * 8), "native")
        store.append(series("d1", "m", now + 10, [1.0] * 5), "native")  # would make 13
        assert store.stats.dropped["queue_full"] == 5
        assert store.queued == 8
        await store.drained()
    assert store.stats.written == 8


async def test_retention_purges_raw_rollups_and_audit_by_the_store_clock(settings):
    """With the clock moved 12 days on, raw points past 10 days go and the range is told by the
    1-minute rollups; at 40 days by the 1-hour ones; at 400 days those and a year-old audit
    record go too."""
    now = time.time()
    offset = [0.0]
    start = math.floor(now / 3600) * 3600 - 3600
    async with running_store(settings, clock=lambda: time.time() + offset[0]) as store:
        store.append(series("d1", "m", start, [float(i) for i in range(600)]), "native")
        store.record(audit_entry("d1", now))
        await store.drained()
        offset[0] = 12 * DAY
        await store.purge()
        raw_left = [
            p for chunk in [c async for c in store.export("d1", "m", 0, now)] for p in chunk
        ]
        assert raw_left == []
        rolled = await store.query("d1", "m", start, start + 600, 1000)
        assert rolled is not None
        assert rolled.buckets is not None
        assert rolled.bucket_s == 60
        assert [b[4] for b in rolled.buckets] == [60] * 10
        assert len(await store.audit("d1", lambda d: True, 0, now + 1, 10)) == 1
        offset[0] = 40 * DAY
        await store.purge()
        hourly = await store.query("d1", "m", start, start + 600, 1000)
        assert hourly is not None
        assert hourly.buckets is not None
        assert hourly.bucket_s == 3600
        assert [b[4] for b in hourly.buckets] == [600]
        offset[0] = 400 * DAY
        await store.purge()
        assert await store.audit("d1", lambda d: True, 0, now + 1, 10) == []
        gone = await store.query("d1", "m", start, start + 600, 1000)
        assert gone is not None
        assert gone.points == []
    assert store.stats.purged == 600 + 10 + 1 + 1  # raw, minutes, the hour, the audit record


async def test_restart_restores_every_series_newest_points(settings):
    """A new store on the same database gives back each series' newest points, oldest first,
    with its device's convention; at least the last value even when the budget is small."""
    now = time.time() - 100
    async with running_store(settings) as store:
        store.append(series("d1", "t", now, [1.0, 2.0, 3.0]), "native")
        store.append(series("z2m.lamp", "on", now, [True, False]), "zigbee2mqtt")
        await store.drained()
    restored: list[RestoredSeries] = []
    async with running_store(settings, restored=restored, **{"history.restore_points": 2}):
        pass
    by_key = {(s.device, s.metric): s for s in restored}
    assert set(by_key) == {("d1", "t"), ("z2m.lamp", "on")}
    assert [v for _, v in by_key[("d1", "t")].points] == [3.0]
    assert by_key[("z2m.lamp", "on")].convention == "zigbee2mqtt"
    assert by_key[("z2m.lamp", "on")].points[-1][1] is False


async def test_shutdown_flushes_what_is_queued(settings):
    """Points queued just before the writer is cancelled are committed on the way out."""
    now = time.time() - 10
    async with running_store(settings, **{"history.commit_interval_s": 3600}) as store:
        store.append(series("d1", "m", now, [1.0, 2.0]), "native")
    async with running_store(settings) as again:
        result = await again.query("d1", "m", now - 1, now + 5, 10)
    assert result is not None
    assert [v for _, v in result.points] == [1.0, 2.0]


async def test_export_pages_through_every_point_in_order(settings):
    """25,000 points export in bounded chunks, in time order, each exactly once."""
    start = time.time() - 30000
    async with running_store(settings) as store:
        store.append(series("d1", "m", start, list(range(25000))), "native")
        await store.drained()
        chunks = [chunk async for chunk in store.export("d1", "m", start, start + 25000)]
    assert max(len(c) for c in chunks) <= 10000
    assert [v for chunk in chunks for _, v in chunk] == list(range(25000))


async def test_audit_records_filter_by_device_and_rights(settings):
    """Audit entries come back newest first, for one device, or for the devices allowed."""
    now = time.time()
    async with running_store(settings) as store:
        for i, device in enumerate(["pump-1", "pump-2", "fan-1"]):
            store.record(audit_entry(device, now + i))
        await store.drained()
        one = await store.audit("pump-1", lambda d: True, now - 1, now + 10, 10)
        pumps = await store.audit(None, lambda d: d.startswith("pump"), now - 1, now + 10, 10)
    assert [e.device for e in one] == ["pump-1"]
    assert one[0] == audit_entry("pump-1", now)
    assert [e.device for e in pumps] == ["pump-2", "pump-1"]


def audit_entry(device: str, ts: float) -> AuditEntry:
    return AuditEntry(
        ts=ts, principal="operator", remote="127.0.0.1", via="ws", device=device,
        command="set", params={"on": False, "level": 3}, command_id="c-1", status="ok",
        rtt_ms=1.5, error=None,
    )  # fmt: skip

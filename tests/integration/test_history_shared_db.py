"""Several gateway instances writing one PostgreSQL database (issue 14): their commits update the
same rollup rows, so they must neither deadlock nor wait on each other for ever."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from gateway.config import load_config
from gateway.store import HistoryStore, build_store
from tests.reliability.helpers import eventually
from tests.support.history import history_settings


@pytest.fixture(params=["postgres"])
async def settings(request, tmp_path) -> dict[str, Any]:
    """A fresh database on the session's PostgreSQL."""
    return await history_settings(request, tmp_path)


@contextlib.asynccontextmanager
async def writer(settings: dict[str, Any], instance: str) -> AsyncIterator[HistoryStore]:
    """One instance's store with its writer task running (commits every 50 ms)."""
    config = load_config(env={}, overrides={**settings, "history.commit_interval_s": 0.05})
    store = build_store(config, lambda device, metric: None, instance)
    await store.start(lambda series: None)
    task = asyncio.create_task(store.run(lambda series: None), name=f"test.writer[{instance}]")
    try:
        yield store
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await store.close()


async def rollup_counts(dsn: str) -> dict[str, int]:
    db = await asyncpg.connect(dsn)
    try:
        rows = await db.fetch(
            "SELECT s.device, sum(r.n)::int AS n FROM iotgw_rollup_60 r "
            "JOIN iotgw_series s ON s.id = r.series GROUP BY s.device"
        )
        return {r["device"]: r["n"] for r in rows}
    finally:
        await db.close()


async def test_two_writers_updating_the_same_rollups_in_opposite_orders_store_everything_once(
    settings,
):
    """Two instances commit points of the same 40 series in the same minute, one in ascending
    and one in descending series order, 20 commits each: every point is stored once, each
    minute's count is exact, and no commit failed."""
    minute = (time.time() // 60 - 10) * 60
    devices = [f"d{i:02d}" for i in range(40)]
    async with writer(settings, "gw-a") as a, writer(settings, "gw-b") as b:
        for step in range(20):
            for store, order, offset in ((a, devices, 0.0), (b, devices[::-1], 0.5)):
                for device in order:
                    store.append([(device, "v", minute + step + offset, float(step))], "native")
            await asyncio.gather(a.drained(), b.drained())
        assert (a.stats.write_failures, b.stats.write_failures) == (0, 0)
        assert a.stats.written + b.stats.written == 40 * 40
    assert await rollup_counts(settings["history.dsn"]) == dict.fromkeys(devices, 40)


async def test_a_commit_held_up_by_another_sessions_lock_gives_up_and_is_retried(settings):
    """A commit that waits for a rollup row another session holds (an instance hung inside its
    own commit) fails after the lock timeout: the store says degraded and why, keeps the batch,
    and writes it once the lock is gone."""
    minute = (time.time() // 60 - 10) * 60
    dsn = settings["history.dsn"]
    async with writer(settings, "gw-a") as store:
        store.append([("held", "v", minute + 1, 1.0)], "native")
        await store.drained()
        hung = await asyncpg.connect(dsn)
        try:
            transaction = hung.transaction()
            await transaction.start()
            await hung.execute("SELECT * FROM iotgw_rollup_60 FOR UPDATE")
            store.append([("held", "v", minute + 2, 2.0)], "native")
            await eventually(lambda: store.state == "degraded", 20, "the store degraded")
            assert "lock timeout" in store.reason
            await transaction.rollback()
        finally:
            await hung.close()
        await store.drained()
        assert store.state == "ok"
    assert await rollup_counts(dsn) == {"held": 2}

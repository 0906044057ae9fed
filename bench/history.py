"""History store benchmarks (issue 13), each one command:

    python -m bench.history writer --backend sqlite [--points 2000000 --series 1000]
    python -m bench.history writer --backend postgres --dsn postgresql://iotgw@127.0.0.1:5432/db
    python -m bench.history query --backend sqlite --points 50000000 [--data-dir DIR]
    python -m bench.history restore --backend sqlite [--series 10000 --points 1000000]
    python -m bench.history retention --backend sqlite [--days 15 --series 100]
    python -m bench.history contention --backend sqlite [--rate 50000 --seconds 10 --rounds 3]

`writer`: the store's writer in isolation: readings appended as the pipeline does (one call per
message of 4 readings), committed in batches by the real writer task; reports points/s from
the first append to the last commit, the longest commit and bytes per point on disk.
`query`: builds a database of `--points` points (one 1 Hz series of the last 24 h among
series of 1 Hz points spread over the past days; reports build time and size), then asks for
the 24 h series as at most 1,000 buckets 200 times and reports p50/p95.
`restore`: a database of `--series` series, then the time a new store takes to give every
series' last value and recent points back into a real Registry (what happens before /readyz).
`retention`: `--days` simulated days of `--series` series at one point per 10 s, the store's
clock moved a day at a time; after each day a retention cycle: file size per day (flat once
raw_retention_days is reached) and the longest purge step (the writer's longest pause).
`contention`: what the writer costs the relay. A fixed stand-in for the relay's Python work runs
on the event loop in 1 ms slices while readings are appended at `--rate` points/s; the work done
is compared with a run of the memory backend (which writes nothing), alternating, `--rounds`
pairs. The difference, per point appended, is the event loop's time the writer took: its
Python holding the interpreter lock, and the handovers of the lock around each SQLite call.
Only 127.0.0.1 or the
DSN given is touched; the SQLite file goes to a temp dir unless --data-dir says otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import statistics
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from gateway.config import load_config
from gateway.store import HistoryStore, RestoredSeries, build_store

DAY = 86400


def settings(args: argparse.Namespace, data_dir: str) -> dict[str, Any]:
    base: dict[str, Any] = {
        "history.backend": args.backend,
        "history.queue_points": 1_000_000,
        "history.batch_points": args.batch,
        "history.raw_retention_days": 3650.0,
        "history.rollup_retention_days": 3650.0,
        "history.purge_interval_s": 1e9,
    }
    if args.backend == "postgres":
        base["history.dsn"] = args.dsn
    else:
        base["history.data_dir"] = data_dir
    return base


@contextlib.asynccontextmanager
async def store_running(overrides: dict[str, Any]) -> AsyncIterator[HistoryStore]:
    config = load_config(env={}, overrides=overrides)
    store = build_store(config, lambda d, m: None, "bench")
    await store.start(lambda s: None)
    writer = asyncio.create_task(store.run(lambda s: None))
    try:
        yield store
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.close()


async def feed(store: HistoryStore, points: int, series: int, start: float) -> None:
    """Append `points` readings, 4 per message like a typical device, in time order per series;
    wait (not spin) whenever the queue is near full, as a real relay would drop instead."""
    devices = max(1, series // 4)
    metrics = ("temperature", "humidity", "battery", "rssi")
    t = start
    sent = 0
    while sent < points:
        for d in range(devices):
            device = f"bench-{d}"
            store.append([(device, m, t, 20.0 + (sent % 97) / 10) for m in metrics], "native")
            sent += 4
            if sent >= points:
                break
        t += 1.0
        if store.queued > 800_000:
            await store.drained()


def size_of(path: Path) -> int:
    return sum(f.stat().st_size for f in path.parent.glob(path.name + "*"))


async def pg_size(dsn: str) -> int:
    import asyncpg

    db = await asyncpg.connect(dsn)
    try:
        return int(await db.fetchval("SELECT pg_database_size(current_database())"))
    finally:
        await db.close()


async def writer(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="iotgw-bench-history-")
    async with store_running(settings(args, data_dir)) as store:
        started = time.perf_counter()
        await feed(store, args.points, args.series, time.time() - args.points / args.series)
        await store.drained()
        took = time.perf_counter() - started
    written = store.stats.written
    print(f"backend={args.backend} points={written} series={args.series} batch={args.batch}")
    print(f"throughput: {written / took:,.0f} points/s ({took:.1f} s)")
    print(f"longest commit: {store.stats.longest_commit_s * 1000:.0f} ms")
    if args.backend == "sqlite":
        size = size_of(Path(data_dir) / "history.sqlite3")
    else:
        size = await pg_size(args.dsn)
    print(
        f"on disk: {size / 1e6:.1f} MB, {size / max(1, written):.1f} bytes/point (rollups included)"
    )


async def query(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="iotgw-bench-history-")
    marker = Path(data_dir) / "query-me.time"  # when the queried day ends (for --reuse)
    now = float(marker.read_text()) if args.reuse else time.time()
    async with store_running(settings(args, data_dir)) as store:
        if store.stats.written == 0 and not args.reuse:
            started = time.perf_counter()
            # The queried series: 24 h at 1 Hz.
            for i in range(DAY):
                store.append(
                    [("query-me", "temperature", now - DAY + i, 20 + (i % 600) / 60)], "native"
                )
                if store.queued > 500_000:
                    await store.drained()
            rest = max(0, args.points - DAY)
            await feed(store, rest, args.series, now - DAY * 8)
            await store.drained()
            build = time.perf_counter() - started
            marker.write_text(repr(now))
            print(f"built {store.stats.written:,} points in {build:.0f} s")
        if args.backend == "sqlite":
            print(f"file: {size_of(Path(data_dir) / 'history.sqlite3') / 1e9:.2f} GB in {data_dir}")
        times = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            result = await store.query("query-me", "temperature", now - DAY, now, 1000)
            times.append(time.perf_counter() - started)
        assert result is not None
        assert result.buckets is not None
        assert sum(b[4] for b in result.buckets) == DAY, "every point counted once"
        times.sort()
        p95 = times[int(len(times) * 0.95) - 1]
        print(
            f"24 h as {len(result.buckets)} buckets of {result.bucket_s:.0f} s: "
            f"p50 {statistics.median(times) * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms "
            f"({args.repeat} queries)"
        )


async def restore(args: argparse.Namespace) -> None:
    from gateway.config import RegistryConfig
    from gateway.registry import Registry

    data_dir = args.data_dir or tempfile.mkdtemp(prefix="iotgw-bench-history-")
    overrides = settings(args, data_dir)
    async with store_running(overrides) as store:
        await feed(store, args.points, args.series, time.time() - args.points / args.series)
        await store.drained()
    config = load_config(env={}, overrides=overrides)
    registry = Registry(RegistryConfig(max_devices=args.series, max_metrics_per_device=64))
    fresh = build_store(config, lambda d, m: None, "bench")
    started = time.perf_counter()

    def put_back(s: RestoredSeries) -> None:
        registry.restore(s.device, s.convention, s.metric, s.points)

    await fresh.start(put_back)
    took = time.perf_counter() - started
    await fresh.close()
    series = sum(len(d.values) for d in registry)
    print(
        f"restored {fresh.stats.restored_series:,} series ({fresh.stats.restored_points:,} "
        f"points; {series:,} last values in the registry) in {took * 1000:.0f} ms"
    )


async def retention(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="iotgw-bench-history-")
    offset = [0.0]
    base = time.time()
    overrides = {
        **settings(args, data_dir),
        "history.raw_retention_days": 10.0,
        "history.minute_rollup_retention_days": 30.0,
        "history.rollup_retention_days": 365.0,
    }
    config = load_config(env={}, overrides=overrides)
    store = build_store(config, lambda d, m: None, "bench", lambda: time.time() + offset[0])
    await store.start(lambda s: None)
    writer = asyncio.create_task(store.run(lambda s: None))
    per_day = args.series * DAY // 10
    try:
        for day in range(args.days):
            offset[0] = day * DAY
            start = base + (day - 1) * DAY  # the day that just ended, on the moved clock
            for i in range(0, DAY, 10):
                store.append(
                    [
                        (f"r-{k // 4}", f"m{k % 4}", start + i, float(i % 997))
                        for k in range(args.series)
                    ],
                    "native",
                )
                if store.queued > 400_000:
                    await store.drained()
            await store.drained()
            before = store.stats.purged
            await store.purge()
            if args.backend == "sqlite":
                size = size_of(Path(data_dir) / "history.sqlite3")
            else:
                size = await pg_size(args.dsn)
            print(
                f"day {day + 1:2d}: {size / 1e6:7.1f} MB, "
                f"purged {store.stats.purged - before:,} rows, "
                f"longest purge step so far {store.stats.longest_purge_step_s * 1000:.0f} ms, "
                f"longest commit {store.stats.longest_commit_s * 1000:.0f} ms",
                flush=True,
            )
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        await store.close()
    print(f"{per_day:,} points a day; raw retention 10 days")


async def contention(args: argparse.Namespace) -> None:
    data_dir = args.data_dir or tempfile.mkdtemp(prefix="iotgw-bench-history-")
    metrics = ("temperature", "humidity", "battery", "rssi")
    devices = max(1, args.series // len(metrics))
    ours, theirs = socket.socketpair()

    async def relay_work(backend: str) -> tuple[float, int]:
        """Pieces of relay stand-in work done per second, and points appended."""
        overrides = {**settings(args, data_dir), "history.backend": backend}
        overrides["history.batch_points"] = 50000
        async with store_running(overrides) as store:
            await asyncio.sleep(0.5)  # the writer task is up, its first (empty) cycle done
            started = time.perf_counter()
            appended = pieces = 0
            t0 = time.time()
            while (now := time.perf_counter()) - started < args.seconds:
                due = int((now - started) * args.rate)
                while appended < due:
                    d = appended // len(metrics) % devices
                    ts = t0 + appended / args.rate
                    store.append([(f"bench-{d}", m, ts, 20.0 + d % 97) for m in metrics], "native")
                    appended += len(metrics)
                # The stand-in: fixed pieces of work for about 1 ms of wall time, each some plain
                # Python and a system call (as the relay's reads and writes), which lets go of
                # the interpreter lock and must get it back; time the writer takes from the loop
                # shows as fewer pieces done.
                until = time.perf_counter() + 0.001
                while time.perf_counter() < until:
                    sum(range(50))
                    ours.send(b"x")
                    theirs.recv(16)
                    pieces += 1
                await asyncio.sleep(0)  # the loop's other tasks (the writer) run between slices
            took = time.perf_counter() - started
            await store.drained()
        return pieces / took, appended

    print(f"backend={args.backend} rate={args.rate:,} points/s seconds={args.seconds}")
    for round_ in range(args.rounds):
        base, _ = await relay_work("memory")
        with_writer, points = await relay_work(args.backend)
        lost = 1.0 - with_writer / base
        per_point_us = lost * args.seconds / max(1, points) * 1e6
        print(
            f"round {round_ + 1}: relay work {with_writer:,.0f} vs {base:,.0f} pieces/s "
            f"without history: {lost:+.1%} lost, {per_point_us:.2f} us of the loop per point"
        )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.history", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("writer", "query", "restore", "retention", "contention"):
        p = sub.add_parser(name)
        p.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
        p.add_argument("--dsn", default=os.environ.get("IOTGW_BENCH_POSTGRES", ""))
        p.add_argument("--data-dir", default="")
        p.add_argument(
            "--series", type=int, default={"restore": 10000, "retention": 100}.get(name, 1000)
        )
        p.add_argument("--days", type=int, default=15)
        p.add_argument("--batch", type=int, default=50000)
        default_points = {"writer": 2_000_000, "query": 50_000_000, "restore": 1_000_000}
        p.add_argument("--points", type=int, default=default_points.get(name, 0))
        if name == "contention":
            p.add_argument("--rate", type=int, default=50000, help="points appended per second")
            p.add_argument("--seconds", type=float, default=10.0)
            p.add_argument("--rounds", type=int, default=3)
        if name == "query":
            p.add_argument("--repeat", type=int, default=200)
            p.add_argument("--reuse", action="store_true", help="query an existing --data-dir")
    args = parser.parse_args()
    commands = {
        "writer": writer,
        "query": query,
        "restore": restore,
        "retention": retention,
        "contention": contention,
    }
    asyncio.run(commands[args.command](args))


if __name__ == "__main__":
    main()

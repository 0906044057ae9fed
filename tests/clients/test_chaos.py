"""Chaos: the gateway restarted 20 times, its broker killed twice and the client's connection cut
while the Python client is subscribed to a counting fleet and sending commands."""

from __future__ import annotations

import asyncio
import itertools
from collections import Counter, defaultdict
from typing import Any

from gateway.client import (
    Backoff,
    Client,
    CommandError,
    CommandNotSent,
    CommandRefused,
    Reading,
    Resync,
    Snapshot,
    Subscription,
)
from tests.support.chaos import Harness, chaos_harness
from tests.support.gateway import WAIT_S

RESTARTS = 20
KILL_BROKER_AFTER = (6, 13)  # after these restarts
DROP_AFTER = (2, 9, 16)  # cut the client's connection (a resume) after these restarts
#: Quick retries keep the test short; the default policy's spread is measured in test_jitter.py.
FAST = Backoff(min_s=0.02, max_s=0.3, restart_s=0.1, back_off_s=0.05)


class Observer:
    """Reads a subscription: per device, the (segment, n) of every reading; a Resync starts a
    new segment."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.segment = 0
        self.seen: dict[str, list[tuple[int, int]]] = defaultdict(list)
        self.resyncs: list[str] = []
        self.changed = asyncio.Event()

    async def run(self) -> None:
        async for event in self.sub:
            if isinstance(event, Resync):
                self.segment += 1
                self.resyncs.append(event.reason)
            elif isinstance(event, Reading) and event.metric == "n":
                assert isinstance(event.value, int)
                self.seen[event.device].append((self.segment, event.value))
            elif not isinstance(event, Snapshot):
                continue
            self.changed.set()

    async def until(self, done: Any) -> None:
        async with asyncio.timeout(WAIT_S * 2):
            while not done():
                self.changed.clear()
                await self.changed.wait()

    def count(self) -> int:
        return sum(len(v) for v in self.seen.values())


async def send_commands(
    client: Client, outcomes: dict[int, list[str]], stop: asyncio.Event
) -> None:
    """Send `echo {nonce}` commands one after another until `stop`; record each outcome."""
    for nonce in itertools.count():
        if stop.is_set():
            return
        try:
            await client.command("probe", "echo", {"nonce": nonce}, timeout=2.0)
            outcome = "ok"
        except CommandRefused as exc:
            outcome = f"CommandRefused:{exc.code}"
        except CommandError as exc:
            outcome = type(exc).__name__
        outcomes[nonce].append(outcome)
        await asyncio.sleep(0.02)


def check_streams(observer: Observer, last: dict[str, int]) -> tuple[int, int]:
    """Every device's readings, within each segment, are consecutive n's: none twice, none out
    of order, none missing. Return (readings, segment boundaries crossed)."""
    boundaries = 0
    for device, seen in observer.seen.items():
        for (seg_a, a), (seg_b, b) in itertools.pairwise(seen):
            if seg_a == seg_b:
                assert b == a + 1, f"{device}: {a} then {b} within one stream"
            else:
                boundaries += 1
        assert seen[-1][1] == last[device], f"{device}: ended at {seen[-1][1]}, not {last[device]}"
    return observer.count(), boundaries


async def test_python_client_chaos(figures: Any) -> None:
    """Every reading once and in order within each resumed stream, every gap announced by a
    resync, every command resolved exactly once with an honest outcome."""
    async with chaos_harness() as harness, Client(harness.ws_url, backoff=FAST) as client:
        sub = client.subscribe(["count-*"])
        observer = Observer(sub)
        outcomes: dict[int, list[str]] = defaultdict(list)
        stop = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            reader = group.create_task(observer.run())
            sender = group.create_task(send_commands(client, outcomes, stop))
            await run_faults(harness, observer)
            last = (await harness.finish())["last"]
            await observer.until(
                lambda: all(
                    observer.seen[d] and observer.seen[d][-1][1] == n for d, n in last.items()
                )
            )
            stop.set()
            await sender
            reader.cancel()
        readings, boundaries = check_streams(observer, last)
        received = harness.received()
        counts = check_commands(outcomes, received)
        stats = client.stats
        assert len(observer.resyncs) >= RESTARTS
        assert observer.resyncs.count("the gateway restarted") >= RESTARTS
        assert stats.resumed >= len(DROP_AFTER)
        assert stats.gaps == 0
        figures(
            f"{readings} readings, {len(observer.resyncs)} resyncs ({boundaries} device streams "
            f"crossed one), {stats.resumed} resumes, {stats.duplicates} duplicate frames dropped, "
            f"{stats.connects} connections; commands {dict(counts)}"
        )


def check_commands(outcomes: dict[int, list[str]], received: set[float]) -> Counter[str]:
    """Each command has exactly one outcome; `ok` only when the device got it; nothing the
    client did not send or the gateway refused reached the device."""
    counts: Counter[str] = Counter()
    for nonce, seen in outcomes.items():
        assert len(seen) == 1, f"command {nonce}: {seen}"
        outcome = seen[0]
        counts[outcome] += 1
        if outcome == "ok":
            assert nonce in received, f"command {nonce} ok, but the device never got it"
        if outcome == CommandNotSent.__name__ or outcome.startswith("CommandRefused"):
            assert nonce not in received, f"command {nonce} {outcome}, but the device got it"
    assert counts["ok"] > 0
    return counts


async def run_faults(harness: Harness, observer: Observer) -> None:
    """20 restarts, each once the client is streaming again; broker kills and cuts between."""
    for restart in range(RESTARTS):
        await progress(observer)
        await harness.restart()
        await observer.until(lambda r=restart: len(observer.resyncs) > r)
        if restart in DROP_AFTER:
            await progress(observer)
            assert harness.drop() >= 1
        if restart in KILL_BROKER_AFTER:
            await progress(observer)
            await harness.kill_broker()
    await progress(observer)


async def progress(observer: Observer, readings: int = 24) -> None:
    """Wait until the client has received `readings` more readings."""
    target = observer.count() + readings
    await observer.until(lambda: observer.count() >= target)

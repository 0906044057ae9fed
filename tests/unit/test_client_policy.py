"""The client's policies on their own: backoff windows, pacing, and the bounded buffer."""

from __future__ import annotations

import asyncio

from gateway.client.frames import DeviceEvent, DeviceInfo, Reading, parse_frame
from gateway.client.policy import Backoff, CloseKind, Pacer, classify_close
from gateway.client.subscription import Lagging, Resync, Snapshot, Subscription


def test_backoff_windows_double_to_the_cap_and_closes_pick_their_start():
    """Windows are 0.5, 1, 2, … 20 s; a restart starts at 8 s, a back-off close at 2 s."""
    backoff = Backoff()
    assert [backoff.window(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 16, 20]
    assert backoff.window(backoff.first_attempt(CloseKind.RESTART)) == 8
    assert backoff.window(backoff.first_attempt(CloseKind.BACK_OFF)) == 2
    assert backoff.first_attempt(CloseKind.LOST) == 0
    assert backoff.delay(3, rng=lambda: 0.5) == 2.0
    kinds = {
        code: classify_close(code) for code in (1001, 1012, 1006, None, 4000, 4001, 4500, 1009)
    }
    assert kinds == {
        1001: CloseKind.RESTART, 1012: CloseKind.RESTART, 1006: CloseKind.LOST,
        None: CloseKind.LOST, 4000: CloseKind.BACK_OFF, 4001: CloseKind.BACK_OFF,
        4500: CloseKind.TERMINAL, 1009: CloseKind.TERMINAL,
    }  # fmt: skip


def test_pacer_spends_half_the_burst_then_90_percent_of_the_rate():
    """With the gateway at 20/s and 200, the client sends 100 at once, then one per 1/18 s."""
    now = [0.0]
    pacer = Pacer(20.0, 200, clock=lambda: now[0])
    for _ in range(100):
        assert pacer.wait_s() == 0
        pacer._tokens -= 1
    assert abs(pacer.wait_s() - 1 / 18) < 1e-9
    now[0] += 1.0
    assert pacer.wait_s() == 0


async def _nothing(_: Subscription) -> None:
    return None


def reading(device: str, n: int) -> Reading:
    return Reading(device, "n", float(n), n)


async def test_a_consumer_that_stops_reading_holds_only_the_latest_state():
    """Past max_buffered the buffer coalesces to the latest value per (device, metric) behind a
    Lagging(source="client") notice counting what it dropped; it stays bounded."""
    sub = Subscription(["*"], None, 100, _nothing)
    sub.put(Snapshot(()))
    for n in range(10_000):
        sub.put(reading(f"d{n % 10}", n))
    gone = DeviceInfo("d0", "offline", None, "", "", None)
    sub.put(DeviceEvent("removed", gone))
    sub.put(reading("d1", 10_000))
    assert sub.pending <= 200
    events = []
    while sub.pending:
        events.append(await sub.__anext__())
    assert isinstance(events[0], Snapshot)
    lagging = [e for e in events if isinstance(e, Lagging)]
    assert len(lagging) == 1
    assert lagging[0].source == "client"
    latest = {e.device: e.value for e in events if isinstance(e, Reading)}
    assert latest["d1"] == 10_000
    assert latest["d9"] == 9999
    delivered = sum(isinstance(e, Reading) for e in events)
    assert lagging[0].dropped + delivered == 10_001  # every reading delivered or counted
    assert sub.dropped == lagging[0].dropped


async def test_a_resync_in_the_buffer_supersedes_what_came_before():
    """Coalescing keeps nothing older than the newest resync."""
    sub = Subscription(["*"], None, 16, _nothing)
    for n in range(10):
        sub.put(reading("a", n))
    sub.put(Resync("the gateway restarted", Snapshot(())))
    for n in range(20):
        sub.put(reading("b", n))
    first = await asyncio.wait_for(sub.__anext__(), 1)
    assert isinstance(first, Resync)
    rest = [await sub.__anext__() for _ in range(sub.pending)]
    assert not [e for e in rest if isinstance(e, Reading) and e.device == "a"]


def test_frames_parse_to_dataclasses_and_ignore_unknown_limits():
    """A hello with a limit this client does not know still parses; readings are typed."""
    hello = parse_frame(
        b'{"type":"hello","protocol":2,"server":"iotgw 9","epoch":"e","session":"s",'
        b'"auth":"none","broker":"connected","time":1.0,"limits":{"history_rate":5,"future":1}}'
    )
    assert hello.limits.history_rate == 5  # type: ignore[union-attr]
    frame = parse_frame(b'{"type":"readings","seq":3,"data":[["d","m",1.5,true]]}')
    assert frame.data == (Reading("d", "m", 1.5, True),)  # type: ignore[union-attr]

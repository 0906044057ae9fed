"""A stream's outbox and byte budget, seq numbering, coalescing with events, eviction, resume."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace
from typing import Any

import pytest

import gateway.stream
from gateway.config import WsConfig
from gateway.protocol import encode, snapshot_body
from gateway.stream import Batch, DeviceEvents, Stream
from tests.support.fakes import FakeSocket


def batch(*rows: tuple[str, str, float, object], events: list[dict] | None = None) -> Batch:
    return Batch.of(list(rows), events or [])


def event(kind: str, device: str, status: str = "online") -> dict[str, Any]:
    return {
        "event": kind,
        "device": {"id": device, "status": status, "last_seen": 1.0, "name": device,
                   "type": "", "meta": None},
    }  # fmt: skip


@contextlib.asynccontextmanager
async def writing(stream: Stream, socket: FakeSocket):
    """Attach the stream to `socket` for the duration of the block."""
    session = stream.attach(socket, time.monotonic())
    try:
        yield socket.ended
    finally:
        session.detach()


async def test_outbox_keeps_order_of_control_frames_and_sequenced_ones():
    """Frames go out in the order they were offered, replies, snapshots and readings alike."""
    stream, socket = Stream("s", WsConfig()), FakeSocket()
    stream.offer_frame({"type": "a"})
    stream.offer_snapshot(snapshot_body("s1", []))
    stream.offer_batch(batch(("d", "t", 1.0, 1)))
    stream.offer_frame({"type": "b"})
    stream.offer_batch(batch(("d", "t", 2.0, 2), events=[event("status", "d")]))
    async with writing(stream, socket):
        frames = await socket.take(5)
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("a", None),
        ("snapshot", 1),
        ("readings", 2),
        ("b", None),
        ("readings", 3),
    ]
    assert frames[2] == {"type": "readings", "seq": 2, "data": [["d", "t", 1.0, 1]]}
    assert frames[4]["events"] == [event("status", "d")]
    assert stream.queued_bytes == 0


async def test_seq_counts_sequenced_frames_from_one_without_gaps():
    """readings and snapshot frames carry seq 1, 2, 3, … in order, whatever is interleaved."""
    stream, socket = Stream("s", WsConfig()), FakeSocket()
    async with writing(stream, socket):
        for i in range(10):
            stream.offer_batch(batch(("d", "t", float(i), i)))
            if i % 3 == 0:
                stream.offer_frame({"type": "pong", "id": i})
            if i == 5:
                stream.offer_snapshot(snapshot_body("s2", []))
        frames = await socket.take(15)
    assert [f["seq"] for f in frames if "seq" in f] == list(range(1, 12))


async def test_over_budget_batches_coalesce_to_one_frame_that_says_so():
    """Past outbox_max_bytes, queued batches collapse into one readings frame: the latest value
    per (device, metric) and the latest event per device, with coalesced and dropped; replies
    queued meanwhile stay queued, ahead of it."""
    first = batch(("d", "t", 1.0, 1), ("d", "h", 1.0, 50), events=[event("status", "d", "unknown")])
    second = batch(("d", "t", 2.0, 2))
    reply = encode({"type": "pong", "id": 1})
    budget = len(first.body) + len(reply) + len(second.body)
    stream, socket = Stream("s", WsConfig(outbox_max_bytes=budget)), FakeSocket()
    stream.offer_batch(first)
    stream.offer(reply)
    stream.offer_batch(second)
    stream.offer_batch(batch(("d", "t", 3.0, 3), ("e", "p", 3.0, 7), events=[event("meta", "e")]))
    stream.offer_batch(batch(("d", "t", 4.0, 4), events=[event("status", "d", "offline")]))
    async with writing(stream, socket):
        pong, coalesced = await socket.take(2)
        assert pong == {"type": "pong", "id": 1}
        assert coalesced["seq"] == 1
        assert coalesced["coalesced"] is True
        assert coalesced["dropped"] == 3
        assert sorted(coalesced["data"]) == [
            ["d", "h", 1.0, 50],
            ["d", "t", 4.0, 4],
            ["e", "p", 3.0, 7],
        ]
        assert coalesced["events"] == [event("status", "d", "offline"), event("meta", "e")]
        # Caught up: the next batch is a normal frame again, seq continuing.
        stream.offer_batch(batch(("d", "t", 5.0, 5)))
        [after] = await socket.take(1)
    assert after == {"type": "readings", "seq": 2, "data": [["d", "t", 5.0, 5]]}
    assert stream.stats.readings_dropped == 3


async def test_coalescing_a_removal_drops_the_device_rows_before_it():
    """A device removed while coalescing takes its coalesced rows with it (counted as dropped);
    seen again, its removal stays ahead of its return."""
    stream, socket = Stream("s", WsConfig(outbox_max_bytes=1)), FakeSocket()
    stream.offer_batch(batch(("x", "t", 1.0, 1), ("y", "t", 1.0, 1)))  # over budget at once
    stream.offer_batch(batch(events=[event("removed", "x")]))
    stream.offer_batch(batch(("x", "t", 2.0, 2), events=[event("status", "x")]))
    async with writing(stream, socket):
        [frame] = await socket.take(1)
    assert frame["dropped"] == 1
    assert [(e["event"], e["device"]["id"]) for e in frame["events"]] == [
        ("removed", "x"),
        ("status", "x"),
    ]
    assert sorted(frame["data"]) == [["x", "t", 2.0, 2], ["y", "t", 1.0, 1]]


async def test_replies_past_the_budget_close_the_connection_with_4002():
    """A client that asks and does not read: replies queue up to the budget (plus the one that
    crosses it), then the connection is closed with 4002 and what was queued is dropped."""
    evicted: list[str] = []
    stream = Stream("s", WsConfig(outbox_max_bytes=10_000), on_evict=evicted.append)
    reply = encode({"type": "history", "id": 1, "points": [[1.0, 2.0]] * 200})
    offered = 0
    while not stream.closing:
        stream.offer(reply)
        offered += 1
        assert stream.queued_bytes <= 10_000 + len(reply)
        assert offered < 1000
    assert evicted == ["outbox_overflow"]
    assert stream.stats.outbox_peak_bytes <= 10_000 + len(reply)
    socket = FakeSocket()
    async with writing(stream, socket) as ended:
        await asyncio.wait_for(ended.wait(), 5)
    assert socket.closed_with == (4002, "outbox_overflow")
    assert socket.frames.empty()


async def test_one_frame_larger_than_the_budget_is_queued_when_the_queue_is_within_it():
    """A big snapshot is queued behind a small reply; the next frame, with the queue over the
    budget, closes the connection."""
    stream = Stream("s", WsConfig(outbox_max_bytes=1000))
    stream.offer_frame({"type": "pong", "id": 1})
    stream.offer_snapshot(b'"subscription":"s1","devices":[' + b"0," * 5000 + b"0]")
    assert not stream.closing
    stream.offer_frame({"type": "pong", "id": 2})
    assert stream.close_code == (4002, "outbox_overflow")


async def test_stream_lagging_longer_than_slow_client_timeout_is_closed_with_4000(monkeypatch):
    """A stream still coalescing slow_client_timeout_s after it started lagging is evicted:
    its queue is dropped and the writer closes with 4000."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(gateway.stream, "time", SimpleNamespace(monotonic=lambda: clock.now))
    evicted: list[str] = []
    stream = Stream("s", WsConfig(outbox_max_bytes=10, slow_client_timeout_s=10))
    stream.on_evict = evicted.append
    stream.offer_batch(batch(("d", "t", 1.0, 1)))  # over budget at once: lagging from t=1000
    clock.now = 1009.0
    stream.offer_batch(batch(("d", "t", 2.0, 2)))
    assert evicted == []
    clock.now = 1010.5
    stream.offer_batch(batch(("d", "t", 3.0, 3)))
    assert evicted == ["slow_consumer"]
    assert stream.closing
    assert stream.queued_bytes == 0
    stream.offer_frame({"type": "pong"})  # ignored once closing
    socket = FakeSocket()
    async with writing(stream, socket) as ended:
        await asyncio.wait_for(ended.wait(), 5)
    assert socket.closed_with == (4000, "slow_consumer")
    assert socket.frames.empty()


async def test_evict_closes_after_nothing_else_is_sent():
    """evict(code) drops what is queued and the writer closes with that code."""
    stream, socket = Stream("s", WsConfig()), FakeSocket()
    stream.offer_frame({"type": "a"})
    stream.evict(1001, "gateway shutting down")
    async with writing(stream, socket) as ended:
        await asyncio.wait_for(ended.wait(), 5)
    assert socket.closed_with == (1001, "gateway shutting down")
    assert socket.frames.empty()


@pytest.mark.parametrize("count", [1, 3])
def test_subscription_ids_are_sequential(count):
    """Subscription ids are s1, s2, … per stream."""
    stream = Stream("s", WsConfig())
    assert [stream.new_subscription_id() for _ in range(count)] == [
        f"s{i}" for i in range(1, count + 1)
    ]


async def sent_frames(stream: Stream, offers: list[Batch]) -> list[dict[str, Any]]:
    socket = FakeSocket()
    async with writing(stream, socket):
        for item in offers:
            stream.offer_batch(item)
        return await socket.take(len(offers))


async def test_adopted_stream_replays_missed_frames_with_their_events_and_notices():
    """A resumed stream re-sends every sequenced frame after the client's seq as it was sent:
    events, a coalesced frame's notice and snapshots included; replies of the old connection
    are dropped, the new connection's own go first."""
    config = WsConfig(outbox_max_bytes=10_000)
    old = Stream("c-old", config)
    frames = await sent_frames(
        old, [batch(("d", "m", 1.0, 1)), batch(events=[event("status", "d")])]
    )
    old.offer_snapshot(snapshot_body("s2", []))  # sent after the connection dropped: queued
    old.parked = True
    old.offer_frame({"type": "pong", "id": "old"})  # a reply nobody will read: dropped
    old.offer_batch(batch(("d", "m", 2.0, 2)))
    fresh = Stream("c-new", config)
    fresh.offer_frame({"type": "hello"})
    reply = encode({"type": "subscribed", "recovered": True})
    assert old.adopt(fresh, 1, reply)
    assert old.id == "c-new"
    socket = FakeSocket()
    async with writing(old, socket):
        got = await socket.take(5)
    assert [(f["type"], f.get("seq")) for f in got] == [
        ("hello", None),
        ("subscribed", None),
        ("readings", 2),
        ("snapshot", 3),
        ("readings", 4),
    ]
    assert got[2] == frames[1]


async def test_adopt_refuses_when_the_gap_cannot_be_filled():
    """Frames after the client's seq gone from the resume buffer, a seq the stream never sent, or
    a connection that started a stream of its own: no adopt, nothing changed."""
    old = Stream("c-old", WsConfig(resume_buffer_bytes=40))
    await sent_frames(old, [batch(("d", "m", float(i), i)) for i in range(5)])
    assert old.can_replay_after(5)
    assert old.can_replay_after(4)
    assert not old.can_replay_after(1)  # only the newest frame fits in 40 bytes
    assert not old.can_replay_after(6)
    reply = encode({"type": "subscribed"})
    assert not old.adopt(Stream("c-new", WsConfig()), 1, reply)
    busy = Stream("c-busy", WsConfig())
    busy.subscriptions["s1"] = object()  # type: ignore[assignment]
    assert not old.adopt(busy, 5, reply)
    assert old.id == "c-old"


async def test_adopted_stream_can_still_coalesce_replayed_frames():
    """When the new connection falls behind at once, replayed frames coalesce with newer ones
    and a replayed coalesced frame's drops are carried into the new notice."""
    config = WsConfig(outbox_max_bytes=10_000)
    old = Stream("c-old", config)
    await sent_frames(old, [batch(("d", "m", float(v), v)) for v in (1, 2, 3)])
    new = Stream("c-new", config)
    assert old.adopt(new, 1, encode({"type": "subscribed", "recovered": True}))
    big = [("d", "m", 4.0 + i, i) for i in range(2000)]
    old.offer_batch(Batch.of(big, []))
    socket = FakeSocket()
    async with writing(old, socket):
        reply, readings = await socket.take(2)
    assert reply["recovered"] is True
    assert readings["coalesced"] is True
    assert readings["dropped"] == 2001
    assert readings["seq"] == 2  # numbering continues after the client's last seq
    assert readings["data"] == [["d", "m", 2003.0, 1999]]


def test_device_events_keep_a_removal_ahead_of_a_return():
    """DeviceEvents: the latest event per device wins, in first-seen order; a removal followed by
    a return keeps both, removal first."""
    events: DeviceEvents[int] = DeviceEvents()
    events.add("a", "status", 1)
    events.add("b", "status", 2)
    events.add("a", "meta", 3)
    events.add("b", "removed", 4)
    events.add("b", "status", 5)
    events.add("c", "removed", 6)
    assert events.items() == [("removed", 4), ("meta", 3), ("status", 5), ("removed", 6)]
    assert list(events.removed()) == ["c"]
    assert len(events) == 4


async def test_frames_written_at_once_never_overtake_queued_or_sending_ones():
    """A frame goes straight to the socket only with nothing queued or being sent ahead of it:
    offered while the socket is blocked, and right after it frees up, frames still leave in the
    order they were offered; once all is sent, the next one is written at once."""
    stream, socket = Stream("s", WsConfig()), FakeSocket(blocked=True)
    async with writing(stream, socket):
        stream.offer_batch(batch(("d", "t", 1.0, 1)))  # queued: the socket cannot take it
        stream.offer_batch(batch(("d", "t", 2.0, 2)))
        socket.release()
        stream.offer_frame({"type": "pong", "id": 3})  # the send has not returned yet
        frames = await socket.take(3)
        stream.offer_batch(batch(("d", "t", 4.0, 4)))  # nothing ahead: written at once
        assert socket.frames.qsize() == 1
        frames += await socket.take(1)
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("readings", 1),
        ("readings", 2),
        ("pong", None),
        ("readings", 3),
    ]
    assert stream.stats.frames_sent == 4


async def test_an_idle_stream_and_session_own_no_buffers_and_no_dict():
    """Memory per idle connection (S4): once its frames are sent, a stream holds no outbox and
    no coalescing state, and neither it nor its session carries a per-instance __dict__."""
    stream, socket = Stream("s", WsConfig()), FakeSocket()
    assert (stream._outbox, stream._sent, stream._lag) == (None, None, None)
    async with writing(stream, socket):
        stream.offer_frame({"type": "hello"})
        await socket.take(1)
        assert (stream._outbox, stream._lag) == (None, None)
        assert not hasattr(stream, "__dict__")
        assert not hasattr(stream.session, "__dict__")

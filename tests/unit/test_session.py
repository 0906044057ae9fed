"""A session's bounded outbox, its seq numbering, coalescing and eviction, and its one writer."""

from __future__ import annotations

import asyncio
import contextlib
import time
from types import SimpleNamespace

import orjson
import pytest

import gateway.session
from gateway.config import WsConfig
from gateway.protocol import encode
from gateway.session import Session
from tests.support.fakes import FakeSocket


def rows_of(*values: tuple[str, str, float, object]) -> tuple[bytes, list]:
    rows = list(values)
    return orjson.dumps(rows), rows


@contextlib.asynccontextmanager
async def writing(session: Session, socket: FakeSocket):
    """Attach the session to `socket` for the duration of the block."""
    session.attach(socket, time.monotonic())
    try:
        yield socket.ended
    finally:
        session.detach()


async def test_outbox_keeps_order_of_control_frames_and_readings():
    """Frames go out in the order they were offered, control frames and readings alike."""
    session, socket = Session("s", WsConfig()), FakeSocket()
    session.offer_frame({"type": "a"})
    session.offer_readings(*rows_of(("d", "t", 1.0, 1)))
    session.offer_frame({"type": "b"})
    session.offer_readings(*rows_of(("d", "t", 2.0, 2)))
    async with writing(session, socket):
        frames = await socket.take(4)
    assert [f["type"] for f in frames] == ["a", "readings", "b", "readings"]
    assert frames[1]["data"] == [["d", "t", 1.0, 1]]
    assert frames[3]["data"] == [["d", "t", 2.0, 2]]
    assert session.queued_bytes == 0


async def test_readings_seq_counts_from_one_without_gaps():
    """readings frames carry seq 1, 2, 3, … in order, whatever is interleaved."""
    session, socket = Session("s", WsConfig()), FakeSocket()
    async with writing(session, socket):
        for i in range(10):
            session.offer_readings(*rows_of(("d", "t", float(i), i)))
            if i % 3 == 0:
                session.offer_frame({"type": "pong", "id": i})
        frames = await socket.take(14)
    assert [f["seq"] for f in frames if f["type"] == "readings"] == list(range(1, 11))


async def test_over_budget_readings_are_coalesced_to_latest_values_with_a_lagging_notice():
    """Past outbox_max_bytes, queued readings collapse to the latest value per (device, metric);
    the client gets lagging{dropped, coalesced}, then one readings frame with those values."""
    control = encode({"type": "device", "event": "status"})
    batches = [
        rows_of(("d", "t", 1.0, 1), ("d", "h", 1.0, 50)),
        rows_of(("d", "t", 2.0, 2)),
        rows_of(("d", "t", 3.0, 3), ("e", "p", 3.0, 7)),
        rows_of(("d", "t", 4.0, 4)),
    ]
    budget = len(batches[0][0]) + len(control) + len(batches[1][0])
    session, socket = Session("s", WsConfig(outbox_max_bytes=budget)), FakeSocket()
    session.offer_readings(*batches[0])
    session.offer(control)
    session.offer_readings(*batches[1])
    session.offer_readings(*batches[2])  # does not fit: everything queued is coalesced
    session.offer_readings(*batches[3])
    async with writing(session, socket):
        control_frame, lagging, readings = await socket.take(3)
        assert control_frame == orjson.loads(control)
        assert lagging == {"type": "lagging", "dropped": 3, "coalesced": 3}
        assert readings["seq"] == 1
        assert sorted(readings["data"]) == [
            ["d", "h", 1.0, 50],
            ["d", "t", 4.0, 4],
            ["e", "p", 3.0, 7],
        ]
        # Caught up: the next batch is a normal frame again, seq continuing.
        session.offer_readings(*rows_of(("d", "t", 5.0, 5)))
        [after] = await socket.take(1)
    assert after == {"type": "readings", "seq": 2, "data": [["d", "t", 5.0, 5]]}
    assert session.stats.readings_dropped == 3


async def test_control_frames_are_never_dropped_over_budget():
    """Control frames are queued even far past the byte budget, and all are delivered in order."""
    session, socket = Session("s", WsConfig(outbox_max_bytes=64)), FakeSocket()
    for i in range(50):
        session.offer_frame({"type": "pong", "id": i})
    session.offer_readings(*rows_of(("d", "t", 1.0, 1)))
    async with writing(session, socket):
        frames = await socket.take(52)  # 50 pongs, the lagging notice, the readings
    assert [f["id"] for f in frames[:50]] == list(range(50))
    assert frames[50]["type"] == "lagging"
    assert frames[51]["data"] == [["d", "t", 1.0, 1]]


async def test_client_lagging_longer_than_slow_client_timeout_is_closed_with_4000(monkeypatch):
    """A session still coalescing slow_client_timeout_s after it started lagging is evicted:
    its queue is dropped and the writer closes with 4000."""
    clock = SimpleNamespace(now=1000.0)
    monkeypatch.setattr(gateway.session, "time", SimpleNamespace(monotonic=lambda: clock.now))
    evicted: list[str] = []
    session = Session("s", WsConfig(outbox_max_bytes=10, slow_client_timeout_s=10))
    session.on_evict = evicted.append
    session.offer_readings(*rows_of(("d", "t", 1.0, 1)))  # over budget at once: lagging from t=1000
    clock.now = 1009.0
    session.offer_readings(*rows_of(("d", "t", 2.0, 2)))
    assert evicted == []
    clock.now = 1010.5
    session.offer_readings(*rows_of(("d", "t", 3.0, 3)))
    assert evicted == ["slow_consumer"]
    assert session.closing
    assert session.queued_bytes == 0
    session.offer_frame({"type": "pong"})  # ignored once closing
    socket = FakeSocket()
    async with writing(session, socket) as writer:
        await asyncio.wait_for(writer.wait(), 5)
    assert socket.closed_with == (4000, "slow_consumer")
    assert socket.frames.empty()


class StuckSocket(FakeSocket):
    """A peer that never reads: send blocks until the transport is aborted, then fails the way
    a real transport does."""

    def __init__(self) -> None:
        super().__init__(blocked=True)
        self.sending = asyncio.Event()

    async def send(self, payload: bytes) -> None:
        self.sending.set()
        await super().send(payload)
        if self.aborted:
            raise ConnectionResetError("transport aborted")

    def abort(self) -> None:
        super().abort()
        self.release()


async def test_send_blocked_past_send_timeout_aborts_the_transport():
    """check_send (the janitor's once-a-second call) aborts a send blocked longer than
    send_timeout_s and the writer ends; a send within the limit is left alone."""
    evicted: list[str] = []
    session = Session("s", WsConfig(send_timeout_s=5.0))
    session.on_evict = evicted.append
    socket = StuckSocket()
    session.offer_frame({"type": "hello"})
    async with writing(session, socket) as writer:
        await asyncio.wait_for(socket.sending.wait(), 5)
        assert not session.check_send(time.monotonic())  # blocked, but not for long yet
        assert session.check_send(time.monotonic() + 5.0)
        await asyncio.wait_for(writer.wait(), 5)
    assert socket.aborted
    assert socket.closed_with is None
    assert evicted == ["send_timeout"]
    assert session.closing


async def test_evict_closes_after_nothing_else_is_sent():
    """evict(code) drops what is queued and the writer closes with that code."""
    session, socket = Session("s", WsConfig()), FakeSocket()
    session.offer_frame({"type": "a"})
    session.evict(1001, "gateway shutting down")
    async with writing(session, socket) as writer:
        await asyncio.wait_for(writer.wait(), 5)
    assert socket.closed_with == (1001, "gateway shutting down")
    assert socket.frames.empty()


@pytest.mark.parametrize("count", [1, 3])
def test_subscription_ids_are_sequential(count):
    """Subscription ids are s1, s2, … per session."""
    session = Session("s", WsConfig())
    assert [session.new_subscription_id() for _ in range(count)] == [
        f"s{i}" for i in range(1, count + 1)
    ]


async def test_adopted_stream_replays_missed_frames_and_can_still_coalesce_them():
    """A resumed stream re-sends the frames after the client's seq with their numbers, and when
    the new connection falls behind, replayed frames coalesce with newer ones (nothing silent)."""
    config = WsConfig(outbox_max_bytes=10_000)
    old = Session("c-old", config)
    sent = FakeSocket()
    async with writing(old, sent):
        for value in (1, 2, 3):
            old.offer_readings(*rows_of(("d", "m", float(value), value)))
        frames = await sent.take(3)
    assert [f["seq"] for f in frames] == [1, 2, 3]

    new = Session("c-new", config)
    assert new.adopt(old, 1, encode({"type": "subscribed", "recovered": True}))
    # Before the new writer runs, a burst past the budget makes it coalesce, replayed rows too.
    big = [("d", "m", 4.0 + i, i) for i in range(2000)]
    new.offer_readings(orjson.dumps(big), big)
    socket = FakeSocket()
    async with writing(new, socket):
        reply, notice, readings = await socket.take(3)
    assert reply["recovered"] is True
    assert notice == {"type": "lagging", "dropped": 2001, "coalesced": 1}
    assert readings["seq"] == 2  # numbering continues after the client's last seq
    assert readings["data"] == [["d", "m", 2003.0, 1999]]


async def test_frames_written_at_once_never_overtake_queued_or_sending_ones():
    """A frame goes straight to the socket only with nothing queued or being sent ahead of it:
    offered while the socket is blocked, and right after it frees up, frames still leave in the
    order they were offered; once all is sent, the next one is written at once."""
    session, socket = Session("s", WsConfig()), FakeSocket(blocked=True)
    async with writing(session, socket):
        session.offer_readings(*rows_of(("d", "t", 1.0, 1)))  # queued: the socket cannot take it
        session.offer_readings(*rows_of(("d", "t", 2.0, 2)))
        socket.release()
        session.offer_frame({"type": "pong", "id": 3})  # the send has not returned yet
        frames = await socket.take(3)
        session.offer_readings(*rows_of(("d", "t", 4.0, 4)))  # nothing ahead: written at once
        assert socket.frames.qsize() == 1
        frames += await socket.take(1)
    assert [(f["type"], f.get("seq")) for f in frames] == [
        ("readings", 1),
        ("readings", 2),
        ("pong", None),
        ("readings", 3),
    ]
    assert session.stats.frames_sent == 4


def test_heartbeat_pings_a_silent_peer_and_cuts_it_when_no_answer_comes():
    """check_alive: ping after heartbeat_s of silence, cut after heartbeat_s / 2 unanswered;
    anything heard in between answers the ping. The cut is not an eviction (no close frame)."""
    evicted: list[str] = []
    session, socket = Session("s", WsConfig(heartbeat_s=10.0)), FakeSocket()
    session.on_evict = evicted.append
    session._socket, session._heard = socket, 100.0  # attached at t=100, without a writer
    assert not session.check_alive(109.9)
    assert socket.pings == 0
    assert not session.check_alive(110.0)
    assert socket.pings == 1
    session.heard(112.0)  # the pong (or any frame)
    assert not session.check_alive(121.0)
    assert socket.pings == 1
    assert not session.check_alive(122.0)
    assert socket.pings == 2
    assert not session.check_alive(126.9)
    assert not socket.aborted
    assert session.check_alive(127.0)
    assert socket.aborted
    assert evicted == ["no_pong"]
    assert not session.closing


def test_heartbeat_leaves_detached_and_closing_sessions_alone():
    session, socket = Session("s", WsConfig(heartbeat_s=10.0)), FakeSocket()
    assert not session.check_alive(1e9)  # parked: no socket
    session._socket = socket
    session._closing = (1001, "shutdown")
    assert not session.check_alive(1e9)
    assert socket.pings == 0


async def test_writer_lingers_while_busy_and_ends_when_retired_idle():
    """A writer started for a frame the socket could not take waits for more once the outbox is
    empty (no new task per frame) and lets frames that can go at once go around it; retired after
    WRITER_LINGER_S idle, it ends, and frames keep going out without one."""
    session, socket = Session("s", WsConfig()), FakeSocket(blocked=True)
    async with writing(session, socket):
        session.offer_frame({"type": "a"})  # the socket cannot take it: queued for a writer
        writer = session._writer
        assert writer is not None
        socket.release()
        await socket.take(1)
        session.offer_frame({"type": "b"})  # written at once while the writer idles
        await socket.take(1)
        assert session._writer is writer  # still the same task, waiting
        session.retire_writer(time.monotonic())  # idle, but not for long yet
        assert session._writer is writer
        session.retire_writer(time.monotonic() + gateway.session.WRITER_LINGER_S)
        await asyncio.wait_for(writer, 5)
        assert session._writer is None
        session.offer_frame({"type": "c"})
        assert [f["type"] for f in await socket.take(1)] == ["c"]
        assert session._writer is None

"""A connection's session: its one writer, send deadlines and the heartbeat."""

from __future__ import annotations

import asyncio
import time

import gateway.session
from gateway.config import WsConfig
from gateway.session import Session
from gateway.stream import Stream
from tests.support.fakes import FakeSocket


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
    stream = Stream("s", WsConfig(send_timeout_s=5.0), on_evict=evicted.append)
    socket = StuckSocket()
    stream.offer_frame({"type": "hello"})
    session = stream.attach(socket, time.monotonic())
    await asyncio.wait_for(socket.sending.wait(), 5)
    assert not session.check_send(time.monotonic())  # blocked, but not for long yet
    assert session.check_send(time.monotonic() + 5.0)
    await asyncio.wait_for(socket.ended.wait(), 5)
    session.detach()
    assert socket.aborted
    assert socket.closed_with is None
    assert evicted == ["send_timeout"]
    assert stream.closing


def test_heartbeat_pings_a_silent_peer_and_cuts_it_when_no_answer_comes():
    """check_alive: ping after heartbeat_s of silence, cut after heartbeat_s / 2 unanswered;
    anything heard in between answers the ping. The cut is not an eviction (no close frame)."""
    evicted: list[str] = []
    stream = Stream("s", WsConfig(heartbeat_s=10.0), on_evict=evicted.append)
    socket = FakeSocket()
    session = Session(stream, socket, 100.0)  # attached at t=100, without a writer
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
    assert not stream.closing


def test_heartbeat_leaves_detached_and_closing_sessions_alone():
    """No ping for a session whose connection is gone or is being closed."""
    stream, socket = Stream("s", WsConfig(heartbeat_s=10.0)), FakeSocket()
    detached = Session(stream, socket, 0.0)
    detached.detach()
    assert not detached.check_alive(1e9)
    closing = Session(stream, socket, 0.0)
    stream.evict(1001, "shutdown")
    assert not closing.check_alive(1e9)
    assert socket.pings == 0


async def test_writer_lingers_while_busy_and_ends_when_retired_idle():
    """A writer started for a frame the socket could not take waits for more once the outbox is
    empty (no new task per frame) and lets frames that can go at once go around it; retired after
    WRITER_LINGER_S idle, it ends, and frames keep going out without one."""
    stream, socket = Stream("s", WsConfig()), FakeSocket(blocked=True)
    session = stream.attach(socket, time.monotonic())
    stream.offer_frame({"type": "a"})  # the socket cannot take it: queued for a writer
    writer = session._writer
    assert writer is not None
    socket.release()
    await socket.take(1)
    stream.offer_frame({"type": "b"})  # written at once while the writer idles
    await socket.take(1)
    assert session._writer is writer  # still the same task, waiting
    session.retire_writer(time.monotonic())  # idle, but not for long yet
    assert session._writer is writer
    session.retire_writer(time.monotonic() + gateway.session.WRITER_LINGER_S)
    await asyncio.wait_for(writer, 5)
    assert session._writer is None
    stream.offer_frame({"type": "c"})
    assert [f["type"] for f in await socket.take(1)] == ["c"]
    assert session._writer is None
    session.detach()


async def test_a_resume_switches_the_writer_to_the_adopted_stream():
    """After an adopt, the connection's session writes the adopted stream, and the fresh stream
    it started with is detached."""
    old = Stream("c-old", WsConfig())
    old.offer_frame({"type": "queued-for-old"})  # dropped: a reply of the old connection
    old.parked = True
    fresh, socket = Stream("c-new", WsConfig()), FakeSocket()
    session = fresh.attach(socket, time.monotonic())
    assert old.adopt(fresh, 0, b'{"type":"subscribed"}')
    assert session.stream is old
    assert old.session is session
    assert fresh.session is None
    assert [f["type"] for f in await socket.take(1)] == ["subscribed"]
    fresh.offer_frame({"type": "nobody-writes-this"})
    old.offer_frame({"type": "pong"})
    assert [f["type"] for f in await socket.take(1)] == ["pong"]
    session.detach()
    assert old.session is None

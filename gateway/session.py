"""One connected client: a bounded outbox measured in bytes, coalescing, and its only writer.

`offer_*` never awaits, so the hub can hand a frame to thousands of sessions without waiting on
any of them. A frame with nothing queued ahead of it goes straight to a socket that can take it
at once (`Socket.write_now`); everything else is sent by the session's writer task, so a slow
peer blocks only its own writer. Past the byte budget, queued readings are coalesced to the
latest value per (device, metric) and the client is told how many were dropped; a client that
stays behind longer than `slow_client_timeout_s`, or whose single send blocks past
`send_timeout_s`, is evicted.

Memory per idle connection is what limits how many clients one gateway holds (S4 in
docs/performance.md), so an idle session owns no task and no buffers: the writer task exists only
while there is something to send (or was in the last second), and the outbox and resume buffer are
created when first needed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import orjson

from gateway.auth import Principal
from gateway.config import WsConfig
from gateway.matching import Selector
from gateway.models import Reading
from gateway.protocol import CloseCode, CloseReason, encode, readings_frame
from gateway.stats import SessionStats

#: How long a writer with nothing to send waits for more before it ends (see retire_writer).
WRITER_LINGER_S = 1.0


class Socket(Protocol):
    """What a session needs from its connection; ws_socket.py adapts aiohttp's WebSocketResponse."""

    async def send(self, payload: bytes) -> None: ...
    def write_now(self, payload: bytes) -> bool:
        """Send without waiting if the connection can take it right now; False if not (then
        nothing was written, and the writer task sends it with `send`)."""
        ...

    async def close(self, code: int, reason: str) -> None: ...
    def abort(self) -> None: ...
    def ping(self) -> None: ...


@dataclass(slots=True)
class _Readings:
    """A readings frame waiting to be sent: the shared encoded array, and rows for coalescing
    (None for a frame replayed from the resume buffer: decoded again only if it must coalesce)."""

    data: bytes
    rows: list[Reading] | None

    def readings(self) -> list[Reading]:
        return self.rows if self.rows is not None else orjson.loads(self.data)


@dataclass(eq=False, slots=True)
class Session:
    id: str
    config: WsConfig
    remote: str = ""
    principal: Principal | None = None  # set once authenticated
    subscriptions: dict[str, Selector] = field(default_factory=dict)
    stats: SessionStats = field(default_factory=SessionStats)
    on_evict: Callable[[str], None] | None = None
    _outbox: deque[bytes | _Readings] | None = None  # None while empty
    _outbox_bytes: int = 0
    _coalesced: dict[tuple[str, str], Reading] | None = None
    _dropped: int = 0
    _lagging_since: float | None = None
    _seq: int = 0
    # Readings frames already sent, kept for a reconnecting client to resume from (bounded).
    # Only (int, bytes) tuples: the garbage collector does not track them, so a full buffer on
    # every connection adds nothing to gen-2 collections (the bench saw 50-140 ms pauses before).
    _sent: deque[tuple[int, bytes]] | None = None  # created by the first readings frame sent
    _sent_bytes: int = 0
    parked: bool = False  # the connection is gone; frames queue up for a resume
    _next_subscription: int = 0
    _closing: tuple[int, str] | None = None
    _socket: Socket | None = None  # while connected
    _writer: asyncio.Task[None] | None = None  # while there is something to send, or was lately
    _idle: asyncio.Future[None] | None = None  # the writer waits on it once the outbox is empty
    _idle_since: float | None = None  # monotonic time the writer started waiting
    _send_started: float | None = None  # monotonic time the current send began
    _heard: float = 0.0  # monotonic time the peer last sent anything (heartbeat)
    _ping_sent: float | None = None  # monotonic time of the unanswered ping, if any

    @property
    def queued_bytes(self) -> int:
        return self._outbox_bytes

    @property
    def closing(self) -> bool:
        """The gateway decided to close this session (eviction, shutdown, bad auth)."""
        return self._closing is not None

    def new_subscription_id(self) -> str:
        self._next_subscription += 1
        return f"s{self._next_subscription}"

    # --- producers: never await ------------------------------------------------------------------

    def offer(self, payload: bytes) -> None:
        """Queue a control frame (replies, snapshots, events). These are never dropped."""
        if self._closing is not None:
            return
        if self._write_now(payload):
            return
        self._queue(payload, len(payload))

    def offer_frame(self, frame: dict[str, object]) -> None:
        self.offer(encode(frame))

    def offer_readings(self, data: bytes, rows: list[Reading]) -> None:
        """Queue a batch of readings; `data` is the JSON array shared with other sessions."""
        if self._closing is not None:
            return
        if (
            self._coalesced is None
            and self._outbox_bytes + len(data) <= self.config.outbox_max_bytes
        ):
            if not self._outbox and self._write_now(readings_frame(self._seq + 1, data)):
                self._seq += 1
                self._remember(self._seq, data)
                return
            self._queue(_Readings(data, rows), len(data))
            return
        self._coalesce(rows)

    def _write_now(self, payload: bytes) -> bool:
        """Send `payload` at once if nothing is queued, coalesced or being sent ahead of it and
        the socket can take it without waiting. Most frames to a client that keeps up go this
        way: a writer task woken for each one cost about a third of the fan-out CPU
        (docs/performance.md). A writer waiting idle for more is no obstacle: `offer_*` only runs
        while the writer is suspended, in a send (`_send_started` set) or idle (nothing queued).
        """
        socket = self._socket
        if (
            socket is None
            or self._outbox
            or self._coalesced is not None
            or self._send_started is not None
            or self.parked
            or not socket.write_now(payload)
        ):
            return False
        self.stats.sent(payload)
        return True

    def _queue(self, item: bytes | _Readings, size: int) -> None:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(item)
        self._outbox_bytes += size
        self._start_writer()

    def _coalesce(self, rows: list[Reading]) -> None:
        now = time.monotonic()
        if self._coalesced is None:
            self._coalesced = {}
            self._lagging_since = now
            # Fold every readings frame still queued into the coalesced map, keeping control frames.
            kept: deque[bytes | _Readings] = deque()
            for item in self._outbox or ():
                if isinstance(item, _Readings):
                    self._outbox_bytes -= len(item.data)
                    self._merge(item.readings())
                else:
                    kept.append(item)
            self._outbox = kept or None
        self._merge(rows)
        self._start_writer()
        assert self._lagging_since is not None
        # A parked stream has no reader to wait for: it coalesces until resumed or expired.
        if not self.parked and now - self._lagging_since > self.config.slow_client_timeout_s:
            self.evict(CloseCode.SLOW_CONSUMER, CloseReason.SLOW_CONSUMER)

    def _merge(self, rows: list[Reading]) -> None:
        coalesced = self._coalesced
        assert coalesced is not None
        for row in rows:
            if coalesced.setdefault((row[0], row[1]), row) is not row:
                coalesced[(row[0], row[1])] = row
                self._dropped += 1

    def evict(self, code: int, reason: str, last_words: bytes | None = None) -> None:
        """Ask the writer to close the connection with `code`, sending nothing queued before;
        `last_words` (an error frame saying why) goes out just before the close."""
        if self._closing is None:
            self._closing = (code, reason)
            self._outbox = deque([last_words]) if last_words is not None else None
            self._outbox_bytes = len(last_words or b"")
            self._coalesced = None
            self._start_writer()
            if self.on_evict is not None:
                self.on_evict(reason)

    # --- the writer ------------------------------------------------------------------------------

    def attach(self, socket: Socket, now: float) -> None:
        """The connection is up: send what is queued (and whatever comes) on `socket`."""
        self._socket = socket
        self._heard = now
        self._start_writer()

    def detach(self) -> None:
        """The connection is gone: stop writing (frames still queue, for a resume)."""
        self._socket = None
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._idle = self._idle_since = None

    def _start_writer(self) -> None:
        if self._idle is not None:
            if not self._idle.done():
                self._idle.set_result(None)
        elif self._writer is None and self._socket is not None:
            self._writer = asyncio.get_running_loop().create_task(self._write(self._socket))

    def retire_writer(self, now: float) -> None:
        """End a writer idle for `WRITER_LINGER_S` (called about once a second by the janitor).

        A busy stream keeps its writer (waking a waiting task is cheaper than a new task per
        frame: +2-3 µs per frame measured, ~6% of S2's CPU); an idle one, most of a large
        population of dashboards, keeps no task at all.
        """
        idle, since = self._idle, self._idle_since
        if idle is not None and since is not None and now - since >= WRITER_LINGER_S:
            self._idle_since = None  # tells the writer to end rather than wait again
            if not idle.done():
                idle.set_result(None)

    async def _write(self, socket: Socket) -> None:
        """Send what is queued, then wait for more until retired; the only code that writes to
        `socket`. Ending with the connection (close, a lost peer or a bug here) cuts the
        transport so that the reader ends too.
        """
        loop = asyncio.get_running_loop()
        try:
            while self._closing is None:
                payload = self._next_payload()
                if payload is not None:
                    await self._send(socket, payload)
                    continue
                self._idle, self._idle_since = loop.create_future(), time.monotonic()
                try:
                    await self._idle
                finally:
                    retired = self._idle_since is None
                    self._idle = self._idle_since = None
                if retired and self._outbox is None and self._coalesced is None:
                    return  # the next offer starts a new writer
            await self._close(socket, self._outbox or ())
        except ConnectionError:
            socket.abort()  # the peer is gone; the reader may still be waiting on it
        except Exception:
            socket.abort()
            raise
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None

    def _next_payload(self) -> bytes | None:
        if self._outbox:
            item = self._outbox.popleft()
            if not self._outbox:
                self._outbox = None  # an idle session keeps no deque
            if isinstance(item, bytes):
                self._outbox_bytes -= len(item)
                return item
            self._outbox_bytes -= len(item.data)
            self._seq += 1
            self._remember(self._seq, item.data)
            return readings_frame(self._seq, item.data)
        if self._coalesced is not None:
            return self._flush_coalesced()
        return None

    def _remember(self, seq: int, data: bytes) -> None:
        if self._sent is None:
            self._sent = deque()
        self._sent.append((seq, data))
        self._sent_bytes += len(data)
        while self._sent_bytes > self.config.resume_buffer_bytes:
            self._sent_bytes -= len(self._sent.popleft()[1])

    def _flush_coalesced(self) -> bytes:
        """The lagging notice, followed (queued first in line) by the coalesced readings."""
        assert self._coalesced is not None
        rows = list(self._coalesced.values())
        notice = encode({"type": "lagging", "dropped": self._dropped, "coalesced": len(rows)})
        self.stats.readings_dropped += self._dropped
        self._coalesced = None
        self._dropped = 0
        self._lagging_since = None
        frame = _Readings(orjson.dumps(rows), rows)
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.appendleft(frame)
        self._outbox_bytes += len(frame.data)
        return notice

    # --- resume ----------------------------------------------------------------------------------

    def adopt(self, old: Session, last_seq: int, reply: bytes) -> bool:
        """Continue `old`'s stream on this connection after the client's `last_seq`.

        True when every readings frame after `last_seq` is still at hand: those already sent are
        queued again from the resume buffer (same seq numbers), followed by what `old` queued while
        parked, all after `reply`. False (and nothing changed) when the gap cannot be filled.
        """
        if self._seq or self.subscriptions or not 0 <= last_seq <= old._seq:
            return False
        old_sent = old._sent or ()
        missed = [item for item in old_sent if item[0] > last_seq]
        if len(missed) != old._seq - last_seq:
            return False  # some of the frames after last_seq already left the resume buffer
        replay: deque[bytes | _Readings] = deque([reply])
        replay.extend(_Readings(data, None) for _, data in missed)
        replay.extend(old._outbox or ())
        replay.extend(self._outbox or ())  # replies already queued on this connection go last
        self._outbox = replay
        self._outbox_bytes = sum(len(i) if isinstance(i, bytes) else len(i.data) for i in replay)
        self._seq = last_seq
        self._sent = deque(item for item in old_sent if item[0] <= last_seq)
        self._sent_bytes = sum(len(data) for _, data in self._sent)
        self._coalesced, self._dropped = old._coalesced, old._dropped
        self._lagging_since = old._lagging_since
        self.subscriptions = old.subscriptions
        self._next_subscription = old._next_subscription
        self._start_writer()
        return True

    async def _send(self, socket: Socket, payload: bytes) -> None:
        # No timer per send (it cost 8% of the fan-out CPU in the bench): check_send, called
        # about once a second, aborts a send that has been blocked too long.
        self._send_started = time.monotonic()
        await socket.send(payload)
        self._send_started = None
        self.stats.sent(payload)

    def check_send(self, now: float) -> bool:
        """Abort the connection if one send has been blocked past `send_timeout_s`; True if so.

        The peer stopped reading, so a graceful close would wait on that same peer: the transport
        is cut instead, which also ends the blocked send with a ConnectionError.
        """
        started = self._send_started
        if started is None or self._socket is None or now - started < self.config.send_timeout_s:
            return False
        self._send_started = None
        self._closing = (CloseCode.SLOW_CONSUMER, CloseReason.SEND_TIMEOUT)
        if self.on_evict is not None:
            self.on_evict(CloseReason.SEND_TIMEOUT)
        self._socket.abort()
        return True

    # --- heartbeat -------------------------------------------------------------------------------

    def heard(self, now: float) -> None:
        """The peer sent something (any frame answers a ping)."""
        self._heard = now
        self._ping_sent = None

    def check_alive(self, now: float) -> bool:
        """Ping a peer silent for `heartbeat_s`; cut one that left a ping unanswered for half
        that. True if cut. Called for every session by one periodic sweep (Runtime), which costs
        far less memory than aiohttp's own heartbeat: two timers per connection (~2.4 KiB).

        The cut connection is not evicted: its stream is parked for a resume, as for any
        connection the network dropped.
        """
        socket, heartbeat = self._socket, self.config.heartbeat_s
        if socket is None or self._closing is not None or heartbeat <= 0:
            return False
        if self._ping_sent is None:
            if now - self._heard >= heartbeat:
                self._ping_sent = now
                socket.ping()
            return False
        if now - self._ping_sent < heartbeat / 2:
            return False
        self._ping_sent = None
        if self.on_evict is not None:
            self.on_evict(CloseReason.NO_PONG)
        socket.abort()
        return True

    async def _close(self, socket: Socket, last_words: Iterable[bytes | _Readings]) -> None:
        assert self._closing is not None
        code, reason = self._closing
        try:
            async with asyncio.timeout(self.config.send_timeout_s):
                for frame in last_words:
                    if isinstance(frame, bytes):
                        await socket.send(frame)
                await socket.close(code, reason)
        except TimeoutError:
            socket.abort()
        except ConnectionError:
            socket.abort()  # the peer left first; nothing more to say

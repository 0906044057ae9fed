"""One connection's socket side: the only writer of its socket, send timing and the heartbeat.

A session writes one stream (gateway/stream.py) for as long as its connection lasts; a resume
switches it to the parked stream it adopted. Frames the socket can take at once are written from
the producer's call (`write_now`); the rest are sent by the session's writer task, so a slow peer
blocks only its own writer. A single send blocked past `send_timeout_s`, or a ping left unanswered,
ends the connection.

Memory per idle connection is what limits how many clients one gateway holds (S4 in
docs/performance.md), so an idle session owns no task: the writer exists only while there is
something to send (or was in the last second).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from gateway.config import WsConfig
from gateway.protocol import CloseReason

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


class Stats(Protocol):
    def sent(self, payload: bytes) -> None: ...


class Source(Protocol):
    """What a session writes: gateway/stream.py's Stream."""

    config: WsConfig
    on_evict: Callable[[str], None] | None

    @property
    def stats(self) -> Stats: ...
    @property
    def close_code(self) -> tuple[int, str] | None:
        """Set once the gateway decided to close the connection: (code, reason)."""
        ...

    @property
    def closing(self) -> bool: ...
    @property
    def idle(self) -> bool:
        """Nothing queued or coalesced."""
        ...

    def next_payload(self) -> bytes | None: ...
    def last_words(self) -> list[bytes]: ...
    def send_timed_out(self) -> None: ...
    def detached(self, session: Session) -> None:
        """`session` stopped writing this stream (its connection is gone)."""
        ...


class Session:
    """The writing side of one connection; see the module docstring."""

    __slots__ = (
        "_heard",
        "_idle",
        "_idle_since",
        "_ping_sent",
        "_send_started",
        "_socket",
        "_writer",
        "stream",
    )

    def __init__(self, stream: Source, socket: Socket, now: float) -> None:
        """Write `stream` to `socket` (the stream attaches itself: Stream.attach)."""
        self.stream = stream
        self._socket: Socket | None = socket  # None once the connection is gone
        self._writer: asyncio.Task[None] | None = None  # while there is something to send
        self._idle: asyncio.Future[None] | None = None  # the writer waits on it when all is sent
        self._idle_since: float | None = None  # monotonic time the writer started waiting
        self._send_started: float | None = None  # monotonic time the current send began
        self._heard = now  # monotonic time the peer last sent anything (heartbeat)
        self._ping_sent: float | None = None  # monotonic time of the unanswered ping, if any

    def detach(self) -> None:
        """The connection is gone: stop writing (the stream's frames still queue, for a resume)."""
        self._socket = None
        self.stream.detached(self)
        if self._writer is not None:
            self._writer.cancel()
            self._writer = None
        self._idle = self._idle_since = None

    def switch(self, stream: Source) -> None:
        """Write `stream` from now on (a resume adopted it); the writer picks it up."""
        self.stream = stream
        self.wake()

    # --- writing ---------------------------------------------------------------------------------

    def write_now(self, payload: bytes) -> bool:
        """Write `payload` at once if no send is under way and the socket can take it without
        waiting. A writer waiting idle for more is no obstacle: producers only run while the
        writer is suspended, in a send (`_send_started` set) or idle (nothing queued)."""
        socket = self._socket
        if socket is None or self._send_started is not None or not socket.write_now(payload):
            return False
        self.stream.stats.sent(payload)
        return True

    def wake(self) -> None:
        """The stream has something to send: wake the idle writer, or start one."""
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
        """Send what the stream has queued, then wait for more until retired; the only code that
        writes to `socket` with a wait. Ending with the connection (close, a lost peer or a bug
        here) cuts the transport so that the reader ends too.
        """
        loop = asyncio.get_running_loop()
        try:
            while self.stream.close_code is None:
                payload = self.stream.next_payload()
                if payload is not None:
                    await self._send(socket, payload)
                    continue
                self._idle, self._idle_since = loop.create_future(), time.monotonic()
                try:
                    await self._idle
                finally:
                    retired = self._idle_since is None
                    self._idle = self._idle_since = None
                if retired and self.stream.idle:
                    return  # the next frame queued starts a new writer
            await self._close(socket, self.stream.last_words())
        except ConnectionError:
            socket.abort()  # the peer is gone; the reader may still be waiting on it
        except Exception:
            socket.abort()
            raise
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None

    async def _send(self, socket: Socket, payload: bytes) -> None:
        # No timer per send (it cost 8% of the fan-out CPU in the bench): check_send, called
        # about once a second, aborts a send that has been blocked too long.
        self._send_started = time.monotonic()
        await socket.send(payload)
        self._send_started = None
        self.stream.stats.sent(payload)

    def check_send(self, now: float) -> bool:
        """Abort the connection if one send has been blocked past `send_timeout_s`; True if so.

        The peer stopped reading, so a graceful close would wait on that same peer: the transport
        is cut instead, which also ends the blocked send with a ConnectionError.
        """
        started, socket = self._send_started, self._socket
        if started is None or socket is None or now - started < self.stream.config.send_timeout_s:
            return False
        self._send_started = None
        self.stream.send_timed_out()
        socket.abort()
        return True

    async def _close(self, socket: Socket, last_words: Iterable[bytes]) -> None:
        close = self.stream.close_code
        assert close is not None
        code, reason = close
        try:
            async with asyncio.timeout(self.stream.config.send_timeout_s):
                for frame in last_words:
                    await socket.send(frame)
                await socket.close(code, reason)
        except TimeoutError:
            socket.abort()
        except ConnectionError:
            socket.abort()  # the peer left first; nothing more to say

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
        socket, stream = self._socket, self.stream
        heartbeat = stream.config.heartbeat_s
        if socket is None or stream.closing or heartbeat <= 0:
            return False
        if self._ping_sent is None:
            if now - self._heard >= heartbeat:
                self._ping_sent = now
                socket.ping()
            return False
        if now - self._ping_sent < heartbeat / 2:
            return False
        self._ping_sent = None
        if stream.on_evict is not None:
            stream.on_evict(CloseReason.NO_PONG)
        socket.abort()
        return True

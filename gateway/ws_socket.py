"""The Socket a Session writes to (gateway/session.py), over aiohttp's WebSocketResponse; the fence
around the frames the gateway writes to the transport itself.

Two writes bypass aiohttp: `write_now` puts an uncompressed text frame straight on the transport
when nothing is waiting ahead of it (no writer task, no coroutine: measured in
docs/performance.md, "Fan-out"), and `ping` writes a PING frame the same way from the heartbeat
sweep. Both rest on how aiohttp frames and writes: a server frame is unmasked with the header of
RFC 6455 section 5.2, and aiohttp writes each uncompressed or control frame synchronously, in one
go, so a frame of ours can never land inside one of its frames. `fast_writer_problem()` checks
that, once per process, against aiohttp's own writer (the installed version in the verified range,
then aiohttp framing a few payloads onto a recording transport without suspending); when it does
not hold, or `ws.fast_writer = false`, every frame goes through aiohttp's public `send_frame` and
`ping`, with one warning when that was not asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import socket
import struct
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http import WebSocketWriter

from gateway.versions import Supported, unsupported_versions

log = logging.getLogger(__name__)

#: The aiohttp versions the direct writes were verified with: [lowest, first unverified).
SUPPORTED: Supported = {"aiohttp": ((3, 11), (3, 15))}

#: A server's PING frame with no payload (RFC 6455 5.5.2: FIN + opcode 0x9, length 0).
PING_FRAME = b"\x89\x00"


def text_frame_header(length: int) -> bytes:
    """The header of an unmasked, final text frame of `length` bytes (RFC 6455, section 5.2)."""
    if length < 126:
        return bytes((0x81, length))
    if length < 65536:
        return struct.pack("!BBH", 0x81, 126, length)
    return struct.pack("!BBQ", 0x81, 127, length)


class AiohttpSocket:
    """The Socket a Session writes to, over aiohttp's WebSocketResponse. With `fast` off, every
    frame goes through aiohttp's public API: `write_now` declines and `ping` uses `ws.ping()`."""

    __slots__ = ("_fast", "_ping", "_request", "_ws")

    def __init__(self, ws: web.WebSocketResponse, request: web.Request, fast: bool) -> None:
        self._ws = ws
        self._request = request
        self._fast = fast
        self._ping: asyncio.Task[None] | None = None  # the public path's ping in progress

    async def send(self, payload: bytes) -> None:
        # Text frames: browsers hand binary frames to scripts as Blobs.
        await self._ws.send_frame(payload, WSMsgType.TEXT)

    def write_now(self, payload: bytes) -> bool:
        """Write a text frame straight to the transport when everything written before has
        already gone to the kernel (a peer that keeps up). aiohttp's own path is a coroutine, so
        it needs the writer task; this one does not. Frames compressed with permessage-deflate
        are aiohttp's to make, and so is everything on a connection that is closing. aiohttp
        writes its control frames (pings, close) whole and synchronously too, so frames never
        interleave."""
        if not self._fast:
            return False
        transport = self._request.transport
        if (
            self._ws.compress
            or self._ws.closed
            or transport is None
            or transport.is_closing()
            or transport.get_write_buffer_size()
        ):
            return False
        transport.write(text_frame_header(len(payload)) + payload)
        return True

    async def close(self, code: int, reason: str) -> None:
        self._cancel_ping()
        await self._ws.close(code=code, message=reason.encode())

    def abort(self) -> None:
        # aiohttp's close() waits on the peer; a peer that never reads needs the transport cut.
        self._cancel_ping()
        if self._request.transport is not None:
            self._request.transport.abort()

    def ping(self) -> None:
        transport = self._request.transport
        if transport is None or transport.is_closing():
            return
        if self._fast:
            # Written straight to the transport, ahead of anything the writer waits to send (as
            # aiohttp's own heartbeat does): every frame aiohttp writes is one synchronous write,
            # so this cannot land inside another frame. Control frames are never compressed.
            transport.write(PING_FRAME)
        elif self._ping is None:
            self._ping = asyncio.create_task(self._send_ping(), name="session.ping")

    async def _send_ping(self) -> None:
        try:
            await self._ws.ping()
        except (ConnectionError, RuntimeError):
            pass  # the connection is going away; the heartbeat notices the missing pong
        finally:
            self._ping = None

    def _cancel_ping(self) -> None:
        if self._ping is not None:
            self._ping.cancel()


def limit_send_buffer(request: web.Request, size: int) -> None:
    """Fix the kernel's send buffer for this connection (see ws.send_buffer_bytes)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if size and sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, size)


@functools.cache
def fast_writer_usable() -> bool:
    """Whether frames may be written to the transport directly; warns (once) when not."""
    problem = fast_writer_problem()
    if problem is not None:
        log.warning("direct WebSocket writes off: %s; using aiohttp's send_frame", problem)
    return problem is None


def fast_writer_problem() -> str | None:
    """Why the direct writes do not match aiohttp's own, or None when they do."""
    problem = unsupported_versions(SUPPORTED)
    if problem is not None:
        return problem
    for name in ("compress", "closed"):
        if not isinstance(getattr(web.WebSocketResponse, name, None), property):
            return f"aiohttp's WebSocketResponse.{name} is not a property"
    try:
        return _framing_problem()
    except Exception as exc:  # a changed writer can fail in any way: that is the answer
        return f"aiohttp's WebSocket writer changed: {exc!r}"


class _Recorder:
    """A transport that keeps what is written (and a protocol that is never paused)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self._paused = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def is_closing(self) -> bool:
        return False


def _framing_problem() -> str | None:
    """aiohttp frames a few payloads and a ping; they must equal ours, written without a pause."""
    recorder = _Recorder()
    writer = WebSocketWriter(recorder, recorder, limit=1 << 30)  # type: ignore[arg-type]
    for payload in (b"x" * 5, b"y" * 200, b"z" * 70000):
        recorder.writes.clear()
        _run_without_suspending(writer.send_frame(payload, WSMsgType.TEXT))
        if b"".join(recorder.writes) != text_frame_header(len(payload)) + payload:
            return f"aiohttp frames a {len(payload)}-byte text frame differently"
    recorder.writes.clear()
    _run_without_suspending(writer.send_frame(b"", WSMsgType.PING))
    if recorder.writes != [PING_FRAME]:
        return "aiohttp writes a PING frame differently"
    return None


def _run_without_suspending(coroutine: Any) -> None:
    """Run a coroutine that must finish in one step (aiohttp writing an uncompressed frame)."""
    try:
        coroutine.send(None)
    except StopIteration:
        return
    with contextlib.suppress(RuntimeError):
        coroutine.close()
    raise RuntimeError("aiohttp's send_frame suspended while writing an uncompressed frame")

"""A small TCP proxy on 127.0.0.1 for putting faults between the gateway and its broker.

`tc netem` and Toxiproxy are not available where these tests run, so the faults are made here,
in the test's own event loop, and switched at run time:

- ``pass``: bytes flow both ways unchanged;
- ``blackhole``: connections are accepted and read, but nothing is forwarded in either direction
  (a peer that has silently gone: packets vanish, no FIN, no RST);
- ``reset``: every open connection is aborted with an RST, and new ones are reset at once;
- ``latency``: each chunk is forwarded `latency_ms` after it was read, in order.

`reset_all()` aborts the open connections once and leaves the mode alone (a link flap).

    async with FaultProxy(broker.port) as proxy:
        config = {"broker.url": proxy.url}
        proxy.set_mode("blackhole")
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["pass", "blackhole", "reset", "latency"]
MODES: tuple[Mode, ...] = ("pass", "blackhole", "reset", "latency")
CHUNK = 65536


@dataclass(slots=True)
class ProxyStats:
    accepted: int = 0  # connections accepted from clients
    resets: int = 0  # connections aborted by reset_all() or reset mode
    bytes_up: int = 0  # client -> upstream, forwarded
    bytes_down: int = 0  # upstream -> client, forwarded
    bytes_dropped: int = 0  # read while blackholed
    #: client -> upstream bytes forwarded on each connection, by the order they were accepted in
    #: (what one client sent while the upstream could not answer, say)
    bytes_up_by_connection: list[int] = field(default_factory=list)


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with an RST instead of a FIN (SO_LINGER 0), like a crashed peer or a middlebox."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass(eq=False)
class _Pair:
    """One proxied connection: the client side, the upstream side, and their pump tasks."""

    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    tasks: set[asyncio.Task[None]] = field(default_factory=set)

    def abort(self) -> None:
        _abort(self.client)
        if self.upstream is not None:
            _abort(self.upstream)
        for task in self.tasks:
            task.cancel()


class FaultProxy:
    """Listen on 127.0.0.1:`port` (0: a free port) and forward to 127.0.0.1:`upstream_port`."""

    def __init__(self, upstream_port: int, port: int = 0, upstream_host: str = "127.0.0.1") -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.host = "127.0.0.1"
        self.port = port
        self.mode: Mode = "pass"
        self.latency_ms = 0.0
        self.stats = ProxyStats()
        self._server: asyncio.Server | None = None
        self._pairs: set[_Pair] = set()

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        """Client connections currently open through the proxy."""
        return len(self._pairs)

    # --- lifecycle -------------------------------------------------------------------------------

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        """Stop listening and abort every connection; returns once every pump task has ended."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        tasks = [t for pair in self._pairs for t in pair.tasks]
        for pair in list(self._pairs):
            pair.abort()
        self._pairs.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    async def __aenter__(self) -> FaultProxy:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- faults ----------------------------------------------------------------------------------

    def set_mode(self, mode: Mode, latency_ms: float | None = None) -> None:
        """Switch the fault for every open and future connection."""
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {', '.join(MODES)}")
        self.mode = mode
        if latency_ms is not None:
            self.latency_ms = latency_ms
        if mode == "reset":
            self.reset_all()

    def reset_all(self) -> int:
        """Abort every open connection (both sides, with RST); return how many there were."""
        pairs = list(self._pairs)
        for pair in pairs:
            pair.abort()
            self.stats.resets += 1
        self._pairs.clear()
        return len(pairs)

    # --- forwarding ------------------------------------------------------------------------------

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connection = self.stats.accepted
        self.stats.accepted += 1
        self.stats.bytes_up_by_connection.append(0)
        if self.mode == "reset":
            self.stats.resets += 1
            _abort(writer)
            return
        pair = _Pair(writer)
        self._pairs.add(pair)
        current = asyncio.current_task()
        assert current is not None
        pair.tasks.add(current)
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(
                    self.upstream_host, self.upstream_port
                )
            except OSError:
                _abort(writer)  # upstream down: the client sees its connection refused-ish
                return
            pair.upstream = up_writer
            if pair not in self._pairs:  # reset while connecting upstream
                pair.abort()
                return
            down = asyncio.create_task(
                self._pump(up_reader, writer, "down", connection), name="faultproxy.down"
            )
            pair.tasks.add(down)
            try:
                await self._pump(reader, up_writer, "up", connection)
            finally:
                # One direction ended: finish the other one too, as a TCP proxy does.
                down.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await down
        except asyncio.CancelledError:
            pass
        finally:
            self._pairs.discard(pair)
            for side in (writer, pair.upstream):
                if side is not None and not side.transport.is_closing():
                    side.close()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        direction: str,
        connection: int,
    ) -> None:
        """Copy reader to writer, applying the mode in force when each chunk arrives."""
        delayed: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send_delayed(delayed, writer, direction, connection))
        try:
            while True:
                try:
                    chunk = await reader.read(CHUNK)
                except (ConnectionError, OSError):
                    break
                if not chunk:
                    break
                if self.mode == "blackhole":
                    self.stats.bytes_dropped += len(chunk)
                    continue
                due = asyncio.get_running_loop().time()
                if self.mode == "latency":
                    due += self.latency_ms / 1000
                delayed.put_nowait((due, chunk))
            delayed.put_nowait(None)
            await sender
        finally:
            sender.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send_delayed(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        writer: asyncio.StreamWriter,
        direction: str,
        connection: int,
    ) -> None:
        loop = asyncio.get_running_loop()
        while (item := await queue.get()) is not None:
            due, chunk = item
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)  # the fault itself: hold the chunk this long
            if self.mode == "blackhole":
                self.stats.bytes_dropped += len(chunk)
                continue
            try:
                writer.write(chunk)
                await writer.drain()
            except (ConnectionError, OSError):
                return
            if direction == "up":
                self.stats.bytes_up += len(chunk)
                self.stats.bytes_up_by_connection[connection] += len(chunk)
            else:
                self.stats.bytes_down += len(chunk)
        if writer.can_write_eof():
            with contextlib.suppress(OSError):
                writer.write_eof()


@contextlib.contextmanager
def mode(proxy: FaultProxy, new: Mode, latency_ms: float | None = None) -> Iterator[FaultProxy]:
    """Apply `new` for the duration of a block, then go back to pass."""
    proxy.set_mode(new, latency_ms)
    try:
        yield proxy
    finally:
        proxy.set_mode("pass")

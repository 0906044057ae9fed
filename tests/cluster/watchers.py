"""Clients that stay connected through a load balancer the way a dashboard does, and check their
own stream for silent gaps.

A `Watcher` subscribes, follows one counter series (`n` of one device, published 0, 1, 2, ...),
and reconnects at once when its connection ends (a close code, or the transport cut), resuming
with the epoch, session and seq it had. Each connection's stream is checked as it arrives: `seq`
of the sequenced frames (readings, snapshots) without gaps, and every counter value the previous
one plus one, except right after the gateway said it could not continue the stream
(`recovered: false` and a fresh snapshot, or a coalesced frame). A gap anywhere else is silent,
and recorded. Every frame is validated against the published schemas (protocol v2).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
from aiohttp import WSMsgType

from tests.support.schemas import check_server_frame

#: A client's pause before trying again after a failed connect (the dashboard's first retry is
#: 250-500 ms; shorter here, the tests measure the gateway side).
RETRY_S = 0.05


@dataclass
class Connection:
    """One connection of a watcher: where it landed and how it went."""

    instance: str
    opened_at: float
    subscribed_at: float | None = None
    recovered: bool | None = None
    snapshot: bool = False
    readings: int = 0
    closed_at: float | None = None
    close_code: int | None = None
    ended_by: str = ""  # the last message's type and data, for a failure message


@dataclass
class Watcher:
    http: aiohttp.ClientSession
    url: str
    device: str
    metric: str = "n"
    connections: list[Connection] = field(default_factory=list)
    silent_gaps: list[str] = field(default_factory=list)
    failed_connects: int = 0
    last_n: float | None = None
    _end: str = ""
    _close_code: int | None = None
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # set on every state change

    @property
    def current(self) -> Connection:
        return self.connections[-1]

    def _note(self) -> None:
        self.changed.set()

    async def wait_for(self, check: Any, within: float) -> None:
        """Wait until `check(self)` is true (it is re-checked on every state change)."""
        try:
            async with asyncio.timeout(within):
                while not check(self):
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            raise AssertionError(f"not within {within}s: {self.describe()}") from None

    def describe(self) -> str:
        return (
            f"last n {self.last_n}, {self.failed_connects} failed connects, connections "
            f"{self.connections}, silent gaps {self.silent_gaps[:5]}"
        )

    async def run(self, stop: asyncio.Event) -> None:
        resume: dict[str, Any] | None = None
        while not stop.is_set():
            try:
                ws = await self.http.ws_connect(self.url)
            except (aiohttp.ClientError, OSError):
                self.failed_connects += 1
                await asyncio.sleep(RETRY_S)
                continue
            try:
                resume = await self._serve(ws, resume, stop)
            finally:
                await ws.close()
            self._note()

    async def _serve(
        self, ws: aiohttp.ClientWebSocketResponse, resume: dict[str, Any] | None,
        stop: asyncio.Event,
    ) -> dict[str, Any] | None:  # fmt: skip
        """One connection, until it ends; the resume handle for the next one."""
        hello = await self._frame(ws)
        assert hello is not None
        assert hello["type"] == "hello", hello
        connection = Connection(hello["instance"], time.monotonic())
        self.connections.append(connection)
        self._note()
        subscribe: dict[str, Any] = {"type": "subscribe", "id": 1, "devices": [self.device]}
        if resume is not None:
            subscribe["resume"] = resume
        await ws.send_str(orjson.dumps(subscribe).decode())
        seq = 0
        handle = None
        stopping = asyncio.ensure_future(stop.wait())
        try:
            while True:
                receiving = asyncio.ensure_future(self._frame(ws))
                await asyncio.wait([receiving, stopping], return_when=asyncio.FIRST_COMPLETED)
                if not receiving.done():
                    receiving.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await receiving
                    return None
                frame = receiving.result()
                if frame is None:
                    connection.closed_at = time.monotonic()
                    connection.close_code = self._close_code
                    connection.ended_by = self._end
                    return handle
                kind = frame["type"]
                if kind == "subscribed":
                    connection.subscribed_at = time.monotonic()
                    connection.recovered = frame.get("recovered")
                    if connection.recovered is False:
                        self.last_n = None  # announced: the next value may jump
                elif kind in ("snapshot", "readings"):
                    if frame["seq"] != seq + 1:
                        self.silent_gaps.append(f"seq {seq} -> {frame['seq']}")
                    seq = frame["seq"]
                    if kind == "snapshot" or frame.get("coalesced"):
                        connection.snapshot = connection.snapshot or kind == "snapshot"
                        self.last_n = None  # announced: the next value may jump
                    if kind == "readings":
                        self._readings(connection, frame["data"])
                handle = {"epoch": hello["epoch"], "session": hello["session"], "seq": seq}
                self._note()
        finally:
            stopping.cancel()

    def _readings(self, connection: Connection, data: list[list[Any]]) -> None:
        for device, metric, _, value in data:
            if device != self.device or metric != self.metric:
                continue
            connection.readings += 1
            if self.last_n is not None and value != self.last_n + 1:
                self.silent_gaps.append(f"{self.last_n} -> {value} on {connection.instance}")
            self.last_n = value

    async def _frame(self, ws: aiohttp.ClientWebSocketResponse) -> dict[str, Any] | None:
        """The next frame, validated; None when the connection ended."""
        message = await ws.receive()
        if message.type == WSMsgType.TEXT:
            frame: dict[str, Any] = check_server_frame(message.data)
            return frame
        self._end = f"{message.type!r} {message.data!r} {message.extra!r}"
        # The code the server sent. aiohttp's own close_code says 1006 when its close reply
        # could not be written, which happens when the server has already closed the socket.
        self._close_code = message.data if message.type == WSMsgType.CLOSE else ws.close_code
        return None

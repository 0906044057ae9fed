"""Fakes for pure-logic unit tests: a Socket a Session can write to, and a recording Stream."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from gateway.stream import Batch, Stream


class FakeSocket:
    """Collects sent frames (decoded). With `blocked`, every send waits until `release()`."""

    def __init__(self, *, blocked: bool = False) -> None:
        self.frames: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.closed_with: tuple[int, str] | None = None
        self.aborted = False
        self.pings = 0
        self.ended = asyncio.Event()
        self._gate = asyncio.Event()
        if not blocked:
            self._gate.set()

    def release(self) -> None:
        self._gate.set()

    async def send(self, payload: bytes) -> None:
        await self._gate.wait()
        self.frames.put_nowait(orjson.loads(payload))

    def write_now(self, payload: bytes) -> bool:
        """Like a transport with nothing buffered: takes the frame unless sends are blocked."""
        if not self._gate.is_set():
            return False
        self.frames.put_nowait(orjson.loads(payload))
        return True

    async def close(self, code: int, reason: str) -> None:
        self.closed_with = (code, reason)
        self.ended.set()

    def abort(self) -> None:
        self.aborted = True
        self.ended.set()

    def ping(self) -> None:
        self.pings += 1

    async def take(self, count: int, within: float = 5.0) -> list[dict[str, Any]]:
        """The next `count` frames sent, waiting at most `within` seconds in all."""
        async with asyncio.timeout(within):
            return [await self.frames.get() for _ in range(count)]


class RecordingStream(Stream):
    """A Stream that also records what the hub offers it, in order, and signals each offer:
    ("frame", bytes), ("snapshot", body bytes) or ("batch", Batch)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.offers: list[tuple[str, Any]] = []
        self.offered = asyncio.Event()

    def offer(self, payload: bytes) -> None:
        self.offers.append(("frame", payload))
        self.offered.set()
        super().offer(payload)

    def offer_snapshot(self, body: bytes) -> None:
        self.offers.append(("snapshot", body))
        self.offered.set()
        super().offer_snapshot(body)

    def offer_batch(self, batch: Batch) -> None:
        self.offers.append(("batch", batch))
        self.offered.set()
        super().offer_batch(batch)

    def batches(self) -> list[dict[str, Any]]:
        """The readings frames' bodies offered so far, decoded: {"data": …, "events"?: …}."""
        return [orjson.loads(b"{%b}" % b.body) for kind, b in self.offers if kind == "batch"]

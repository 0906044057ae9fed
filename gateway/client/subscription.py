"""One subscription as an async iterator of typed events, with a bounded buffer.

The client's reader never waits for a consumer: it puts each event into the subscription's
buffer and moves on, so a slow consumer never makes the gateway see a slow client. The buffer
is bounded by the client's own lagging policy, the gateway's policy applied once more: past
`max_buffered` events, what is buffered is coalesced to the latest value per (device, metric)
and the latest state per device, behind one `Lagging(source="client")` notice saying how many
readings were dropped. A resync in the buffer supersedes everything before it. So a consumer
that stops iterating holds at most its fleet's latest state, never a growing backlog.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from gateway.client.frames import Device, DeviceEvent, Reading


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The current state of every device the subscription matches: its first event."""

    devices: tuple[Device, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """The stream could not continue where it left off (`reason`: the gateway restarted, the
    stream expired, a gap was seen): `snapshot` replaces everything the consumer holds, and
    events that happened meanwhile are not replayed."""

    reason: str
    snapshot: Snapshot


@dataclass(frozen=True, slots=True)
class Lagging:
    """Readings were coalesced to the latest value per (device, metric): `dropped` values were
    skipped. `source`: the gateway (this client fell behind its stream) or the client (the
    consumer fell behind this subscription's buffer)."""

    dropped: int
    source: Literal["gateway", "client"]


Event = Snapshot | Resync | Reading | DeviceEvent | Lagging


def compile_globs(patterns: Iterable[str]) -> re.Pattern[str]:
    """One regex for a set of globs (`*`, `?`, `[ab]`), case-sensitive: the gateway's rule."""
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


class Filter:
    """A subscription's device and metric globs, with memoised answers."""

    __slots__ = ("_devices", "_metrics", "_seen_devices", "_seen_metrics", "devices", "metrics")

    def __init__(self, devices: Iterable[str], metrics: Iterable[str] | None) -> None:
        self.devices = tuple(devices)
        self.metrics = None if metrics is None else tuple(metrics)
        if not self.devices:
            raise ValueError("subscribe needs at least one device pattern")
        self._devices = None if self.devices == ("*",) else compile_globs(self.devices)
        self._metrics = None if self.metrics is None else compile_globs(self.metrics)
        self._seen_devices: dict[str, bool] = {}
        self._seen_metrics: dict[str, bool] = {}

    def device(self, device: str) -> bool:
        if self._devices is None:
            return True
        found = self._seen_devices.get(device)
        if found is None:
            if len(self._seen_devices) > 100_000:
                self._seen_devices.clear()
            found = self._seen_devices[device] = self._devices.match(device) is not None
        return found

    def metric(self, metric: str) -> bool:
        if self._metrics is None:
            return True
        found = self._seen_metrics.get(metric)
        if found is None:
            if len(self._seen_metrics) > 100_000:
                self._seen_metrics.clear()
            found = self._seen_metrics[metric] = self._metrics.match(metric) is not None
        return found


class Subscription:
    """An async iterator of Events (and an async context manager that unsubscribes). Made by
    Client.subscribe; the client feeds it, the consumer reads it."""

    def __init__(
        self,
        devices: Iterable[str],
        metrics: Iterable[str] | None,
        max_buffered: int,
        on_close: Callable[[Subscription], Awaitable[None]],
    ) -> None:
        self.filter = Filter(devices, metrics)
        self.max_buffered = max(16, max_buffered)
        self._buffer: deque[Event] = deque()
        self._coalesce_at = self.max_buffered
        self._wake = asyncio.Event()
        self._on_close = on_close
        self._error: BaseException | None = None
        self.closed = False
        self.dropped = 0  # readings this buffer coalesced away (the client's own lagging)
        # Set by the client: the gateway's id for it, and the snapshot it still waits for
        # ("" for the first one, else the reason a resync is due). Events wait for it.
        self.id: str | None = None
        self.awaiting: str | None = ""

    # --- the consumer's side ---------------------------------------------------------------------

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while not self._buffer:
            if self._error is not None:
                raise self._error
            if self.closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        return self._buffer.popleft()

    @property
    def pending(self) -> int:
        """Events buffered and not yet read."""
        return len(self._buffer)

    async def close(self) -> None:
        """Unsubscribe (if still subscribed) and end the iteration."""
        if not self.closed:
            self.closed = True
            self._wake.set()
            await self._on_close(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- the client's side -----------------------------------------------------------------------

    def fail(self, error: BaseException) -> None:
        """End the iteration with `error` once what is buffered has been read."""
        if self._error is None and not self.closed:
            self._error = error
            self._wake.set()

    def end(self) -> None:
        """End the iteration (the client closed) once what is buffered has been read."""
        self.closed = True
        self._wake.set()

    def put(self, event: Event) -> None:
        buffer = self._buffer
        buffer.append(event)
        if len(buffer) > self._coalesce_at:
            self._coalesce()
        self._wake.set()

    def put_many(self, events: Iterable[Event]) -> None:
        buffer = self._buffer
        buffer.extend(events)
        if len(buffer) > self._coalesce_at:
            self._coalesce()
        self._wake.set()

    def _coalesce(self) -> None:
        """The client's lagging policy (module docstring): the latest per (device, metric) and
        per device, behind one Lagging notice; nothing before the newest resync."""
        items = list(self._buffer)
        head: list[Event] = []
        start = 0
        for i in range(len(items) - 1, -1, -1):
            if isinstance(items[i], Snapshot | Resync):
                head.append(items[i])
                start = i + 1
                break
        fresh = 0  # readings dropped by this pass; `earlier`: by passes before it, still told
        earlier = 0
        devices: dict[str, DeviceEvent] = {}
        readings: dict[tuple[str, str], Reading] = {}
        for item in items[:start]:
            if isinstance(item, Reading):
                fresh += 1
        for item in items[start:]:
            if isinstance(item, Reading):
                key = (item.device, item.metric)
                if key in readings:
                    fresh += 1
                    del readings[key]  # re-inserted below: the order of the latest values
                readings[key] = item
            elif isinstance(item, DeviceEvent):
                devices.pop(item.device.id, None)
                devices[item.device.id] = item
                if item.event == "removed":  # its earlier values must not bring it back
                    gone = [key for key in readings if key[0] == item.device.id]
                    for key in gone:
                        del readings[key]
                    fresh += len(gone)
            elif isinstance(item, Lagging):
                earlier += item.dropped
        self.dropped += fresh
        head.append(Lagging(fresh + earlier, "client"))
        self._buffer = deque([*head, *devices.values(), *readings.values()])
        # However large the fleet, coalescing again waits until the buffer has doubled.
        self._coalesce_at = max(self.max_buffered, 2 * len(self._buffer))

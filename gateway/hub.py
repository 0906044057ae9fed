"""Who is subscribed to what, and the batching that turns readings and device events into frames.

Readings and device events gather into the current batch; events are coalesced per device there
(the latest state wins). At flush, the batch is encoded once per distinct interest (streams with
the same subscriptions share one Interest) and the same bytes are offered to every stream holding
it: one frame per stream per flush, however many devices appeared, changed or went offline. A
new device, a status flip or a meta change costs one summary per flush and one encoding per
interest that wants the device, never work per client. Nothing here awaits.

Handing a flush to thousands of streams writes to thousands of sockets, and a batch of a fleet
coming online is large: the hand-over is done in slices of a few megabytes, one per pass of the
event loop, so ingest, heartbeats and timers run between them (the loop's lateness stays that of
one slice). Each stream still gets its frames in flush order. While a hand-over is under way the
next flush waits for it (unless the batch fills up): the batch grows, its events coalesce, and
clients get fewer, larger frames instead of a backlog. Too much left undelivered all the same and
the rest is handed over at once, which holds the loop (and so ingest) rather than grow memory.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

from gateway.config import WsConfig
from gateway.matching import Interest, InterestIndex
from gateway.models import Reading
from gateway.protocol import encode
from gateway.registry import Device
from gateway.stats import HubStats, SessionStats
from gateway.stream import REMOVED, Batch, DeviceEvents, Event, Stream

#: How much each connected client stretches the batch interval (see WsConfig).
INTERVAL_PER_CLIENT_S = 0.0001
#: Encoded snapshots kept for reuse until the next flush (see `shared`).
SHARED_MAX = 4
#: Payload bytes handed to streams per slice of a fan-out, each stream counting its frame's
#: size plus SLICE_STREAM_COST (the write): S2's 100 clients get a flush in one slice, a
#: 1 MB frame of a fleet coming online goes to 4 clients per slice (a few ms of writes).
SLICE_BYTES = 4 * 1024 * 1024
SLICE_STREAM_COST = 8192
#: Undelivered hand-overs allowed, in flushes' worth of every stream: past it the rest is
#: delivered at once.
MAX_UNDELIVERED_FLUSHES = 8


class _Delivery:
    """One flush's frame for one interest, on its way to the streams that held it then."""

    __slots__ = ("at", "batch", "streams")

    def __init__(self, batch: Batch, streams: list[Stream]) -> None:
        self.batch = batch
        self.streams = streams
        self.at = 0  # the next stream to hand it to


class Hub:
    def __init__(self, config: WsConfig) -> None:
        self._config = config
        self._interests: dict[frozenset[Any], Interest] = {}
        self._members: dict[Interest, set[Stream]] = {}
        self._stream_interest: dict[Stream, Interest | None] = {}
        self._index = InterestIndex()
        self._parked: dict[str, tuple[Stream, asyncio.TimerHandle]] = {}
        self._batch: list[Reading] = []
        self._events: DeviceEvents[Device] = DeviceEvents()
        # Devices removed during this batch: readings of theirs batched before the removal
        # (index in _batch) are left out, so no client sees a removed device come back.
        self._cuts: dict[str, int] | None = None
        self._shared: dict[Any, bytes] = {}
        self._deliveries: deque[_Delivery] = deque()
        self._undelivered = 0  # hand-overs left in _deliveries
        self._deliver_handle: asyncio.Handle | None = None
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = -math.inf  # the first reading never waits for an interval
        self._interval_min = config.batch_interval_ms / 1000
        self._interval_max = max(config.batch_interval_max_ms, config.batch_interval_ms) / 1000
        self.stats = HubStats()

    @property
    def streams(self) -> Iterable[Stream]:
        """Every stream, connected or parked."""
        return self._stream_interest.keys()

    def __len__(self) -> int:
        """Connected streams (parked ones are not connections)."""
        return len(self._stream_interest) - len(self._parked)

    def __contains__(self, stream: Stream) -> bool:
        """Connected or parked, not yet removed."""
        return stream in self._stream_interest

    # --- membership ------------------------------------------------------------------------------

    def add(self, stream: Stream) -> None:
        self._stream_interest[stream] = None

    def remove(self, stream: Stream) -> None:
        self._leave(stream)
        if stream in self._stream_interest:
            del self._stream_interest[stream]
            self.stats.departed.add(stream.stats)

    def totals(self) -> SessionStats:
        """Frames, bytes and drops over every stream, past and present (for /metrics)."""
        total = SessionStats()
        total.add(self.stats.departed)
        for stream in self._stream_interest:
            total.add(stream.stats)
        return total

    def resubscribe(self, stream: Stream) -> Interest | None:
        """Recompute a stream's interest from its subscriptions (after subscribe/unsubscribe).

        What was flushed before is delivered first, so a snapshot queued next never goes out
        ahead of older frames for the same stream."""
        self.deliver_pending()
        self._leave(stream)
        if not stream.subscriptions:
            self._stream_interest[stream] = None
            return None
        key = frozenset(stream.subscriptions.values())
        interest = self._interests.get(key)
        if interest is None:
            interest = self._interests[key] = Interest(key)
            self._members[interest] = set()
            self._index.add(interest)
        self._members[interest].add(stream)
        self._stream_interest[stream] = interest
        return interest

    def _leave(self, stream: Stream) -> None:
        interest = self._stream_interest.get(stream)
        if interest is None:
            return
        members = self._members[interest]
        members.discard(stream)
        if not members:
            # Last holder gone: drop the interest and its caches.
            del self._members[interest]
            del self._interests[interest.selectors]
            self._index.remove(interest)

    # --- parked streams (resume after reconnect) --------------------------------------------------

    def park(self, stream: Stream, window_s: float, max_parked: int) -> None:
        """Keep a dropped connection's stream subscribed for `window_s`, for a resume."""
        stream.parked = True
        while len(self._parked) >= max_parked:
            oldest = next(iter(self._parked))
            self._expire(oldest)
        handle = asyncio.get_running_loop().call_later(window_s, self._expire, stream.id)
        self._parked[stream.id] = (stream, handle)

    def parked_stream(self, stream_id: str) -> Stream | None:
        """The parked stream with this id, left in place."""
        entry = self._parked.get(stream_id)
        return entry[0] if entry is not None else None

    def unpark(self, stream: Stream) -> None:
        """A connection adopted this parked stream (Stream.adopt): it stays subscribed, and is
        connected again. Call before the adopt renames it."""
        entry = self._parked.pop(stream.id, None)
        if entry is not None:
            entry[1].cancel()

    def _expire(self, stream_id: str) -> None:
        entry = self._parked.pop(stream_id, None)
        if entry is not None:
            entry[1].cancel()
            self.remove(entry[0])

    @property
    def parked(self) -> int:
        return len(self._parked)

    # --- the batch -------------------------------------------------------------------------------

    def add_readings(self, readings: list[Reading]) -> None:
        """Add to the current batch; flush when full, otherwise schedule a flush."""
        if not readings:
            return
        self.stats.readings_in += len(readings)
        self._schedule()
        self._batch.extend(readings)
        if len(self._batch) >= self._config.batch_max_readings:
            self.flush()

    def device_event(self, device: Device, event: str) -> None:
        """Add a device's `status`, `meta` or `removed` event to the current batch; the device's
        state is read when the batch is flushed, so a device that changed several times in one
        batch is sent once, as it is then."""
        self.stats.events_in += 1
        self._schedule()
        self._events.add(device.id, event, device)
        if event == REMOVED:
            if self._cuts is None:
                self._cuts = {}
            self._cuts[device.id] = len(self._batch)

    def _schedule(self) -> None:
        if self._flush_handle is None and not self._batch and not self._events:
            # Runs once the broker link's reader callback has handed over everything it read from
            # the socket, so readings and events that came in together share one frame and a
            # lone one goes out without waiting.
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_when_due)

    def _flush_when_due(self) -> None:
        if self._deliveries:
            self._flush_handle = None  # _deliver flushes when the hand-over is done
            return
        loop = asyncio.get_running_loop()
        due = self._last_flush + self._interval()
        if loop.time() >= due:
            self._flush_handle = None
            self.flush()
        else:
            # Under sustained load, flush at most once per interval so frames stay large.
            self._flush_handle = loop.call_at(due, self._flush_now)

    def _interval(self) -> float:
        """The batch interval for the current fan-out: each frame is paid for once per client."""
        stretched = len(self) * INTERVAL_PER_CLIENT_S
        return min(self._interval_max, max(self._interval_min, stretched))

    def _flush_now(self) -> None:
        self._flush_handle = None
        if self._deliveries:
            return  # _deliver flushes when the hand-over is done
        self.flush()

    def flush(self) -> None:
        """Encode the current batch once per distinct interest and offer it to the streams."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch, pending = self._batch, self._events
        if not batch and not pending:
            return
        self._batch, self._events = [], DeviceEvents()
        self._shared.clear()  # what they were built from has changed: the batch says how
        if self._cuts is not None:
            cuts, self._cuts = self._cuts, None
            batch = [row for i, row in enumerate(batch) if i >= cuts.get(row[0], 0)]
        self._last_flush = asyncio.get_running_loop().time()
        self.stats.batches += 1
        # One summary per device and flush, read now: the latest state wins.
        events: list[tuple[str, Event]] = [
            (device.id, {"event": kind, "device": device.summary()})
            for kind, device in pending.items()
        ]
        if self._undelivered > MAX_UNDELIVERED_FLUSHES * len(self._stream_interest):
            self.deliver_pending()  # the streams cannot take it as fast as it comes: hold ingest
        members = self._members
        everything = self._index.everything
        if everything:
            shared = Batch.of(batch, [event for _, event in events])
            self.stats.encodings += 1
            for interest in everything:
                self._hand_over(shared, members[interest])
        if len(everything) < len(members):
            self._offer_filtered(batch, events)
        if pending:
            for device in pending.removed():
                self._index.forget(device)
        self._deliver()

    def _hand_over(self, batch: Batch, streams: set[Stream]) -> None:
        if streams:
            self._deliveries.append(_Delivery(batch, list(streams)))
            self._undelivered += len(streams)

    def _deliver(self, limit: float = SLICE_BYTES) -> None:
        """Offer flushed frames to their streams, in order, until `limit` bytes were handed
        over; the rest continues on the loop's next pass."""
        if self._deliver_handle is not None:
            self._deliver_handle.cancel()
            self._deliver_handle = None
        deliveries, budget = self._deliveries, limit
        while deliveries:
            delivery = deliveries[0]
            batch, streams, at = delivery.batch, delivery.streams, delivery.at
            cost = len(batch.body) + SLICE_STREAM_COST
            end = len(streams)
            while at < end:
                if budget <= 0:
                    self._undelivered -= at - delivery.at
                    delivery.at = at
                    loop = asyncio.get_running_loop()
                    self._deliver_handle = loop.call_soon(self._deliver)
                    return
                streams[at].offer_batch(batch)
                at += 1
                budget -= cost
            self._undelivered -= end - delivery.at
            deliveries.popleft()
        if (self._batch or self._events) and self._flush_handle is None:
            # A flush that waited for this hand-over: due now (or at its interval).
            loop = asyncio.get_running_loop()
            self._flush_handle = loop.call_soon(self._flush_when_due)

    def deliver_pending(self) -> None:
        """Offer everything flushed to its streams now."""
        if self._deliveries:
            self._deliver(math.inf)

    def _offer_filtered(self, batch: list[Reading], events: list[tuple[str, Event]]) -> None:
        """The batch for interests that do not match everything: only their devices' events and
        rows, encoded once per interest."""
        for_device = self._index.for_device
        chosen: dict[Interest, tuple[list[Reading], list[Event]]] = {}
        for device, event in events:
            for interest in for_device(device):
                part = chosen.get(interest)
                if part is None:
                    chosen[interest] = part = ([], [])
                part[1].append(event)
        for row in batch:
            for interest in for_device(row[0]):
                if interest.filters_metrics and not interest.wants(row[0], row[1]):
                    continue
                part = chosen.get(interest)
                if part is None:
                    chosen[interest] = part = ([], [])
                part[0].append(row)
        members = self._members
        for interest, (rows, interest_events) in chosen.items():
            shared = Batch.of(rows, interest_events)
            self.stats.encodings += 1
            self._hand_over(shared, members[interest])

    def shared(self, key: Any, build: Callable[[], bytes]) -> bytes:
        """Bytes built once for every stream that asks with `key` until the next flush.

        For snapshots: one taken since the last flush is still exact for a new subscriber, since
        everything that changed after it is in the current batch, which the subscriber gets next.
        A few are kept (they can be megabytes); clients reconnecting together share them.
        """
        value = self._shared.get(key)
        if value is None:
            if len(self._shared) >= SHARED_MAX:
                del self._shared[next(iter(self._shared))]
            value = self._shared[key] = build()
        return value

    def device_removed(self, device: Device) -> None:
        """Tell the streams that want `device` it is gone (`removed`, in the current batch); its
        matches are forgotten once that batch is flushed (they say who gets the removal)."""
        self.device_event(device, "removed")

    def broadcast(self, frame: dict[str, object]) -> None:
        """Offer one frame to every connected stream (gateway events; not sequenced)."""
        self.flush()
        payload = encode(frame)
        for stream in self._stream_interest:
            stream.offer(payload)  # a parked stream drops it: its next hello says the same

"""Who is subscribed to what, and the batching that turns readings into shared frames.

Readings gather into the current batch. At flush, the batch is encoded once per distinct interest
(clients with the same subscriptions share one Interest) and the same bytes are offered to every
session holding it. Device and gateway events are encoded once and offered to every session that
wants the device. Nothing here awaits.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Iterable

import orjson

from gateway.config import WsConfig
from gateway.matching import Interest, InterestIndex, Selector
from gateway.models import Reading
from gateway.protocol import encode
from gateway.registry import Device
from gateway.session import Session
from gateway.stats import HubStats, SessionStats

#: How much each connected client stretches the batch interval (see WsConfig).
INTERVAL_PER_CLIENT_S = 0.0001


class Hub:
    def __init__(self, config: WsConfig) -> None:
        self._config = config
        self._interests: dict[frozenset[Selector], Interest] = {}
        self._members: dict[Interest, set[Session]] = {}
        self._session_interest: dict[Session, Interest | None] = {}
        self._index = InterestIndex()
        self._parked: dict[str, tuple[Session, asyncio.TimerHandle]] = {}
        self._batch: list[Reading] = []
        self._flush_handle: asyncio.Handle | None = None
        self._last_flush = -math.inf  # the first reading never waits for an interval
        self._interval_min = config.batch_interval_ms / 1000
        self._interval_max = max(config.batch_interval_max_ms, config.batch_interval_ms) / 1000
        self.stats = HubStats()

    @property
    def sessions(self) -> Iterable[Session]:
        return self._session_interest.keys()

    def __len__(self) -> int:
        """Connected sessions (parked streams are not connections)."""
        return len(self._session_interest) - len(self._parked)

    def __contains__(self, session: Session) -> bool:
        """Connected or parked, not yet removed."""
        return session in self._session_interest

    # --- membership ------------------------------------------------------------------------------

    def add(self, session: Session) -> None:
        self._session_interest[session] = None

    def remove(self, session: Session) -> None:
        self._leave(session)
        if session in self._session_interest:
            del self._session_interest[session]
            self.stats.departed.add(session.stats)

    def totals(self) -> SessionStats:
        """Frames, bytes and drops over every session, past and present (for /metrics)."""
        total = SessionStats()
        total.add(self.stats.departed)
        for session in self._session_interest:
            total.add(session.stats)
        return total

    def resubscribe(self, session: Session) -> Interest | None:
        """Recompute a session's interest from its subscriptions (after subscribe/unsubscribe)."""
        self._leave(session)
        if not session.subscriptions:
            self._session_interest[session] = None
            return None
        key = frozenset(session.subscriptions.values())
        interest = self._interests.get(key)
        if interest is None:
            interest = self._interests[key] = Interest(key)
            self._members[interest] = set()
            self._index.add(interest)
        self._members[interest].add(session)
        self._session_interest[session] = interest
        return interest

    def _leave(self, session: Session) -> None:
        interest = self._session_interest.get(session)
        if interest is None:
            return
        members = self._members[interest]
        members.discard(session)
        if not members:
            # Last holder gone: drop the interest and its caches.
            del self._members[interest]
            del self._interests[interest.selectors]
            self._index.remove(interest)

    # --- parked streams (resume after reconnect) --------------------------------------------------

    def park(self, session: Session, window_s: float, max_parked: int) -> None:
        """Keep a dropped connection's stream subscribed for `window_s`, for a resume."""
        session.parked = True
        while len(self._parked) >= max_parked:
            oldest = next(iter(self._parked))
            self._expire(oldest)
        handle = asyncio.get_running_loop().call_later(window_s, self._expire, session.id)
        self._parked[session.id] = (session, handle)

    def parked_stream(self, session_id: str) -> Session | None:
        """The parked stream with this id, left in place."""
        entry = self._parked.get(session_id)
        return entry[0] if entry is not None else None

    def unpark(self, session_id: str) -> Session | None:
        """Take a parked stream out of the hub for adoption by a new connection."""
        entry = self._parked.pop(session_id, None)
        if entry is None:
            return None
        entry[1].cancel()
        self.remove(entry[0])
        return entry[0]

    def _expire(self, session_id: str) -> None:
        entry = self._parked.pop(session_id, None)
        if entry is not None:
            entry[1].cancel()
            self.remove(entry[0])

    @property
    def parked(self) -> int:
        return len(self._parked)

    # --- readings --------------------------------------------------------------------------------

    def add_readings(self, readings: list[Reading]) -> None:
        """Add to the current batch; flush when full, otherwise schedule a flush."""
        if not readings:
            return
        self.stats.readings_in += len(readings)
        if not self._batch and self._flush_handle is None:
            # Runs once the broker link's reader callback has handed over everything it read from
            # the socket, so readings that came in together share one frame and a lone reading
            # goes out without waiting.
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush_when_due)
        self._batch.extend(readings)
        if len(self._batch) >= self._config.batch_max_readings:
            self.flush()

    def _flush_when_due(self) -> None:
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
        self.flush()

    def flush(self) -> None:
        """Encode the current batch once per distinct interest and offer it to the sessions."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        batch = self._batch
        if not batch:
            return
        self._batch = []
        self._last_flush = asyncio.get_running_loop().time()
        self.stats.batches += 1
        members = self._members
        if self._index.everything:
            everything = orjson.dumps(batch)
            self.stats.encodings += 1
            for interest in self._index.everything:
                for session in members[interest]:
                    session.offer_readings(everything, batch)
        if len(self._index.everything) == len(members):
            return  # nobody filters: no need to look at single readings
        chosen: dict[Interest, list[Reading]] = {}
        for_device = self._index.for_device
        for row in batch:
            for interest in for_device(row[0]):
                if interest.filters_metrics and not interest.wants(row[0], row[1]):
                    continue
                rows = chosen.get(interest)
                if rows is None:
                    chosen[interest] = rows = []
                rows.append(row)
        for interest, rows in chosen.items():
            data = orjson.dumps(rows)
            self.stats.encodings += 1
            for session in members[interest]:
                session.offer_readings(data, rows)

    # --- events ----------------------------------------------------------------------------------

    def device_event(self, device: Device, event: str) -> None:
        """Tell sessions that want `device` about a status or meta change."""
        interests = [*self._index.everything, *self._index.for_device(device.id)]
        if not interests:
            return
        # Readings already batched happened before this event: send them first, keeping order.
        self.flush()
        payload = encode({"type": "device", "event": event, "device": device.summary()})
        for interest in interests:
            for session in self._members[interest]:
                session.offer(payload)

    def device_removed(self, device: Device) -> None:
        """Tell sessions that want `device` it is gone (`removed`), then forget its matches."""
        self.device_event(device, "removed")
        self._index.forget(device.id)

    def broadcast(self, frame: dict[str, object]) -> None:
        """Offer one frame to every connected session (gateway events)."""
        self.flush()
        payload = encode(frame)
        for session in self._session_interest:
            session.offer(payload)

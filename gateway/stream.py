"""One client's stream: its subscriptions and the frames that carry their state, numbered by seq.

A stream is what a connection is subscribed to and everything queued or sent on it: the sequenced
`readings` and `snapshot` frames (docs/protocol.md, "The stream"), the replies waiting to go out,
the coalescing of a client that falls behind, and the resume buffer of frames already sent. It
outlives its connection: when the network drops, the hub parks it, and a reconnecting client
adopts it (`adopt`) and carries on. The socket side of a connection (its writer task, send timing,
heartbeat) is the `Session` it is attached to (gateway/session.py).

`offer_*` never awaits, so the hub can hand a frame to thousands of streams without waiting on
any of them. A frame with nothing queued ahead of it goes straight to a socket that can take it at
once (`Session.write_now`); everything else waits in the outbox, bounded in bytes by
`ws.outbox_max_bytes`, for the session's writer. Every frame counts against that budget: past
it, readings frames coalesce to the latest value per (device, metric) and the latest state per
device, and any other frame closes the connection (4002) rather than queue (docs/protocol.md,
"Flow control").

Memory per idle connection is what limits how many clients one gateway holds (S4 in
docs/performance.md), so an idle stream owns no buffers: the outbox, the coalescing state and the
resume buffer are created when first needed.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Generic, TypeVar

import orjson

from gateway.auth import Principal
from gateway.config import WsConfig
from gateway.matching import Selector
from gateway.models import Reading
from gateway.protocol import (
    READINGS,
    SNAPSHOT,
    CloseCode,
    CloseReason,
    batch_body,
    coalesced_body,
    encode,
    sequenced_frame,
)
from gateway.session import Session, Socket
from gateway.stats import SessionStats

#: The `event` of a device the gateway forgot (docs/protocol.md, "readings").
REMOVED = "removed"

T = TypeVar("T")

#: A device event as it travels: {"event": kind, "device": summary}.
Event = dict[str, Any]


class DeviceEvents(Generic[T]):
    """Device events coalesced per device, in the order devices first appeared: the latest
    event of a device replaces the one before, except that a device removed and then seen again
    keeps its removal ahead of its return (the client must forget the old one first)."""

    __slots__ = ("_gone", "_live")

    def __init__(self) -> None:
        self._live: dict[str, tuple[str, T]] = {}
        self._gone: list[tuple[str, T]] | None = None  # removals superseded by a return

    def __len__(self) -> int:
        return len(self._live) + len(self._gone or ())

    def add(self, device: str, kind: str, item: T) -> None:
        live = self._live
        if kind != REMOVED:
            before = live.get(device)
            if before is not None and before[0] == REMOVED:
                if self._gone is None:
                    self._gone = []
                self._gone.append(live.pop(device))
        live[device] = (kind, item)

    def removed(self) -> Iterator[str]:
        """The devices whose latest event is their removal."""
        return (device for device, (kind, _) in self._live.items() if kind == REMOVED)

    def items(self) -> list[tuple[str, T]]:
        """(kind, item) per event, removals that were followed by a return first."""
        return [*(self._gone or ()), *self._live.values()]


class Batch:
    """One flush's frame for one interest, shared by every stream holding that interest: the
    encoded body of the `readings` frame (without type and seq), and the rows and events it holds
    for coalescing (None for a frame replayed from the resume buffer: decoded only if it must
    coalesce)."""

    __slots__ = ("body", "events", "rows")

    def __init__(self, body: bytes, rows: list[Reading] | None, events: list[Event] | None) -> None:
        self.body = body
        self.rows = rows
        self.events = events

    @classmethod
    def of(cls, rows: list[Reading], events: list[Event]) -> Batch:
        data = orjson.dumps(rows)
        return cls(batch_body(data, orjson.dumps(events) if events else None), rows, events)

    def parts(self) -> tuple[list[Reading], list[Event], int]:
        """Rows, events and readings already dropped (a coalesced frame being coalesced again)."""
        if self.rows is not None:
            return self.rows, self.events or [], 0
        frame = orjson.loads(b"{%b}" % self.body)
        # Rows come back as lists, not tuples: coalescing and encoding treat both alike.
        return frame["data"], frame.get("events", []), frame.get("dropped", 0)


class _Snapshot:
    """A snapshot frame waiting to be sent: sequenced, but never coalesced."""

    __slots__ = ("body",)

    def __init__(self, body: bytes) -> None:
        self.body = body


_Item = bytes | Batch | _Snapshot


def _size(item: _Item) -> int:
    return len(item) if isinstance(item, bytes) else len(item.body)


class _Lag:
    """A client that fell behind: the latest row per (device, metric) and the latest event per
    device of everything not yet sent, and how many readings that replaced."""

    __slots__ = ("dropped", "events", "rows", "since")

    def __init__(self, since: float) -> None:
        self.since = since
        self.rows: dict[str, dict[str, Reading]] = {}
        self.events: DeviceEvents[Event] = DeviceEvents()
        self.dropped = 0

    def merge(self, rows: Iterable[Reading], events: Iterable[Event]) -> int:
        """Fold one batch in (its events first, as the client would apply them); return how many
        readings were replaced or went with a removed device."""
        dropped = 0
        lag_rows = self.rows
        for event in events:
            device, kind = event["device"]["id"], event["event"]
            if kind == REMOVED:
                dropped += len(lag_rows.pop(device, ()))
            self.events.add(device, kind, event)
        for row in rows:
            metrics = lag_rows.get(row[0])
            if metrics is None:
                lag_rows[row[0]] = {row[1]: row}
            elif metrics.setdefault(row[1], row) is not row:
                metrics[row[1]] = row
                dropped += 1
        self.dropped += dropped
        return dropped

    def body(self) -> bytes:
        rows = [row for metrics in self.rows.values() for row in metrics.values()]
        events = [event for _, event in self.events.items()]
        return coalesced_body(
            self.dropped, orjson.dumps(rows), orjson.dumps(events) if events else None
        )


class Stream:
    """See the module docstring. `id` is the resume handle the client got in `hello`."""

    __slots__ = (
        "_closing",
        "_lag",
        "_next_subscription",
        "_outbox",
        "_queued",
        "_sent",
        "_sent_bytes",
        "_seq",
        "config",
        "id",
        "on_evict",
        "parked",
        "principal",
        "session",
        "stats",
        "subscriptions",
    )

    def __init__(
        self,
        id: str,
        config: WsConfig,
        principal: Principal | None = None,
        on_evict: Callable[[str], None] | None = None,
    ) -> None:
        self.id = id
        self.config = config
        self.principal = principal  # set once authenticated
        self.on_evict = on_evict
        self.subscriptions: dict[str, Selector] = {}
        self.stats = SessionStats()
        self.session: Session | None = None  # the connection writing this stream, if any
        self.parked = False  # its connection is gone; sequenced frames queue up for a resume
        self._next_subscription = 0
        self._seq = 0  # the last sequenced frame sent
        self._outbox: deque[_Item] | None = None  # None while empty
        self._queued = 0  # bytes in the outbox
        self._lag: _Lag | None = None  # while coalescing
        # Sequenced frames already sent, kept for a reconnecting client to resume from (bounded):
        # (seq, kind, body) tuples of bytes and ints, which the garbage collector does not track,
        # so a full buffer on every connection adds nothing to gen-2 collections (the bench saw
        # 50-140 ms pauses before), and `body` is shared with every stream of the same interest.
        self._sent: deque[tuple[int, bytes, bytes]] | None = None
        self._sent_bytes = 0
        self._closing: tuple[int, str] | None = None

    @property
    def queued_bytes(self) -> int:
        return self._queued

    @property
    def seq(self) -> int:
        return self._seq

    @property
    def closing(self) -> bool:
        """The gateway decided to close this stream's connection (eviction, shutdown, bad auth)."""
        return self._closing is not None

    @property
    def close_code(self) -> tuple[int, str] | None:
        return self._closing

    def new_subscription_id(self) -> str:
        self._next_subscription += 1
        return f"s{self._next_subscription}"

    # --- its connection --------------------------------------------------------------------------

    def attach(self, socket: Socket, now: float) -> Session:
        """The connection is up: write this stream to `socket` from now on."""
        session = self.session = Session(self, socket, now)
        if not self.idle:
            session.wake()  # a writer only when there is something to write
        return session

    def detached(self, session: Session) -> None:
        if self.session is session:
            self.session = None

    # --- producers: never await ------------------------------------------------------------------

    def offer(self, payload: bytes) -> None:
        """Queue a reply or notice (not sequenced). Past the byte budget it is not queued: the
        connection is closed with 4002. A parked stream drops it (nobody asked on this stream's
        next connection)."""
        if self._closing is not None or self.parked:
            return
        if self._write_now(payload):
            return
        self._queue(payload)

    def offer_frame(self, frame: dict[str, object]) -> None:
        self.offer(encode(frame))

    def offer_snapshot(self, body: bytes) -> None:
        """Queue a snapshot (`body`: the frame without type and seq, see protocol.snapshot_body)."""
        if self._closing is not None:
            return
        if self._write_sequenced(SNAPSHOT, body):
            return
        self._queue(_Snapshot(body))

    def offer_batch(self, batch: Batch) -> None:
        """Queue one flush's readings and events; `batch` is shared with other streams."""
        if self._closing is not None:
            return
        if self._lag is None and self._queued + len(batch.body) <= self.config.outbox_max_bytes:
            if self._write_sequenced(READINGS, batch.body):
                return
            self._append(batch)
            return
        rows, events, _ = batch.parts()
        self._coalesce(rows, events)

    def _write_sequenced(self, kind: bytes, body: bytes) -> bool:
        if self._outbox or not self._write_now(sequenced_frame(kind, self._seq + 1, body)):
            return False
        self._seq += 1
        self._remember(self._seq, kind, body)
        return True

    def _write_now(self, payload: bytes) -> bool:
        """Send `payload` at once if nothing is queued or coalesced ahead of it and the session
        can take it without waiting. Most frames to a client that keeps up go this way: a writer
        task woken for each one cost about a third of the fan-out CPU (docs/performance.md)."""
        session = self.session
        if session is None or self._outbox or self._lag is not None or self.parked:
            return False
        return session.write_now(payload)

    def _queue(self, item: _Item) -> None:
        """Queue a frame that cannot be coalesced, unless the budget is already spent."""
        if self._queued > self.config.outbox_max_bytes:
            self.evict(CloseCode.OUTBOX_OVERFLOW, CloseReason.OUTBOX_OVERFLOW)
            return
        self._append(item)

    def _append(self, item: _Item) -> None:
        if self._outbox is None:
            self._outbox = deque()
        self._outbox.append(item)
        self._queued += _size(item)
        if self._queued > self.stats.outbox_peak_bytes:
            self.stats.outbox_peak_bytes = self._queued
        if self.session is not None:
            self.session.wake()

    def _coalesce(self, rows: list[Reading], events: list[Event]) -> None:
        now = time.monotonic()
        lag = self._lag
        if lag is None:
            lag = self._lag = _Lag(now)
            # Fold every readings frame still queued into the coalesced state; snapshots and
            # replies stay queued, and go out before it (docs/protocol.md says why that is safe).
            kept: deque[_Item] = deque()
            for item in self._outbox or ():
                if isinstance(item, Batch):
                    self._queued -= len(item.body)
                    folded_rows, folded_events, carried = item.parts()
                    self.stats.readings_dropped += lag.merge(folded_rows, folded_events)
                    lag.dropped += carried
                else:
                    kept.append(item)
            self._outbox = kept or None
        self.stats.readings_dropped += lag.merge(rows, events)
        if self.session is not None:
            self.session.wake()
        # A parked stream has no reader to wait for: it coalesces until resumed or expired.
        if not self.parked and now - lag.since > self.config.slow_client_timeout_s:
            self.evict(CloseCode.SLOW_CONSUMER, CloseReason.SLOW_CONSUMER)

    def evict(self, code: int, reason: str, last_words: bytes | None = None) -> None:
        """Close the connection with `code`, sending nothing queued before; `last_words` (an
        error frame saying why) goes out just before the close."""
        if self._closing is None:
            self._closing = (code, reason)
            self._outbox = deque([last_words]) if last_words is not None else None
            self._queued = len(last_words or b"")
            self._lag = None
            if self.session is not None:
                self.session.wake()
            if self.on_evict is not None:
                self.on_evict(reason)

    def send_timed_out(self) -> None:
        """The session cut the transport after one send blocked too long: nothing more goes out.
        Counted even when the stream was already being closed (a close frame cannot get past
        the blocked send: this is what ended the connection)."""
        if self._closing is None:
            self._closing = (CloseCode.SLOW_CONSUMER, CloseReason.SEND_TIMEOUT)
        if self.on_evict is not None:
            self.on_evict(CloseReason.SEND_TIMEOUT)

    # --- the writer's side -----------------------------------------------------------------------

    def next_payload(self) -> bytes | None:
        """The next frame to send (sequenced ones get their seq now), or None when all is sent."""
        outbox = self._outbox
        if outbox:
            item = outbox.popleft()
            if not outbox:
                self._outbox = None  # an idle stream keeps no deque
            if isinstance(item, bytes):
                self._queued -= len(item)
                return item
            self._queued -= len(item.body)
            return self._number(READINGS if isinstance(item, Batch) else SNAPSHOT, item.body)
        lag = self._lag
        if lag is not None:
            self._lag = None
            return self._number(READINGS, lag.body())
        return None

    @property
    def idle(self) -> bool:
        """Nothing queued, coalesced or to close (the writer may end)."""
        return self._outbox is None and self._lag is None and self._closing is None

    def last_words(self) -> list[bytes]:
        """What an evicted stream still sends before its close frame."""
        return [item for item in self._outbox or () if isinstance(item, bytes)]

    def _number(self, kind: bytes, body: bytes) -> bytes:
        self._seq += 1
        self._remember(self._seq, kind, body)
        return sequenced_frame(kind, self._seq, body)

    def _remember(self, seq: int, kind: bytes, body: bytes) -> None:
        sent = self._sent
        if sent is None:
            sent = self._sent = deque()
        sent.append((seq, kind, body))
        self._sent_bytes += len(body)
        while self._sent_bytes > self.config.resume_buffer_bytes:
            self._sent_bytes -= len(sent.popleft()[2])

    # --- resume ----------------------------------------------------------------------------------

    def can_replay_after(self, last_seq: int) -> bool:
        """Every sequenced frame after the client's `last_seq` is still at hand (sent and in the
        resume buffer, or not sent yet), and `last_seq` is one this stream did send."""
        if self._closing is not None or not 0 <= last_seq <= self._seq:
            return False
        if last_seq == self._seq:
            return True
        # Seq numbers in the buffer are contiguous and end at self._seq.
        sent = self._sent
        return sent is not None and len(sent) > 0 and sent[0][0] <= last_seq + 1

    def adopt(self, fresh: Stream, last_seq: int, reply: bytes) -> bool:
        """Continue this (parked) stream on `fresh`'s connection, after the client's `last_seq`.

        True when every sequenced frame after `last_seq` is still at hand: `fresh`'s own queued
        frames (its hello, replies) go first, then `reply`, then the frames the client missed
        with their seq numbers, then what this stream queued while parked. This stream takes
        `fresh`'s id (the handle the client was given last) and its session. Replies this stream
        held for its old connection are dropped: they answer requests of a connection that is
        gone. False (and nothing changed) when the gap cannot be filled or `fresh` already
        started a stream of its own.
        """
        if fresh._seq or fresh.subscriptions or not self.can_replay_after(last_seq):
            return False
        replay: deque[_Item] = deque(
            item for item in fresh._outbox or () if isinstance(item, bytes)
        )
        replay.append(reply)
        kept: deque[tuple[int, bytes, bytes]] = deque()
        for seq, kind, body in self._sent or ():
            if seq <= last_seq:
                kept.append((seq, kind, body))
            else:
                replay.append(Batch(body, None, None) if kind == READINGS else _Snapshot(body))
        replay.extend(item for item in self._outbox or () if not isinstance(item, bytes))
        self._outbox = replay
        self._queued = sum(_size(item) for item in replay)
        self._seq = last_seq
        self._sent = kept or None
        self._sent_bytes = sum(len(body) for _, _, body in kept)
        if self._lag is not None:
            self._lag.since = time.monotonic()  # the new connection gets its own time to catch up
        self.id = fresh.id
        self.on_evict = fresh.on_evict
        self.parked = False
        session, fresh.session = fresh.session, None
        fresh._outbox, fresh._queued = None, 0
        self.session = session
        if session is not None:
            session.switch(self)
        return True

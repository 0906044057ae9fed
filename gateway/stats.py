"""The gateway's counters: one `GatewayStats` made of parts, each counted by one service.

A service creates its part and is the only code that increments it (the part's docstring names
the owner); `Runtime` gathers the parts into `GatewayStats`, and metrics.py reads them at scrape
time. Counters are plain integers, Counters and bucket lists: the hot paths pay an attribute
increment, never a metric-library call (metrics.py is the only module that imports
prometheus_client). Nothing here imports the rest of the gateway.
"""

from __future__ import annotations

import bisect
from collections import Counter
from dataclasses import dataclass, field


@dataclass(slots=True)
class IngestStats:
    """MQTT messages by outcome, and what was refused by reason. Owner: pipeline.Pipeline."""

    messages: Counter[tuple[str, str]] = field(default_factory=Counter)  # (convention, outcome)
    decode_errors: Counter[tuple[str, str]] = field(default_factory=Counter)  # (convention, reason)
    #: messages conventions asked to send (Sparkplug rebirth requests): (convention, sent|dropped)
    requests: Counter[tuple[str, str]] = field(default_factory=Counter)
    peer_results: int = 0  # command results for another instance's commands (a cluster)


@dataclass(slots=True)
class LinkStats:
    """The broker link's connections. Owner: ingest.BrokerLink."""

    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    message_errors: int = 0  # messages dropped because handling them raised (a bug)


@dataclass(slots=True)
class RegistryStats:
    """What the registry's caps refused, and the devices it forgot. Owner: registry.Registry."""

    devices_refused: int = 0
    metrics_refused: int = 0
    devices_forgotten: int = 0


@dataclass(slots=True)
class SessionStats:
    """What one client's stream sent and dropped, and the most bytes it ever had queued.
    Owner: that stream.Stream (its session counts the frames it sends for it)."""

    frames_sent: int = 0
    bytes_sent: int = 0
    readings_dropped: int = 0
    outbox_peak_bytes: int = 0

    def sent(self, payload: bytes) -> None:
        self.frames_sent += 1
        self.bytes_sent += len(payload)

    def add(self, other: SessionStats) -> None:
        self.frames_sent += other.frames_sent
        self.bytes_sent += other.bytes_sent
        self.readings_dropped += other.readings_dropped
        self.outbox_peak_bytes = max(self.outbox_peak_bytes, other.outbox_peak_bytes)


@dataclass(slots=True)
class HubStats:
    """Batching and fan-out, and the sessions that left. Owner: hub.Hub."""

    batches: int = 0
    readings_in: int = 0
    events_in: int = 0  # device events batched (before coalescing)
    encodings: int = 0
    departed: SessionStats = field(default_factory=SessionStats)  # streams no longer here


@dataclass(slots=True)
class ConnectionStats:
    """WebSocket connections refused before the upgrade and closed by the gateway, and other
    HTTP requests refused by the browser rules, by reason. Owner: admission.Admission."""

    refused: Counter[str] = field(default_factory=Counter)
    closed: Counter[str] = field(default_factory=Counter)  # by protocol.CloseReason
    requests_refused: Counter[str] = field(default_factory=Counter)  # host | origin | content_type


#: Command round trip buckets, publish to the device's result (seconds).
RTT_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)


@dataclass(slots=True)
class Buckets:
    """A histogram as plain counts: `counts[i]` observations <= `bounds[i]` (and above the
    previous bound); the last count is above every bound."""

    bounds: tuple[float, ...]
    counts: list[int] = field(init=False)
    total: float = 0.0  # the sum of every observed value

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.bounds) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value


@dataclass(slots=True)
class CommandStats:
    """Command outcomes, refusals by code, and round trips. Owner: control.CommandService."""

    outcomes: Counter[str] = field(default_factory=Counter)  # ok|error|timeout|unknown|unconfirmed
    refused: Counter[str] = field(default_factory=Counter)  # by error code: nothing published
    rtt: Buckets = field(default_factory=lambda: Buckets(RTT_BUCKETS_S))


#: Event-loop lateness buckets (seconds): how late a 10 ms timer ran.
LATENESS_BUCKETS_S = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


@dataclass(slots=True)
class LoopStats:
    """How late the event loop runs timers. Owner: runtime.Runtime (the janitor's once-a-second
    `lag_s`; the loop sampler's 10 ms ticks: every tick's lateness and the worst since start)."""

    lag_s: float = 0.0
    lateness: Buckets = field(default_factory=lambda: Buckets(LATENESS_BUCKETS_S))
    lateness_max_s: float = 0.0

    def late(self, seconds: float) -> None:
        self.lateness.observe(seconds)
        if seconds > self.lateness_max_s:
            self.lateness_max_s = seconds


@dataclass(slots=True)
class GatewayStats:
    """Every part, gathered once by Runtime for metrics.py (the store's part joins here)."""

    ingest: IngestStats
    link: LinkStats
    registry: RegistryStats
    hub: HubStats
    connections: ConnectionStats
    commands: CommandStats
    loop: LoopStats

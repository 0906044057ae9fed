"""Prometheus metrics, rendered at scrape time from the counters the services already keep.

Hot paths count with plain integers (gateway/stats.py); this collector only reads them, and the
gauges it needs from the services, turning them into metric families when /metrics is scraped, so
a reading costs no metric-library call. No per-device or per-client labels. This is the only
module that imports prometheus_client.
"""

from __future__ import annotations

import hmac
import math
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from gateway import keys
from gateway.control import CommandService
from gateway.hub import Hub
from gateway.registry import Registry
from gateway.stats import Buckets, GatewayStats
from gateway.status import GatewayStatus
from gateway.store import HistoryStore
from gateway.writer_group import WriterGroup


class GatewayCollector(Collector):
    def __init__(
        self,
        stats: GatewayStats,
        status: GatewayStatus,
        registry: Registry,
        hub: Hub,
        commands: CommandService,
        history: HistoryStore,
        writers: WriterGroup | None = None,
    ) -> None:
        self._history = history
        self._writers = writers
        self._stats = stats
        self._status = status
        self._registry = registry
        self._hub = hub
        self._commands = commands

    def collect(self) -> Iterator[Metric]:
        stats, hub = self._stats, self._hub
        # Which process this is, as an info metric rather than a label on every series: the
        # default id changes on every start, and a label that changes would start new series
        # each time. Join it on Prometheus's own `instance` target label where it is needed.
        info = GaugeMetricFamily(
            "iotgw_instance_info",
            "This gateway process: cluster.instance_id and the version (always 1)",
            labels=["instance_id", "version"],
        )
        info.add_metric([self._status.instance, self._status.version], 1)
        yield info
        yield _counter(
            "iotgw_mqtt_messages", "MQTT messages received", ["convention", "outcome"],
            stats.ingest.messages,
        )  # fmt: skip
        yield _counter(
            "iotgw_decode_errors", "Messages or parts refused", ["convention", "reason"],
            stats.ingest.decode_errors,
        )  # fmt: skip
        yield _counter(
            "iotgw_convention_requests",
            "Messages conventions sent on their own (Sparkplug rebirth requests), or dropped "
            "while the broker link was down or its queue full",
            ["convention", "outcome"],
            stats.ingest.requests,
        )
        yield GaugeMetricFamily(
            "iotgw_broker_connected",
            "1 when linked to the broker",
            value=int(self._status.broker_connected),
        )
        yield CounterMetricFamily(
            "iotgw_broker_connects", "Successful broker connections", value=stats.link.connects
        )
        yield CounterMetricFamily(
            "iotgw_broker_connect_failures",
            "Failed or lost broker links",
            value=stats.link.connect_failures,
        )
        yield CounterMetricFamily(
            "iotgw_message_errors",
            "MQTT messages dropped because handling them raised (a bug; see the log)",
            value=stats.link.message_errors,
        )
        by_status = Counter(d.status for d in self._registry)
        devices = GaugeMetricFamily("iotgw_devices", "Known devices by status", labels=["status"])
        for status in ("online", "offline", "stale", "unknown"):
            devices.add_metric([status], by_status[status])
        yield devices
        yield CounterMetricFamily(
            "iotgw_devices_refused",
            "Devices refused by the registry cap",
            value=stats.registry.devices_refused,
        )
        yield CounterMetricFamily(
            "iotgw_devices_forgotten",
            "Devices forgotten: withdrawn, silent past registry.forget_after_s, or by an admin",
            value=stats.registry.devices_forgotten,
        )
        yield CounterMetricFamily(
            "iotgw_metrics_refused",
            "Metrics refused by the per-device cap",
            value=stats.registry.metrics_refused,
        )
        yield GaugeMetricFamily("iotgw_ws_clients", "Connected WebSocket clients", value=len(hub))
        yield CounterMetricFamily(
            "iotgw_readings", "Readings batched for clients", value=stats.hub.readings_in
        )
        yield CounterMetricFamily("iotgw_batches", "Batches flushed", value=stats.hub.batches)
        yield CounterMetricFamily(
            "iotgw_device_events",
            "Device events (status, meta, removed) batched for clients, before coalescing",
            value=stats.hub.events_in,
        )
        totals = hub.totals()
        yield CounterMetricFamily(
            "iotgw_ws_frames_sent", "WebSocket frames sent", value=totals.frames_sent
        )
        yield CounterMetricFamily(
            "iotgw_ws_bytes_sent", "WebSocket payload bytes sent", value=totals.bytes_sent
        )
        yield CounterMetricFamily(
            "iotgw_readings_coalesced",
            "Readings replaced by newer values for clients that fell behind",
            value=totals.readings_dropped,
        )
        yield GaugeMetricFamily(
            "iotgw_ws_outbox_peak_bytes",
            "The most bytes one client's outgoing queue has held since start",
            value=totals.outbox_peak_bytes,
        )
        yield GaugeMetricFamily(
            "iotgw_ws_parked_streams",
            "Dropped connections' streams kept for resuming",
            value=hub.parked,
        )
        yield _counter(
            "iotgw_ws_refused", "WebSocket upgrades refused", ["reason"], stats.connections.refused
        )
        yield _counter(
            "iotgw_http_refused",
            "HTTP requests refused by the browser rules (Host, Origin, Content-Type)",
            ["reason"],
            stats.connections.requests_refused,
        )
        yield GaugeMetricFamily(
            "iotgw_event_loop_lag_seconds",
            "How late the event loop ran the janitor's timer, last time",
            value=stats.loop.lag_s,
        )
        yield histogram_family(
            "iotgw_event_loop_lateness_seconds",
            "How late the event loop ran a 10 ms timer, per tick",
            stats.loop.lateness,
        )
        yield GaugeMetricFamily(
            "iotgw_event_loop_lateness_max_seconds",
            "The latest the event loop has run a 10 ms timer since start",
            value=stats.loop.lateness_max_s,
        )
        yield GaugeMetricFamily(
            "iotgw_commands_pending",
            "Commands admitted and waiting for their outcome",
            value=self._commands.pending,
        )
        yield _counter(
            "iotgw_ws_closed_by_gateway",
            "Clients closed by the gateway",
            ["reason"],
            stats.connections.closed,
        )
        yield _counter("iotgw_commands", "Command outcomes", ["status"], stats.commands.outcomes)
        yield CounterMetricFamily(
            "iotgw_command_results_peer",
            "Device answers to another instance's commands (seen by every instance of a cluster, "
            "acted on by the one that sent the command)",
            value=stats.ingest.peer_results,
        )
        yield _counter(
            "iotgw_commands_refused",
            "Commands refused, nothing published",
            ["reason"],
            stats.commands.refused,
        )
        yield histogram_family(
            "iotgw_command_rtt_seconds",
            "Command round trip, publish to the device's result",
            stats.commands.rtt,
        )
        yield from history_families(self._history)
        if self._writers is not None:
            yield from writer_families(self._writers)


def history_families(store: HistoryStore) -> Iterator[Metric]:
    """The history store's state and counters (docs/operations.md#history)."""
    stats = store.stats
    yield GaugeMetricFamily(
        "iotgw_history_up",
        "1 while the history store writes (0: starting or degraded; /readyz says why)",
        value=int(store.state == "ok"),
    )
    yield GaugeMetricFamily(
        "iotgw_history_queued_points", "Points waiting for the history writer", value=store.queued
    )
    yield CounterMetricFamily(
        "iotgw_history_points_written", "Points committed to the history store", value=stats.written
    )
    yield _counter(
        "iotgw_history_points_dropped",
        "Points not stored: queue_full, bad_time, bad_value",
        ["reason"],
        stats.dropped,
    )
    yield CounterMetricFamily(
        "iotgw_history_duplicates",
        "Points whose (series, time) was already stored",
        value=stats.duplicates,
    )
    yield CounterMetricFamily("iotgw_history_commits", "History commits", value=stats.commits)
    yield CounterMetricFamily(
        "iotgw_history_write_failures",
        "History commits that failed (retried)",
        value=stats.write_failures,
    )
    yield GaugeMetricFamily(
        "iotgw_history_longest_commit_seconds",
        "The longest history commit since start",
        value=stats.longest_commit_s,
    )
    yield CounterMetricFamily(
        "iotgw_history_purged_rows", "Rows removed by retention", value=stats.purged
    )
    yield GaugeMetricFamily(
        "iotgw_history_longest_purge_step_seconds",
        "The longest retention step since start (the writer waits that long)",
        value=stats.longest_purge_step_s,
    )
    yield CounterMetricFamily(
        "iotgw_history_audit_records", "Audit records written", value=stats.audit_written
    )
    yield CounterMetricFamily(
        "iotgw_history_audit_dropped",
        "Audit records dropped (queue full)",
        value=stats.audit_dropped,
    )
    yield CounterMetricFamily(
        "iotgw_history_queries_refused",
        "History queries refused: too many at once",
        value=stats.queries_refused,
    )


def writer_families(writers: WriterGroup) -> Iterator[Metric]:
    """A cluster member's share of the history writers (docs/operations.md#cluster)."""
    claims, roster, link = writers.claim_stats, writers.roster, writers.link_stats
    yield GaugeMetricFamily(
        "iotgw_cluster_writer_joined",
        "1 while this instance is in the writer group (stores its share of the readings)",
        value=int(writers.joined.is_set()),
    )
    yield CounterMetricFamily(
        "iotgw_cluster_claimed_messages",
        "Messages the writer group handed this instance to store",
        value=claims.claimed_messages,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_claimed_points",
        "Readings of those handed to the history store",
        value=claims.claimed_points,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_claims_unmatched",
        "Claimed messages whose main-link copy never came within cluster.claim_window_s: "
        "their readings are not stored",
        value=claims.unmatched,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_copies_unclaimed",
        "Messages another instance was handed to store",
        value=claims.unclaimed,
    )
    yield GaugeMetricFamily(
        "iotgw_cluster_waiting_copies",
        "Copies of messages waiting for their other half (main link or writer link)",
        value=writers.claims.waiting,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_writer_connects",
        "Writer-link connections to the broker",
        value=link.connects,
    )
    yield GaugeMetricFamily(
        "iotgw_cluster_members",
        "Cluster members alive at the last heartbeat, this one included",
        value=roster.members,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_members_lost",
        "Members this instance found gone without leaving (killed, or cut off)",
        value=roster.members_lost,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_lost_points_bound",
        "Sum of those members' loss bounds: readings they may have taken and not committed",
        value=roster.lost_points_bound,
    )
    yield CounterMetricFamily(
        "iotgw_cluster_heartbeat_failures",
        "Heartbeats the shared database did not record",
        value=roster.heartbeat_failures,
    )


def _counter(
    name: str, documentation: str, labels: list[str], counts: Counter[Any]
) -> CounterMetricFamily:
    """A labelled counter family from a Counter keyed by one label value or a tuple of them."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in counts.items():
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


def histogram_family(name: str, documentation: str, buckets: Buckets) -> HistogramMetricFamily:
    """A histogram family from plain per-bucket counts (Prometheus wants them cumulative)."""
    cumulative: list[tuple[str, float]] = []
    running = 0
    for bound, count in zip((*buckets.bounds, math.inf), buckets.counts, strict=True):
        running += count
        cumulative.append(("+Inf" if bound == math.inf else repr(float(bound)), running))
    return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=buckets.total)


def metrics_handler(registry: CollectorRegistry, token: str):  # type: ignore[no-untyped-def]
    """The /metrics handler; with a `token`, only for `Authorization: Bearer <token>`."""
    secret = token.encode()

    async def handler(request: web.Request) -> web.Response:
        if secret and not _bearer_matches(request, secret):
            raise web.HTTPUnauthorized(
                text="a metrics token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        return web.Response(
            body=generate_latest(registry), content_type="text/plain", charset="utf-8"
        )

    return handler


def _bearer_matches(request: web.Request, secret: bytes) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Bearer "):
        return False
    # Header bytes that are not UTF-8 arrive as surrogates: surrogateescape gives them back.
    return hmac.compare_digest(header[7:].encode(errors="surrogateescape"), secret)


def add_metrics(app: web.Application) -> None:
    """GET /metrics, from the services under their keys (gateway/keys.py)."""
    registry = CollectorRegistry(auto_describe=False)
    collector = GatewayCollector(
        app[keys.STATS], app[keys.STATUS], app[keys.REGISTRY], app[keys.HUB], app[keys.COMMANDS],
        app[keys.HISTORY], app.get(keys.WRITERS),
    )  # fmt: skip
    registry.register(collector)
    token = app[keys.CONFIG].http.metrics_secret()
    app.router.add_get("/metrics", metrics_handler(registry, token))

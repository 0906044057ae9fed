"""The gateway's long-lived state and tasks, owned by one TaskGroup inside one task.

Construction does no I/O; `run()` starts the broker link and the janitor and sets `ready` once
they are running (HTTP is served from then on). Ready for traffic is more: the broker link is up
and its retained state has arrived (`synced`, what /readyz reports; gateway/sync.py). A bug in a
task ends the TaskGroup, and with it the process, loudly.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Iterable

from gateway.admission import Admission
from gateway.auth import Authenticator
from gateway.browsers import policy_for
from gateway.cluster import Decoded, with_instance_id
from gateway.commands import CommandRouter
from gateway.config import Config
from gateway.control import CommandService
from gateway.conventions import build_conventions, id_tags
from gateway.errors import BrokerUnavailable, PublishUnconfirmed
from gateway.hub import Hub
from gateway.ingest import BrokerLink
from gateway.models import Reading
from gateway.pipeline import Pipeline
from gateway.protocol import CloseCode, CloseReason
from gateway.registry import Registry
from gateway.snapshots import HeldSnapshots
from gateway.stats import GatewayStats, LoopStats
from gateway.status import GatewayStatus
from gateway.store import Point, RestoredSeries, build_store
from gateway.sync import RetainedSync
from gateway.writer_group import WriterGroup

log = logging.getLogger(__name__)

JANITOR_INTERVAL_S = 1.0
#: How often the loop sampler wakes to measure the event loop's lateness (see _loop_sampler).
LOOP_SAMPLE_S = 0.01
HEARTBEAT_SWEEPS = 20  # per heartbeat interval (see Runtime._heartbeats)
#: A cluster member leaving: how long the writer group's drain and the store's flush may take.
LEAVE_TIMEOUT_S = 10.0
FLUSH_TIMEOUT_S = 10.0


class Runtime:
    """Builds every service once (the HTTP layer gets them through gateway.keys) and runs the
    long-lived tasks."""

    def __init__(self, config: Config) -> None:
        config = with_instance_id(config)
        self.config = config
        self.instance_id = config.cluster.instance_id
        self.registry = Registry(config.registry, id_tags())
        self.hub = Hub(config.ws)
        self.auth = Authenticator(config.auth)
        self.admission = Admission(config.ws, self.auth, policy_for(config.http, config.auth))
        conventions = build_conventions(config.conventions, self.registry.shapes)
        subscriptions = [topic for c in conventions for topic in c.subscriptions()]
        broker = config.broker
        if config.cluster.enabled and not broker.client_id:
            # Named after the instance: one fixed id shared by the instances' config would make
            # them take the broker connection from each other in turn.
            broker = dataclasses.replace(broker, client_id=f"iotgw-{self.instance_id}")
        self.link = BrokerLink(
            broker,
            subscriptions,
            self._on_message,
            self._on_link_state,
            self._on_oversize,
        )
        self.sync = RetainedSync(self.link.client_id)
        self.link.add_subscriptions([self.sync.topic])
        self.status = GatewayStatus(self.sync, self.instance_id)
        self.held_snapshots = HeldSnapshots()
        self._sync_task: asyncio.Task[None] | None = None
        self._tasks: asyncio.TaskGroup | None = None
        by_name = {c.name: c for c in conventions}
        self.store = build_store(config, self._ring, self.instance_id)
        self.router = CommandRouter(by_name, self.link, config.commands, self.instance_id)
        self.commands = CommandService(
            self.registry, self.router, by_name, config.commands, audit=self.store
        )
        # A cluster with durable history stores what the writer group hands this instance.
        self.writers: WriterGroup | None = None
        self._kept: Decoded = []  # the readings of the message being handled (writer group)
        if config.cluster.enabled and self.store.durable:
            self.writers = WriterGroup(config.cluster, broker, self.store, [self.sync.topic])
            self.writers.mirror(self.link.subscriptions)
            self.status.watch_writer(self.writers.joined)
            self.pipeline = Pipeline(
                conventions, self.registry, self.hub, self.router, broker.max_payload_bytes,
                self._subscribe, self._unsubscribe, self._keep, publish=self.link.publish_soon,
            )  # fmt: skip
        else:
            self.pipeline = Pipeline(
                conventions, self.registry, self.hub, self.router, broker.max_payload_bytes,
                self.link.add_subscriptions, self.link.remove_subscriptions, self.store.append,
                publish=self.link.publish_soon,
            )  # fmt: skip
        self.ready = asyncio.Event()
        self.stats = GatewayStats(
            ingest=self.pipeline.stats,
            link=self.link.stats,
            registry=self.registry.stats,
            hub=self.hub.stats,
            connections=self.admission.stats,
            commands=self.commands.stats,
            loop=LoopStats(),
        )
        self.linked = asyncio.Event()  # set while the broker link is up

    async def run(self) -> None:
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                tasks.create_task(self._janitor(), name="gateway.janitor")
                tasks.create_task(self._loop_sampler(), name="gateway.loop_sampler")
                tasks.create_task(self._end_startup_hold(), name="gateway.sync.startup")
                if self.config.ws.heartbeat_s > 0:
                    tasks.create_task(self._heartbeats(), name="gateway.heartbeats")
                self.ready.set()  # HTTP is served from here; /readyz waits for the broker
                # The recent history comes back before the broker link starts, so that no
                # restored value lands on top of a newer live one and /readyz (synced) is 200
                # only with the history in place.
                await self.store.start(self._restore)
                tasks.create_task(self.store.run(self._restore), name="gateway.history")
                tasks.create_task(self.link.run(), name="gateway.ingest")
                if self.writers is not None:
                    tasks.create_task(self.writers.run(), name="gateway.cluster.writers")
                    roster = self.store.roster
                    if roster is not None:
                        tasks.create_task(
                            self.writers.heartbeats(roster), name="gateway.cluster.heartbeats"
                        )
        finally:
            await self.store.close()  # in case its task was cancelled before it ran

    def _restore(self, series: RestoredSeries) -> None:
        self.registry.restore(series.device, series.convention, series.metric, series.points)

    def _ring(self, device_id: str, metric: str) -> Iterable[Point] | None:
        """The in-memory points of a series (what the memory history backend answers from)."""
        device = self.registry.get(device_id)
        return device.history.get(metric) if device is not None else None

    async def leave(self) -> None:
        """A cluster member's clean exit (SIGTERM, after its clients were told to go): hand its
        share of the writer group to the others, commit every reading it claimed, and tell the
        others it left. The broker link closes after, with the runtime task."""
        writers = self.writers
        if writers is None:
            return
        await writers.leave(LEAVE_TIMEOUT_S)
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT_S):
                await self.store.drained()
        except TimeoutError:
            log.warning("history: %d points not committed before leaving", self.store.queued)
        roster = self.store.roster
        if roster is not None:
            await writers.leave_roster(roster)

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self.sync.topic and self.sync.arrived(payload):
            return
        writers = self.writers
        if writers is None:
            self.pipeline.handle(topic, payload)
            return
        kept = self._kept = []
        self.pipeline.handle(topic, payload)
        writers.decoded(topic, payload, kept)

    def _keep(self, readings: list[Reading], convention: str) -> None:
        """In a cluster: a message's readings wait for the writer group's verdict (Claims)."""
        self._kept.append((readings, convention))

    def _subscribe(self, topics: list[str]) -> None:
        self.link.add_subscriptions(topics)
        if self.writers is not None:
            self.writers.mirror(self.link.subscriptions)

    def _unsubscribe(self, topics: list[str]) -> None:
        self.link.remove_subscriptions(topics)
        if self.writers is not None:
            self.writers.mirror(self.link.subscriptions)

    def _on_oversize(self, topic: str, size: int) -> None:
        self.pipeline.refuse_oversize(topic, size)

    def _on_link_state(self, connected: bool) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            self._sync_task = None
        if connected:
            self.linked.set()
            if self._tasks is not None:
                marker = self.sync.begin()
                self._sync_task = self._tasks.create_task(self._sync(marker), name="gateway.sync")
        else:
            self.linked.clear()
            self.sync.lost()
            if self.writers is not None:
                self.writers.main_lost()
        self.status.broker_changed(connected)
        self.hub.broadcast(self.status.gateway_event())

    async def _sync(self, marker: bytes) -> None:
        """Publish this connection's marker and wait for it to come back (gateway/sync.py)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            await self.link.publish(self.sync.topic, marker)
        except BrokerUnavailable:
            return  # the link dropped before it was sent; the next connection starts over
        except PublishUnconfirmed:
            pass  # its PUBACK may be queued behind the burst; the marker itself still counts
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            # Shutdown cancelled us just as the PUBACK came in, and Python 3.11's wait_for
            # (inside aiomqtt) returned the result instead (gh-86296): waiting on for the marker
            # would hold shutdown for sync_timeout_s.
            raise asyncio.CancelledError
        timeout = max(0.0, self.config.broker.sync_timeout_s - (loop.time() - started))
        if await self.sync.wait(timeout):
            log.info(
                "retained state received in %.1fs: %d devices",
                loop.time() - started,
                len(self.registry),
            )
        else:
            log.warning(
                "the retained-state marker on %s did not come back within %.0fs; serving what "
                "arrived (is the topic allowed by the broker's ACL? see docs/operations.md)",
                self.sync.topic,
                self.config.broker.sync_timeout_s,
            )
        self.held_snapshots.release(self.registry, self.hub)
        if self.writers is not None:
            self.writers.main_ready()  # its copies keep pace with the claims from now on

    async def _end_startup_hold(self) -> None:
        """A broker unreachable at start (or a link that keeps dropping) would hold snapshots
        forever: after broker.sync_timeout_s, serve what there is and stop holding."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.config.broker.sync_timeout_s):
                await self.sync.first.wait()
                return
        self.status.end_startup_hold()
        self.held_snapshots.release(self.registry, self.hub)

    async def _janitor(self) -> None:
        """Mark silent devices stale, and forget those silent past registry.forget_after_s.
        Timers here run on the monotonic clock, never device time."""
        interval = min(JANITOR_INTERVAL_S, self.config.registry.stale_after_s / 4)
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(interval)
            # How late the loop woke us: time spent in callbacks that never yield.
            self.stats.loop.lag_s = max(0.0, loop.time() - started - interval)
            for device in self.registry.expire():
                self.hub.device_event(device, "status")
            for device in self.registry.silent():
                self.pipeline.forget(device.id)
            now = time.monotonic()
            for stream in self.hub.streams:
                session = stream.session
                if session is not None:
                    session.check_send(now)
                    session.retire_writer(now)

    async def _loop_sampler(self) -> None:
        """Measure how late the event loop runs a 10 ms timer, every tick (iotgw_event_loop_
        lateness_seconds): the time every client and the broker link waited on something that
        did not yield. Sampled inside the gateway, so a benchmark reads it rather than guessing it
        from client latency; costs ~100 wake-ups a second."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(LOOP_SAMPLE_S)
            self.stats.loop.late(max(0.0, loop.time() - started - LOOP_SAMPLE_S))

    async def _heartbeats(self) -> None:
        """Ping silent connections and cut those that do not answer (Session.check_alive).

        One sweep over every connection instead of aiohttp's two timers per connection, often
        enough that each connection's ping goes out near its own due time rather than in a burst
        with every connection that arrived within the same sweep (docs/performance.md, S4). A
        silent peer is pinged 1 to 1.05 heartbeats after it was last heard and cut 0.5 to 0.55
        heartbeats after an unanswered ping.
        """
        interval = self.config.ws.heartbeat_s / HEARTBEAT_SWEEPS
        while True:
            await asyncio.sleep(interval)
            now = time.monotonic()
            for stream in self.hub.streams:
                session = stream.session
                if session is not None:
                    session.check_alive(now)

    def stop(self) -> None:
        """Ask the long-lived tasks to end (the runtime task is then cancelled as well)."""
        if self.writers is not None:
            self.writers.stop()
        self.link.stop()

    def close_sessions(self) -> None:
        """Ask every client to go away: 1001 (reconnect later), or in a cluster 1012 (service
        restart: reconnect now, the load balancer sends you to another instance)."""
        self.hub.flush()
        if self.config.cluster.enabled:
            code, reason = CloseCode.SERVICE_RESTART, CloseReason.SERVICE_RESTART
        else:
            code, reason = CloseCode.GOING_AWAY, CloseReason.SHUTDOWN
        for stream in list(self.hub.streams):
            stream.evict(code, reason)

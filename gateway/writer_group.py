"""The cluster's history writers: every reading stored once across the instances (docs/scaling.md).

Each instance keeps a second broker connection, the writer link, subscribed to the main link's
topic filters inside one MQTT shared-subscription group, `$share/<cluster.writer_group>/<filter>`:
the broker hands each message to one member of the group, and that member stores the message's
readings. The pipeline decodes every message once, from the main link; `cluster.Claims` pairs
the writer link's copy with it. The writer link joins once the main link's retained state is in
(so the main-link copies keep pace with the claims), and leaves when the main link drops (the
others take this instance's share meanwhile).

Leaving cleanly loses nothing: unsubscribe from the group (the broker hands new messages to the
others), publish a marker to a topic only this link subscribes to and wait for it (a broker
delivers one connection's messages in order, so everything it had queued for us is in), wait for
the claims still waiting on their main-link copy, flush the store. Killed with -9, an instance
loses what it had claimed and not committed, plus the broker's in-flight window to it; the
survivors notice its heartbeat row in PostgreSQL stopped without a leave and log and count a
bound (gateway/store/base.py, LostMember).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass

from gateway.cluster import Claims, ClaimStats, Decoded, shared_filters
from gateway.config import BrokerConfig, ClusterConfig
from gateway.errors import BrokerUnavailable, PublishUnconfirmed
from gateway.ingest import BrokerLink
from gateway.logs import RateLimitedLog
from gateway.stats import LinkStats
from gateway.store import HistoryStore, LostMember, MemberBeat, Roster, StoreUnavailable
from gateway.sync import RetainedSync

log = logging.getLogger(__name__)

#: Heartbeats a member may miss before the others count it lost.
MISSED_HEARTBEATS = 3


@dataclass(slots=True)
class RosterStats:
    """What the heartbeats learned. Owner: WriterGroup."""

    members: int = 0  # members alive at the last heartbeat (this one included)
    members_lost: int = 0  # members this instance found gone without leaving
    lost_points_bound: int = 0  # the sum of their loss bounds
    heartbeat_failures: int = 0


class WriterGroup:
    def __init__(
        self,
        cluster: ClusterConfig,
        broker: BrokerConfig,
        store: HistoryStore,
        exclude: Iterable[str] = (),
    ) -> None:
        """`exclude`: main-link filters that are not the devices' (the retained-state marker)."""
        self._cluster = cluster
        self._instance = cluster.instance_id
        self._store = store
        # A clean session of its own: a member that goes away must stop getting a share (a
        # persistent session would keep collecting one, and no broker hands it to the others).
        self._config = dataclasses.replace(
            broker,
            client_id=f"iotgw-{self._instance}-writer",
            persistent_session=False,
            qos=1,
        )
        self._drain = RetainedSync(self._config.client_id)  # its marker tells a drained queue
        self._exclude = set(exclude)
        self._shared: list[str] = []
        self._link: BrokerLink | None = None
        self._main_up = asyncio.Event()  # the main link is up and its retained state is in
        self._main_down = asyncio.Event()
        self._main_down.set()
        self._leaving = False
        self._claims_done = asyncio.Event()  # while leaving: no claim waits for its copy
        self._warn = RateLimitedLog(log, interval=30.0)
        self.joined = asyncio.Event()  # subscribed in the group: storing a share
        self.claims = Claims(cluster.claim_window_s, store.append)
        self.link_stats = LinkStats()
        self.roster = RosterStats()

    @property
    def claim_stats(self) -> ClaimStats:
        return self.claims.stats

    # --- from the main link ------------------------------------------------------------------

    def decoded(self, topic: str, payload: bytes, decoded: Decoded) -> None:
        """The main link's copy of a message and what the pipeline made of it."""
        self.claims.decoded(topic, payload, decoded)
        if self._leaving and not self.claims.waiting_claims:
            self._claims_done.set()

    def mirror(self, filters: Iterable[str]) -> None:
        """The main link's subscriptions changed: follow them in the group (never awaits)."""
        wanted = shared_filters((f for f in filters if f not in self._exclude), self.group)
        gone = [f for f in self._shared if f not in wanted]
        new = [f for f in wanted if f not in self._shared]
        self._shared = wanted
        if self._link is not None and not self._leaving:
            # Off first, then on: for a moment this member has neither filter rather than two
            # overlapping ones (which could hand one message to two members).
            self._link.remove_subscriptions(gone)
            self._link.add_subscriptions(new)

    def main_ready(self) -> None:
        """The main link is connected and its retained state has arrived: join the group."""
        if not self._leaving:
            self._main_down.clear()
            self._main_up.set()

    def main_lost(self) -> None:
        """The main link dropped: its copies stop, so this member's claims could not be paired
        (the others take its share until it is back)."""
        self._main_up.clear()
        self._main_down.set()

    @property
    def group(self) -> str:
        return self._cluster.writer_group

    # --- the writer link ---------------------------------------------------------------------

    async def run(self) -> None:
        """Keep the writer link up while the main link is (cancel to end)."""
        async with asyncio.TaskGroup() as tasks:
            while True:
                await self._main_up.wait()
                link = BrokerLink(
                    self._config,
                    [self._drain.topic, *self._shared],
                    self._on_message,
                    self._on_state,
                    skip_retained=True,
                )
                link.stats = self.link_stats  # one set of counters across the links it makes
                self._link = link
                running = tasks.create_task(link.run(), name="gateway.cluster.writer")
                await self._main_down.wait()
                link.stop()
                await running
                self._link = None

    def _on_message(self, topic: str, payload: bytes) -> None:
        if topic == self._drain.topic:
            self._drain.arrived(payload)
            return
        self.claims.claim(topic, payload)

    def _on_state(self, connected: bool) -> None:
        if connected:
            self.joined.set()
            log.info("joined the writer group %s (%d filters)", self.group, len(self._shared))
        else:
            self.joined.clear()

    def stop(self) -> None:
        """Stop the writer link for good (shutdown). Cancellation alone may not end it: Python
        3.11 can swallow a cancellation inside aiomqtt (see BrokerLink.stop), and a writer link
        left running keeps taking a share of the messages that nothing here will store."""
        self._leaving = True
        self._main_up.clear()
        self._main_down.set()
        if self._link is not None:
            self._link.stop()

    async def leave(self, within: float) -> None:
        """Hand this member's share to the others without losing a message (see the module
        docstring), then stop the writer link. Bounded by `within` seconds."""
        self._leaving = True
        self._main_up.clear()
        link = self._link
        try:
            if link is not None and link.connected:
                async with asyncio.timeout(within):
                    await self._drain_link(link)
        except TimeoutError:
            log.warning(
                "left the writer group %s without draining it in %.0fs: %d claims waited for "
                "their main-link copy",
                self.group,
                within,
                self.claims.waiting_claims,
            )
        except (BrokerUnavailable, PublishUnconfirmed) as exc:
            log.warning("left the writer group %s without draining it: %s", self.group, exc)
        finally:
            self._main_down.set()
            self.joined.clear()

    async def _drain_link(self, link: BrokerLink) -> None:
        link.remove_subscriptions(self._shared)
        await link.settled()  # UNSUBACK: the broker hands new messages to the others
        marker = self._drain.begin()
        await link.publish(self._drain.topic, marker)
        await self._drain.complete.wait()  # every message it had queued for us is in
        if self.claims.waiting_claims:
            self._claims_done.clear()
            await self._claims_done.wait()
        log.info("left the writer group %s: every claimed reading handed to the store", self.group)

    # --- membership ----------------------------------------------------------------------------

    async def heartbeats(self, roster: Roster) -> None:
        """Beat every cluster.heartbeat_s in the shared database; report members found lost."""
        cluster = self._cluster
        started = time.time()
        host = socket.gethostname()
        loop = asyncio.get_running_loop()
        last_points, last_at = self.claims.stats.claimed_points, loop.time()
        while True:
            stats = self.claims.stats
            now = loop.time()
            rate = (stats.claimed_points - last_points) / max(now - last_at, 1e-3)
            last_points, last_at = stats.claimed_points, now
            beat = MemberBeat(
                instance=self._instance,
                host=host,
                started_at=started,
                heartbeat_s=cluster.heartbeat_s,
                queued=self._store.queued,
                rate=rate,
                points_per_message=stats.claimed_points / max(1, stats.claimed_messages) or 1.0,
                inflight=cluster.broker_inflight,
            )
            try:
                view = await roster.beat(beat, MISSED_HEARTBEATS)
            except StoreUnavailable as exc:
                self.roster.heartbeat_failures += 1
                self._warn.warning("beat", "cluster heartbeat not recorded: %s", exc.reason)
            else:
                self.roster.members = view.members
                for lost in view.lost:
                    self._report(lost)
            await asyncio.sleep(cluster.heartbeat_s)

    def _report(self, lost: LostMember) -> None:
        bound = lost.bound
        self.roster.members_lost += 1
        self.roster.lost_points_bound += bound
        log.warning(
            "cluster member %s stopped without leaving (silent for %.1fs): the readings the "
            "broker had handed it and it had not committed are lost, at most about %d points "
            "(its queue of %d at its last heartbeat, %.0f points/s for up to one heartbeat of "
            "%.1fs, the broker's in-flight window of ~%.0f points)",
            lost.instance,
            lost.silent_s,
            bound,
            lost.queued,
            lost.rate,
            lost.heartbeat_s,
            lost.inflight_points,
        )

    async def leave_roster(self, roster: Roster) -> None:
        """Tell the others this member left cleanly (after the store's flush)."""
        with contextlib.suppress(StoreUnavailable):
            await roster.leave(self._instance)

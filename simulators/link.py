"""One MQTT connection carrying one device (with its own last will) or several (multiplexed).

The only module that knows aiomqtt. A link reconnects forever with capped, jittered backoff until
told to stop; each connected stretch is a "session" whose tasks live in one TaskGroup.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket
from collections.abc import Callable

import aiomqtt

from simulators.agent import DeviceAgent, publish_all
from simulators.config import Broker, FleetConfig
from simulators.encoders.base import Message
from simulators.stats import FleetStats

log = logging.getLogger(__name__)


class _SessionEnd(Exception):
    """Raised inside a session's TaskGroup to end it on purpose (clean stop)."""


class Link:
    """A reconnecting MQTT client for the devices in `agents`."""

    def __init__(
        self,
        name: str,
        agents: list[DeviceAgent],
        *,
        config: FleetConfig,
        stats: FleetStats,
        client_id: str,
        on_first_up: Callable[[], None],
        bridge: list[Message] | None = None,
    ) -> None:
        self.name = name
        self.agents = {agent.device_id: agent for agent in agents}
        self._config = config
        self._broker = Broker.parse(config.broker)
        #: fleet-wide announcements this link makes on every connect (Zigbee2MQTT's bridge)
        self._bridge = bridge or []
        self._stats = stats
        self._client_id = client_id
        self._on_first_up = on_first_up
        self._was_up = False
        self._rng = random.Random(f"{client_id}:link")
        # MQTT allows one will per connection (MQTT 3.1.1 §3.1.2.5), so only a link that carries
        # exactly one device can have the broker announce that device's death.
        self.has_will = len(agents) == 1
        self._drop_fault = any(agent.member.faults.drop for agent in agents)
        self._wake = asyncio.Event()  # set by stop() and drop(); the session's watcher acts on it
        self._stopping = False
        self._drop_for: float | None = None

    # --- requests from the fleet -------------------------------------------------------------

    def stop(self) -> None:
        """End the link: publish `offline` (or let the will fire) and disconnect."""
        self._stopping = True
        self._wake.set()

    def drop(self, offline_for: float) -> None:
        """Cut the connection without DISCONNECT (the will fires); reconnect in `offline_for` s."""
        if not self._stopping:
            self._drop_for = offline_for
            self._wake.set()

    # --- the reconnect loop ------------------------------------------------------------------

    async def run(self) -> None:
        backoff = 0.5
        while not self._stopping:
            failed = False
            try:
                await self._session()
                backoff = 0.5
            except* aiomqtt.MqttError as group:
                failed = self._drop_for is None and not self._stopping
                if failed:
                    self._stats.connect_failures += 1
                    log.info(
                        "link %s: %s; retrying in %.1fs", self.name, group.exceptions[0], backoff
                    )
            if self._stopping:
                break
            if self._drop_for is not None:
                delay, self._drop_for = self._drop_for, None
            else:
                delay = backoff * self._rng.uniform(0.5, 1.0)
                if failed:
                    backoff = min(backoff * 2, self._config.reconnect_max_s)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def _client(self) -> aiomqtt.Client:
        will = None
        if self.has_will:
            (agent,) = self.agents.values()
            last = agent.speaker.will()
            if last is not None:
                will = aiomqtt.Will(last.topic, last.payload, qos=last.qos, retain=last.retain)
        return aiomqtt.Client(
            self._broker.host,
            self._broker.port,
            username=self._broker.username,
            password=self._broker.password,
            identifier=self._client_id,
            will=will,
            keepalive=self._config.keepalive_s,
            tls_context=self._broker.tls_context(),
            clean_session=True,
            timeout=10,
        )

    async def _session(self) -> None:
        # A fresh client per attempt: aiomqtt 2.x's reusable client can carry connection
        # futures over from a broken connection into the next one.
        for agent in self.agents.values():
            agent.speaker.connecting()  # before its will is built (Sparkplug's bdSeq)
        client = self._client()
        async with client:
            self._stats.connects += 1
            await self._announce(client)
            self._stats.links_up += 1
            if not self._was_up:
                self._was_up = True
                self._on_first_up()
            try:
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(self._receive(client, tg), name=f"sim.link[{self.name}].receive")
                    tg.create_task(self._watch(client), name=f"sim.link[{self.name}].watch")
                    if self._drop_fault:
                        tg.create_task(self._chaos(), name=f"sim.link[{self.name}].chaos")
                    for device, agent in self.agents.items():
                        tg.create_task(agent.run(client), name=f"sim.device[{device}].telemetry")
            except* _SessionEnd:
                pass
            finally:
                self._stats.links_up -= 1
            # Reached only on a clean stop: the devices say goodbye themselves, and the
            # DISCONNECT that follows makes the broker discard the will (MQTT 3.1.1 §3.14.4).
            for agent in self.agents.values():
                await publish_all(client, agent.speaker.offline())

    async def _announce(self, client: aiomqtt.Client) -> None:
        """Meta, then the command subscription, then `online`: ready before the gateway knows."""
        for agent in self.agents.values():
            await publish_all(client, agent.speaker.announce())
        await publish_all(client, self._bridge)
        filters = [f for agent in self.agents.values() for f in agent.speaker.command_filters()]
        if filters:
            await client.subscribe([(f, 1) for f in filters])
        for agent in self.agents.values():
            await publish_all(client, agent.speaker.online())

    async def _receive(self, client: aiomqtt.Client, tg: asyncio.TaskGroup) -> None:
        async for message in client.messages:
            if not isinstance(message.payload, bytes):
                continue
            topic = message.topic.value
            # A linear search: commands are rare, and only the speaker knows its topic layout
            # (Zigbee2MQTT names hold `/`, so no level can be taken for a device key).
            for agent in self.agents.values():
                if agent.take(client, topic, message.payload, tg):
                    break

    async def _watch(self, client: aiomqtt.Client) -> None:
        """Wait for stop() or drop(), then end the session the way each asks for."""
        await self._wake.wait()
        if self._drop_for is not None:
            self._stats.drops += 1
            _cut(client)  # the receive task then fails with MqttError, ending the session
            return
        if self.has_will and self._config.stop_mode == "will":
            _cut(client)  # the receive task then fails with MqttError, ending the session
            return
        raise _SessionEnd

    async def _chaos(self) -> None:
        """The drop fault: go away abruptly at random, exponentially distributed times."""
        faults = self._config.faults
        await asyncio.sleep(self._rng.expovariate(1.0 / faults.drop_every_s))
        self.drop(faults.drop_for_s)


def _cut(client: aiomqtt.Client) -> None:
    """Shut the socket down under paho, like a pulled cable or a crashed firmware would.

    aiomqtt has no public way to vanish without DISCONNECT; shutting down (not closing) the
    socket leaves paho to notice the EOF itself, report the connection lost and release the fd.
    """
    sock = client._client.socket()
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)

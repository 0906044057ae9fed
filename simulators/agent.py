"""A device on the wire: its telemetry loop and its answers to commands, over any publisher.

The agent outlives connections: its model keeps its state across a drop, and the link that carries
it starts `run` again after every reconnect. What goes on the wire is its speaker's business (one
per convention, simulators.encoders); timing, faults and counting are the agent's, the same in all.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from typing import Protocol

from simulators.config import FleetConfig
from simulators.encoders.base import BadCommand, Message, Request, Speaker, apply
from simulators.faults import MALFORMED_KINDS, malformed_payload
from simulators.roster import Member
from simulators.stats import FleetStats


class Publisher(Protocol):
    async def publish(
        self, topic: str, payload: bytes, qos: int = 0, retain: bool = False
    ) -> None: ...


async def publish_from_leaf(
    pub: Publisher, topic: str, payload: bytes, *, qos: int = 0, retain: bool = False
) -> None:
    """`pub.publish` for a task that owns no TaskGroup; a cancellation meanwhile is never lost.

    aiomqtt awaits acknowledgements through asyncio.wait_for, which on Python 3.11 returns the
    result instead of raising when a cancel lands as the wait completes (CPython gh-86296,
    fixed in 3.12): a publishing loop would carry on and its TaskGroup never finish. So a
    cancellation that is pending but was swallowed is raised here. Only in leaf tasks: 3.11's
    TaskGroup can leave its *parent* task's cancelling() count raised after a child failed.
    """
    await pub.publish(topic, payload, qos=qos, retain=retain)
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def publish_all(pub: Publisher, messages: list[Message]) -> None:
    """Publish announcements, status or goodbyes in order, from a link's own task."""
    for m in messages:
        await pub.publish(m.topic, m.payload, qos=m.qos, retain=m.retain)


class DeviceAgent:
    """Publishes one device's readings at its rate and answers its commands."""

    def __init__(
        self, member: Member, speaker: Speaker, config: FleetConfig, stats: FleetStats
    ) -> None:
        self.member = member
        self.model = member.model
        self.device_id = member.device_id
        self.speaker = speaker
        self._config = config
        self._stats = stats
        self._rng = member.rng

    async def run(self, pub: Publisher) -> None:
        """Publish readings forever at the device's rate, with jitter and its faults."""
        if self.member.rate <= 0:
            await asyncio.Event().wait()  # a silent device: status and meta only
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.member.rate
        jitter = self._config.jitter
        faults = self._config.faults
        # A random phase, so a fleet started at once does not publish in lockstep.
        next_at = loop.time() + self._rng.uniform(0.0, interval)
        next_burst = loop.time() + self._rng.expovariate(1.0 / faults.burst_every_s)
        while True:
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            count = 1
            if self.member.faults.burst and loop.time() >= next_burst:
                count = faults.burst_size
                next_burst = loop.time() + self._rng.expovariate(1.0 / faults.burst_every_s)
            for _ in range(count):
                await self._publish_reading(pub)
            next_at += interval * self._rng.uniform(1.0 - jitter, 1.0 + jitter)
            # Behind schedule (an overloaded process): skip, rather than catch up in a burst.
            next_at = max(next_at, loop.time())

    async def _publish_reading(self, pub: Publisher) -> None:
        now = time.time()
        values = self.model.step(now)
        ts = now + self.member.faults.skew_s
        messages = self.speaker.reading(values, ts)
        faults = self._config.faults
        if self.member.faults.malformed and self._rng.random() < faults.malformed_ratio:
            # Garbage on the convention's own telemetry topic, where a careless firmware puts it.
            kind = self._rng.choice(MALFORMED_KINDS)
            payload = malformed_payload(kind, values, ts, self._rng, faults.oversize_bytes)
            messages = [dataclasses.replace(messages[0], payload=payload)]
            self._stats.malformed += 1
        for m in messages:
            await publish_from_leaf(pub, m.topic, m.payload, qos=self._config.qos, retain=m.retain)
            self._stats.messages += 1
            self._stats.bytes += len(m.payload)

    def take(self, pub: Publisher, topic: str, payload: bytes, tg: asyncio.TaskGroup) -> bool:
        """Start answering a command message if it is this device's; False if it is not."""
        try:
            request = self.speaker.parse(topic, payload)
        except BadCommand:
            self._stats.commands_received += 1
            self._stats.commands_unreadable += 1  # no readable id: nobody to answer
            return True
        if request is None:
            return False
        tg.create_task(
            self.answer(pub, request), name=f"sim.device[{self.device_id}].answer[{topic[-40:]}]"
        )
        return True

    async def answer(self, pub: Publisher, request: Request) -> None:
        """Apply a request after the configured delay, then publish the convention's answer."""
        stats = self._stats
        stats.commands_received += 1
        if self.member.faults.ignore_commands:
            stats.commands_ignored += 1
            return
        await asyncio.sleep(self._rng.uniform(*self._config.result_delay_s))
        outcomes = [apply(self.model, action) for action in request.actions]
        if request.refused or not all(o.ok for o in outcomes):
            stats.commands_error += 1
        else:
            stats.commands_ok += 1
        # The state right after the command: the echo of conventions that answer with state.
        values = self.model.step(time.time())
        for m in self.speaker.answer(request, outcomes, values):
            await publish_from_leaf(pub, m.topic, m.payload, qos=m.qos, retain=m.retain)

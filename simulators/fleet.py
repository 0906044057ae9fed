"""Fleet: a set of simulated devices on a broker, run in-process by the CLI, `iotgw demo` or tests.

    async with Fleet(FleetConfig(broker="mqtt://127.0.0.1:1883", groups=mixed_groups(12))) as fleet:
        await fleet.wait_ready()
        ...                     # the fleet publishes in the background
    # leaving the block stops it cleanly (devices publish `offline` and disconnect)

or, owning the foreground: `stats = await Fleet(config).run(duration=10)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from types import TracebackType
from typing import Self, TextIO

from simulators.agent import DeviceAgent
from simulators.config import FleetConfig
from simulators.devices import DeviceModel
from simulators.encoders import ENCODERS
from simulators.encoders.base import Message
from simulators.faults import DeviceFaults
from simulators.link import Link
from simulators.roster import build_roster, plan_links
from simulators.stats import FleetStats, RateReporter

log = logging.getLogger(__name__)
#: After this long without every device connected, say so: the broker URL is likely wrong.
CONNECT_WARN_S = 5.0


class Fleet:
    """Runs every device's connection in one TaskGroup inside one task; reusable, not reentrant."""

    def __init__(self, config: FleetConfig, *, report_to: TextIO | None = None) -> None:
        """Build the devices (no I/O). `report_to` gets the live rate line once a second."""
        self.config = config
        self.seed = config.seed if config.seed is not None else secrets.randbits(32)
        self.stats = FleetStats()
        self._report_to = report_to
        members = build_roster(config, self.seed)
        self.devices: dict[str, DeviceModel] = {m.device_id: m.model for m in members}
        #: the faults each device was given (all False for a well-behaved device)
        self.faults: dict[str, DeviceFaults] = {m.device_id: m.faults for m in members}
        # A mixed fleet (`all`): the devices take the conventions in turn.
        conventions = config.conventions
        spoken = [conventions[i % len(conventions)] for i in range(len(members))]
        speakers = [
            ENCODERS[name].speaker(m, config.base_for(name))
            for name, m in zip(spoken, members, strict=True)
        ]
        self._agents = [
            DeviceAgent(m, s, config, self.stats) for m, s in zip(members, speakers, strict=True)
        ]
        #: fleet-wide announcements (Zigbee2MQTT's bridge/devices), made by the first link
        self._bridge: list[Message] = []
        for name in conventions:
            bridge = ENCODERS[name].bridge
            if bridge is not None:
                own = [s for s, n in zip(speakers, spoken, strict=True) if n == name]
                self._bridge += bridge(own, config.base_for(name))
        self._plan = plan_links(members, config.connections)
        self._links: list[Link] = []
        self._by_device: dict[str, Link] = {}
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._task: asyncio.Task[FleetStats] | None = None
        self._links_up_once = 0

    @property
    def ready(self) -> bool:
        """True once every link has connected and announced its devices at least once."""
        return self._ready.is_set()

    def _make_links(self) -> None:
        # Client ids must be unique on the broker (MQTT 3.1.1 §3.1.3.1: a second connection
        # with the same id kicks the first), so a random run token separates parallel fleets.
        token = secrets.token_hex(3)
        agents = {agent.device_id: agent for agent in self._agents}
        self._links = []
        for i, group in enumerate(self._plan):
            name = group[0].device_id if len(group) == 1 else f"mux-{i}"
            link = Link(
                name,
                [agents[member.device_id] for member in group],
                config=self.config,
                stats=self.stats,
                client_id=f"iotgw-sim-{name}-{token}",
                on_first_up=self._link_up,
                bridge=self._bridge if i == 0 else None,
            )
            self._links.append(link)
        self._by_device = {device: link for link in self._links for device in link.agents}
        self.stats.devices = len(self._agents)
        self.stats.links = len(self._links)

    def _link_up(self) -> None:
        self._links_up_once += 1
        if self._links_up_once == len(self._links):
            self._ready.set()

    async def run(self, duration: float | None = None) -> FleetStats:
        """Run until stop() (or `duration` seconds), then stop every device cleanly."""
        self._ready.clear()
        self._links_up_once = 0
        self._make_links()
        if not self._links:
            self._ready.set()
        try:
            async with asyncio.TaskGroup() as tg:
                for link in self._links:
                    tg.create_task(link.run(), name=f"sim.link[{link.name}]")
                watchdog = tg.create_task(self._watchdog(), name="sim.fleet.watchdog")
                tg.create_task(self._stopper(duration, watchdog), name="sim.fleet.stopper")
                if self._report_to is not None:
                    reporter = RateReporter(self.stats, self._report_to)
                    tg.create_task(reporter.run(self._stop), name="sim.fleet.reporter")
        finally:
            # Cleared at the end, not the start: a stop() that races ahead of run() still counts.
            self._stop.clear()
        return self.stats

    async def _stopper(self, duration: float | None, watchdog: asyncio.Task[None]) -> None:
        """Relay the stop request to every link; with a duration, make it after that long."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(duration):
                await self._stop.wait()
        self._stop.set()
        watchdog.cancel()
        for link in self._links:
            link.stop()

    async def _watchdog(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(CONNECT_WARN_S):
                await self._ready.wait()
                return
        log.warning(
            "%d of %d connections up after %.0fs: is the broker at %s reachable? (retrying)",
            self.stats.links_up,
            self.stats.links,
            CONNECT_WARN_S,
            self.config.broker,
        )

    def stop(self) -> None:
        """Ask the fleet to stop; run() returns once every device said goodbye. Idempotent."""
        self._stop.set()

    def drop(self, device_id: str, offline_for: float = 5.0) -> None:
        """Cut `device_id`'s connection abruptly (its will fires) and reconnect after a while.

        With multiplexing, this drops every device sharing that connection.
        """
        self._by_device[device_id].drop(offline_for)

    async def wait_ready(self) -> None:
        """Return once every device is announced; raise if the fleet stopped or failed first."""
        if self._task is None:
            await self._ready.wait()
            return
        waiter = asyncio.create_task(self._ready.wait(), name="sim.fleet.wait_ready")
        try:
            await asyncio.wait((waiter, self._task), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not self._ready.is_set():
            self._task.result()  # re-raises the failure
            raise RuntimeError("the fleet stopped before it was ready")

    async def __aenter__(self) -> Self:
        if self._task is not None:
            raise RuntimeError("Fleet is reusable but not reentrant")
        self._task = asyncio.create_task(self.run(), name="sim.fleet")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._task is not None
        task, self._task = self._task, None
        self.stop()
        await task

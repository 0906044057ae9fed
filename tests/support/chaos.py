"""The clients' chaos harness: a gateway on a fixed loopback port that can be restarted, its own
Mosquitto that can be killed, a fleet of counting devices and a device that answers commands.

Every counting device publishes `{"n": n}` with n = 0, 1, 2, … (QoS 1, each after the previous
one's PUBACK), so a client can check that it got every reading exactly once and in order within
each stream it resumed. Readings lost between a device and the gateway would blur that check, so
a broker kill pauses the fleet, waits until the gateway has taken in everything published, and
only then kills the broker; after it the fleet reconnects and announces itself again (the killed
broker forgot every retained message), and publishing resumes once the gateway has re-synced.

`control_app(harness)` exposes the same faults over loopback HTTP for a client in another
process (the Node tests): POST /restart, /kill-broker, /drop, /finish, GET /info.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
from aiohttp import web

from gateway.config import load_config
from tests.e2e.stack import Gateway
from tests.support.devices import DeviceStandIn, echo_ok, mqtt_client
from tests.support.gateway import WAIT_S
from tests.support.mosquitto import Mosquitto

PROBE_META: dict[str, Any] = {
    "type": "probe",
    "name": "command probe",
    "metrics": {},
    "commands": {"echo": {"params": {"nonce": {"type": "number", "min": 0, "max": 1e12}}}},
}
COUNTER_META: dict[str, Any] = {"type": "counter", "name": "counter", "metrics": {"n": {}}}


@dataclass
class Harness:
    broker: Mosquitto
    prefix: str
    devices: list[str]
    rate: float  # readings per second, over the whole fleet
    gateway_overrides: dict[str, Any] = field(default_factory=dict)
    gateway: Gateway | None = None
    probe: DeviceStandIn | None = None
    last: dict[str, int] = field(default_factory=dict)  # the last n published (PUBACKed)
    restarts: int = 0
    broker_kills: int = 0
    drops: int = 0
    _mqtt: aiomqtt.Client | None = None
    _probe_mqtt: aiomqtt.Client | None = None
    _publishing: asyncio.Event = field(default_factory=asyncio.Event)
    _idle: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _received: set[float] = field(default_factory=set)  # nonces the probe device received

    @property
    def ws_url(self) -> str:
        assert self.gateway is not None
        return self.gateway.url.replace("http://", "ws://") + "ws"

    async def start(self) -> Harness:
        config = load_config(
            env={},
            overrides={
                "broker.url": self.broker.url,
                "conventions.native.prefix": self.prefix,
                "broker.reconnect_min_s": 0.05,
                "broker.reconnect_max_s": 0.3,
                "history.backend": "memory",
                **self.gateway_overrides,
            },
        )
        self.gateway = await Gateway(config).start()
        await self._connect_fleet()
        await self._synced()
        self._publishing.set()
        self._task = asyncio.create_task(self._publish(), name="test.chaos.fleet")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._task
        await self._disconnect_fleet()
        if self.gateway is not None:
            await self.gateway.stop()

    async def _synced(self) -> None:
        assert self.gateway is not None
        assert self.gateway.live is not None
        async with asyncio.timeout(WAIT_S):
            await self.gateway.live.runtime.sync.complete.wait()

    async def _connect_fleet(self) -> None:
        self._mqtt = mqtt_client(self.broker.host, self.broker.port)
        await self._mqtt.__aenter__()
        for device in self.devices:
            topic = f"{self.prefix}/{device}"
            await self._mqtt.publish(
                f"{topic}/meta", orjson.dumps(COUNTER_META), qos=1, retain=True
            )
            await self._mqtt.publish(f"{topic}/status", b"online", qos=1, retain=True)
        self._probe_mqtt = mqtt_client(self.broker.host, self.broker.port)
        await self._probe_mqtt.__aenter__()

        def answer(command: str, params: dict[str, Any]) -> tuple[str, Any, str | None]:
            self._received.add(params["nonce"])
            return echo_ok(command, params)

        self.probe = await DeviceStandIn(
            self._probe_mqtt, self.prefix, "probe", PROBE_META, answer
        ).start()

    async def _disconnect_fleet(self) -> None:
        if self.probe is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self.probe.stop()
        for client in (self._mqtt, self._probe_mqtt):
            if client is not None:
                with contextlib.suppress(aiomqtt.MqttError):
                    await client.__aexit__(None, None, None)

    async def _publish(self) -> None:
        """Round-robin over the fleet at `rate`, while publishing is allowed."""
        period = 1 / self.rate
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for i in range(10**9):
            if not self._publishing.is_set():
                self._idle.set()
                await self._publishing.wait()
                next_at = loop.time()
            self._idle.clear()
            device = self.devices[i % len(self.devices)]
            n = self.last.get(device, -1) + 1
            assert self._mqtt is not None
            await self._mqtt.publish(
                f"{self.prefix}/{device}/telemetry", orjson.dumps({"n": n}), qos=1
            )
            self.last[device] = n
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    async def _pause(self) -> None:
        self._idle.clear()
        self._publishing.clear()
        async with asyncio.timeout(WAIT_S):
            await self._idle.wait()

    async def _ingested(self) -> None:
        """Wait until the gateway holds the last published n of every device."""
        assert self.gateway is not None
        assert self.gateway.live is not None
        registry = self.gateway.live.runtime.registry
        async with asyncio.timeout(WAIT_S):
            while True:
                held = {d: registry.get(d) for d in self.devices}
                if all(
                    (dev := held[d]) is not None and dev.values.get("n", (0, -1))[1] == n
                    for d, n in self.last.items()
                ):
                    return
                # The registry has no event to wait on; a bounded poll of its state.
                await asyncio.sleep(0.02)

    # --- faults ----------------------------------------------------------------------------------

    async def restart(self) -> None:
        """Stop the gateway as SIGTERM does (1001 to every client) and start it on its port."""
        assert self.gateway is not None
        await self.gateway.stop()
        await self.gateway.start()
        await self._synced()
        self.restarts += 1

    async def kill_broker(self) -> None:
        """SIGKILL the broker once the gateway has every reading, start it again, reconnect."""
        await self._pause()
        await self._ingested()
        self.broker.kill()
        await self._disconnect_fleet()
        self.broker.start()
        await self._connect_fleet()
        await self._synced_after_kill()
        self.broker_kills += 1
        self._publishing.set()

    async def _synced_after_kill(self) -> None:
        assert self.gateway is not None
        assert self.gateway.live is not None
        status = self.gateway.live.runtime.status
        async with asyncio.timeout(WAIT_S):
            # GatewayStatus has no event to wait on; a bounded poll of its state.
            while not (status.broker_state == "connected" and status.synced):  # noqa: ASYNC110
                await asyncio.sleep(0.02)

    def drop(self) -> int:
        """Cut every client connection from the gateway's side, without a close frame."""
        assert self.gateway is not None
        self.drops += 1
        return self.gateway.drop_connections()

    async def finish(self) -> dict[str, Any]:
        """Stop publishing; the last n of every device and the nonces the probe received."""
        await self._pause()
        return {"last": dict(self.last), "received": sorted(self._received)}

    def received(self) -> set[float]:
        return set(self._received)


@contextlib.asynccontextmanager
async def chaos_harness(
    devices: int = 6, rate: float = 60.0, gateway_overrides: dict[str, Any] | None = None
) -> AsyncIterator[Harness]:
    """A harness with its own broker, started and stopped around the block."""
    broker = Mosquitto().start()
    names = [f"count-{i}" for i in range(devices)]
    prefix = f"chaos{secrets.token_hex(4)}"
    harness = Harness(broker, prefix, names, rate, dict(gateway_overrides or {}))
    try:
        yield await harness.start()
    finally:
        await harness.stop()
        broker.cleanup()


def control_app(harness: Harness) -> web.Application:
    """The harness's faults over HTTP, for a client under test in another process."""

    async def restart(request: web.Request) -> web.Response:
        await harness.restart()
        return web.json_response({"restarts": harness.restarts})

    async def kill_broker(request: web.Request) -> web.Response:
        await harness.kill_broker()
        return web.json_response({"broker_kills": harness.broker_kills})

    async def drop(request: web.Request) -> web.Response:
        return web.json_response({"dropped": harness.drop()})

    async def finish(request: web.Request) -> web.Response:
        return web.json_response(await harness.finish())

    async def info(request: web.Request) -> web.Response:
        return web.json_response(
            {"ws_url": harness.ws_url, "devices": harness.devices, "last": harness.last}
        )

    app = web.Application()
    app.router.add_post("/restart", restart)
    app.router.add_post("/kill-broker", kill_broker)
    app.router.add_post("/drop", drop)
    app.router.add_post("/finish", finish)
    app.router.add_get("/info", info)
    return app

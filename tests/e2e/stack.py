"""The real stack the dashboard is tested against: the gateway app on a fixed loopback port, a real
Mosquitto, and small device stand-ins publishing the native convention over real MQTT connections.

The gateway keeps its port across restarts so the page can reconnect to the same URL, exactly as
it would after `iotgw run` is restarted by systemd.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt
import orjson
from aiohttp import web

from gateway.app import create_app
from gateway.config import load_config
from tests.support.mosquitto import Mosquitto, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

THERMOSTAT: dict[str, Any] = {
    "type": "thermostat",
    "name": "Living room",
    "metrics": {"temperature": {"unit": "°C"}, "heating": {}, "mode": {}},
    "commands": {
        "set_target": {"params": {"target": {"type": "number", "min": 5, "max": 30}}},
        "set_mode": {"params": {"mode": {"type": "string", "enum": ["off", "heat", "cool"]}}},
        "toggle": {"params": {}},
    },
}

#: (command, params) -> (status, result, error), or None to stay silent.
Answer = Callable[[str, dict[str, Any]], tuple[str, Any, str | None] | None]


def echo_ok(command: str, params: dict[str, Any]) -> tuple[str, Any, str | None]:
    return "ok", params, None


@dataclass
class Gateway:
    """The real gateway app served on a port that survives restarts."""

    broker: Mosquitto
    prefix: str
    overrides: dict[str, Any] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> Gateway:
        config = load_config(
            env={},
            overrides={
                "broker.url": self.broker.url,
                "conventions.native.prefix": self.prefix,
                "broker.reconnect_min_s": 0.05,
                "broker.reconnect_max_s": 0.5,
                "http.host": "127.0.0.1",
                "http.port": self.port,
                **self.overrides,
            },
        )
        runner = web.AppRunner(create_app(config), handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        self.runner = runner
        return self

    async def stop(self) -> None:
        """Shut down as on SIGTERM: clients get 1001, then the runtime stops."""
        if self.runner is not None:
            runner, self.runner = self.runner, None
            await runner.cleanup()


class Device:
    """A device stand-in: retained meta and status, telemetry on demand, answers to commands."""

    def __init__(
        self,
        broker: Mosquitto,
        prefix: str,
        device_id: str,
        meta: dict[str, Any] | None = None,
        answer: Answer | None = echo_ok,
    ) -> None:
        self.client = aiomqtt.Client(
            broker.host, broker.port, identifier=f"e2e-{device_id}-{secrets.token_hex(3)}"
        )
        self.prefix = prefix
        self.id = device_id
        self.meta = THERMOSTAT if meta is None else meta
        self.answer = answer
        self.commands: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.id}/{leaf}"

    async def start(self) -> Device:
        """Connect, subscribe to its command topics, then announce meta and `online`."""
        await self.client.__aenter__()
        await self.client.subscribe(self.topic("cmd/#"), qos=1)
        self._task = asyncio.create_task(self._serve(), name=f"e2e-device[{self.id}]")
        await self.client.publish(self.topic("meta"), orjson.dumps(self.meta), qos=1, retain=True)
        await self.status("online")
        return self

    async def status(self, status: str) -> None:
        await self.client.publish(self.topic("status"), status.encode(), qos=1, retain=True)

    async def telemetry(self, values: dict[str, Any], ts: float | None = None) -> None:
        payload = dict(values) if ts is None else {**values, "ts": ts}
        await self.client.publish(self.topic("telemetry"), orjson.dumps(payload), qos=1)

    async def _serve(self) -> None:
        async for message in self.client.messages:
            command = str(message.topic).rsplit("/", 1)[-1]
            body = orjson.loads(message.payload)  # type: ignore[arg-type]
            params = body.get("params", {})
            await self.commands.put((command, params))
            reply = self.answer(command, params) if self.answer else None
            if reply is None:
                continue
            status, result, error = reply
            answer = {"id": body["id"], "status": status, "result": result, "error": error}
            await self.client.publish(self.topic("result"), orjson.dumps(answer), qos=1)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.client.__aexit__(None, None, None)

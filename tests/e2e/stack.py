"""The real stack the dashboard is tested against: the gateway app on a fixed loopback port, a real
Mosquitto, and device stand-ins (tests/support/devices.py) on their own MQTT connections.

The gateway keeps its port across restarts so the page can reconnect to the same URL, exactly as
it would after `iotgw run` is restarted by systemd. While it runs, `Gateway.live` is the
`GatewayUnderTest` of tests/support/gateway.py (runtime, protocol clients, HTTP helpers).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web

from gateway.app import create_app
from gateway.config import Config, load_config
from tests.support.devices import THERMOSTAT_META, DeviceStandIn
from tests.support.gateway import GatewayUnderTest
from tests.support.mosquitto import Mosquitto, free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]

#: The shared thermostat, plus a boolean and a string metric for the state tiles.
THERMOSTAT: dict[str, Any] = {
    **THERMOSTAT_META,
    "metrics": {"temperature": {"unit": "°C"}, "heating": {}, "mode": {}},
}


def gateway_config(
    broker: Mosquitto, prefix: str, overrides: dict[str, Any] | None = None
) -> Config:
    return load_config(
        env={},
        overrides={
            "broker.url": broker.url,
            "conventions.native.prefix": prefix,
            "broker.reconnect_min_s": 0.05,
            "broker.reconnect_max_s": 0.5,
            "history.backend": "memory",
            **(overrides or {}),
        },
    )


@dataclass
class Gateway:
    """The real gateway app served on a loopback port that survives restarts."""

    config: Config
    port: int = field(default_factory=free_port)
    live: GatewayUnderTest | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    async def start(self) -> Gateway:
        app = create_app(self.config)
        runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", self.port).start()
        http = aiohttp.ClientSession()
        self.live = GatewayUnderTest(app, runner, self.url.rstrip("/"), http)
        return self

    async def stop(self) -> None:
        """Shut down as on SIGTERM: clients get 1001, then the runtime stops."""
        if self.live is not None:
            live, self.live = self.live, None
            for client in live.clients:
                await client.close()
            await live.stop()
            await live.http.close()

    def drop_connections(self) -> int:
        """Cut every TCP connection the gateway holds, from its side and without a close frame,
        as a restarted access point or an expired NAT entry would; return how many were cut."""
        assert self.live is not None
        assert self.live.runner.server is not None
        handlers = self.live.runner.server.connections
        for handler in handlers:
            if handler.transport is not None:
                handler.transport.abort()
        return len(handlers)


async def set_status(device: DeviceStandIn, status: str) -> None:
    """Publish the device's retained status (what its last will does on a lost connection)."""
    await device.client.publish(device.topic("status"), status.encode(), qos=1, retain=True)

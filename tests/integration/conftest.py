"""Fixtures for tests against a real Mosquitto and the real gateway app on a free port.

Every test gets its own topic prefix, so tests sharing the session broker never see each other's
devices (retained messages included).
"""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiomqtt
import pytest

from gateway.config import Config, load_config
from tests.support.devices import AddDevice, device_stand_ins, mqtt_client
from tests.support.gateway import GatewayUnderTest, running_gateway
from tests.support.mosquitto import Mosquitto

StartGateway = Callable[..., Awaitable[GatewayUnderTest]]


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses."""
    return f"t{secrets.token_hex(5)}"


def gateway_config(
    broker: Mosquitto,
    prefix: str,
    overrides: dict[str, Any] | None,
    path_settings: dict[str, bool] | None = None,
) -> Config:
    settings: dict[str, Any] = {
        **(path_settings or {}),
        "broker.url": broker.url,
        "conventions.native.prefix": prefix,
        "broker.reconnect_min_s": 0.05,
        "broker.reconnect_max_s": 0.5,
        "ws.heartbeat_s": 30.0,
        # Nothing on disk unless a test asks for a backend (tests/integration/test_history_*).
        "history.backend": "memory",
    }
    settings.update(overrides or {})
    return load_config(env={}, overrides=settings)


@pytest.fixture
async def start_gateway(
    broker: Mosquitto, prefix: str, path_settings: dict[str, bool]
) -> AsyncIterator[StartGateway]:
    """Start gateways (on `broker`, or another one) that are stopped when the test ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            overrides: dict[str, Any] | None = None,
            *,
            on: Mosquitto | None = None,
            wait_connected: bool = True,
        ) -> GatewayUnderTest:
            config = gateway_config(on or broker, prefix, overrides, path_settings)
            gateway = await stack.enter_async_context(running_gateway(config))
            if wait_connected:
                # Also keeps teardown from cancelling the link mid-connect, which leaves paho's
                # socket for the garbage collector to trip over in some later test.
                await (await gateway.connected_client()).close()
                await gateway.synced()  # ready: /readyz 200, snapshots not held
            return gateway

        yield start


@pytest.fixture
async def gw(start_gateway: StartGateway) -> GatewayUnderTest:
    """A gateway with default settings whose broker link is up."""
    return await start_gateway()  # readiness by event: hello or the gateway frame


@pytest.fixture
async def publisher(broker: Mosquitto) -> AsyncIterator[aiomqtt.Client]:
    """A plain MQTT client on the session broker, for publishing raw messages."""
    async with mqtt_client(broker.host, broker.port) as client:
        yield client


@pytest.fixture
async def add_device(broker: Mosquitto, prefix: str) -> AsyncIterator[AddDevice]:
    """Start device stand-ins (each with its own MQTT connection) stopped at test end."""
    async with device_stand_ins(broker, prefix) as add:
        yield add

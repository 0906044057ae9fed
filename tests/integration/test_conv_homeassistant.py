"""An ESPHome-style device announced by Home Assistant discovery, through a real Mosquitto."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import orjson
import pytest

from tests.integration.conftest import StartGateway
from tests.support.devices import mqtt_client, serving
from tests.support.gateway import device_status
from tests.support.mosquitto import Mosquitto

DEVICE_ID = "ha.esp-livingroom-01"


class EspDevice:
    """Stands in for an ESPHome node: retained discovery, state and status; a relay command."""

    def __init__(self, client: aiomqtt.Client, discovery: str, node: str) -> None:
        self.client = client
        self.discovery = discovery
        self.node = node
        self.relay = "OFF"
        self.commands: asyncio.Queue[bytes] = asyncio.Queue()
        self.retained: set[str] = set()

    def configs(self) -> dict[str, dict[str, Any]]:
        device = {"ids": ["esp-livingroom-01"], "name": "Living room node", "mdl": "esp32dev"}
        common = {"~": self.node, "avty_t": "~/status", "dev": device}
        return {
            f"{self.discovery}/sensor/livingroom/temperature/config": {
                **common,
                "name": "Temperature",
                "stat_t": "~/sensor/temperature/state",
                "unit_of_meas": "°C",
                "uniq_id": "esp-livingroom-01-temperature",
            },
            f"{self.discovery}/switch/livingroom/relay/config": {
                **common,
                "name": "Relay",
                "stat_t": "~/switch/relay/state",
                "cmd_t": "~/switch/relay/command",
                "uniq_id": "esp-livingroom-01-relay",
            },
        }

    async def publish(self, topic: str, payload: Any, retain: bool = True) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(topic, body, qos=1, retain=retain)
        if retain:
            self.retained.add(topic)

    async def serve(self) -> None:
        command = f"{self.node}/switch/relay/command"
        async for message in self.client.messages:
            if message.topic.value == command and isinstance(message.payload, bytes):
                self.commands.put_nowait(message.payload)
                self.relay = message.payload.decode()
                await self.publish(f"{self.node}/switch/relay/state", self.relay.encode())


@pytest.fixture
async def esp(broker: Mosquitto, prefix: str) -> AsyncIterator[EspDevice]:
    async with mqtt_client(broker.host, broker.port) as client:
        # Not under `prefix`: the native convention (prefix = `prefix`) would own those topics.
        device = EspDevice(client, f"ha-{prefix}", f"esp-{prefix}/livingroom")
        async with serving(device, f"{device.node}/switch/relay/command", "test-ha-device"):
            yield device


async def test_discovered_device_life_state_command_echo_offline(
    start_gateway: StartGateway, esp: EspDevice
) -> None:
    """Discovery groups two entities into one device; state, relay command + echo, offline."""
    gateway = await start_gateway(
        {
            "conventions.homeassistant.enabled": True,
            "conventions.homeassistant.discovery_prefix": esp.discovery,
            # ESPHome's topics live under the node's own name, outside the discovery prefix.
            "conventions.homeassistant.allowed_topics": [esp.node.split("/")[0] + "/#"],
        }
    )
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["ha.*"]}, "subscribed")

    for topic, config in esp.configs().items():
        await esp.publish(topic, config)
    await esp.publish(f"{esp.node}/status", b"online")
    await esp.publish(f"{esp.node}/sensor/temperature/state", b"21.4")
    await esp.publish(f"{esp.node}/switch/relay/state", b"OFF")

    meta = await client.event(lambda e: len((e["device"]["meta"] or {}).get("metrics", {})) == 2)
    assert meta["device"]["id"] == DEVICE_ID
    assert meta["device"]["name"] == "Living room node"
    # Named as Home Assistant names the entities; their discovery ids kept for traceability.
    assert meta["device"]["meta"]["metrics"] == {
        "Temperature": {
            "unit": "°C",
            "component": "sensor",
            "object_id": "temperature",
            "unique_id": "esp-livingroom-01-temperature",
        },
        "Relay": {
            "component": "switch",
            "object_id": "relay",
            "unique_id": "esp-livingroom-01-relay",
        },
    }
    assert meta["device"]["meta"]["commands"] == {
        "set_relay": {"params": {"state": {"type": "string", "enum": ["ON", "OFF"]}}}
    }
    # The state and status topics were subscribed at run time; their retained values arrive.
    rows = await client.readings(2, where=lambda r: r[0] == DEVICE_ID)
    assert {r[1]: r[3] for r in rows} == {"Temperature": 21.4, "Relay": False}
    await client.event(device_status(DEVICE_ID, "online"))

    reply = await client.request(
        {
            "type": "command",
            "device": DEVICE_ID,
            "command": "set_relay",
            "params": {"state": "ON"},
            "timeout_ms": 5000,
        },
        "command_result",
    )
    assert await esp.commands.get() == b"ON"
    assert reply["status"] == "ok"
    assert reply["result"] == {"Relay": True}

    await esp.publish(f"{esp.node}/status", b"offline")
    await client.event(device_status(DEVICE_ID, "offline"))

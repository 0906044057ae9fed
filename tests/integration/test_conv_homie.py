"""A Homie v4 kitchen light's whole life through a real Mosquitto, as a WebSocket client sees it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiomqtt
import pytest

from tests.integration.conftest import StartGateway
from tests.support.devices import mqtt_client, serving
from tests.support.gateway import device_status
from tests.support.mosquitto import Mosquitto

DEVICE_ID = "homie.kitchen-light"
ATTRIBUTES = {
    "$homie": "4.0.0",
    "$name": "Kitchen light",
    "$nodes": "light",
    "light/$name": "Ceiling",
    "light/$properties": "power,brightness",
    "light/power/$datatype": "boolean",
    "light/power/$settable": "true",
    "light/brightness/$datatype": "integer",
    "light/brightness/$format": "0:100",
    "light/brightness/$unit": "%",
    "light/brightness/$settable": "true",
}


class KitchenLight:
    """Stands in for a Homie device: retained attributes, values, and `/set` reflected back."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.root = f"{base}/kitchen-light"
        self.values = {"power": "false", "brightness": "30"}
        self.sets: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.retained: set[str] = set()

    async def publish(self, leaf: str, payload: str) -> None:
        topic = f"{self.root}/{leaf}"
        await self.client.publish(topic, payload.encode(), qos=1, retain=True)
        self.retained.add(topic)

    async def serve(self) -> None:
        async for message in self.client.messages:
            topic = message.topic.value
            if not topic.endswith("/set") or not isinstance(message.payload, bytes):
                continue
            prop = topic.removesuffix("/set").rsplit("/", 1)[-1]
            self.sets.put_nowait((prop, message.payload))
            # The spec: the device reflects the processed value in the property topic.
            self.values[prop] = message.payload.decode()
            await self.publish(f"light/{prop}", self.values[prop])


@pytest.fixture
async def light(broker: Mosquitto, prefix: str) -> AsyncIterator[KitchenLight]:
    async with mqtt_client(broker.host, broker.port) as client:
        device = KitchenLight(client, f"homie-{prefix}")
        async with serving(device, f"{device.root}/light/+/set", "test-homie-light"):
            yield device


async def test_homie_light_life_birth_values_set_echo_lost(
    start_gateway: StartGateway, light: KitchenLight
) -> None:
    """Birth (attributes, then ready), values, a brightness set echoed back, then `lost`."""
    gateway = await start_gateway(
        {
            "conventions.homie.enabled": True,
            "conventions.homie.base_topic": light.root.rsplit("/", 1)[0],
        }
    )
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["homie.*"]}, "subscribed")

    await light.publish("$state", "init")
    for leaf, payload in ATTRIBUTES.items():
        await light.publish(leaf, payload)
    for prop, value in light.values.items():
        await light.publish(f"light/{prop}", value)
    await light.publish("$state", "ready")

    # The meta announced at `ready`: the device said `init` while it published its attributes.
    meta = await client.event(lambda e: e["device"]["meta"])
    assert meta["device"]["name"] == "Kitchen light"
    assert meta["device"]["meta"]["commands"]["set_light_brightness"] == {
        "params": {"value": {"type": "integer", "min": 0, "max": 100}}
    }
    assert meta["device"]["meta"]["metrics"]["light.brightness"] == {"unit": "%"}
    rows = await client.readings(2, where=lambda r: r[0] == DEVICE_ID)
    assert {r[1]: r[3] for r in rows} == {"light.power": False, "light.brightness": 30}
    await client.event(device_status(DEVICE_ID, "online"))

    reply = await client.request(
        {
            "type": "command",
            "device": DEVICE_ID,
            "command": "set_light_brightness",
            "params": {"value": 75},
            "timeout_ms": 5000,
        },
        "command_result",
    )
    assert await light.sets.get() == ("brightness", b"75")
    assert reply["status"] == "ok"
    assert reply["result"] == {"light.brightness": 75}

    await light.publish("$state", "lost")  # what the device's last will says
    await client.event(device_status(DEVICE_ID, "offline"))

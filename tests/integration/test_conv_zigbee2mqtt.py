"""A Zigbee2MQTT bulb's whole life through a real Mosquitto, as a WebSocket client sees it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import orjson
import pytest

from tests.integration.conftest import StartGateway
from tests.support.devices import mqtt_client
from tests.support.gateway import Frame, WsClient, device_status
from tests.support.mosquitto import Mosquitto

NAME = "living room/ceiling lamp"
DEVICES = [
    {
        "ieee_address": "0x00124b00120144ae",
        "type": "Coordinator",
        "friendly_name": "Coordinator",
        "definition": None,
    },
    {
        "ieee_address": "0x90fd9ffffe6494fc",
        "type": "Router",
        "friendly_name": NAME,
        "definition": {
            "model": "LED1545G12",
            "vendor": "IKEA",
            "exposes": [
                {
                    "type": "light",
                    "features": [
                        {
                            "type": "binary",
                            "name": "state",
                            "property": "state",
                            "value_on": "ON",
                            "value_off": "OFF",
                            "value_toggle": "TOGGLE",
                            "access": 7,
                        },
                        {
                            "type": "numeric",
                            "name": "brightness",
                            "property": "brightness",
                            "value_min": 0,
                            "value_max": 254,
                            "access": 7,
                        },
                    ],
                },
                {
                    "type": "numeric",
                    "name": "linkquality",
                    "property": "linkquality",
                    "unit": "lqi",
                    "access": 1,
                },
            ],
        },
    },
]


class Bridge:
    """Stands in for Zigbee2MQTT: announces the bulb, and applies `/set` by publishing state."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.base = base
        self.state: dict[str, Any] = {"state": "OFF", "brightness": 10, "linkquality": 80}
        self.received: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.echo = True  # False: take commands but never show them in the state

    async def publish(self, leaf: str, payload: object, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(f"{self.base}/{leaf}", body, qos=1, retain=retain)

    async def serve(self) -> None:
        set_topic = f"{self.base}/{NAME}/set"
        async for message in self.client.messages:
            if message.topic.value == set_topic and isinstance(message.payload, bytes):
                change = orjson.loads(message.payload)
                self.received.put_nowait(change)
                if self.echo:
                    self.state.update(change)
                    await self.publish(NAME, self.state)


@pytest.fixture
async def bridge(broker: Mosquitto, prefix: str) -> AsyncIterator[Bridge]:
    async with mqtt_client(broker.host, broker.port) as client:
        stand_in = Bridge(client, f"z2m-{prefix}")
        await client.subscribe(f"{stand_in.base}/{NAME}/set", qos=1)
        task = asyncio.create_task(stand_in.serve(), name="test-z2m-bridge")
        yield stand_in
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Retained messages outlive the test: clear them.
        await stand_in.publish("bridge/devices", b"", retain=True)
        await stand_in.publish("bridge/state", b"", retain=True)
        await stand_in.publish(f"{NAME}/availability", b"", retain=True)


def device_frame(device_id: str, **wanted: Any) -> Any:
    """A predicate for a device event of `device_id` whose state has `wanted`'s values."""

    def match(frame: Frame) -> bool:
        if frame["device"]["id"] != device_id:
            return False
        return all(frame["device"].get(k) == v for k, v in wanted.items())

    return match


async def test_bulb_life_announce_state_command_echo_offline(
    start_gateway: StartGateway, bridge: Bridge
) -> None:
    """Announce, state, a brightness command answered by its echo, offline: a client sees each."""
    gateway = await start_gateway(
        {"conventions.zigbee2mqtt.enabled": True, "conventions.zigbee2mqtt.base_topic": bridge.base}
    )
    client: WsClient = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["z2m.*"]}, "subscribed")
    await client.expect(lambda f: f["type"] == "snapshot")

    await bridge.publish("bridge/devices", DEVICES, retain=True)
    meta = (await client.event(lambda e: e["device"]["meta"]))["device"]
    device_id = meta["id"]
    assert device_id.startswith("z2m.living-room-ceiling-lamp-")
    assert meta["name"] == NAME
    assert meta["meta"]["commands"]["set_brightness"] == {
        "params": {"brightness": {"type": "number", "min": 0, "max": 254}}
    }
    assert meta["meta"]["metrics"]["linkquality"] == {"unit": "lqi"}

    await bridge.publish(f"{NAME}/availability", {"state": "online"}, retain=True)
    await client.event(device_frame(device_id, status="online"))
    await bridge.publish(NAME, bridge.state)
    rows = await client.readings(3, where=lambda r: r[0] == device_id)
    assert {r[1]: r[3] for r in rows} == {"state": "OFF", "brightness": 10, "linkquality": 80}

    reply = await client.request(
        {
            "type": "command",
            "device": device_id,
            "command": "set_brightness",
            "params": {"brightness": 128},
            "timeout_ms": 5000,
        },
        "command_result",
    )
    assert await bridge.received.get() == {"brightness": 128}
    assert reply["status"] == "ok"
    assert reply["result"] == {"brightness": 128}

    await bridge.publish(f"{NAME}/availability", b"offline", retain=True)  # the legacy form
    await client.event(device_frame(device_id, status="offline"))


async def test_command_without_echo_times_out(start_gateway: StartGateway, bridge: Bridge) -> None:
    """A set the device never reflects in its state gets an honest timeout, not ok."""
    gateway = await start_gateway(
        {"conventions.zigbee2mqtt.enabled": True, "conventions.zigbee2mqtt.base_topic": bridge.base}
    )
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["z2m.*"]}, "subscribed")
    await bridge.publish("bridge/devices", DEVICES, retain=True)
    device = await client.event(lambda e: e["device"]["meta"])
    bridge.echo = False
    reply = await client.request(
        {
            "type": "command",
            "device": device["device"]["id"],
            "command": "set_state",
            "params": {"state": "ON"},
            "timeout_ms": 300,
        },
        "command_result",
    )
    assert await bridge.received.get() == {"state": "ON"}
    assert reply["status"] == "timeout"


async def test_an_offline_bridge_makes_its_devices_unreachable_and_refuses_commands(
    start_gateway: StartGateway, bridge: Bridge
) -> None:
    """bridge/state offline: the bridge and the bulb show offline, and a command is refused at
    once as unavailable with nothing published; online again, the command goes out."""
    gateway = await start_gateway(
        {"conventions.zigbee2mqtt.enabled": True, "conventions.zigbee2mqtt.base_topic": bridge.base}
    )
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["z2m.*"]}, "subscribed")
    await bridge.publish("bridge/devices", DEVICES, retain=True)
    device = (await client.event(lambda e: e["device"]["meta"]))["device"]["id"]
    await bridge.publish("bridge/state", {"state": "offline"}, retain=True)
    await client.event(device_status("z2m.bridge", "offline"))
    await client.event(device_status(device, "offline"))
    command = {
        "type": "command",
        "device": device,
        "command": "set_state",
        "params": {"state": "ON"},
        "timeout_ms": 5000,
    }
    refused = await client.request(command)
    assert (refused["type"], refused["code"]) == ("error", "unavailable")
    assert "bridge is offline" in refused["message"]
    assert bridge.received.empty()
    await bridge.publish("bridge/state", b"online", retain=True)
    await client.event(device_status("z2m.bridge", "online"))
    reply = await client.request(command, "command_result")
    assert await bridge.received.get() == {"state": "ON"}
    assert reply["status"] == "ok"

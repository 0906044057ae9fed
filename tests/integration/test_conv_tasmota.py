"""A Tasmota smart plug's whole life through a real Mosquitto, as a WebSocket client sees it."""

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
from tests.support.gateway import Frame
from tests.support.mosquitto import Mosquitto

ENABLE = {"conventions.tasmota.enabled": True}


class Plug:
    """Stands in for a Tasmota plug (Sonoff POW): LWT, STATE, SENSOR, and POWER commands."""

    def __init__(self, client: aiomqtt.Client, topic: str) -> None:
        self.client = client
        self.topic = topic
        self.power = "OFF"
        self.commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()

    async def publish(self, prefix: str, leaf: str, payload: Any, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(f"{prefix}/{self.topic}/{leaf}", body, qos=1, retain=retain)

    async def serve(self) -> None:
        """Apply POWER commands and answer on stat/RESULT and stat/POWER, as Tasmota does."""
        cmnd = f"cmnd/{self.topic}/"
        async for message in self.client.messages:
            topic = message.topic.value
            if not topic.startswith(cmnd) or not isinstance(message.payload, bytes):
                continue
            command = topic[len(cmnd) :]
            self.commands.put_nowait((command, message.payload))
            if command.upper() != "POWER":
                await self.publish("stat", "RESULT", {"Command": "Unknown"})
                continue
            wanted = message.payload.decode().upper()
            self.power = {"ON": "ON", "OFF": "OFF"}.get(
                wanted, "OFF" if self.power == "ON" else "ON"
            )
            await self.publish("stat", "RESULT", {"POWER": self.power})
            await self.publish("stat", "POWER", self.power.encode())


@pytest.fixture
async def plug(broker: Mosquitto, prefix: str) -> AsyncIterator[Plug]:
    async with mqtt_client(broker.host, broker.port) as client:
        stand_in = Plug(client, f"plug-{prefix}")
        await client.subscribe(f"cmnd/{stand_in.topic}/#", qos=1)
        task = asyncio.create_task(stand_in.serve(), name="test-tasmota-plug")
        yield stand_in
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await stand_in.publish("tele", "LWT", b"", retain=True)  # retained: clear it


def device_event(device_id: str, key: str, value: Any) -> Any:
    def match(frame: Frame) -> bool:
        return frame["device"]["id"] == device_id and frame["device"].get(key) == value

    return match


async def test_plug_life_lwt_state_sensor_power_command_offline(
    start_gateway: StartGateway, plug: Plug
) -> None:
    """LWT, STATE and SENSOR reach a client; POWER TOGGLE is answered ok; Offline shows."""
    device_id = f"tasmota.{plug.topic}"
    gateway = await start_gateway(ENABLE)
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": [device_id]}, "subscribed")

    await plug.publish("tele", "LWT", b"Online", retain=True)
    await client.event(device_event(device_id, "status", "online"))
    await plug.publish(
        "tele",
        "STATE",
        {"Time": "2024-01-01T10:00:00", "UptimeSec": 5, "POWER": plug.power, "Wifi": {"RSSI": 76}},
    )
    meta = await client.event(lambda e: e["device"]["meta"])
    assert meta["device"]["meta"]["commands"] == {
        "POWER": {"params": {"state": {"type": "string", "enum": ["ON", "OFF", "TOGGLE"]}}}
    }
    await plug.publish(
        "tele", "SENSOR", {"Time": "2024-01-01T10:00:00", "ENERGY": {"Power": 42, "Total": 1.5}}
    )
    rows = await client.readings(5, where=lambda r: r[0] == device_id)
    assert {r[1]: r[3] for r in rows} == {
        "UptimeSec": 5,
        "POWER": "OFF",
        "Wifi.RSSI": 76,
        "ENERGY.Power": 42,
        "ENERGY.Total": 1.5,
    }
    units = await client.event(
        lambda e: "ENERGY.Power" in (e["device"]["meta"] or {}).get("metrics", {})
    )
    assert units["device"]["meta"]["metrics"]["ENERGY.Power"] == {"unit": "W"}

    reply = await client.request(
        {
            "type": "command",
            "device": device_id,
            "command": "POWER",
            "params": {"state": "TOGGLE"},
            "timeout_ms": 5000,
        },
        "command_result",
    )
    assert await plug.commands.get() == ("POWER", b"TOGGLE")
    assert reply["status"] == "ok"
    assert reply["result"] == {"POWER": "ON"}
    power = await client.readings(1, where=lambda r: r[0] == device_id and r[1] == "POWER")
    assert power[0][3] == "ON"

    await plug.publish("tele", "LWT", b"Offline", retain=True)
    await client.event(device_event(device_id, "status", "offline"))


async def test_status_survives_a_gateway_restart_through_retained_lwt(
    start_gateway: StartGateway, plug: Plug
) -> None:
    """A gateway started after the plug learns its status from the retained LWT."""
    device_id = f"tasmota.{plug.topic}"
    await plug.publish("tele", "LWT", b"Online", retain=True)
    gateway = await start_gateway(ENABLE)
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": [device_id]}, "subscribed")
    snapshot = await client.expect(lambda f: f["type"] == "snapshot")
    statuses = [d["status"] for d in snapshot["devices"]]
    if statuses != ["online"]:
        await client.event(device_event(device_id, "status", "online"))

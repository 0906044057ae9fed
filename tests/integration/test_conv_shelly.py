"""A Shelly Plus 1PM's life through a real Mosquitto, as a WebSocket client sees it: status,
notifications, an RPC request answered on the gateway's own topic, an error, offline."""

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

SHELLY_ID = "shellyplus1pm-a8032ab636ec"
DEVICE_ID = f"shelly.{SHELLY_ID}"


class Plug:
    """Stands in for a Shelly Plus 1PM: `online`, switch:0 status, and Switch.Set answered on the
    requester's `<src>/rpc` (an unknown component answered with Shelly's error)."""

    def __init__(self, client: aiomqtt.Client, base: str) -> None:
        self.client = client
        self.prefix = f"{base}/{SHELLY_ID}"
        self.output = False
        self.requests: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.retained: set[str] = set()

    async def publish(self, topic: str, payload: object, retain: bool = False) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(topic, body, qos=1, retain=retain)
        if retain:
            self.retained.add(topic)

    def status(self) -> dict[str, Any]:
        return {
            "id": 0,
            "source": "init",
            "output": self.output,
            "apower": 8.9 if self.output else 0.0,
            "voltage": 237.5,
            "aenergy": {"total": 6.532, "by_minute": [0, 0, 0]},
        }

    async def serve(self) -> None:
        async for message in self.client.messages:
            if not isinstance(message.payload, bytes):
                continue
            request = orjson.loads(message.payload)
            self.requests.put_nowait(request)
            answer: dict[str, Any] = {"id": request["id"], "src": SHELLY_ID, "dst": request["src"]}
            if request["method"] == "Switch.Set" and request["params"]["id"] == 0:
                answer["result"] = {"was_on": self.output}
                self.output = request["params"]["on"]
            else:
                answer["error"] = {"code": -103, "message": "Invalid argument 'id': no instance"}
            await self.publish(f"{request['src']}/rpc", answer)
            notify = {
                "src": SHELLY_ID,
                "method": "NotifyStatus",
                "params": {"ts": 1764090000.0, "switch:0": {"output": self.output}},
            }
            await self.publish(f"{self.prefix}/events/rpc", notify)


@pytest.fixture
async def plug(broker: Mosquitto, prefix: str) -> AsyncIterator[Plug]:
    async with mqtt_client(broker.host, broker.port) as client:
        device = Plug(client, f"shelly-{prefix}")
        async with serving(device, f"{device.prefix}/rpc", "test-shelly-plug"):
            yield device


async def test_shelly_life_status_rpc_answer_error_offline(
    start_gateway: StartGateway, plug: Plug, prefix: str
) -> None:
    """online, a switch:0 status, Switch.Set answered ok with its result (not an echo), a
    request for a component the device lacks answered with Shelly's error, then offline."""
    gateway = await start_gateway(
        {
            "conventions.shelly.enabled": True,
            "conventions.shelly.base_topic": f"shelly-{prefix}",
            "conventions.shelly.rpc_src": f"iotgw-{prefix}",
        }
    )
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["shelly.*"]}, "subscribed")

    await plug.publish(f"{plug.prefix}/online", b"true", retain=True)
    await plug.publish(f"{plug.prefix}/status/switch:0", plug.status())
    await client.event(device_status(DEVICE_ID, "online"))
    meta = await client.event(
        lambda e: "switch_0.set" in (e["device"]["meta"] or {}).get("commands", {})
    )
    assert meta["device"]["type"] == "shellyplus1pm"
    assert meta["device"]["meta"]["metrics"]["switch:0.apower"] == {"unit": "W"}
    rows = await client.readings(4, where=lambda r: r[0] == DEVICE_ID)
    assert {r[1]: r[3] for r in rows}["switch:0.output"] is False

    reply = await client.request(
        {"type": "command", "device": DEVICE_ID, "command": "switch_0.set",
         "params": {"on": True}, "timeout_ms": 5000},
        "command_result",
    )  # fmt: skip
    request = await plug.requests.get()
    assert (request["method"], request["params"], request["src"]) == (
        "Switch.Set",
        {"id": 0, "on": True},
        f"iotgw-{prefix}",
    )
    assert reply["status"] == "ok"
    assert reply["result"] == {"was_on": False}
    await client.readings(
        1, where=lambda r: r[0] == DEVICE_ID and r[1] == "switch:0.output" and r[3] is True
    )

    # A component the gateway has seen but the device refuses: Shelly's own error comes back.
    await plug.publish(f"{plug.prefix}/status/switch:1", {"id": 1, "output": False})
    await client.event(lambda e: "switch_1.set" in (e["device"]["meta"] or {}).get("commands", {}))
    failed = await client.request(
        {"type": "command", "device": DEVICE_ID, "command": "switch_1.toggle", "timeout_ms": 5000},
        "command_result",
    )
    assert failed["status"] == "error"
    assert failed["error"].startswith("-103:")

    await plug.publish(f"{plug.prefix}/online", b"false", retain=True)  # what its will says
    await client.event(device_status(DEVICE_ID, "offline"))

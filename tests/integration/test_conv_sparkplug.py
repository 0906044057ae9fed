"""A Sparkplug B edge node and its PLC through a real Mosquitto, as a WebSocket client sees them:
births, data by alias, a seq gap answered by a rebirth request, a DCMD write confirmed by DDATA,
and the node's death."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
import pytest

from gateway.conventions.tahu.sparkplug_b_pb2 import Payload
from tests.integration.conftest import StartGateway
from tests.support.devices import mqtt_client, serving
from tests.support.gateway import device_status
from tests.support.mosquitto import Mosquitto

INT64, DOUBLE, BOOLEAN = 4, 10, 11


class EdgeNode:
    """Stands in for an edge node with one device: publishes births and data; records NCMDs and
    applies DCMD writes, showing them in the next DDATA."""

    def __init__(self, client: aiomqtt.Client, group: str) -> None:
        self.client = client
        self.root = f"spBv1.0/{group}"
        self.seq = 0
        self.valve = False
        self.ncmd: asyncio.Queue[Payload] = asyncio.Queue()
        self.retained: set[str] = set()  # Sparkplug retains nothing

    async def send(self, kind: str, message: Payload, device: str = "") -> None:
        if kind not in ("NBIRTH", "NDEATH"):
            self.seq = (self.seq + 1) % 256
            message.seq = self.seq
        topic = f"{self.root}/{kind}/Edge01" + (f"/{device}" if device else "")
        await self.client.publish(topic, message.SerializeToString(), qos=0)

    async def births(self) -> None:
        self.seq = 0
        birth = Payload(timestamp=1_764_090_000_000, seq=0)
        birth.metrics.add(name="bdSeq", datatype=INT64, long_value=4)
        birth.metrics.add(name="Node Control/Rebirth", datatype=BOOLEAN, boolean_value=False)
        birth.metrics.add(name="Temperature", alias=1, datatype=DOUBLE, double_value=21.5)
        await self.send("NBIRTH", birth)
        device = Payload(timestamp=1_764_090_000_000)
        valve = device.metrics.add(name="Outputs/Valve", alias=2, datatype=BOOLEAN)
        valve.boolean_value = self.valve
        valve.properties.keys.append("readOnly")
        valve.properties.values.add(type=BOOLEAN, boolean_value=False)
        await self.send("DBIRTH", device, "PLC1")

    async def serve(self) -> None:
        async for message in self.client.messages:
            kind = message.topic.value.split("/")[2]
            if not isinstance(message.payload, bytes) or kind not in ("NCMD", "DCMD"):
                continue  # its own births and data, heard back
            command = Payload.FromString(message.payload)
            if message.topic.value.endswith("/NCMD/Edge01"):
                self.ncmd.put_nowait(command)
                continue
            self.valve = command.metrics[0].boolean_value
            data = Payload(timestamp=1_764_090_001_000)
            data.metrics.add(alias=2, boolean_value=self.valve)
            await self.send("DDATA", data, "PLC1")


@pytest.fixture
async def edge(broker: Mosquitto, prefix: str) -> AsyncIterator[EdgeNode]:
    async with mqtt_client(broker.host, broker.port) as client:
        node = EdgeNode(client, f"spb-{prefix}")
        async with serving(node, f"{node.root}/+/Edge01/#", "test-sparkplug-edge"):
            yield node


async def test_sparkplug_edge_node_life(
    start_gateway: StartGateway, edge: EdgeNode, prefix: str
) -> None:
    """Births make two devices with meta; NDATA by alias reads; a seq gap brings an NCMD
    rebirth request; a DCMD write is confirmed by the DDATA showing it; NDEATH takes both
    offline."""
    gateway = await start_gateway({"conventions.sparkplug.enabled": True})
    node_id, plc_id = f"spb.spb-{prefix}:Edge01", f"spb.spb-{prefix}:Edge01:PLC1"
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["spb.*"]}, "subscribed")
    await edge.births()
    meta = await client.event(lambda e: e["device"]["id"] == plc_id and e["device"]["meta"])
    assert meta["device"]["status"] == "online"
    assert meta["device"]["meta"]["commands"] == {
        "set_Outputs_Valve": {"params": {"value": {"type": "boolean"}}}
    }
    data = Payload(timestamp=1_764_090_000_500)
    data.metrics.add(alias=1, double_value=22.25)
    await edge.send("NDATA", data)
    await client.readings(1, where=lambda r: r[:2] == [node_id, "Temperature"] and r[3] == 22.25)

    edge.seq += 5  # five messages lost on the way
    await edge.send("NDATA", Payload(timestamp=1_764_090_000_600))
    request = await asyncio.wait_for(edge.ncmd.get(), 10)
    assert [(m.name, m.boolean_value) for m in request.metrics] == [("Node Control/Rebirth", True)]
    await edge.births()  # answered as the specification asks: a new session

    reply: dict[str, Any] = await client.request(
        {"type": "command", "device": plc_id, "command": "set_Outputs_Valve",
         "params": {"value": True}, "timeout_ms": 5000},
        "command_result",
    )  # fmt: skip
    assert reply["status"] == "ok", reply
    assert reply["result"] == {"Outputs/Valve": True}
    assert edge.valve is True

    death = Payload(timestamp=1_764_090_002_000)
    death.metrics.add(name="bdSeq", datatype=INT64, long_value=4)
    await edge.send("NDEATH", death)
    await client.event(device_status(node_id, "offline"))
    await client.event(device_status(plc_id, "offline"))

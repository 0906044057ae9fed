"""A tiny device stand-in speaking the native convention over a real MQTT connection.

It publishes its meta and status (retained, like a real device), telemetry on demand, and records
every command the gateway publishes to it; `answer` decides its reply (None: stay silent).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import aiomqtt
import orjson

from tests.support.mosquitto import Mosquitto

THERMOSTAT_META: dict[str, Any] = {
    "type": "thermostat",
    "name": "Living room",
    "metrics": {"temperature": {"unit": "°C"}},
    "commands": {
        "set_target": {"params": {"target": {"type": "number", "min": 5, "max": 30}}},
        "set_mode": {"params": {"mode": {"type": "string", "enum": ["off", "heat", "cool"]}}},
        "toggle": {"params": {}},
    },
}


@dataclass(frozen=True)
class ReceivedCommand:
    topic: str
    command: str
    id: str
    params: dict[str, Any]


#: (command name, params) -> (status, result, error) or None to ignore the command.
Answer = Callable[[str, dict[str, Any]], tuple[str, Any, str | None] | None]


def echo_ok(command: str, params: dict[str, Any]) -> tuple[str, Any, str | None]:
    return "ok", params, None


def mqtt_client(host: str, port: int) -> aiomqtt.Client:
    return aiomqtt.Client(host, port, identifier=f"test-{secrets.token_hex(4)}")


@contextlib.asynccontextmanager
async def tolerant_client(host: str, port: int) -> AsyncIterator[aiomqtt.Client]:
    """An MQTT client whose exit tolerates its broker having been killed meanwhile."""
    client = mqtt_client(host, port)
    await client.__aenter__()
    try:
        yield client
    finally:
        with contextlib.suppress(aiomqtt.MqttError):
            await client.__aexit__(None, None, None)


class DeviceStandIn:
    def __init__(
        self,
        client: aiomqtt.Client,
        prefix: str,
        device_id: str,
        meta: dict[str, Any] | None = None,
        answer: Answer | None = echo_ok,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.id = device_id
        self.meta = THERMOSTAT_META if meta is None else meta
        self.answer = answer
        self.commands: asyncio.Queue[ReceivedCommand] = asyncio.Queue()
        self._task: asyncio.Task[None] | None = None

    def topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.id}/{leaf}"

    async def start(self) -> DeviceStandIn:
        """Subscribe to its command topics (SUBACK received), then announce meta and status."""
        await self.client.subscribe(self.topic("cmd/#"), qos=1)
        self._task = asyncio.create_task(self._serve(), name=f"test-device[{self.id}]")
        await self.client.publish(self.topic("meta"), orjson.dumps(self.meta), qos=1, retain=True)
        await self.client.publish(self.topic("status"), b"online", qos=1, retain=True)
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def telemetry(self, values: dict[str, Any], ts: float | None = None) -> None:
        body = dict(values) if ts is None else {**values, "ts": ts}
        await self.client.publish(self.topic("telemetry"), orjson.dumps(body), qos=1)

    async def _serve(self) -> None:
        cmd_prefix = self.topic("cmd/")
        async for message in self.client.messages:
            topic = message.topic.value
            if not topic.startswith(cmd_prefix):
                continue
            assert isinstance(message.payload, bytes)
            body = orjson.loads(message.payload)
            received = ReceivedCommand(
                topic, topic[len(cmd_prefix) :], body["id"], body.get("params", {})
            )
            self.commands.put_nowait(received)
            reply = self.answer(received.command, received.params) if self.answer else None
            if reply is None:
                continue
            status, result, error = reply
            answer: dict[str, Any] = {"id": received.id, "status": status, "result": result}
            if error is not None:
                answer["error"] = error
            await self.client.publish(self.topic("result"), orjson.dumps(answer), qos=1)


#: The `add_device` fixtures' function: (device id, meta=None, answer=echo_ok, on=None).
AddDevice = Callable[..., Awaitable[DeviceStandIn]]


@contextlib.asynccontextmanager
async def device_stand_ins(
    broker: Mosquitto, prefix: str, default_meta: dict[str, Any] | None = None
) -> AsyncIterator[AddDevice]:
    """An `add(device_id, meta=None, answer=echo_ok, on=None)` that starts DeviceStandIns, each on
    its own MQTT connection to `broker` (or `on`); all are stopped when the block ends."""
    async with contextlib.AsyncExitStack() as stack:

        async def add(
            device_id: str,
            meta: dict[str, Any] | None = None,
            answer: Answer | None = echo_ok,
            on: Mosquitto | None = None,
        ) -> DeviceStandIn:
            server = on or broker
            client = await stack.enter_async_context(mqtt_client(server.host, server.port))
            device = DeviceStandIn(
                client, prefix, device_id, default_meta if meta is None else meta, answer
            )
            stack.push_async_callback(_stop_quietly, device)
            return await device.start()

        yield add


async def _stop_quietly(device: DeviceStandIn) -> None:
    """Stop a stand-in whose broker may have been killed under it (its task then ended with
    MqttError, which DeviceStandIn.stop would raise again)."""
    with contextlib.suppress(aiomqtt.MqttError):
        await device.stop()


class ServingStandIn(Protocol):
    """A convention's device stand-in: serves its command topics, remembers what it retained."""

    client: aiomqtt.Client
    retained: set[str]

    async def serve(self) -> None: ...


S = TypeVar("S", bound=ServingStandIn)


@contextlib.asynccontextmanager
async def serving(device: S, commands: str, name: str) -> AsyncIterator[S]:
    """Subscribe `device` to its `commands` filter and run its `serve()` (a task named `name`);
    on exit stop it and clear the retained messages it published, which outlive the test."""
    await device.client.subscribe(commands, qos=1)
    task = asyncio.create_task(device.serve(), name=name)
    try:
        yield device
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for topic in device.retained:
            await device.client.publish(topic, b"", qos=1, retain=True)

"""Commands from WebSocket clients to a device stand-in on the real broker, and back."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from tests.support.devices import mqtt_client
from tests.support.gateway import announced, wait_for_device


async def command_ready(gw, add_device, device_id="thermo-1", **kwargs):
    """A device stand-in whose meta and status the gateway has applied, and a client."""
    device = await add_device(device_id, **kwargs)
    await wait_for_device(gw, device_id, announced)
    return device, await gw.connect()


async def test_command_round_trip_accepted_then_ok_result(gw, add_device, prefix):
    """A valid command is published to <prefix>/<dev>/cmd/<name>; the client gets
    command_accepted, then one command_result ok with the device's result and rtt_ms."""
    device, client = await command_ready(gw, add_device)
    await client.send(
        {
            "type": "command",
            "id": 3,
            "device": "thermo-1",
            "command": "set_target",
            "params": {"target": 21.5},
            "timeout_ms": 5000,
        }
    )
    accepted = await client.expect(lambda f: f.get("id") == 3)
    result = await client.expect(lambda f: f.get("id") == 3)
    received = await asyncio.wait_for(device.commands.get(), 5)

    assert accepted["type"] == "command_accepted"
    assert accepted["command_id"].startswith("c-")
    assert received.topic == f"{prefix}/thermo-1/cmd/set_target"
    assert received.id == accepted["command_id"]
    assert received.params == {"target": 21.5}
    assert result["type"] == "command_result"
    assert result["command_id"] == accepted["command_id"]
    assert result["status"] == "ok"
    assert result["result"] == {"target": 21.5}
    assert result["rtt_ms"] > 0
    assert gw.runtime.router.pending == 0


async def test_device_error_result_is_reported_with_its_message(gw, add_device):
    """A device answering status error yields command_result error carrying its message."""
    _, client = await command_ready(
        gw, add_device, answer=lambda command, params: ("error", None, "motor stuck")
    )
    await client.request(
        {"type": "command", "device": "thermo-1", "command": "toggle"}, "command_accepted"
    )
    result = await client.expect(lambda f: f["type"] == "command_result")
    assert result["status"] == "error"
    assert result["error"] == "motor stuck"


async def test_silent_device_gives_timeout_result(gw, add_device):
    """A device that never answers yields command_result timeout after timeout_ms."""
    device, client = await command_ready(gw, add_device, answer=None)
    await client.request(
        {"type": "command", "device": "thermo-1", "command": "toggle", "timeout_ms": 200},
        "command_accepted",
    )
    result = await client.expect(lambda f: f["type"] == "command_result")
    assert result["status"] == "timeout"
    assert result["rtt_ms"] >= 200
    assert (await asyncio.wait_for(device.commands.get(), 5)).command == "toggle"
    assert gw.runtime.router.pending == 0


async def test_result_goes_only_to_the_client_that_sent_the_command(gw, add_device):
    """Another client subscribed to the device sees no command_accepted/command_result."""
    _, client = await command_ready(gw, add_device)
    other = await gw.connect()
    await other.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    await client.request(
        {"type": "command", "device": "thermo-1", "command": "toggle"}, "command_accepted"
    )
    await client.expect(lambda f: f["type"] == "command_result")
    # The ping's pong is queued after anything the command could have sent to `other`.
    await other.request({"type": "ping"}, "pong")
    assert not [f for f in other.seen if f["type"].startswith("command")]


@pytest.mark.parametrize(
    ("command", "params", "code"),
    [
        ("set_target", {"target": 99}, "bad_params"),
        ("set_target", {"target": "warm"}, "bad_params"),
        ("set_target", {}, "bad_params"),
        ("set_target", {"target": 20, "extra": 1}, "bad_params"),
        ("set_mode", {"mode": "turbo"}, "bad_params"),
        ("no_such_command", {}, "not_found"),
    ],
)
async def test_refused_command_publishes_nothing(gw, add_device, command, params, code):
    """A command that does not fit the meta gets an error frame and nothing is published.

    Absence is checked without a wait: a valid command sent afterwards must be the first one
    the device receives, since the gateway publishes over one ordered MQTT connection.
    """
    device, client = await command_ready(gw, add_device)
    error = await client.request(
        {"type": "command", "device": "thermo-1", "command": command, "params": params}
    )
    assert error["type"] == "error"
    assert error["code"] == code
    await client.request(
        {"type": "command", "device": "thermo-1", "command": "toggle"}, "command_result"
    )
    first = await asyncio.wait_for(device.commands.get(), 5)
    assert first.command == "toggle"
    assert device.commands.empty()


async def test_command_to_unknown_device_is_not_found(gw):
    """A command for a device the registry does not hold answers not_found."""
    client = await gw.connect()
    reply = await client.request({"type": "command", "device": "ghost-1", "command": "toggle"})
    assert reply["type"] == "error"
    assert reply["code"] == "not_found"


@pytest.mark.parametrize(
    "device_id", ["thermo-1/cmd", "thermo-1/#", "+", "#", "thermo-\x00", "thermo-1\n", "../x"]
)
async def test_client_device_id_outside_the_allow_list_publishes_nothing(
    gw, add_device, broker, prefix, device_id
):
    """Device ids holding `/`, `+`, `#`, NUL or control characters are refused, and nothing at
    all is published under the prefix (a spy on <prefix>/# sees only the later valid command)."""
    _, client = await command_ready(gw, add_device)
    async with mqtt_client(broker.host, broker.port) as spy:
        await spy.subscribe(f"{prefix}/#", qos=1)
        error = await client.request(
            {"type": "command", "device": device_id, "command": "toggle", "params": {}}
        )
        assert error["type"] == "error"
        assert error["code"] == "not_found"
        await client.request(
            {"type": "command", "device": "thermo-1", "command": "toggle"}, "command_result"
        )
        async with asyncio.timeout(5):
            async for message in spy.messages:
                if "/cmd/" in message.topic.value:
                    break
        assert message.topic.value == f"{prefix}/thermo-1/cmd/toggle"
    assert gw.runtime.link.connected


async def test_string_param_with_declared_bounds_is_validated_not_crashed(gw, add_device):
    """A meta that puts min/max on a string param still gives an answer (ok or bad_params) and
    the connection stays usable."""
    meta: dict[str, Any] = {
        "commands": {"say": {"params": {"text": {"type": "string", "min": 1, "max": 10}}}}
    }
    _, client = await command_ready(gw, add_device, "talker-1", meta=meta)
    reply = await client.request(
        {"type": "command", "device": "talker-1", "command": "say", "params": {"text": "hi"}}
    )
    assert reply["type"] in ("command_accepted", "error")
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_commands_in_flight_are_capped_even_when_sent_in_one_burst(start_gateway, add_device):
    """With max_in_flight_per_client=1, a second command sent right behind the first (before
    the gateway ran the first one's task) is refused with rate_limited."""
    gateway = await start_gateway({"commands.max_in_flight_per_client": 1})
    _, client = await command_ready(gateway, add_device, answer=None)
    burst = [
        {"type": "command", "id": i, "device": "thermo-1", "command": "toggle", "timeout_ms": 300}
        for i in (1, 2)
    ]
    await client.ws.send_str(orjson.dumps(burst[0]).decode())
    await client.ws.send_str(orjson.dumps(burst[1]).decode())
    first = await client.expect(lambda f: f.get("id") == 1)
    second = await client.expect(lambda f: f.get("id") == 2)
    assert first["type"] == "command_accepted"
    assert second["type"] == "error"
    assert second["code"] == "rate_limited"

"""Device-side trust through a real Mosquitto (issue 12; docs/security.md, rules 1, 2, 5, 6):
what device and discovery data can make the gateway subscribe, publish, overwrite, confirm and
keep, by both front doors (WebSocket and REST)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiomqtt
import orjson
import pytest

from tests.integration.conftest import StartGateway
from tests.support.devices import THERMOSTAT_META, mqtt_client
from tests.support.gateway import GatewayUnderTest, WsClient
from tests.support.mosquitto import Mosquitto

HA_ONLY = "ha-only-5d1e"  # may command ha.* devices only
EVERYTHING = "all-77c2"


class Retained:
    """A publisher whose retained messages are cleared when the test ends."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.topics: set[str] = set()

    async def publish(self, topic: str, payload: Any, retain: bool = True) -> None:
        body = payload if isinstance(payload, bytes) else orjson.dumps(payload)
        await self.client.publish(topic, body, qos=1, retain=retain)
        if retain:
            self.topics.add(topic)


@pytest.fixture
async def retained(broker: Mosquitto) -> AsyncIterator[Retained]:
    async with mqtt_client(broker.host, broker.port) as client:
        publisher = Retained(client)
        yield publisher
        for topic in publisher.topics:
            await client.publish(topic, b"", qos=1, retain=True)


@pytest.fixture
async def spy(broker: Mosquitto, prefix: str) -> AsyncIterator[asyncio.Queue[tuple[str, bytes]]]:
    """Every publish on the native command topics of this test's prefix (SUBACK received)."""
    seen: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
    async with mqtt_client(broker.host, broker.port) as client:
        await client.subscribe(f"{prefix}/+/cmd/#", qos=1)

        async def collect() -> None:
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                seen.put_nowait((message.topic.value, message.payload))

        task = asyncio.create_task(collect(), name="test-spy")
        yield seen
        task.cancel()


async def authenticated(gateway: GatewayUnderTest, token: str) -> WsClient:
    client = await gateway.connected_client()
    await client.send({"type": "auth", "token": token})
    await client.expect(lambda f: f["type"] == "authenticated")
    return client


async def device_where(
    gateway: GatewayUnderTest, device_id: str, predicate: Any, token: str = EVERYTHING
) -> dict[str, Any]:
    """The gateway's view of `device_id` (GET /api/devices/{id}, values included) once it
    satisfies `predicate`, looked at again after every frame that announces a change."""
    watcher = await authenticated(gateway, token)
    await watcher.request({"type": "subscribe", "devices": [device_id]}, "subscribed")
    headers = {"Authorization": f"Bearer {token}"}
    async with asyncio.timeout(10):
        while True:
            status, body = await gateway.get(f"/api/devices/{device_id}", headers=headers)
            if status == 200 and predicate(body):
                await watcher.close()
                return dict(body)
            await watcher.expect(lambda f: f["type"] in ("snapshot", "device", "readings"))


def tokens() -> list[dict[str, Any]]:
    return [
        {"token": HA_ONLY, "name": "ha-only", "command": ["ha.*"]},
        {"token": EVERYTHING, "name": "all", "command": ["*"]},
    ]


async def test_discovery_data_cannot_choose_where_the_gateway_publishes_or_subscribes(
    start_gateway: StartGateway, retained: Retained, spy: asyncio.Queue[Any], prefix: str
) -> None:
    """12.1: a retained Home Assistant config naming another device's native command topic and a
    secret topic is refused (bad_topic): the entity has no metric and no command, commanding it
    by WebSocket or REST publishes nothing, and the only publish the victim's topic ever sees is
    a real command to it."""
    discovery = f"ha-{prefix}"
    gateway = await start_gateway(
        {
            "conventions.homeassistant.enabled": True,
            "conventions.homeassistant.discovery_prefix": discovery,
            "auth.tokens": tokens(),
        }
    )
    await retained.publish(f"{prefix}/thermo-1/meta", THERMOSTAT_META)
    await retained.publish(f"secret-{prefix}/alarm/code", b"1234")
    await retained.publish(
        f"{discovery}/switch/evil/config",
        {
            "name": "evil",
            "cmd_t": f"{prefix}/thermo-1/cmd/set_target",
            "stat_t": f"secret-{prefix}/alarm/code",
            "pl_on": '{"id": "x", "params": {"target": 30}}',
        },
    )
    evil = await device_where(gateway, "ha.evil", lambda d: d["meta"] is not None)
    await device_where(gateway, "thermo-1", lambda d: d["meta"] is not None)
    assert evil["meta"]["metrics"] == {}
    assert evil["meta"]["commands"] == {}
    status, body = await gateway.get("/metrics")
    assert 'iotgw_decode_errors_total{convention="homeassistant",reason="bad_topic"} 2.0' in body

    client = await authenticated(gateway, HA_ONLY)
    command = {"type": "command", "device": "ha.evil", "command": "set_evil"}
    reply = await client.request({**command, "params": {"state": "ON"}})
    assert (reply["type"], reply["code"]) == ("error", "not_found")
    headers = {"Authorization": f"Bearer {HA_ONLY}"}
    status, body = await gateway.post(
        "/api/devices/ha.evil/commands/set_evil", json={"params": {"state": "ON"}}, headers=headers
    )
    assert (status, body["code"]) == (404, "not_found")

    # The sentinel: a real command to thermo-1 by a token allowed to send it. One connection's
    # publishes reach a subscriber in order, so anything published before it arrives first.
    headers = {"Authorization": f"Bearer {EVERYTHING}"}
    status, body = await gateway.post(
        "/api/devices/thermo-1/commands/set_target",
        json={"params": {"target": 21}, "timeout_ms": 100},
        headers=headers,
    )
    assert (status, body["status"]) == (200, "timeout")
    topic, payload = await asyncio.wait_for(spy.get(), 5)
    assert topic == f"{prefix}/thermo-1/cmd/set_target"
    assert orjson.loads(payload)["params"] == {"target": 21}
    assert spy.empty()


LAMP_EXPOSES = [
    {"type": "binary", "property": "state", "value_on": "ON", "value_off": "OFF",
     "value_toggle": "TOGGLE", "access": 7},
]  # fmt: skip


async def test_a_native_device_cannot_write_another_conventions_device(
    start_gateway: StartGateway, retained: Retained, prefix: str
) -> None:
    """12.2: a native device publishing status, meta (with wider params) and telemetry on
    `<prefix>/z2m.lamp/…` is refused (foreign_device): the Zigbee2MQTT lamp keeps its status,
    values and meta, commands are still checked against its own exposes, and no native device
    with its tag is created."""
    base = f"z2m-{prefix}"
    gateway = await start_gateway(
        {
            "conventions.zigbee2mqtt.enabled": True,
            "conventions.zigbee2mqtt.base_topic": base,
            "auth.tokens": tokens(),
        }
    )
    lamp = {"friendly_name": "lamp", "definition": {"model": "L1", "exposes": LAMP_EXPOSES}}
    await retained.publish(f"{base}/bridge/devices", [lamp])
    await retained.publish(f"{base}/lamp/availability", {"state": "online"})
    await retained.client.publish(f"{base}/lamp", b'{"state": "OFF"}', qos=1)
    await device_where(gateway, "z2m.lamp", lambda d: d["meta"] and d["status"] == "online")

    wide = {"type": "evil", "commands": {"set_state": {"params": {"state": {"type": "string"}}}}}
    await retained.publish(f"{prefix}/z2m.lamp/meta", wide)
    await retained.publish(f"{prefix}/z2m.lamp/status", b"offline")
    await retained.client.publish(f"{prefix}/z2m.lamp/telemetry", b'{"state": "HACKED"}', qos=1)
    await retained.publish(f"{prefix}/z2m.other/status", b"online")
    # The sentinel: the lamp's own next state, published after the forgeries on one connection.
    await retained.client.publish(f"{base}/lamp", b'{"state": "ON"}', qos=1)
    lamp_now = await device_where(
        gateway, "z2m.lamp", lambda d: d["values"].get("state", [0, ""])[1] == "ON"
    )
    assert lamp_now["status"] == "online"
    assert lamp_now["type"] == "L1"
    params = lamp_now["meta"]["commands"]["set_state"]["params"]
    assert params == {"state": {"type": "string", "enum": ["ON", "OFF", "TOGGLE"]}}
    headers = {"Authorization": f"Bearer {EVERYTHING}"}
    status, body = await gateway.get("/api/devices/z2m.other", headers=headers)
    assert status == 404
    status, body = await gateway.get("/metrics")
    assert 'iotgw_decode_errors_total{convention="native",reason="foreign_device"} 4.0' in body

    client = await authenticated(gateway, EVERYTHING)
    hacked = {"state": "HACKED"}
    reply = await client.request(
        {"type": "command", "device": "z2m.lamp", "command": "set_state", "params": hacked}
    )
    assert (reply["type"], reply["code"]) == ("error", "bad_params")
    history = await client.request(
        {"type": "history", "device": "z2m.lamp", "metric": "state"}, "history"
    )
    assert [value for _, value in history["points"]] == ["OFF", "ON"]


@dataclass(frozen=True)
class ReportingLamp:
    """A lamp of one convention that reports ON every 200 ms and consumes no command."""

    settings: dict[str, Any]  # gateway config
    announce: dict[str, Any]  # retained topic -> payload
    report: tuple[str, bytes]
    device: str
    command: str
    on: dict[str, Any]
    off: dict[str, Any]
    toggle: dict[str, Any] | None = None
    metric: str = "state"


def reporting_lamp(convention: str, base: str) -> ReportingLamp:
    if convention == "zigbee2mqtt":
        lamp = {"friendly_name": "lamp", "definition": {"exposes": LAMP_EXPOSES}}
        return ReportingLamp(
            {"conventions.zigbee2mqtt.enabled": True, "conventions.zigbee2mqtt.base_topic": base},
            {f"{base}/bridge/devices": [lamp]},
            (f"{base}/lamp", b'{"state": "ON"}'),
            "z2m.lamp",
            "set_state",
            {"state": "ON"},
            {"state": "OFF"},
            {"state": "TOGGLE"},
        )
    if convention == "homeassistant":
        config = {"~": f"{base}/light/lamp", "name": "lamp", "cmd_t": "~/set", "stat_t": "~/state"}
        return ReportingLamp(
            {
                "conventions.homeassistant.enabled": True,
                "conventions.homeassistant.discovery_prefix": base,
            },
            {f"{base}/light/lamp/config": config},
            (f"{base}/light/lamp/state", b"ON"),
            "ha.lamp",
            "set_lamp",
            {"state": "ON"},
            {"state": "OFF"},
            metric="lamp",
        )
    attributes = {"$nodes": b"light", "light/$properties": b"power",
                  "light/power/$datatype": b"boolean", "light/power/$settable": b"true",
                  "$state": b"ready"}  # fmt: skip
    return ReportingLamp(
        {"conventions.homie.enabled": True, "conventions.homie.base_topic": base},
        {f"{base}/lamp/{leaf}": payload for leaf, payload in attributes.items()},
        (f"{base}/lamp/light/power", b"true"),
        "homie.lamp",
        "set_light_power",
        {"value": True},
        {"value": False},
        metric="light.power",
    )


@pytest.mark.parametrize("convention", ["zigbee2mqtt", "homeassistant", "homie"])
async def test_a_report_that_was_already_being_sent_confirms_nothing(
    start_gateway: StartGateway, retained: Retained, prefix: str, convention: str
) -> None:
    """12.10: a lamp reporting ON every 200 ms with nothing consuming its commands. Switching it
    on cannot be confirmed by a report (`unconfirmed`, by WebSocket and REST), switching it off
    or toggling it times out: never `ok`."""
    lamp = reporting_lamp(convention, f"{convention}-{prefix}")
    gateway = await start_gateway({**lamp.settings, "auth.tokens": tokens()})
    for topic, payload in lamp.announce.items():
        await retained.publish(topic, payload)

    async def keep_reporting() -> None:
        while True:
            await retained.client.publish(*lamp.report, qos=1)
            await asyncio.sleep(0.2)

    reporter = asyncio.create_task(keep_reporting(), name="test-reporting-lamp")
    try:
        await device_where(gateway, lamp.device, lambda d: d["meta"] and lamp.metric in d["values"])
        client = await authenticated(gateway, EVERYTHING)
        command = {"type": "command", "device": lamp.device, "command": lamp.command}
        reply = await client.request({**command, "params": lamp.on}, "command_result")
        assert (reply["status"], reply["result"], reply["error"]) == ("unconfirmed", None, None)
        headers = {"Authorization": f"Bearer {EVERYTHING}"}
        status, body = await gateway.post(
            f"/api/devices/{lamp.device}/commands/{lamp.command}",
            json={"params": lamp.on},
            headers=headers,
        )
        assert (status, body["status"]) == (200, "unconfirmed")
        for params in (lamp.off, lamp.toggle):
            if params is not None:
                request = {**command, "params": params, "timeout_ms": 1000}
                reply = await client.request(request, "command_result")
                assert reply["status"] == "timeout", params
    finally:
        # Awaited, so that no publish of the reporter is mid-flight when the fixtures tear down.
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter


async def test_republished_discovery_neither_grows_subscriptions_nor_rebuilds_meta(
    start_gateway: StartGateway, retained: Retained, prefix: str
) -> None:
    """12.11: one Home Assistant config published 500 times, then 500 times with a state topic
    that moves each time: the broker link holds exactly the topics the last config names, clients
    see one meta, and clearing the config unsubscribes them and removes the device."""
    discovery, ext = f"ha-{prefix}", f"ext-{prefix}"
    gateway = await start_gateway(
        {
            "conventions.homeassistant.enabled": True,
            "conventions.homeassistant.discovery_prefix": discovery,
            "conventions.homeassistant.allowed_topics": [f"{ext}/#"],
        }
    )
    link = gateway.runtime.link
    before = set(link.subscriptions)  # what the link subscribes to on every connect
    client = await gateway.connected_client()
    await client.request({"type": "subscribe", "devices": ["ha.*"]}, "subscribed")
    config_topic = f"{discovery}/switch/pump/config"
    config = {"~": f"{ext}/pump", "stat_t": "~/state", "cmd_t": "~/set", "avty_t": "~/status"}
    for _ in range(500):
        await retained.publish(config_topic, config)
    for i in range(500):
        await retained.publish(config_topic, {**config, "stat_t": f"~/state-{i}"})
    # The sentinel: a retained state on the last topic, delivered once it is subscribed to.
    await retained.publish(f"{ext}/pump/state-499", b"ON")
    await client.readings(1, where=lambda r: r[:2] == ["ha.pump", "pump"])
    assert set(link.subscriptions) - before == {f"{ext}/pump/state-499", f"{ext}/pump/status"}
    # One announcement of the pump (its first meta, perhaps coalesced with its status), not one
    # per republished config.
    pump = [e for e in client.seen_events() if e["device"]["id"] == "ha.pump"]
    assert 1 <= len(pump) <= 2
    assert len([e for e in pump if e["event"] == "meta"]) <= 1

    await retained.publish(config_topic, b"")
    removed = await client.event(lambda e: e["event"] == "removed")
    assert removed["device"]["id"] == "ha.pump"
    assert set(link.subscriptions) == before
    status, _ = await gateway.get("/api/devices/ha.pump")
    assert status == 404


ADMIN = "admin-3f9a"


async def test_devices_can_be_forgotten_and_their_clients_are_told(
    start_gateway: StartGateway, retained: Retained, prefix: str
) -> None:
    """12.11: DELETE /api/devices/{id} needs an admin token (403 for others, 404 for unknown
    ids); a device whose retained status and meta are cleared, and one silent past
    registry.forget_after_s, are forgotten too. Each time its subscribers get `removed`."""
    gateway = await start_gateway(
        {
            "registry.forget_after_s": 1.0,
            "auth.tokens": [*tokens(), {"token": ADMIN, "name": "admin", "admin": True}],
        }
    )
    client = await authenticated(gateway, EVERYTHING)
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")

    async def removed(device: str) -> None:
        await client.event(lambda e: e["event"] == "removed" and e["device"]["id"] == device)

    for device in ("kept-1", "cleared-1"):
        await retained.publish(f"{prefix}/{device}/meta", THERMOSTAT_META)
        await retained.publish(f"{prefix}/{device}/status", b"online")
    await client.event(lambda e: e["device"]["id"] == "cleared-1")

    url = "/api/devices/kept-1"
    async with gateway.http.delete(
        gateway.base_url + url, headers={"Authorization": f"Bearer {EVERYTHING}"}
    ) as response:
        assert response.status == 403
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with gateway.http.delete(gateway.base_url + "/api/devices/nobody", headers=admin) as r:
        assert r.status == 404
    async with gateway.http.delete(gateway.base_url + url, headers=admin) as response:
        assert response.status == 204
    await removed("kept-1")
    assert (await gateway.get(url, headers=admin))[0] == 404

    await retained.publish(f"{prefix}/cleared-1/status", b"")
    await retained.publish(f"{prefix}/cleared-1/meta", b"")
    await removed("cleared-1")

    await retained.client.publish(f"{prefix}/silent-1/telemetry", b'{"t": 1}', qos=1)
    await client.event(lambda e: e["device"]["id"] == "silent-1")
    await removed("silent-1")  # within the janitor's second after forget_after_s
    status, body = await gateway.get("/metrics")
    assert status == 200
    assert "iotgw_devices_forgotten_total 3.0" in body

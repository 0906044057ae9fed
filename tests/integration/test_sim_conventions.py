"""A simulated fleet speaking each convention, through a real Mosquitto and the real gateway."""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest

from gateway.conventions.common import scoped_id
from simulators import Fleet, FleetConfig, mixed_groups
from simulators.encoders import ENCODERS
from tests.integration.conftest import StartGateway
from tests.support.gateway import WsClient
from tests.support.mosquitto import Mosquitto
from tests.support.process import running_demo


@dataclass(frozen=True)
class Case:
    """What to command in a convention, and how its effect shows in the readings."""

    device: str  # the simulator's device id
    gateway_id: str
    command: str
    params: dict[str, Any]
    metric: str
    shows: Any


CASES = {
    "native": Case("thermo-1", "thermo-1", "set_target", {"target": 25}, "target", 25),
    "zigbee2mqtt": Case(
        "thermo-1",
        scoped_id("z2m", "Living room/Thermostat"),
        "set_occupied_heating_setpoint",
        {"occupied_heating_setpoint": 25},
        "occupied_heating_setpoint",
        25,
    ),
    # Tasmota offers only relays (and lights) as commands: the plug, switched on (it starts off
    # with seed 7, which the test checks).
    "tasmota": Case("switch-1", "tasmota.switch-1", "POWER", {"state": "ON"}, "POWER", "ON"),
    "homeassistant": Case("thermo-1", "ha.thermo-1", "set_target", {"value": 25}, "Target", 25),
    # A real request/response: the plug's Switch.Set answer is the result, whatever it was before.
    "shelly": Case(
        "switch-1",
        "shelly.shellyplus1pm-" + hashlib.sha1(b"switch-1").hexdigest()[:12],
        "switch_0.set",
        {"on": True},
        "switch:0.output",
        True,
    ),
    # Sparkplug ids name the group, which is the fleet's base topic ({group} below).
    "sparkplug": Case(
        "thermo-1", "spb.{group}:thermo-1", "set_target", {"value": 25}, "target", 25.0
    ),
    "homie": Case(
        "thermo-1",
        "homie.thermo-1",
        "set_thermostat_target",
        {"value": 25},
        "thermostat.target",
        25,
    ),
}


@pytest.fixture(params=list(ENCODERS))
async def fleet(
    request: pytest.FixtureRequest, broker: Mosquitto, prefix: str
) -> AsyncIterator[Fleet]:
    """Five devices, one of each type, speaking one convention under a base topic of their own
    (the gateway's native prefix owns everything under `prefix/`)."""
    config = FleetConfig(
        broker=broker.url,
        convention=request.param,
        prefix=f"{prefix}-{request.param}",
        groups=mixed_groups(5),
        rate=5.0,
        seed=7,
        result_delay_s=(0.0, 0.0),
    )
    async with Fleet(config) as running:
        yield running


async def devices_ready(client: WsClient, count: int, case: Case) -> dict[str, dict[str, Any]]:
    """Wait until `count` devices are online with meta, the case's device offering its command
    (Tasmota's meta grows as the device shows what it has); their latest entries by id."""
    seen: dict[str, dict[str, Any]] = {}

    def ready() -> bool:
        done = [i for i, d in seen.items() if d["meta"] and d["status"] == "online"]
        target = seen.get(case.gateway_id, {}).get("meta") or {}
        return len(done) >= count and case.command in target.get("commands", {})

    while not ready():
        frame = await client.expect(lambda f: f["type"] == "snapshot" or "events" in f)
        if frame["type"] == "snapshot":
            entries = frame["devices"]
        else:
            entries = [e["device"] for e in frame["events"]]
        seen.update((d["id"], d) for d in entries)
    return seen


async def test_fleet_speaks_the_convention_end_to_end(
    start_gateway: StartGateway, fleet: Fleet
) -> None:
    """Every device appears with meta and online, readings arrive, a command is answered ok by
    the convention's own echo and shows in the readings, and a dropped device goes offline by
    its last will and comes back."""
    config = fleet.config
    case = CASES[config.convention]
    group = config.base.replace("/", "-")
    case = dataclasses.replace(case, gateway_id=case.gateway_id.format(group=group))
    encoder = ENCODERS[config.convention]
    gw = await start_gateway(
        {"registry.stale_after_s": 60.0, **encoder.gateway_settings(config.base)}
    )
    await fleet.wait_ready()
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    seen = await devices_ready(client, len(fleet.devices), case)
    assert case.gateway_id in seen, sorted(seen)
    rows = await client.readings(10)
    assert {row[0] for row in rows} <= set(seen)

    if config.convention == "tasmota":
        assert fleet.devices[case.device].readings()["on"] is False  # so ON is a change
    command = {"type": "command", "device": case.gateway_id, "command": case.command,
               "params": case.params}  # fmt: skip
    accepted = await client.request(command)
    assert accepted["type"] == "command_accepted", accepted
    result = await client.expect(
        lambda f: f["type"] == "command_result" and f["id"] == accepted["id"]
    )
    assert result["status"] == "ok", result
    await client.readings(
        1, where=lambda r: r[0] == case.gateway_id and r[1] == case.metric and r[3] == case.shows
    )

    fleet.drop(case.device, offline_for=0.5)
    for status in ("offline", "online"):
        await client.event(
            lambda e, s=status: e["device"]["id"] == case.gateway_id and e["device"]["status"] == s
        )


async def test_demo_runs_a_zigbee2mqtt_fleet() -> None:
    """`iotgw demo --convention zigbee2mqtt` fills the dashboard with Zigbee2MQTT devices, online
    with their exposes as meta, and stops cleanly on SIGINT."""
    args = ("--devices", "5", "--convention", "zigbee2mqtt")
    async with running_demo(*args) as demo, aiohttp.ClientSession() as http:
        assert "zigbee2mqtt devices" in demo.first_line, demo.first_line
        client = WsClient(await http.ws_connect(f"ws://127.0.0.1:{demo.port}/ws"))
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        thermostat = scoped_id("z2m", "Living room/Thermostat")
        seen = await devices_ready(client, 5, CASES["zigbee2mqtt"])
        assert all(device.startswith("z2m.") for device in seen)
        assert seen[thermostat]["meta"]["name"] == "Living room/Thermostat"
        await client.close()


async def test_demo_runs_a_mixed_fleet_of_all_seven_conventions() -> None:
    """`iotgw demo --convention all`: the devices take the seven conventions in turn, and every
    convention's devices come online with their meta on one dashboard."""
    args = ("--devices", "14", "--convention", "all")
    async with running_demo(*args) as demo, aiohttp.ClientSession() as http:
        assert "mixed (native, zigbee2mqtt, tasmota" in demo.first_line, demo.first_line
        client = WsClient(await http.ws_connect(f"ws://127.0.0.1:{demo.port}/ws"))
        await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
        tags = {"": 0, "z2m": 0, "tasmota": 0, "ha": 0, "homie": 0, "shelly": 0, "spb": 0}
        seen: dict[str, dict[str, Any]] = {}
        while not all(tags.values()):
            frame = await client.expect(lambda f: f["type"] == "snapshot" or "events" in f)
            if frame["type"] == "snapshot":
                entries = frame["devices"]
            else:
                entries = [e["device"] for e in frame["events"]]
            seen.update((d["id"], d) for d in entries)
            for tag in tags:
                tags[tag] = sum(
                    1
                    for i, d in seen.items()
                    if (i.partition(".")[0] if "." in i else "") == tag
                    and d["meta"]
                    and d["status"] == "online"
                )
        assert sum(tags.values()) >= 7
        await client.close()

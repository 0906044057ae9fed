"""A simulated fleet seen through the real gateway, and `iotgw demo` as a user starts it."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from simulators import Fleet, FleetConfig, mixed_groups
from tests.integration.conftest import StartGateway
from tests.support.gateway import WAIT_S
from tests.support.mosquitto import Mosquitto
from tests.support.process import running_demo


@pytest.fixture
async def fleet(broker: Mosquitto, prefix: str):  # type: ignore[no-untyped-def]
    """Five devices, one of each type, answering commands at once."""
    config = FleetConfig(
        broker=broker.url, prefix=prefix, groups=mixed_groups(5), rate=5.0, seed=7,
        result_delay_s=(0.0, 0.0),
    )  # fmt: skip
    async with Fleet(config) as running:
        yield running


async def test_fleet_readings_meta_status_and_a_command_round_trip(
    start_gateway: StartGateway, fleet: Fleet
) -> None:
    """Every simulated device shows up with meta and live readings, a thermostat obeys a
    command sent over the WebSocket, and a dropped device goes offline then comes back."""
    gw = await start_gateway({"registry.stale_after_s": 60.0})
    await fleet.wait_ready()
    client = await gw.connected_client()
    await client.request({"type": "subscribe", "devices": ["*"]}, "subscribed")
    ids = set(fleet.devices)
    seen: dict[str, dict] = {}  # what the client was told about each device, latest first
    while not all(i in seen and seen[i]["meta"] and seen[i]["status"] == "online" for i in ids):
        frame = await client.expect(lambda f: f["type"] == "snapshot" or "events" in f)
        if frame["type"] == "snapshot":
            entries = frame["devices"]
        else:
            entries = [e["device"] for e in frame["events"]]
        seen.update((d["id"], d) for d in entries)
    rows = await client.readings(len(ids) * 2)
    assert {row[0] for row in rows} <= ids

    thermostat = next(i for i in ids if seen[i]["type"] == "thermostat")
    result = await client.request(
        {
            "type": "command",
            "device": thermostat,
            "command": "set_target",
            "params": {"target": 25},
        },
        "command_result",
    )
    assert result["status"] == "ok", result
    await client.readings(1, where=lambda r: r[0] == thermostat and r[1] == "target" and r[3] == 25)

    fleet.drop(thermostat, offline_for=0.5)
    for status in ("offline", "online"):
        await client.event(
            lambda e, s=status: e["device"]["id"] == thermostat and e["device"]["status"] == s
        )


async def test_demo_serves_the_dashboard_and_devices_then_stops_on_sigint() -> None:
    """`iotgw demo` prints the dashboard URL, serves / and /api/devices with its fleet, and
    exits 0 on Ctrl-C (SIGINT), taking its broker down with it."""
    async with running_demo("--devices", "5") as demo, aiohttp.ClientSession() as http:
        assert f"{demo.base_url}/" in demo.first_line, demo.first_line
        async with http.get(f"{demo.base_url}/") as page:
            assert page.status == 200
            assert "<title>" in await page.text()
        async with asyncio.timeout(WAIT_S * 2):
            while True:  # the fleet announces itself within moments
                async with http.get(f"{demo.base_url}/api/devices") as response:
                    devices = (await response.json())["devices"]
                if len(devices) == 5 and all(d["status"] == "online" for d in devices):
                    break
                await asyncio.sleep(0.1)  # polling a REST endpoint: no event to wait on

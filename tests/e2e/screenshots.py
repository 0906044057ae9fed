"""Regenerate the dashboard's screenshots in docs/screenshots/ from a realistic fleet.

    .venv/bin/python -m tests.e2e.screenshots

Starts a Mosquitto, the real gateway and ~45 devices (thermostats, meters, air sensors, a
radiator valve with many values, two GPS trackers driving the simulators' routes, a few offline
or gone quiet), backfills fifteen minutes of telemetry, then photographs three pages — the fleet
list, a thermostat with a command result showing, a tracker — in the light and dark themes, on a
laptop (1280x820) and a phone (390x844): docs/screenshots/{fleet,device,track}-{light,dark}-
{desktop,phone}.png. The fleet is seeded, so only the live part differs between runs.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from pathlib import Path
from typing import Any

import aiomqtt
import orjson
from playwright.async_api import Page, async_playwright, expect

from simulators.devices import GpsTracker
from tests.e2e.fleet_devices import VALVE, VALVE_VALUES
from tests.e2e.stack import CHROMIUM, CHROMIUM_ARGS, THERMOSTAT, Gateway, gateway_config
from tests.support.devices import DeviceStandIn, mqtt_client
from tests.support.mosquitto import Mosquitto

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
SIZES = {"desktop": (1280, 820), "phone": (390, 844)}
THEMES = ("light", "dark")
PREFIX = "plant"
ROOMS = [
    "Boiler room", "Packing hall", "Cold store", "Line 3 press", "Dock door 2", "Paint booth",
    "Server closet", "Quality lab", "Compressor house", "Office north", "Office south", "Canteen",
    "Warehouse A", "Warehouse B",
]  # fmt: skip
METER = {
    "type": "energy meter",
    "metrics": {"power": {"unit": "W"}, "energy": {"unit": "kWh"}, "voltage": {"unit": "V"}},
    "commands": {"reset_energy": {"params": {}}},
}
AIR = {
    "type": "air quality",
    "metrics": {"co2": {"unit": "ppm"}, "temperature": {"unit": "°C"}, "humidity": {"unit": "%"}},
    "commands": {"fan": {"params": {"on": {"type": "boolean"}}}},
}
THERMO = {
    **THERMOSTAT,
    "metrics": {"temperature": {"unit": "°C"}, "target": {"unit": "°C"}, "heating": {}, "mode": {}},
    "commands": {
        **THERMOSTAT["commands"],
        "boost": {"params": {"minutes": {"type": "integer", "min": 5, "max": 120}}},
    },
}


def reading(kind: str, i: int, t: float) -> dict[str, Any]:
    phase = i * 0.7
    wave = math.sin(t / 90 + phase)
    if kind == "thermo":
        return {
            "temperature": round(20.5 + 1.6 * wave + random.gauss(0, 0.04), 2),
            "target": 21.5,
            "heating": wave < 0,
            "mode": "heat",
        }
    if kind == "meter":
        return {
            "power": round(1800 + 900 * math.sin(t / 40 + phase) + random.gauss(0, 25), 1),
            "energy": round(15230 + i * 97 + t % 100000 / 3600, 2),
            "voltage": round(230 + random.gauss(0, 0.6), 1),
        }
    return {
        "co2": int(620 + 260 * math.sin(t / 150 + phase) + random.gauss(0, 6)),
        "temperature": round(21 + wave + random.gauss(0, 0.05), 2),
        "humidity": round(44 + 6 * math.sin(t / 300 + phase), 1),
    }


def fleet() -> list[tuple[str, str, dict[str, Any]]]:
    devices = []
    for i, room in enumerate(ROOMS * 3):
        kind = ("thermo", "meter", "air")[i % 3]
        meta = {"thermo": THERMO, "meter": METER, "air": AIR}[kind]
        device_id = f"{kind}-{i + 1:02d}"
        devices.append((device_id, kind, {**meta, "name": f"{room} {meta['type']}"}))
    return devices


def trackers() -> list[GpsTracker]:
    """Two vehicles on the simulators' seeded routes."""
    return [
        GpsTracker("gps-1", random.Random("screenshots:gps-1"), "Delivery van 1"),
        GpsTracker("gps-2", random.Random("screenshots:gps-2"), "Delivery van 2"),
    ]


async def main() -> None:
    random.seed("screenshots")
    SHOTS.mkdir(exist_ok=True)
    broker = Mosquitto().start()
    gateway = Gateway(gateway_config(broker, PREFIX, {"registry.stale_after_s": 4.0}))
    await gateway.start()
    try:
        async with (
            mqtt_client(broker.host, broker.port) as device_client,
            aiomqtt.Client(broker.host, broker.port, identifier="screenshots") as client,
        ):
            shown = DeviceStandIn(
                device_client, PREFIX, "thermo-01", {**THERMO, "name": "Boiler room thermostat"}
            )
            await shown.start()
            devices = fleet()[1:]
            quiet = {d[0] for d in devices[5::9]}
            offline = {d[0] for d in devices[3::11]}
            vehicles = trackers()
            announced = [(d[0], d[2]) for d in devices] + [
                (v.device_id, v.meta()) for v in vehicles
            ]
            announced.append(("trv-01", {**VALVE, "name": "Upstairs landing radiator valve"}))
            for device_id, meta in announced:
                topic = f"{PREFIX}/{device_id}"
                await client.publish(f"{topic}/meta", orjson.dumps(meta), qos=1, retain=True)
                await client.publish(f"{topic}/status", b"online", qos=1, retain=True)
            now = time.time()
            everyone = [("thermo-01", "thermo", THERMO), *devices]
            for t in range(int(now) - 900, int(now), 3):  # 15 minutes of history
                for i, (device_id, kind, _) in enumerate(everyone):
                    payload = {**reading(kind, i, t), "ts": t}
                    await client.publish(f"{PREFIX}/{device_id}/telemetry", orjson.dumps(payload))
                for vehicle in vehicles:
                    payload = {**vehicle.step(t), "ts": t}
                    await client.publish(
                        f"{PREFIX}/{vehicle.device_id}/telemetry", orjson.dumps(payload)
                    )
            await client.publish(f"{PREFIX}/trv-01/telemetry", orjson.dumps(VALVE_VALUES))
            for device_id in offline:
                await client.publish(f"{PREFIX}/{device_id}/status", b"offline", retain=True)
            live = [d for d in enumerate(everyone) if d[1][0] not in quiet | offline]
            publisher = asyncio.create_task(publish_live(client, live, vehicles))
            try:
                await shoot(gateway)
            finally:
                publisher.cancel()
                await asyncio.gather(publisher, return_exceptions=True)
                await shown.stop()
    finally:
        await gateway.stop()
        broker.cleanup()


async def publish_live(
    client: aiomqtt.Client,
    devices: list[tuple[int, tuple[str, str, Any]]],
    vehicles: list[GpsTracker],
) -> None:
    """Telemetry at 2 Hz from the devices that are still talking (the quiet ones go stale)."""
    while True:
        for i, (device_id, kind, _) in devices:
            payload = orjson.dumps(reading(kind, i, time.time()))
            await client.publish(f"{PREFIX}/{device_id}/telemetry", payload)
        for vehicle in vehicles:
            payload = orjson.dumps(vehicle.step(time.time()))
            await client.publish(f"{PREFIX}/{vehicle.device_id}/telemetry", payload)
        await asyncio.sleep(0.5)


async def shoot(gateway: Gateway) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        for size, (width, height) in SIZES.items():
            for theme in THEMES:
                context = await browser.new_context(
                    viewport={"width": width, "height": height},
                    color_scheme=theme,  # the toggle's default, System, follows it
                    locale="en-GB",
                )
                page = await context.new_page()
                await shoot_pages(page, gateway, f"{theme}-{size}", desktop=size == "desktop")
                await context.close()
        await browser.close()


async def shoot_pages(page: Page, gateway: Gateway, suffix: str, desktop: bool) -> None:
    """The fleet (sorted problems first), a thermostat after a command, a tracker."""
    await page.goto(gateway.url)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await page.get_by_test_id("fleet-sort").select_option("status")
    stale = page.locator('[data-testid="device-row"][data-status="stale"]')
    await expect(stale.first).to_be_visible(timeout=15_000)
    await page.wait_for_function("document.querySelector('.cseen').textContent !== 'never'")
    if desktop:
        # The full set of a row's values, as hovering it shows.
        await page.locator('[data-device-id="trv-01"]').hover()
        await expect(page.get_by_test_id("values-tip")).to_be_visible()
    await page.screenshot(path=SHOTS / f"fleet-{suffix}.png")

    await page.mouse.move(0, 0)
    await page.goto(gateway.url + "#/device/thermo-01")
    await page.get_by_test_id("window-15m").click()
    form = page.locator('[data-testid="command-form"][data-command="set_target"]')
    await form.get_by_label("target").fill("22")
    await form.get_by_test_id("command-send").click()
    await expect(form.get_by_test_id("command-result")).to_have_attribute("data-status", "ok")
    await page.mouse.move(0, 0)
    await page.evaluate("scrollTo(0, 0)")  # the sticky top bar at the top of a full-page shot
    await page.screenshot(path=SHOTS / f"device-{suffix}.png", full_page=True)

    await page.goto(gateway.url + "#/device/gps-1")
    await page.get_by_test_id("window-15m").click()
    await expect(page.get_by_test_id("track")).not_to_have_attribute("data-points", "0")
    await page.evaluate("scrollTo(0, 0)")
    await page.screenshot(path=SHOTS / f"track-{suffix}.png", full_page=True)


if __name__ == "__main__":
    asyncio.run(main())

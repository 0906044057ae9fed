"""Regenerate docs/dashboard-fleet.png and docs/dashboard-device.png from a realistic fleet.

    python -m tests.e2e.screenshots

Starts a Mosquitto, the real gateway and ~40 devices (thermostats, meters, air sensors, a few
offline or gone quiet), backfills ten minutes of telemetry, then photographs the fleet list and
one thermostat's device view with a command result showing.
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
from playwright.async_api import async_playwright, expect

from tests.e2e.stack import CHROMIUM, CHROMIUM_ARGS, THERMOSTAT, Gateway, gateway_config
from tests.support.devices import DeviceStandIn, mqtt_client
from tests.support.mosquitto import Mosquitto

DOCS = Path(__file__).resolve().parents[2] / "docs"
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


async def main() -> None:
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
            for device_id, _, meta in devices:
                topic = f"{PREFIX}/{device_id}"
                await client.publish(f"{topic}/meta", orjson.dumps(meta), qos=1, retain=True)
                await client.publish(f"{topic}/status", b"online", qos=1, retain=True)
            now = time.time()
            everyone = [("thermo-01", "thermo", THERMO), *devices]
            for t in range(int(now) - 900, int(now), 3):  # 15 minutes of history
                for i, (device_id, kind, _) in enumerate(everyone):
                    payload = {**reading(kind, i, t), "ts": t}
                    await client.publish(f"{PREFIX}/{device_id}/telemetry", orjson.dumps(payload))
            for device_id in offline:
                await client.publish(f"{PREFIX}/{device_id}/status", b"offline", retain=True)
            live = [d for d in enumerate(everyone) if d[1][0] not in quiet | offline]
            publisher = asyncio.create_task(publish_live(client, live))
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
    client: aiomqtt.Client, devices: list[tuple[int, tuple[str, str, Any]]]
) -> None:
    """Telemetry at 2 Hz from the devices that are still talking (the quiet ones go stale)."""
    while True:
        for i, (device_id, kind, _) in devices:
            payload = orjson.dumps(reading(kind, i, time.time()))
            await client.publish(f"{PREFIX}/{device_id}/telemetry", payload)
        await asyncio.sleep(0.5)


async def shoot(gateway: Gateway) -> None:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 800}, locale="en-GB")
        await page.goto(gateway.url)
        await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
        await page.get_by_test_id("fleet-sort").select_option("status")
        stale = page.locator('[data-testid="device-row"][data-status="stale"]')
        await expect(stale.first).to_be_visible(timeout=15_000)
        await page.wait_for_function("document.querySelector('.cseen').textContent !== 'never'")
        await page.screenshot(path=DOCS / "dashboard-fleet.png")
        await page.goto(gateway.url + "#/device/thermo-01")
        await page.get_by_test_id("window-15m").click()
        form = page.locator('[data-testid="command-form"][data-command="set_target"]')
        await form.get_by_label("target").fill("22")
        await form.get_by_test_id("command-send").click()
        await expect(form.get_by_test_id("command-result")).to_have_attribute("data-status", "ok")
        await page.mouse.move(0, 0)
        await page.screenshot(path=DOCS / "dashboard-device.png", full_page=True)
        await browser.close()


if __name__ == "__main__":
    asyncio.run(main())

"""The dashboard's history in real Chromium: long windows from the history store drawn as a
min-max band around the average, a CSV export per metric, and the fleet and charts back after
a gateway restart."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from playwright.async_api import Page, expect

from tests.e2e.conftest import AddDevice
from tests.e2e.pages import open_live, value
from tests.e2e.stack import Gateway

DAY = 86400


async def subscribed(gateway: Gateway) -> None:
    """The gateway's broker link is up (its history is restored first): readings published
    from now on reach it."""
    assert gateway.live is not None
    await gateway.live.synced()


def sqlite_in(tmp_path: Path) -> dict[str, object]:
    return {"history.backend": "sqlite", "history.data_dir": str(tmp_path / "history")}


async def test_a_day_is_drawn_from_the_store_in_buckets_and_exports_as_csv(
    page: Page, start_gateway, add_device: AddDevice, tmp_path: Path
) -> None:
    """1,500 points over the last day: the 24h window asks the store, gets buckets (more
    points than the chart draws) and marks the chart bucketed; CSV gives every raw point."""
    gateway = await start_gateway(sqlite_in(tmp_path))
    await subscribed(gateway)
    device = await add_device("thermo-1")
    now = time.time()
    for i in range(1500):
        await device.telemetry({"temperature": 15 + i % 10}, ts=now - DAY + 600 + i * 50)
    await device.telemetry({"temperature": 21})
    assert gateway.live is not None
    store = gateway.live.runtime.store
    await open_live(page, gateway, "#/device/thermo-1")
    chart = page.locator('[data-testid="chart"][data-metric="temperature"]')
    await expect(chart.get_by_test_id("value")).to_contain_text("21")
    await store.drained()
    await page.get_by_test_id("window-24h").click()
    await expect(chart).to_have_attribute("data-bucketed", "true")
    await expect(chart.get_by_test_id("chart-range")).to_contain_text("max")
    async with page.expect_download() as info:
        await chart.get_by_test_id("export").click()
    download = await info.value
    lines = (await asyncio.to_thread(Path(await download.path()).read_text)).strip().splitlines()
    assert lines[0] == "time,value"
    assert len(lines) == 1 + 1501
    await page.get_by_test_id("window-5m").click()
    await expect(chart).not_to_have_attribute("data-bucketed", "true")


async def test_fleet_and_charts_come_back_after_a_restart(
    page: Page, start_gateway, add_device: AddDevice, tmp_path: Path
) -> None:
    """After a restart with no new readings, the fleet shows the last values and the device's
    chart its history, both from the store."""
    gateway = await start_gateway(sqlite_in(tmp_path))
    await subscribed(gateway)
    device = await add_device("thermo-1")
    for temperature in (10, 30, 20):
        await device.telemetry({"temperature": temperature})
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20")
    await gateway.stop()
    await gateway.start()
    await page.reload()
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20")
    await page.goto(gateway.url + "#/device/thermo-1")
    chart = page.locator('[data-testid="chart"][data-metric="temperature"]')
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 10 · max 30 °C")

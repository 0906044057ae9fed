"""An automated accessibility audit (axe-core) of the fleet and device pages, light and dark:
no serious or critical violations."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.e2e.axe import AxeUnavailable, add_axe, audit, axe_script
from tests.e2e.conftest import AddDevice, MakePage
from tests.e2e.fleet_devices import METER, METER_VALUES, TRACKER, VALVE, VALVE_VALUES
from tests.e2e.pages import open_live, row
from tests.e2e.stack import Gateway, set_status

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def axe() -> Path:
    """axe.min.js, installed from npm into the test-only folder on first use."""
    try:
        return axe_script()
    except AxeUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


async def fleet_of_every_kind(add_device: AddDevice) -> None:
    """Online, offline and stale-looking devices; wide values; a tracker; a thermostat."""
    valve = await add_device("trv-1", VALVE)
    await valve.telemetry(VALVE_VALUES)
    meter = await add_device("meter-1", METER)
    await meter.telemetry(METER_VALUES)
    await set_status(meter, "offline")
    tracker = await add_device("van-3", TRACKER)
    await tracker.telemetry({"latitude": 51.5074, "longitude": -0.1278, "speed": 31.0})
    await tracker.telemetry({"latitude": 51.5076, "longitude": -0.1270, "speed": 33.0})
    thermostat = await add_device("thermo-1")
    await thermostat.telemetry({"temperature": 20.5, "heating": True, "mode": "heat"})


async def assert_accessible(page: Page, what: str) -> None:
    violations = await audit(page)
    assert violations == [], f"{what}: {violations}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_fleet_and_device_pages_pass_the_audit(
    make_page: MakePage, gateway: Gateway, add_device: AddDevice, axe: Path, scheme: str
) -> None:
    """The fleet (with its values tooltip open), a thermostat's page with a command result and a
    tracker's page have no serious or critical accessibility violations."""
    await fleet_of_every_kind(add_device)
    page = await make_page(scheme=scheme)
    await add_axe(page.context, axe)
    await open_live(page, gateway)
    await expect(page.locator("html")).to_have_attribute("data-theme", scheme)
    await expect(row(page, "meter-1").get_by_test_id("status-badge")).to_have_text("Offline")
    await assert_accessible(page, f"fleet, {scheme}")
    await row(page, "trv-1").locator(".row-link").focus()
    await expect(page.get_by_test_id("values-tip")).to_be_visible()
    await assert_accessible(page, f"fleet with the values tooltip, {scheme}")

    await page.goto(gateway.url + "#/device/thermo-1")
    form = page.locator('[data-testid="command-form"][data-command="set_target"]')
    await form.get_by_label("target").fill("21.5")
    await form.get_by_test_id("command-send").click()
    await expect(form.get_by_test_id("command-result")).to_have_attribute("data-status", "ok")
    await assert_accessible(page, f"thermostat page, {scheme}")

    await page.goto(gateway.url + "#/device/van-3")
    await expect(page.get_by_test_id("track")).to_have_attribute("data-points", "2")
    await assert_accessible(page, f"tracker page, {scheme}")

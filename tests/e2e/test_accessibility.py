"""An automated accessibility audit (axe-core) of the fleet and device pages, light and dark:
no serious or critical violations."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.async_api import Page, expect

from tests.e2e.axe import AxeUnavailable, add_axe, audit, axe_script
from tests.e2e.conftest import AddDevice, MakePage
from tests.e2e.fleet_devices import add_mixed_fleet
from tests.e2e.pages import open_live, row
from tests.e2e.stack import Gateway

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def axe() -> Path:
    """axe.min.js, installed from npm into the test-only folder on first use."""
    try:
        return axe_script()
    except AxeUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)


async def assert_accessible(page: Page, what: str) -> None:
    violations = await audit(page)
    assert violations == [], f"{what}: {violations}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
async def test_fleet_and_device_pages_pass_the_audit(
    make_page: MakePage, gateway: Gateway, add_device: AddDevice, axe: Path, scheme: str
) -> None:
    """The fleet (with its values tooltip open), a thermostat's page with a command result and a
    tracker's page have no serious or critical accessibility violations."""
    await add_mixed_fleet(add_device)
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

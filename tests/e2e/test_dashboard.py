"""The dashboard in a real headless Chromium against the real gateway, Mosquitto and devices."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import AddDevice
from tests.e2e.pages import open_live, row, stats, value
from tests.e2e.stack import THERMOSTAT, Gateway, set_status
from tests.support.mosquitto import Mosquitto

pytestmark = pytest.mark.e2e

METER: dict[str, Any] = {
    "type": "meter",
    "name": "Main feed",
    "metrics": {"power": {"unit": "W"}},
    "commands": {},
}


async def test_device_list_fills_in(page: Page, gateway: Gateway, add_device: AddDevice) -> None:
    """Devices announced before and after the page loads both get a row with name, type, status."""
    await add_device("thermo-1")
    await open_live(page, gateway)
    await expect(row(page, "thermo-1")).to_contain_text("Living room")
    await add_device("meter-7", METER)
    await expect(row(page, "meter-7")).to_contain_text("Main feed")
    await expect(row(page, "meter-7")).to_contain_text("meter")
    await expect(row(page, "meter-7").get_by_test_id("status-badge")).to_have_attribute(
        "data-status", "online"
    )
    await expect(page.get_by_test_id("fleet-summary")).to_have_text("Showing 2 of 2 devices")


async def test_value_changes_when_device_publishes(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A telemetry publish shows up in the device's row, with the unit from its meta."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 21.5})
    await open_live(page, gateway)
    cell = value(page, "thermo-1", "temperature")
    await expect(cell).to_have_text("21.5")
    await device.telemetry({"temperature": 23.25})
    await expect(cell).to_have_text("23.25")
    unit = row(page, "thermo-1").locator('[data-metric="temperature"] .vunit')
    await expect(unit).to_have_text("°C")


async def test_device_going_offline_is_shown(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A device publishing `offline` (its last will) turns its badge to Offline."""
    device = await add_device("thermo-1")
    await open_live(page, gateway)
    badge = row(page, "thermo-1").get_by_test_id("status-badge")
    await expect(badge).to_have_attribute("data-status", "online")
    await set_status(device, "offline")
    await expect(badge).to_have_attribute("data-status", "offline")
    await expect(badge).to_have_text("Offline")
    await page.get_by_test_id("status-filter-offline").click()
    await expect(page.get_by_test_id("fleet-summary")).to_have_text("Showing 1 of 1 devices")


async def test_command_from_form_reaches_device(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """Sending set_target from the generated form reaches the device; its result and rtt appear."""
    device = await add_device("thermo-1")
    await open_live(page, gateway)
    await row(page, "thermo-1").locator(".row-link").click()
    await expect(page).to_have_url(gateway.url + "#/device/thermo-1")
    form = page.locator('[data-testid="command-form"][data-command="set_target"]')
    await form.get_by_label("target").fill("21.5")
    await form.get_by_test_id("command-send").click()
    result = form.get_by_test_id("command-result")
    await expect(result).to_have_attribute("data-status", "ok")
    await expect(result).to_contain_text(" ms")
    await expect(result.get_by_test_id("command-detail")).to_have_text('{"target":21.5}')
    await expect(result).to_have_text(re.compile(r'^OK · \d+ ms\{"target":21\.5\}$'))
    received = device.commands.get_nowait()
    assert (received.command, received.params) == ("set_target", {"target": 21.5})


async def test_command_error_and_enum_select(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """An enum param is a select; the device's error message is shown next to the command."""

    def refuse(command: str, params: dict[str, Any]) -> tuple[str, Any, str | None]:
        return "error", None, "mode locked by schedule"

    device = await add_device("thermo-1", answer=refuse)
    await open_live(page, gateway, "#/device/thermo-1")
    form = page.locator('[data-testid="command-form"][data-command="set_mode"]')
    await form.get_by_label("mode").select_option(label="cool")
    await form.get_by_test_id("command-send").click()
    result = form.get_by_test_id("command-result")
    await expect(result).to_have_attribute("data-status", "error")
    await expect(result).to_contain_text("mode locked by schedule")
    received = device.commands.get_nowait()
    assert (received.command, received.params) == ("set_mode", {"mode": "cool"})


async def test_command_timeout_is_shown(
    page: Page, start_gateway: Any, add_device: AddDevice
) -> None:
    """A device that never answers: the parameterless command ends as timed out, not pending."""
    fast = {"commands.default_timeout_ms": 500, "commands.max_timeout_ms": 500}
    gateway = await start_gateway(fast)
    await add_device("thermo-1", answer=None)
    await open_live(page, gateway, "#/device/thermo-1")
    form = page.locator('[data-testid="command-form"][data-command="toggle"]')
    await form.get_by_test_id("command-send").click()
    await expect(form.get_by_test_id("command-result")).to_have_attribute("data-status", "timeout")


async def test_device_view_charts_history_then_live(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """The chart starts from the gateway's history and then takes live points."""
    device = await add_device("thermo-1")
    for temperature in (10, 30, 20):
        await device.telemetry({"temperature": temperature, "heating": True, "mode": "heat"})
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20")
    await page.goto(gateway.url + "#/device/thermo-1")
    chart = page.locator('[data-testid="chart"][data-metric="temperature"]')
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 10 · max 30 °C")
    await device.telemetry({"temperature": 40})
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 10 · max 40 °C")
    await expect(chart.get_by_test_id("value")).to_contain_text("40")
    state = page.locator('[data-testid="state"][data-metric="heating"]')
    await expect(state.get_by_test_id("value")).to_have_text("on")


async def test_page_recovers_after_gateway_restart(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """The gateway restarts: the page reconnects by itself, cannot resume, reloads the fleet."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 20})
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20")
    marker = await page.evaluate("window.__sameDocument = true")
    assert marker is True
    await gateway.stop()
    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-state", "reconnecting")
    await expect(page.get_by_test_id("connection-text")).to_contain_text("Reconnecting")
    await gateway.start()
    # After a 1001 the client's first retry is drawn from [0, 8 s] (so that a restarted
    # gateway's clients spread out, docs/clients.md), the next, if that one came too early,
    # from [0, 16 s].
    await expect(connection).to_have_attribute("data-state", "connected", timeout=30_000)
    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("Reconnected — refreshed")
    await expect(notice).to_contain_text("gateway restarted")
    assert (await stats(page))["snapshots"] == 2
    await device.telemetry({"temperature": 24.5})
    await expect(value(page, "thermo-1", "temperature")).to_have_text("24.5")
    assert await page.evaluate("window.__sameDocument") is True, "the page was reloaded"


async def test_broker_down_is_shown(
    page: Page, start_gateway: Any, own_broker: Mosquitto, add_device: AddDevice
) -> None:
    """The gateway loses its broker: the indicator and banner say so, and clear when it is back."""
    gateway = await start_gateway(on=own_broker)
    await add_device("thermo-1", on=own_broker)
    await open_live(page, gateway)
    await expect(row(page, "thermo-1")).to_be_visible()
    own_broker.kill()
    connection = page.get_by_test_id("connection")
    await expect(connection).to_have_attribute("data-state", "broker-down")
    await expect(page.get_by_test_id("broker-banner")).to_be_visible()
    own_broker.start()
    await expect(connection).to_have_attribute("data-state", "connected")
    await expect(page.get_by_test_id("broker-banner")).to_be_hidden()


async def test_token_is_asked_for_and_kept(
    page: Page, start_gateway: Any, add_device: AddDevice
) -> None:
    """With auth required the page asks for a token, says when it is refused, keeps a good one."""
    gateway = await start_gateway({"auth.tokens": [{"token": "e2e-secret", "command": ["*"]}]})
    await add_device("thermo-1")
    await page.goto(gateway.url)
    dialog = page.get_by_test_id("token-dialog")
    await expect(dialog).to_be_visible()
    await page.get_by_label("Access token").fill("wrong")
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id("token-error")).to_have_text("The gateway refused the token.")
    await page.get_by_label("Access token").fill("e2e-secret")
    await page.get_by_test_id("token-submit").click()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(row(page, "thermo-1")).to_be_visible()
    await page.reload()
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(dialog).to_be_hidden()


async def test_device_strings_are_not_markup(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A device name holding HTML is shown as text; no element is created from it."""
    hostile = {**THERMOSTAT, "name": '<img src=x onerror="window.pwned=1">Boiler'}
    device = await add_device("thermo-1", hostile)
    await device.telemetry({"mode": "<b>heat</b>"})
    await open_live(page, gateway)
    await expect(row(page, "thermo-1").locator(".dname")).to_have_text(hostile["name"])
    await expect(value(page, "thermo-1", "mode")).to_have_text("<b>heat</b>")
    assert await page.locator("#fleet img, #fleet b").count() == 0
    assert await page.evaluate("window.pwned") is None

"""The page's live link beyond the basics: resuming its stream after a dropped connection, the
gateway's clock and limits from hello, and the effective command timeout."""

from __future__ import annotations

import dataclasses
import re
import time
from typing import Any

import pytest
from playwright.async_api import Page, expect

from tests.e2e.conftest import AddDevice
from tests.e2e.pages import Sockets, frames_of, open_live, record_frames, row, stats, value
from tests.e2e.stack import Gateway, set_status
from tests.support.devices import DeviceStandIn

pytestmark = pytest.mark.e2e


async def showing_thermostat(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> tuple[DeviceStandIn, Sockets]:
    """thermo-1 has reported 20 °C and the page shows it (from its snapshot), recording the
    frames of every WebSocket it opens."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 20})
    sockets = record_frames(page)
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20")
    return device, sockets


async def test_dropped_link_resumes_without_snapshot(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """The gateway side drops the link: the page resumes its stream, no snapshot, nothing missed."""
    device, sockets = await showing_thermostat(page, gateway, add_device)
    cell = value(page, "thermo-1", "temperature")
    await device.telemetry({"temperature": 20.25})
    await expect(cell).to_have_text("20.25")  # live, readings seq 1
    assert (await stats(page))["snapshots"] == 1
    last_seq = frames_of(sockets, "received", "readings")[-1]["seq"]

    # Offline, the page cannot reconnect before the readings below reach its parked stream.
    await page.context.set_offline(True)
    assert gateway.drop_connections() >= 1
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    assert gateway.live is not None
    observer = await gateway.live.connect()
    await observer.request({"type": "subscribe", "devices": ["thermo-1"]}, "subscribed")
    await device.telemetry({"temperature": 21.5})
    await device.telemetry({"temperature": 22.75})
    # The hub offers each batch to every subscriber at once: the parked stream has it too.
    await observer.readings(1, where=lambda r: r[3] == 22.75)
    await expect(cell).to_have_text("20.25")

    await page.context.set_offline(False)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(cell).to_have_text("22.75")
    counters = await stats(page)
    assert counters["snapshots"] == 1, "the page took a snapshot instead of resuming"
    assert (counters["recovered"], counters["refreshed"], counters["gaps"]) == (1, 0, 0)

    opened = [s for s in sockets if s]  # offline attempts open no socket and carry no frames
    first, resumed = opened[0], opened[-1]
    assert first is not resumed
    subscribe = next(f for d, f in resumed if d == "sent" and f["type"] == "subscribe")
    hello = next(f for d, f in first if f["type"] == "hello")
    assert subscribe["resume"] == {
        "epoch": hello["epoch"],
        "session": hello["session"],
        "seq": last_seq,
    }
    received = [f for d, f in resumed if d == "received"]
    assert not [f for f in received if f["type"] == "snapshot"]
    assert next(f for f in received if f["type"] == "subscribed")["recovered"] is True
    replayed = [f for f in received if f["type"] == "readings"]
    assert replayed[0]["seq"] == last_seq + 1
    assert [r[3] for f in replayed for r in f["data"]][:2] == [21.5, 22.75]
    await expect(page.get_by_test_id("notice")).to_be_hidden()


async def test_a_device_that_went_offline_while_the_page_was_away_shows_offline(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """Resumed after a dropped link, the page gets the status event it missed with the readings
    (one sequenced stream): the device that went offline meanwhile shows Offline, no snapshot."""
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 20})
    await open_live(page, gateway)
    badge = row(page, "thermo-1").get_by_test_id("status-badge")
    await expect(badge).to_have_attribute("data-status", "online")
    await page.context.set_offline(True)
    assert gateway.drop_connections() >= 1
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    assert gateway.live is not None
    observer = await gateway.live.connect()
    await observer.request({"type": "subscribe", "devices": ["thermo-1"]}, "subscribed")
    await set_status(device, "offline")
    await device.telemetry({"temperature": 21.5})
    # The hub offers each batch to every subscriber at once: the parked stream has them too.
    await observer.readings(1, where=lambda r: r[3] == 21.5)
    await expect(badge).to_have_attribute("data-status", "online")

    await page.context.set_offline(False)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")
    await expect(badge).to_have_attribute("data-status", "offline")
    await expect(value(page, "thermo-1", "temperature")).to_have_text("21.5")
    counters = await stats(page)
    assert (counters["snapshots"], counters["recovered"], counters["gaps"]) == (1, 1, 0)


async def test_a_client_that_falls_behind_is_told_and_keeps_the_latest_values(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A coalesced frame (the page fell behind) shows the lagging notice and its latest values
    and events are applied; the page's seq stays gap-free."""
    device = await add_device("thermo-1")
    await open_live(page, gateway)
    assert gateway.live is not None
    for stream in gateway.live.runtime.hub.streams:
        stream.config = dataclasses.replace(stream.config, outbox_max_bytes=1)  # falls behind
    await device.telemetry({"temperature": 24})
    await set_status(device, "offline")
    await expect(page.get_by_test_id("notice")).to_contain_text("Falling behind")
    await expect(value(page, "thermo-1", "temperature")).to_have_text("24")
    badge = row(page, "thermo-1").get_by_test_id("status-badge")
    await expect(badge).to_have_attribute("data-status", "offline")
    assert (await stats(page))["gaps"] == 0


async def test_stream_the_gateway_gave_up_on_is_refreshed(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """Evicted as a slow consumer (4000), the stream is not resumed: fresh snapshot, a notice."""
    device, sockets = await showing_thermostat(page, gateway, add_device)
    assert gateway.live is not None
    for stream in list(gateway.live.runtime.hub.streams):
        stream.evict(4000, "test")
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "reconnecting")
    await device.telemetry({"temperature": 23})
    notice = page.get_by_test_id("notice")
    await expect(notice).to_contain_text("Reconnected — refreshed")
    await expect(value(page, "thermo-1", "temperature")).to_have_text("23")
    counters = await stats(page)
    assert (counters["snapshots"], counters["recovered"], counters["refreshed"]) == (2, 0, 1)
    subscribes = frames_of(sockets, "sent", "subscribe")
    assert "resume" not in subscribes[0]
    assert subscribes[-1]["resume"]["epoch"] == frames_of(sockets, "received", "hello")[0]["epoch"]
    assert frames_of(sockets, "received", "subscribed")[-1]["recovered"] is False


async def test_ages_use_the_gateway_clock(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """With the page's clock an hour fast, a device just heard from is not shown as 1h ago."""
    await page.add_init_script("{ const real = Date.now; Date.now = () => real() + 3_600_000; }")
    device = await add_device("thermo-1")
    await device.telemetry({"temperature": 19.5})
    await open_live(page, gateway)
    assert await page.evaluate("Date.now() / 1000 - window.iotgw.conn.hello.time") > 3500
    seen = row(page, "thermo-1").get_by_test_id("last-seen")
    await expect(seen).to_have_text(re.compile(r"^(just now|\d+s ago)$"))
    await expect(seen).to_have_attribute("data-overdue", "false")
    await device.telemetry({"temperature": 20.5})
    await expect(value(page, "thermo-1", "temperature")).to_have_text("20.5")
    await expect(seen).to_have_text(re.compile(r"^(just now|\d+s ago)$"))
    # The chart's window is on the gateway's clock too, so the points are inside it.
    await page.goto(gateway.url + "#/device/thermo-1")
    chart = page.locator('[data-testid="chart"][data-metric="temperature"]')
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 19.5 · max 20.5 °C")


async def test_pending_command_counts_down_the_effective_timeout(
    page: Page, start_gateway: Any, add_device: AddDevice
) -> None:
    """The page asks for 5 s, the gateway caps it at 3 s: the countdown shows the 3 s it got."""
    gateway = await start_gateway({"commands.max_timeout_ms": 3000})
    await add_device("thermo-1", answer=None)
    await open_live(page, gateway, "#/device/thermo-1")
    form = page.locator('[data-testid="command-form"][data-command="toggle"]')
    await form.get_by_test_id("command-send").click()
    result = form.get_by_test_id("command-result")
    countdown = result.get_by_test_id("command-countdown")
    await expect(countdown).to_have_attribute("data-timeout-ms", "3000")
    await expect(countdown).to_have_text(re.compile(r"^[1-3] s left$"))
    await expect(result).to_have_attribute("data-status", "accepted")
    await expect(result).to_have_attribute("data-status", "timeout")
    await expect(countdown).to_have_count(0)


async def test_window_longer_than_kept_history_says_so(
    page: Page, start_gateway: Any, add_device: AddDevice
) -> None:
    """The gateway keeps 5 points per metric: the page asks for 5, says the 1m window is short."""
    gateway = await start_gateway({"registry.history_length": 5})
    device = await add_device("thermo-1")
    now = time.time()
    for i in range(8):  # 2 s apart: the kept 5 span 8 s of a 60 s window
        await device.telemetry({"temperature": 10 + i}, ts=now - 16 + 2 * i)
    sockets = record_frames(page)
    await open_live(page, gateway)
    await expect(value(page, "thermo-1", "temperature")).to_have_text("17")
    await page.goto(gateway.url + "#/device/thermo-1")
    await page.get_by_test_id("window-1m").click()
    chart = page.locator('[data-testid="chart"][data-metric="temperature"]')
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 13 · max 17 °C")
    note = page.get_by_test_id("history-note")
    await expect(note).to_contain_text("the gateway keeps the last 5 points per metric")
    await expect(page.get_by_test_id("window-1m")).to_have_attribute("data-beyond", "true")
    assert {f["limit"] for f in frames_of(sockets, "sent", "history")} == {5}

"""Fixtures for the dashboard's end-to-end tests: headless Chromium, the real gateway, a real
Mosquitto and device stand-ins. Every test gets its own topic prefix and gateway."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from tests.e2e.stack import CHROMIUM, CHROMIUM_ARGS, THERMOSTAT, Gateway, gateway_config
from tests.support.devices import AddDevice, device_stand_ins
from tests.support.mosquitto import Mosquitto

# Playwright's assertions retry until this deadline: readiness by polling the DOM, never by sleep.
expect.set_options(timeout=10_000)


@pytest.fixture
def prefix() -> str:
    """A topic prefix no other test uses (retained messages included)."""
    return f"e2e{secrets.token_hex(4)}"


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium: Playwright cannot download its own browsers on these machines."""
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"{CHROMIUM} is not installed: apt-get install chromium (scripts/test installs it)"
        )
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """A headless Chromium, one per test."""
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        yield browser
        await browser.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    """A fresh page; the test fails if the page throws an uncaught error."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


#: The sizes the dashboard is designed for: a laptop and a phone (CSS pixels).
DESKTOP = (1280, 820)
PHONE = (390, 844)

MakePage = Callable[..., Awaitable[Page]]


@pytest.fixture
async def make_page(browser: Browser) -> AsyncIterator[MakePage]:
    """Pages of a given size and colour scheme (`await make_page(PHONE, "dark")`), each in its
    own browser context (its own storage); the test fails if any page throws an uncaught error."""
    contexts = []
    errors: list[str] = []

    async def make(size: tuple[int, int] = DESKTOP, scheme: str = "light", **options: Any) -> Page:
        context = await browser.new_context(
            viewport={"width": size[0], "height": size[1]}, color_scheme=scheme, **options
        )
        contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        return page

    yield make
    for context in contexts:
        await context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture
async def start_gateway(broker: Mosquitto, prefix: str) -> AsyncIterator[Callable[..., Any]]:
    """Start gateways on the session broker (or another one); all are stopped at test end."""
    started: list[Gateway] = []

    async def start(
        overrides: dict[str, Any] | None = None, on: Mosquitto | None = None
    ) -> Gateway:
        gateway = await Gateway(gateway_config(on or broker, prefix, overrides)).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        await gateway.stop()


@pytest.fixture
async def gateway(start_gateway: Callable[..., Awaitable[Gateway]]) -> Gateway:
    """A gateway with default settings (no auth) on the session broker."""
    return await start_gateway()


@pytest.fixture
async def add_device(broker: Mosquitto, prefix: str) -> AsyncIterator[AddDevice]:
    """Start device stand-ins (the dashboard's thermostat unless told otherwise), each on its own
    MQTT connection, stopped at test end."""
    async with device_stand_ins(broker, prefix, THERMOSTAT) as add:
        yield add

"""Locators and probes for the dashboard page shared by the e2e tests."""

from __future__ import annotations

import json
from typing import Any

from playwright.async_api import Locator, Page, WebSocket, expect

from tests.e2e.stack import Gateway

#: One list per WebSocket the page opened, of ("sent" | "received", frame), in order.
Sockets = list[list[tuple[str, dict[str, Any]]]]


def row(page: Page, device_id: str) -> Locator:
    return page.locator(f'[data-testid="device-row"][data-device-id="{device_id}"]')


def value(page: Page, device_id: str, metric: str) -> Locator:
    return row(page, device_id).locator(f'[data-testid="value"][data-metric="{metric}"] .vnum')


async def open_live(page: Page, gateway: Gateway, path: str = "") -> None:
    await page.goto(gateway.url + path)
    await expect(page.get_by_test_id("connection")).to_have_attribute("data-state", "connected")


async def stats(page: Page) -> dict[str, int]:
    """The page's own counters (window.iotgw.stats): snapshots, recovered, refreshed, gaps…"""
    result: dict[str, int] = await page.evaluate("({...window.iotgw.stats})")
    return result


def record_frames(page: Page) -> Sockets:
    """Record every frame of every WebSocket the page opens from now on (register before goto)."""
    sockets: Sockets = []

    def on_socket(ws: WebSocket) -> None:
        frames: list[tuple[str, dict[str, Any]]] = []
        sockets.append(frames)
        ws.on("framesent", lambda payload: frames.append(("sent", json.loads(payload))))
        ws.on("framereceived", lambda payload: frames.append(("received", json.loads(payload))))

    page.on("websocket", on_socket)
    return sockets


def frames_of(sockets: Sockets, direction: str, kind: str) -> list[dict[str, Any]]:
    """Frames of one type, over every socket, in order."""
    return [f for socket in sockets for d, f in socket if d == direction and f.get("type") == kind]

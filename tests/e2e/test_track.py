"""The track of a device that moves: its path from history and live points on a plain coordinate
plot that loads nothing from elsewhere, its position and heading; map tiles only from the server
an operator configured, and no other origin; on a phone and in dark."""

from __future__ import annotations

import math
import struct
import time
import zlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from playwright.async_api import Page, expect

from tests.e2e.conftest import PHONE, AddDevice, MakePage
from tests.e2e.fleet_devices import TRACKER
from tests.e2e.pages import open_live
from tests.e2e.stack import Gateway
from tests.support.mosquitto import free_port

pytestmark = pytest.mark.e2e

#: Eastwards along a London street, ~14 m a step, one position every 10 s, then a turn north.
EAST = [(51.5074, -0.1300 + 0.0002 * i) for i in range(16)]
NORTH = [(51.5074 + 0.0002 * i, EAST[-1][1]) for i in range(1, 6)]
ROUTE = EAST + NORTH


async def drive(device: Any, route: list[tuple[float, float]], heading: bool = True) -> None:
    """Publish the route as positions of the last few minutes (one every 10 s up to now)."""
    now = time.time()
    for i, (lat, lon) in enumerate(route):
        values: dict[str, Any] = {"latitude": lat, "longitude": lon, "speed": 5.0}
        if heading:
            values["heading"] = 90.0 if i < len(EAST) else 0.0
        await device.telemetry(values, ts=now - 10 * (len(route) - 1 - i))


def tile_of(lat: float, lon: float, z: int) -> tuple[int, int]:
    """The slippy-map tile holding a position at zoom z."""
    n = 2**z
    phi = math.radians(lat)
    y = (1 - math.log(math.tan(phi) + 1 / math.cos(phi)) / math.pi) / 2
    return int((lon + 180) / 360 * n), int(y * n)


#: Resolves with the URL the page's policy blocked, or "loaded" if the image came through.
TRY_IMAGE = """
(url) => new Promise((resolve) => {
  const img = new Image();
  const onViolation = (ev) => resolve(`blocked ${ev.blockedURI}`);
  document.addEventListener("securitypolicyviolation", onViolation, { once: true });
  img.onload = () => resolve("loaded");
  img.onerror = () => setTimeout(() => resolve("error"), 500);
  img.src = url;
})
"""


def png(width: int = 256, height: int = 256) -> bytes:
    """A plain grey PNG: a map tile as far as the browser can tell."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    raw = b"".join(b"\x00" + b"\xc8\xc8\xc8" * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )


class TileServer:
    """Serves a grey tile for any /tiles/{z}/{x}/{y}.png on its own loopback port (its own
    origin), and remembers which were asked for."""

    def __init__(self) -> None:
        self.port = free_port()
        self.requested: list[tuple[int, int, int]] = []
        self.other: list[str] = []
        self.tile = png()

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        info = request.match_info
        self.requested.append((int(info["z"]), int(info["x"]), int(info["y"])))
        return web.Response(body=self.tile, content_type="image/png")

    async def elsewhere(self, request: web.Request) -> web.Response:
        self.other.append(request.path)
        return web.Response(body=self.tile, content_type="image/png")


@pytest.fixture
async def tile_server() -> AsyncIterator[TileServer]:
    server = TileServer()
    app = web.Application()
    app.router.add_get("/tiles/{z}/{x}/{y}.png", server.handle)
    app.router.add_get("/{tail:.*}", server.elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", server.port).start()
    yield server
    await runner.cleanup()


async def track_state(page: Page) -> dict[str, Any]:
    state: dict[str, Any] = await page.evaluate("window.iotgw.device.track.state")
    return state


async def pixel_at(page: Page, x: float, y: float) -> list[int]:
    """The track canvas' colour at CSS pixel (x, y)."""
    rgba: list[int] = await page.evaluate(
        """([x, y]) => {
          const canvas = document.querySelector('[data-testid="track"] canvas');
          const k = canvas.width / canvas.getBoundingClientRect().width;
          const at = (v) => Math.round(v * k);
          return [...canvas.getContext("2d").getImageData(at(x), at(y), 1, 1).data];
        }""",
        [x, y],
    )
    return rgba


def css_rgb(value: str) -> list[int]:
    """'#2563eb' -> [37, 99, 235]."""
    value = value.strip().lstrip("#")
    return [int(value[i : i + 2], 16) for i in (0, 2, 4)]


async def test_track_from_history_then_live(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A tracker's device page draws its path from history (every position of the window), marks
    where it is with the heading it reports, then follows a live position."""
    device = await add_device("van-3", TRACKER)
    await drive(device, ROUTE)
    await open_live(page, gateway, "#/device/van-3")
    track = page.get_by_test_id("track")
    await expect(track).to_have_attribute("data-points", str(len(ROUTE)))
    await expect(page.get_by_test_id("track-position")).to_have_text("51.50840° N, 0.12700° W")
    await expect(page.get_by_test_id("track-motion")).to_have_text("heading 0° N · 5 km/h")
    await expect(track).to_have_attribute("data-heading", "0")
    canvas = track.locator("canvas")
    await expect(canvas).to_have_attribute(
        "aria-label",
        f"Track of Van 3: {len(ROUTE)} positions in this window; "
        "now at 51.50840° N, 0.12700° W, heading 0° N, 5 km/h",
    )

    state = await track_state(page)
    accent = await page.evaluate("getComputedStyle(document.body).getPropertyValue('--accent')")
    assert (await pixel_at(page, *state["marker"]))[:3] == css_rgb(accent), "the marker is drawn"

    await device.telemetry({"latitude": 51.5086, "longitude": -0.1270, "heading": 0.0})
    await expect(track).to_have_attribute("data-points", str(len(ROUTE) + 1))
    await expect(page.get_by_test_id("track-position")).to_have_text("51.50860° N, 0.12700° W")
    moved = await track_state(page)
    assert moved["marker"][1] < state["marker"][1], "north is up: the marker moved up"


async def test_heading_from_travel_when_none_is_reported(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """A device reporting only its position (lat/lon, Home Assistant style) is heading where it
    last moved: east along the street, then north."""
    meta = {**TRACKER, "metrics": {"lat": {"unit": "°"}, "lon": {"unit": "°"}}}
    device = await add_device("bike-1", meta)
    now = time.time()
    for i, (lat, lon) in enumerate(EAST):
        await device.telemetry({"lat": lat, "lon": lon}, ts=now - 10 * (len(EAST) - i))
    await open_live(page, gateway, "#/device/bike-1")
    track = page.get_by_test_id("track")
    await expect(track).to_have_attribute("data-heading", "90")
    await expect(page.get_by_test_id("track-motion")).to_have_text("heading 90° E")
    await device.telemetry({"lat": EAST[-1][0] + 0.0002, "lon": EAST[-1][1]})
    await expect(track).to_have_attribute("data-heading", "0")


async def test_latitude_axis_labels_tell_the_ticks_apart(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """The latitude chart over 0.001° labels its ticks with four decimals, all different (they
    all read 51.51 before), and its unit once, above them."""
    device = await add_device("van-3", TRACKER)
    await drive(device, ROUTE)
    await open_live(page, gateway, "#/device/van-3")
    chart = page.locator('[data-testid="chart"][data-metric="latitude"]')
    await expect(chart.get_by_test_id("chart-range")).to_have_text("min 51.5074 · max 51.5084 °")
    labels: list[str] = await page.evaluate(
        "window.iotgw.device.series.get('latitude').chart.axis.labels"
    )
    assert len(labels) >= 3
    assert len(set(labels)) == len(labels), labels
    assert all(label.startswith("51.50") and len(label.split(".")[1]) == 4 for label in labels)


async def test_plain_plot_loads_nothing_from_elsewhere(
    page: Page, gateway: Gateway, add_device: AddDevice, tile_server: TileServer
) -> None:
    """Without map tiles every request the page makes, on the fleet and on a tracker's page, goes
    to the gateway, no tile is asked for, the page itself breaks none of its policy's rules, and
    an image from another origin is blocked by it."""
    requests: list[str] = []
    page.on("request", lambda request: requests.append(request.url))
    await page.add_init_script(
        "window.__violations = [];"
        "document.addEventListener('securitypolicyviolation',"
        " (ev) => window.__violations.push(`${ev.violatedDirective} ${ev.blockedURI}`));"
    )
    device = await add_device("van-3", TRACKER)
    await drive(device, ROUTE)
    await open_live(page, gateway)
    await expect(page.locator('[data-testid="device-row"][data-device-id="van-3"]')).to_be_visible()
    await page.goto(gateway.url + "#/device/van-3")
    track = page.get_by_test_id("track")
    await expect(track).to_have_attribute("data-points", str(len(ROUTE)))
    await expect(track).to_have_attribute("data-tiles", "false")
    assert await track.get_by_test_id("map-tile").count() == 0
    origin = gateway.url.rstrip("/")
    ws_origin = origin.replace("http://", "ws://")
    assert requests
    assert [u for u in requests if not u.startswith((origin, ws_origin))] == []
    assert await page.evaluate("window.__violations") == []
    outcome = await page.evaluate(TRY_IMAGE, f"{tile_server.origin}/tiles/1/0/0.png")
    assert outcome.startswith("blocked")
    assert tile_server.requested == []


async def test_tiles_only_from_the_configured_server(
    page: Page, start_gateway: Any, add_device: AddDevice, tile_server: TileServer
) -> None:
    """With dashboard.map_tiles set, the tiles under the track come from that server (the one
    holding the current position among them) with its attribution shown; an image from any
    other origin is still blocked."""
    template = f"{tile_server.origin}/tiles/{{z}}/{{x}}/{{y}}.png"
    gateway = await start_gateway(
        {"dashboard.map_tiles": template, "dashboard.map_attribution": "© Test tiles"}
    )
    device = await add_device("van-3", TRACKER)
    await drive(device, ROUTE)
    await open_live(page, gateway, "#/device/van-3")
    track = page.get_by_test_id("track")
    await expect(track).to_have_attribute("data-tiles", "true")
    await expect(track.get_by_test_id("track-attribution")).to_have_text("© Test tiles")
    tiles = track.get_by_test_id("map-tile")
    await expect(tiles.first).to_be_visible()
    await page.wait_for_function(
        "[...document.querySelectorAll('[data-testid=\"map-tile\"]')].every(i => i.complete && i.naturalWidth === 256)"  # noqa: E501
    )
    zooms = {z for z, _, _ in tile_server.requested}
    assert len(zooms) == 1, tile_server.requested
    (z,) = zooms
    assert z >= 14, "a street-level view"
    lat, lon = ROUTE[-1]
    assert (z, *tile_of(lat, lon, z)) in tile_server.requested
    other = f"http://localhost:{tile_server.port}/elsewhere.png"  # another origin: another host
    assert (await page.evaluate(TRY_IMAGE, other)).startswith("blocked")
    assert tile_server.other == []


async def test_track_on_a_phone_in_dark(
    make_page: MakePage, gateway: Gateway, add_device: AddDevice
) -> None:
    """At 390x844 in dark the track fits the screen's width and is drawn in the dark palette."""
    device = await add_device("van-3", TRACKER)
    await drive(device, ROUTE)
    page = await make_page(PHONE, "dark")
    await open_live(page, gateway, "#/device/van-3")
    track = page.get_by_test_id("track")
    await expect(track).to_have_attribute("data-points", str(len(ROUTE)))
    box = await track.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE[0]
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE[0]
    plot = await page.evaluate("getComputedStyle(document.body).getPropertyValue('--surface-2')")
    assert css_rgb(plot) == [0x1C, 0x24, 0x30], "the dark theme's plot colour"
    assert (await pixel_at(page, 2, 2))[:3] == css_rgb(plot)

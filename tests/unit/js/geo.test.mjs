// The track view's geometry (dashboard/geo.js). Run by tests/unit/test_dashboard_js.py.

import assert from "node:assert/strict";
import { test } from "node:test";

import {
  bearing,
  compass,
  fitView,
  formatPosition,
  metresBetween,
  pairPositions,
  positionMetrics,
  project,
  tilesFor,
  tileUrl,
  travelBearing,
  unproject,
} from "../../../dashboard/geo.js";

const close = (a, b, eps, what = "") => assert.ok(Math.abs(a - b) <= eps, `${what} ${a} ≈ ${b} (±${eps})`);

test("position metrics as conventions name them", () => {
  assert.deepEqual(positionMetrics(["latitude", "longitude", "speed", "heading"]), {
    lat: "latitude",
    lon: "longitude",
    heading: "heading",
    speed: "speed",
  });
  assert.deepEqual(positionMetrics(["lat", "lon", "battery"]), { lat: "lat", lon: "lon", heading: null, speed: null });
  assert.deepEqual(positionMetrics(["GPS.lat", "GPS.lon", "GPS.speed", "GPS.heading", "Temperature"]), {
    lat: "GPS.lat",
    lon: "GPS.lon",
    heading: "GPS.heading",
    speed: "GPS.speed",
  });
  assert.equal(positionMetrics(["gps_latitude", "gps_lng"]).lon, "gps_lng");
});

test("no position without both halves of one pair", () => {
  assert.equal(positionMetrics(["temperature", "humidity"]), null);
  assert.equal(positionMetrics(["latitude", "altitude"]), null);
  assert.equal(positionMetrics(["home.lat", "work.lon"]), null);
  assert.equal(positionMetrics(["plateau", "longing"]), null, "whole words only");
});

test("exact names win over prefixed ones", () => {
  assert.equal(positionMetrics(["gps.lat", "gps.lon", "lat", "lon"]).lat, "lat");
});

test("latitude and longitude points are paired by time", () => {
  const lat = [[1, 51.5], [2, 51.6], [3, 51.7], [10, 51.8]];
  const lon = [[1, -0.1], [2.2, -0.2], [5, -0.3], [10.5, -0.4]];
  assert.deepEqual(pairPositions(lat, lon, 1), [
    [1, 51.5, -0.1],
    [2, 51.6, -0.2],
    [3, 51.7, -0.2],
    [10, 51.8, -0.4],
  ]);
  assert.deepEqual(pairPositions(lat, lon, 0.1), [[1, 51.5, -0.1]]);
  assert.deepEqual(pairPositions([[1, 91]], [[1, 0]]), [], "no latitude beyond the poles");
  assert.deepEqual(pairPositions([[1, 0]], [[1, -181]]), [], "no longitude beyond ±180");
  assert.deepEqual(pairPositions([[1, 0]], []), []);
});

test("Web Mercator: corners, the equator and back", () => {
  assert.deepEqual(project(0, -180), [0, 0.5]);
  assert.deepEqual(project(0, 0), [0.5, 0.5]);
  close(project(85.05112878, 180)[1], 0, 1e-9);
  const [lat, lon] = unproject(...project(51.50744, -0.12776));
  close(lat, 51.50744, 1e-9, "lat");
  close(lon, -0.12776, 1e-9, "lon");
});

test("bearings, distances and the compass", () => {
  close(bearing([51.5, 0], [51.6, 0]), 0, 1e-9, "north");
  close(bearing([0, 0], [0, 1]), 90, 1e-9, "east");
  close(bearing([51.5, 0], [51.4, 0]), 180, 1e-9, "south");
  close(bearing([0, 0], [0, -1]), 270, 1e-9, "west");
  close(metresBetween([51.5, 0], [51.501, 0]), 111.2, 0.1, "a thousandth of a degree north");
  assert.deepEqual([0, 44, 46, 225, 359, -90].map(compass), ["N", "NE", "NE", "SW", "N", "W"]);
});

test("the direction of travel skips GPS jitter at a standstill", () => {
  const moving = [[0, 51.5, 0], [1, 51.5, 0.001], [2, 51.5000001, 0.0010001]];
  close(travelBearing(moving), 90, 0.5, "east, from the last real move");
  assert.equal(travelBearing([[0, 51.5, 0], [1, 51.5000001, 0]]), null);
  assert.equal(travelBearing([]), null);
});

test("positions are written with hemispheres, to about a metre", () => {
  assert.equal(formatPosition(51.507435, -0.127758, "en-US"), "51.50744° N, 0.12776° W");
  assert.equal(formatPosition(-33.8688, 151.2093, "en-US"), "33.86880° S, 151.20930° E");
});

test("the view fits every position with the same scale both ways", () => {
  const positions = [[0, 51.50, -0.13], [1, 51.52, -0.10]];
  const view = fitView(positions, 800, 400, 20);
  for (const [, lat, lon] of positions) {
    const [x, y] = project(lat, lon);
    const px = (x - view.cx) * view.scale + 400;
    const py = (y - view.cy) * view.scale + 200;
    assert.ok(px >= 19.99 && px <= 780.01 && py >= 19.99 && py <= 380.01, `${px},${py} inside`);
  }
});

test("a device standing still is shown over at least the minimum span", () => {
  const view = fitView([[0, 51.5, 0]], 500, 500, 0, 250);
  const [lat] = unproject(view.cx, view.cy);
  close(500 / view.scale * (40_075_016.686 * Math.cos((lat * Math.PI) / 180)), 250, 0.01, "metres across");
});

test("tiles cover the view, wrapped at the antimeridian, none off the world", () => {
  const view = { cx: 0.0001, cy: 0.5, scale: 256 * 2 ** 4 };
  const tiles = tilesFor(view, 512, 512);
  assert.ok(tiles.every((t) => t.z === 4 && t.size === 256));
  assert.ok(tiles.some((t) => t.x === 15), "the tile west of the antimeridian");
  assert.ok(tiles.every((t) => t.x >= 0 && t.x < 16 && t.y >= 0 && t.y < 16));
  const top = tilesFor({ cx: 0.5, cy: 0, scale: 256 }, 256, 256);
  assert.deepEqual(top.map((t) => [t.z, t.x, t.y]), [[0, 0, 0]], "nothing above the world's top");
  assert.equal(tileUrl("https://t.example/{z}/{x}/{y}.png?k=1", { z: 3, x: 5, y: 2 }), "https://t.example/3/5/2.png?k=1");
});

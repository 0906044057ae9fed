// Positions for the track view: which of a device's metrics are its latitude and longitude, their
// points paired by time, the Web Mercator projection map tiles use, bearings and readable
// coordinates. No DOM here: tests/unit/js/geo.test.mjs runs it under Node.

const LATITUDE = new Set(["lat", "latitude"]);
const LONGITUDE = new Set(["lon", "lng", "long", "longitude"]);
const HEADING = new Set(["heading", "course", "bearing"]);
const SPEED = new Set(["speed"]);
/** Metres along the equator per world unit (the projected world is 1 × 1). */
const EQUATOR_M = 40_075_016.686;
const MAX_LAT = 85.05112878; // where Web Mercator's square world ends

/** "gps.lat" → ["gps.", "lat"]: the last run of letters after a separator, and what precedes it. */
function split(name) {
  const match = /^(.*[^A-Za-z])?([A-Za-z]+)$/.exec(name);
  return match ? [(match[1] ?? "").toLowerCase(), match[2].toLowerCase()] : [name.toLowerCase(), ""];
}

/**
 * The metrics that make a device's position: {lat, lon, heading, speed} (heading and speed may be
 * null), or null when it reports none. A pair is two names alike but for their last word:
 * latitude/longitude, lat/lon, gps.lat/gps.lon, GPS_latitude/GPS_longitude; exact names first.
 */
export function positionMetrics(names) {
  const groups = new Map(); // prefix -> {lat, lon, heading, speed}
  for (const name of names) {
    const [prefix, word] = split(name);
    const group = groups.get(prefix) ?? {};
    if (LATITUDE.has(word)) group.lat ??= name;
    else if (LONGITUDE.has(word)) group.lon ??= name;
    else if (HEADING.has(word)) group.heading ??= name;
    else if (SPEED.has(word)) group.speed ??= name;
    else continue;
    groups.set(prefix, group);
  }
  const prefixes = [...groups.keys()].sort((a, b) => a.length - b.length || (a < b ? -1 : 1));
  const found = prefixes.map((p) => groups.get(p)).find((g) => g.lat && g.lon);
  if (!found) return null;
  const loose = groups.get("") ?? {};
  return { lat: found.lat, lon: found.lon, heading: found.heading ?? loose.heading ?? null, speed: found.speed ?? loose.speed ?? null };
}

/**
 * [t, lat, lon] for every latitude point with a longitude point at most `tolerance` seconds
 * away (the nearest), both lists [t, value] sorted by t; impossible coordinates are left out.
 */
export function pairPositions(latPoints, lonPoints, tolerance = 1) {
  const out = [];
  let j = 0;
  for (const [t, lat] of latPoints) {
    while (j + 1 < lonPoints.length && Math.abs(lonPoints[j + 1][0] - t) <= Math.abs(lonPoints[j][0] - t)) j++;
    const lon = lonPoints[j];
    if (!lon || Math.abs(lon[0] - t) > tolerance) continue;
    if (Number.isFinite(lat) && Number.isFinite(lon[1]) && Math.abs(lat) <= 90 && Math.abs(lon[1]) <= 180) {
      out.push([t, lat, lon[1]]);
    }
  }
  return out;
}

/** Web Mercator: [x, y] in a 1 × 1 world, x east from 180° W, y south from the top. */
export function project(lat, lon) {
  const phi = (Math.max(-MAX_LAT, Math.min(MAX_LAT, lat)) * Math.PI) / 180;
  return [(lon + 180) / 360, (1 - Math.log(Math.tan(phi) + 1 / Math.cos(phi)) / Math.PI) / 2];
}

/** The inverse of project(): [lat, lon]. */
export function unproject(x, y) {
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI;
  return [lat, x * 360 - 180];
}

/** Metres per world unit at latitude `lat` (the projection stretches away from the equator). */
export function metresPerUnit(lat) {
  return EQUATOR_M * Math.cos((lat * Math.PI) / 180);
}

/** Initial compass bearing from a to b ([lat, lon]), 0 ≤ b < 360 (0 north, 90 east). */
export function bearing(a, b) {
  const rad = Math.PI / 180;
  const dLon = (b[1] - a[1]) * rad;
  const x = Math.sin(dLon) * Math.cos(b[0] * rad);
  const y = Math.cos(a[0] * rad) * Math.sin(b[0] * rad) - Math.sin(a[0] * rad) * Math.cos(b[0] * rad) * Math.cos(dLon);
  return ((Math.atan2(x, y) / rad) % 360 + 360) % 360;
}

/** Distance in metres between a and b ([lat, lon]); equirectangular, fine over a few km. */
export function metresBetween(a, b) {
  const rad = Math.PI / 180;
  const x = (b[1] - a[1]) * rad * Math.cos(((a[0] + b[0]) / 2) * rad);
  return 6_371_000 * Math.hypot(x, (b[0] - a[0]) * rad);
}

/**
 * The direction of travel at the end of `positions` ([t, lat, lon], oldest first): the bearing
 * from the newest position at least `minMetres` away to the last one; null when it has not moved.
 */
export function travelBearing(positions, minMetres = 3) {
  const last = positions[positions.length - 1];
  if (!last) return null;
  for (let i = positions.length - 2; i >= 0 && i >= positions.length - 200; i--) {
    const p = positions[i];
    if (metresBetween([p[1], p[2]], [last[1], last[2]]) >= minMetres) return bearing([p[1], p[2]], [last[1], last[2]]);
  }
  return null;
}

const COMPASS = ["N", "NE", "E", "SE", "S", "SW", "W", "NW"];

/** "SW" for 225°. */
export function compass(degrees) {
  return COMPASS[Math.round((((degrees % 360) + 360) % 360) / 45) % 8];
}

const coordinate = new Map();

/** "51.50744° N, 0.12776° W": five decimals, about a metre. */
export function formatPosition(lat, lon, locale = undefined) {
  let fmt = coordinate.get(locale);
  if (!fmt) {
    fmt = new Intl.NumberFormat(locale, { minimumFractionDigits: 5, maximumFractionDigits: 5 });
    coordinate.set(locale, fmt);
  }
  return `${fmt.format(Math.abs(lat))}° ${lat < 0 ? "S" : "N"}, ${fmt.format(Math.abs(lon))}° ${lon < 0 ? "W" : "E"}`;
}

/**
 * The view that shows every position with the same scale both ways: {cx, cy} its centre in
 * world units and `scale` pixels per world unit, leaving `pad` pixels at the edges and showing at
 * least `minMetres` across (a parked vehicle is not blown up to its GPS noise).
 */
export function fitView(positions, width, height, pad = 24, minMetres = 250) {
  let x0 = Infinity;
  let x1 = -Infinity;
  let y0 = Infinity;
  let y1 = -Infinity;
  for (const [, lat, lon] of positions) {
    const [x, y] = project(lat, lon);
    x0 = Math.min(x0, x);
    x1 = Math.max(x1, x);
    y0 = Math.min(y0, y);
    y1 = Math.max(y1, y);
  }
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const minSpan = minMetres / metresPerUnit(unproject(cx, cy)[0]);
  const spanX = Math.max(x1 - x0, minSpan);
  const spanY = Math.max(y1 - y0, minSpan);
  const scale = Math.min(Math.max(1, width - 2 * pad) / spanX, Math.max(1, height - 2 * pad) / spanY);
  return { cx, cy, scale };
}

/**
 * The map tiles (256 px at zoom z) covering a width × height view: {z, x, y, left, top, size}
 * each, `left`/`top` in pixels from the view's corner, `size` the pixels one tile takes at this
 * scale. x wraps around the antimeridian; rows off the world are left out.
 */
export function tilesFor(view, width, height, maxZoom = 19) {
  const z = Math.max(0, Math.min(maxZoom, Math.round(Math.log2(view.scale / 256))));
  const n = 2 ** z;
  const size = view.scale / n;
  const left = view.cx - width / 2 / view.scale;
  const top = view.cy - height / 2 / view.scale;
  const tiles = [];
  for (let ty = Math.floor(top * n); ty < Math.ceil((top + height / view.scale) * n); ty++) {
    if (ty < 0 || ty >= n) continue;
    for (let tx = Math.floor(left * n); tx < Math.ceil((left + width / view.scale) * n); tx++) {
      tiles.push({ z, x: ((tx % n) + n) % n, y: ty, left: (tx / n - left) * view.scale, top: (ty / n - top) * view.scale, size });
    }
  }
  return tiles;
}

/** A tile's URL from an operator's template ("https://t.example/{z}/{x}/{y}.png"). */
export function tileUrl(template, tile) {
  return template.replace("{z}", String(tile.z)).replace("{x}", String(tile.x)).replace("{y}", String(tile.y));
}

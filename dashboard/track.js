// The track of a device that reports its position: the path over the selected window drawn from
// the device view's latitude and longitude series (history, then live points) on a plain
// coordinate plot (a latitude/longitude grid and a scale bar, same scale both ways: Web Mercator,
// as maps are), with the current position and heading. Nothing is loaded from elsewhere unless
// the operator configured map tiles (dashboard.map_tiles): then they are laid under the plot.

import { keepSized, themeColors } from "./canvas.js";
import { formatAge, h, setText } from "./dom.js";
import {
  compass,
  fitView,
  formatPosition,
  metresBetween,
  metresPerUnit,
  pairPositions,
  project,
  tilesFor,
  tileUrl,
  travelBearing,
  unproject,
} from "./geo.js";
import { axisTicks } from "./ticks.js";

const PAD = 36; // room for the heading arrow at the edge
const GAP_S = 300; // a longer silence breaks the path...
const JUMP_M_PER_S = 400; // ...and so does a jump faster than an airliner (a device moved, a GPS glitch)

export class TrackView {
  /** `metrics`: {lat, lon, heading, speed} metric names (geo.positionMetrics). */
  constructor(metrics, name) {
    this.metrics = metrics;
    this.name = name;
    this.map = null; // {tiles, attribution} from /dashboard.json
    this.tiles = new Map(); // tile URL -> <img>
    this.width = 0;
    this.height = 0;
    this.positions = [];
    this.state = null; // what was drawn, for tests: {points, marker: [x, y], heading}
    this.position = h("span", { class: "track-position", dataset: { testid: "track-position" } });
    this.motion = h("span", { class: "track-motion", dataset: { testid: "track-motion" } });
    this.canvas = h("canvas", { role: "img", "aria-label": `Track of ${name}` });
    this.tileLayer = h("div", { class: "track-tiles", "aria-hidden": "true", hidden: true });
    this.attribution = h("p", { class: "track-attribution", dataset: { testid: "track-attribution" }, hidden: true });
    this.el = h(
      "figure",
      { class: "track-card", dataset: { testid: "track" } },
      h("figcaption", {}, h("span", { class: "metric-name", text: "Track" }), this.position, this.motion),
      h("div", { class: "track-map" }, this.tileLayer, this.canvas),
      this.attribution,
    );
    this.ctx = this.canvas.getContext("2d");
    keepSized(this.canvas, this.ctx, ({ width, height }) => {
      this.width = width;
      this.height = height;
      this.draw();
    });
  }

  /** Map tiles to lay under the plot ({tiles, attribution}), or null for none. */
  setMap(map) {
    this.map = map && typeof map.tiles === "string" && map.tiles ? map : null;
    this.tileLayer.hidden = !this.map;
    this.attribution.hidden = !this.map?.attribution;
    setText(this.attribution, this.map?.attribution || "");
    this.el.dataset.tiles = String(Boolean(this.map));
    if (!this.map) this.dropTiles(new Set());
    this.draw();
  }

  /**
   * New data: the latitude and longitude series' points ([t, value], sorted), the window, now,
   * the latest [t, value] of the heading and speed metrics (or undefined) and the speed's unit.
   */
  update({ lat, lon, windowS, now, heading, speed, speedUnit }) {
    const all = pairPositions(lat, lon);
    this.positions = all.filter((p) => p[0] >= now - windowS);
    this.latest = all[all.length - 1] ?? null;
    this.windowS = windowS;
    this.now = now;
    const reported = typeof heading?.[1] === "number" && Number.isFinite(heading[1]) ? heading[1] : null;
    this.heading = reported ?? travelBearing(this.positions.length ? this.positions : all);
    this.headingSource = reported === null ? "travel" : "reported";
    this.describe(speed, speedUnit);
    this.draw();
  }

  describe(speed, speedUnit) {
    const latest = this.latest;
    if (!latest) {
      setText(this.position, "No position yet");
      setText(this.motion, "");
      this.canvas.setAttribute("aria-label", `Track of ${this.name}: no position yet`);
      return;
    }
    const where = formatPosition(latest[1], latest[2]);
    const old = this.positions.length === 0;
    setText(this.position, old ? `Last known ${where}, ${formatAge(this.now - latest[0])}` : where);
    const parts = [];
    if (this.heading !== null) parts.push(`heading ${Math.round(this.heading) % 360}° ${compass(this.heading)}`);
    if (typeof speed?.[1] === "number") parts.push(`${speed[1].toLocaleString(undefined, { maximumFractionDigits: 1 })}${speedUnit ? ` ${speedUnit}` : ""}`);
    setText(this.motion, parts.join(" · "));
    this.canvas.setAttribute(
      "aria-label",
      `Track of ${this.name}: ${this.positions.length} positions in this window; ` +
        `${old ? "last known" : "now"} at ${where}${parts.length ? `, ${parts.join(", ")}` : ""}`,
    );
  }

  draw() {
    const { ctx, width, height } = this;
    if (!width) return;
    const c = themeColors(this.canvas);
    ctx.clearRect(0, 0, width, height);
    if (!this.map) {
      ctx.fillStyle = c.surface2;
      ctx.fillRect(0, 0, width, height);
    }
    const shown = this.positions.length ? this.positions : this.latest ? [this.latest] : [];
    ctx.font = c.font;
    if (!shown.length) {
      this.state = { points: 0, marker: null, heading: null };
      this.el.dataset.points = "0";
      ctx.fillStyle = c.muted;
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      ctx.fillText("No position yet", width / 2, height / 2);
      return;
    }
    const view = fitView(shown, width, height, PAD);
    const toPx = (lat, lon) => {
      const [x, y] = project(lat, lon);
      return [(x - view.cx) * view.scale + width / 2, (y - view.cy) * view.scale + height / 2];
    };
    if (this.map) this.layTiles(view);
    this.grid(view, c);
    this.path(shown, toPx, c);
    const marker = toPx(this.latest[1], this.latest[2]);
    this.marker(marker, c);
    this.scaleBar(view, c);
    this.state = { points: this.positions.length, marker, heading: this.heading };
    this.el.dataset.points = String(this.positions.length);
    this.el.dataset.heading = this.heading === null ? "" : String(Math.round(this.heading) % 360);
  }

  /** Latitude and longitude lines with their values, at round steps for the visible span. */
  grid(view, c) {
    const { ctx, width, height } = this;
    const [north, west] = unproject(view.cx - width / 2 / view.scale, view.cy - height / 2 / view.scale);
    const [south, east] = unproject(view.cx + width / 2 / view.scale, view.cy + height / 2 / view.scale);
    const lons = axisTicks(west, east, Math.max(2, Math.floor(width / 130)));
    const lats = axisTicks(south, north, Math.max(2, Math.floor(height / 70)));
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.beginPath();
    const xs = [];
    const ys = [];
    lons.ticks.forEach((lon, i) => {
      if (lon <= west || lon >= east) return;
      const x = Math.round((project(0, lon)[0] - view.cx) * view.scale + width / 2) + 0.5;
      ctx.moveTo(x, 0);
      ctx.lineTo(x, height);
      xs.push([x, `${lons.labels[i]}°`]);
    });
    lats.ticks.forEach((lat, i) => {
      if (lat <= south || lat >= north) return;
      const y = Math.round((project(lat, 0)[1] - view.cy) * view.scale + height / 2) + 0.5;
      ctx.moveTo(0, y);
      ctx.lineTo(width, y);
      ys.push([y, `${lats.labels[i]}°`]);
    });
    ctx.stroke();
    ctx.textBaseline = "bottom";
    ctx.textAlign = "center";
    for (const [x, label] of xs) {
      const half = ctx.measureText(label).width / 2;
      if (x - half >= 2 && x + half <= width - 2) this.label(label, x, height - 4, c); // whole or not at all
    }
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    for (const [y, label] of ys) this.label(label, 4, y - 8, c);
  }

  /** Text with a halo of the surface colour, legible over the path and over map tiles. */
  label(text, x, y, c) {
    const { ctx } = this;
    ctx.lineWidth = 3;
    ctx.strokeStyle = c.surface;
    ctx.strokeText(text, x, y);
    ctx.fillStyle = c.muted;
    ctx.fillText(text, x, y);
  }

  /** The path, oldest part faint, broken where the device was silent for long or jumped. */
  path(shown, toPx, c) {
    const { ctx } = this;
    const n = shown.length;
    ctx.lineJoin = "round";
    ctx.lineCap = "round";
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = c.accent;
    const chunk = Math.max(1, Math.ceil(n / 8));
    for (let start = 0; start < n - 1; start += chunk) {
      ctx.globalAlpha = 0.3 + 0.7 * ((start + chunk) / n);
      ctx.beginPath();
      for (let i = start; i <= Math.min(n - 1, start + chunk); i++) {
        const [x, y] = toPx(shown[i][1], shown[i][2]);
        if (i === start || broken(shown[i - 1], shown[i])) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
      ctx.stroke();
    }
    ctx.globalAlpha = 1;
    if (n > 1) {
      // Where the window's path starts.
      const [x, y] = toPx(shown[0][1], shown[0][2]);
      ctx.beginPath();
      ctx.arc(x, y, 3.5, 0, Math.PI * 2);
      ctx.fillStyle = c.surface;
      ctx.fill();
      ctx.lineWidth = 2;
      ctx.globalAlpha = 0.6;
      ctx.stroke();
      ctx.globalAlpha = 1;
    }
  }

  /** The current position, with an arrow pointing where the device is heading. */
  marker([x, y], c) {
    const { ctx } = this;
    if (this.heading !== null) {
      const a = (this.heading * Math.PI) / 180;
      ctx.save();
      ctx.translate(x, y);
      ctx.rotate(a);
      ctx.beginPath();
      ctx.moveTo(0, -19);
      ctx.lineTo(7, -6);
      ctx.lineTo(-7, -6);
      ctx.closePath();
      ctx.fillStyle = c.accent;
      ctx.strokeStyle = c.surface;
      ctx.lineWidth = 2;
      ctx.stroke();
      ctx.fill();
      ctx.restore();
    }
    ctx.beginPath();
    ctx.arc(x, y, 7, 0, Math.PI * 2);
    ctx.fillStyle = c.accent;
    ctx.fill();
    ctx.lineWidth = 2.5;
    ctx.strokeStyle = c.surface;
    ctx.stroke();
  }

  /** A round distance about a fifth of the width, bottom right. */
  scaleBar(view, c) {
    const { ctx, width, height } = this;
    const perPx = metresPerUnit(unproject(view.cx, view.cy)[0]) / view.scale;
    const target = (width / 5) * perPx;
    const mag = 10 ** Math.floor(Math.log10(target));
    const metres = [5, 2, 1].map((m) => m * mag).find((m) => m <= target) ?? mag;
    const px = metres / perPx;
    const x1 = width - 12;
    const y = height - 22;
    ctx.strokeStyle = c.muted;
    ctx.lineWidth = 2;
    ctx.beginPath();
    ctx.moveTo(x1 - px, y - 4);
    ctx.lineTo(x1 - px, y);
    ctx.lineTo(x1, y);
    ctx.lineTo(x1, y - 4);
    ctx.stroke();
    ctx.textAlign = "center";
    ctx.textBaseline = "bottom";
    ctx.lineWidth = 1;
    this.label(metres >= 1000 ? `${metres / 1000} km` : `${metres} m`, x1 - px / 2, y - 3, c);
    this.el.dataset.scale = String(metres);
  }

  /** Lay the operator's map tiles under the plot, reusing the images already loaded. */
  layTiles(view) {
    const keep = new Set();
    for (const tile of tilesFor(view, this.width, this.height)) {
      const url = tileUrl(this.map.tiles, tile);
      keep.add(url);
      let img = this.tiles.get(url);
      if (!img) {
        img = h("img", { alt: "", draggable: "false", decoding: "async", referrerpolicy: "no-referrer", dataset: { testid: "map-tile" } });
        img.src = url;
        this.tiles.set(url, img);
        this.tileLayer.append(img);
      }
      const size = Math.ceil(tile.size) + 1; // overlap a pixel: no seams between tiles
      img.style.width = `${size}px`;
      img.style.height = `${size}px`;
      img.style.transform = `translate(${Math.floor(tile.left)}px, ${Math.floor(tile.top)}px)`;
    }
    this.dropTiles(keep);
  }

  dropTiles(keep) {
    for (const [url, img] of this.tiles) {
      if (keep.has(url)) continue;
      img.remove();
      this.tiles.delete(url);
    }
  }
}

/** No line between two positions ([t, lat, lon]) the device cannot have driven between. */
function broken(a, b) {
  const dt = b[0] - a[0];
  return dt > GAP_S || metresBetween([a[1], a[2]], [b[1], b[2]]) > JUMP_M_PER_S * Math.max(dt, 1);
}

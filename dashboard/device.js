// One device: header, live charts of its numeric metrics (history first, then live points),
// its track when it reports a position (track.js), its boolean and string metrics as state
// tiles, and its command forms.
//
// The gateway keeps at most `history_length` points per metric (hello.limits): when a history
// reply is cut short by that cap, the part of the window before the oldest kept point is marked
// on the chart and the window selector says which windows reach further back than what is kept.

import { LineChart } from "./chart.js";
import { commandPanel } from "./commands.js";
import { savedToken } from "./connection.js";
import { formatAge, formatClock, formatDuration, formatValue, h, setSeen, setStatus, setText, statusBadge } from "./dom.js";
import { gatewayNow, limits } from "./gateway.js";
import { positionMetrics } from "./geo.js";
import { TrackView } from "./track.js";

const WINDOWS = [
  [60, "1m"],
  [300, "5m"],
  [900, "15m"],
  [3600, "1h"],
  [86400, "24h"],
  [7 * 86400, "7d"],
  [30 * 86400, "30d"],
];
// Windows up to this come from the gateway's in-memory window (since/limit); longer ones from
// its history store (from/to/max_points), bucketed when the range holds more than the chart can
// draw.
const RECENT_S = 900;
const WINDOW_KEY = "iotgw.window";
const KEEP_S = 30 * 86400 + 120; // the largest window plus a margin
const KEEP_POINTS = 50_000;
const MAX_POINTS = 1000;

export class DeviceView {
  constructor(root, store, conn) {
    this.root = root;
    this.store = store;
    this.conn = conn;
    this.id = null;
    this.windowS = Number(sessionStorage.getItem(WINDOW_KEY)) || 300;
    if (!WINDOWS.some(([s]) => s === this.windowS)) this.windowS = 300;
    this.series = new Map(); // metric -> {points, chart, latest, range, card}
    this.states = new Map(); // metric -> {value, seen, tile}
    this.historyAbort = null; // aborts the history requests of the window shown
    this.track = null; // TrackView, for a device that reports its position
    this.map = null; // map tiles for the track, from /dashboard.json
    store.addEventListener("flush", (ev) => this.onFlush(ev.detail));
    // A fresh snapshot (a reconnect that could not resume) means readings were missed: fetch the
    // history again. A resumed stream replays what was missed, so the charts need nothing.
    store.addEventListener("snapshot", () => this.id && this.nameEl && this.fetchHistory());
  }

  open(id) {
    this.close();
    this.id = id;
    this.render();
    this.fetchHistory();
  }

  /** The operator's map tiles ({tiles, attribution}) or null: laid under tracks. */
  setMap(map) {
    this.map = map;
    this.track?.setMap(map);
  }

  close() {
    this.historyAbort?.abort();
    this.historyAbort = null;
    this.id = null;
    this.series.clear();
    this.states.clear();
    this.track = null;
    this.metaRef = undefined;
    this.nameEl = null;
    this.root.replaceChildren();
  }

  get device() {
    return this.store.devices.get(this.id);
  }

  render() {
    const device = this.device;
    this.series.clear();
    this.states.clear();
    this.track = null;
    const back = h("a", { href: "#/", class: "back", dataset: { testid: "back" } }, "← All devices");
    if (!device) {
      this.metaRef = undefined;
      this.nameEl = null;
      this.root.replaceChildren(
        back,
        h("div", { class: "empty", dataset: { testid: "device-missing" } },
          this.store.loaded ? `No device with id “${this.id}”.` : "Waiting for the gateway…"),
      );
      return;
    }
    this.metaRef = device.meta;
    this.badge = statusBadge(device.status);
    this.seen = h("span", { dataset: { testid: "last-seen" } });
    this.nameEl = h("h2", { id: "device-title", tabindex: "-1", dataset: { testid: "device-name" }, text: device.name || device.id });
    const head = h(
      "header",
      { class: "device-head" },
      back,
      h(
        "div",
        { class: "device-title" },
        this.nameEl,
        this.badge,
      ),
      h(
        "p",
        { class: "device-sub" },
        h("span", { class: "mono", text: device.id }),
        device.type ? h("span", { text: device.type }) : null,
        h("span", {}, "Last seen ", this.seen),
      ),
    );
    this.chartsEl = h("div", { class: "charts" });
    this.statesEl = h("div", { class: "states", dataset: { testid: "states" } });
    const windowGroup = h("div", { class: "segmented", role: "group", "aria-label": "Time window" });
    this.windowGroup = windowGroup;
    for (const [seconds, label] of WINDOWS) {
      windowGroup.append(
        h("button", {
          type: "button",
          "aria-pressed": String(seconds === this.windowS),
          dataset: { testid: `window-${label}`, window: String(seconds) },
          onclick: () => this.setWindow(seconds, windowGroup),
          text: label,
        }),
      );
    }
    this.noMetrics = h("p", { class: "muted", text: "No readings yet." });
    this.historyNote = h("p", { class: "history-note", dataset: { testid: "history-note" }, hidden: true });
    const metricsPanel = h(
      "section",
      { class: "panel", "aria-labelledby": "metrics-title" },
      h("div", { class: "panel-head" }, h("h3", { id: "metrics-title", text: "Live metrics" }), windowGroup),
      this.historyNote,
      this.noMetrics,
      this.chartsEl,
      this.statesEl,
    );
    const commands = h(
      "section",
      { class: "panel", "aria-labelledby": "commands-title" },
      h("div", { class: "panel-head" }, h("h3", { id: "commands-title", text: "Commands" })),
      commandPanel(device, this.conn),
    );
    this.commandsPanel = commands;
    this.root.replaceChildren(head, h("div", { class: "device-grid" }, metricsPanel, commands));
    this.syncMetrics(device);
    this.update(device);
  }

  /** Make sure every numeric metric has a chart and every other metric a state tile. */
  syncMetrics(device) {
    let added = false;
    for (const [metric, [, value]] of device.values) {
      if (typeof value === "number") {
        if (!this.series.has(metric)) {
          this.addChart(metric, device.units.get(metric) || "");
          added = true;
        }
      } else if (!this.states.has(metric)) {
        this.addState(metric, device.units.get(metric) || "");
      }
    }
    this.noMetrics.hidden = device.values.size > 0;
    if (added) this.syncTrack(device);
    return added;
  }

  /** A track above the charts once the device's numeric metrics include a position. */
  syncTrack(device) {
    if (this.track) return;
    const metrics = positionMetrics([...this.series.keys()]);
    if (!metrics) return;
    this.track = new TrackView(metrics, device.name || device.id);
    this.track.setMap(this.map);
    this.chartsEl.before(this.track.el);
  }

  addChart(metric, unit) {
    const latest = h("span", { class: "latest-num" });
    const range = h("span", { class: "range", dataset: { testid: "chart-range" } });
    const canvas = h("canvas", { role: "img", "aria-label": `${metric} over time` });
    const card = h(
      "figure",
      { class: "chart-card", dataset: { testid: "chart", metric } },
      h(
        "figcaption",
        {},
        h("span", { class: "metric-name", text: metric }),
        h("span", { class: "latest", dataset: { testid: "value", metric } }, latest, h("span", { class: "unit", text: unit })),
        range,
        h("button", {
          type: "button",
          class: "export",
          title: `Download ${metric} for this window as CSV`,
          dataset: { testid: "export", metric },
          onclick: () => this.exportCsv(metric),
          text: "CSV",
        }),
      ),
      canvas,
    );
    this.chartsEl.append(card);
    const chart = new LineChart(canvas, { unit, label: metric });
    // keptFrom: the oldest point of a history reply cut short by history_length (else null).
    // band: [t, min, max] per bucket when the window came from the store in buckets.
    const series = { points: [], chart, latest, range, card, canvas, unit, dirty: true, keptFrom: null, band: null };
    this.series.set(metric, series);
    return series;
  }

  addState(metric, unit) {
    const value = h("span", { class: "state-value" });
    const seen = h("span", { class: "state-seen" });
    const tile = h(
      "div",
      { class: "state-tile", dataset: { testid: "state", metric } },
      h("span", { class: "metric-name", text: metric }),
      h("span", { class: "latest", dataset: { testid: "value", metric } }, value, unit ? h("span", { class: "unit", text: unit }) : null),
      seen,
    );
    this.statesEl.append(tile);
    this.states.set(metric, { value, seen, tile });
  }

  setWindow(seconds, group) {
    this.windowS = seconds;
    sessionStorage.setItem(WINDOW_KEY, String(seconds));
    for (const b of group.children) b.setAttribute("aria-pressed", String(Number(b.dataset.window) === seconds));
    this.fetchHistory();
    this.drawCharts(true);
  }

  fetchHistory() {
    const device = this.device;
    if (!device) return;
    // Answers for a window no longer shown are not wanted: those still queued are never sent
    // (the client paces history requests below the gateway's limits, see client.js).
    this.historyAbort?.abort();
    const abort = (this.historyAbort = new AbortController());
    const now = gatewayNow();
    const since = now - this.windowS;
    const limit = limits.historyLength;
    const ranged = this.windowS > RECENT_S;
    for (const [metric, series] of this.series) {
      series.card.dataset.loading = "true";
      const request = ranged
        ? { device: device.id, metric, from: since, to: now, max_points: MAX_POINTS }
        : { device: device.id, metric, since, limit };
      this.conn.history(request, { signal: abort.signal }).then(
        (frame) => {
          delete series.card.dataset.loading;
          if (Array.isArray(frame.buckets)) {
            this.mergeBuckets(series, frame.buckets, frame.bucket_s);
            return;
          }
          if (!Array.isArray(frame.points)) return;
          const cut = !ranged && frame.points.length >= limit && frame.points[0]?.[0] > since;
          series.keptFrom = cut ? frame.points[0][0] : null;
          series.band = null;
          delete series.card.dataset.bucketed;
          this.mergeHistory(series, frame.points);
        },
        () => {
          if (!abort.signal.aborted) delete series.card.dataset.loading; // refused: keep what we have
        },
      );
    }
  }

  /** A window the store answered in buckets: their averages as the line, min-max as the band. */
  mergeBuckets(series, buckets, bucketS) {
    const valid = buckets.filter((b) => Array.isArray(b) && b.length === 5 && b.every((x) => typeof x === "number"));
    const half = bucketS / 2;
    series.keptFrom = null;
    series.band = valid.map(([t, lo, hi]) => [t + half, lo, hi]);
    series.card.dataset.bucketed = "true";
    this.mergeHistory(series, valid.map(([t, , , avg]) => [t + half, avg]));
  }

  /** Download every raw point of the metric in the current window as CSV (REST export). */
  async exportCsv(metric) {
    const device = this.device;
    if (!device) return;
    const now = gatewayNow();
    const params = new URLSearchParams({ metric, format: "csv", from: String(now - this.windowS), to: String(now) });
    const token = savedToken();
    const headers = token ? { Authorization: `Bearer ${token}` } : {};
    const response = await fetch(`api/devices/${encodeURIComponent(device.id)}/history?${params}`, { headers });
    if (!response.ok) return;
    const url = URL.createObjectURL(await response.blob());
    const link = h("a", { href: url, download: `${device.id}-${metric}.csv`, hidden: true });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10_000);
  }

  mergeHistory(series, history) {
    const points = history.filter((p) => Array.isArray(p) && typeof p[0] === "number" && typeof p[1] === "number");
    const lastHistoric = points.length ? points[points.length - 1][0] : -Infinity;
    const firstHistoric = points.length ? points[0][0] : Infinity;
    // Keep what we hold from before the history starts (a longer window fetched earlier) and the
    // live points that arrived after the gateway answered.
    const before = series.points.filter((p) => p[0] < firstHistoric);
    const after = series.points.filter((p) => p[0] > lastHistoric);
    series.points = before.concat(points, after);
    series.dirty = true;
    this.drawCharts();
  }

  onFlush({ dirty, structural, batches }) {
    if (!this.id) return;
    const device = this.device;
    if (structural && (!device || !this.nameEl || device.meta !== this.metaRef)) {
      // Appeared, disappeared or announced new meta (units, commands): rebuild the view.
      if (!device || !this.nameEl) {
        this.render();
        if (device) this.fetchHistory();
        return;
      }
      this.metaRef = device.meta;
      this.commandsPanel.lastElementChild.replaceWith(commandPanel(device, this.conn));
    }
    if (!device || !dirty.has(this.id)) return;
    if (this.syncMetrics(device)) this.fetchHistory();
    for (const data of batches) {
      for (const reading of data) {
        if (reading[0] !== this.id || typeof reading[3] !== "number") continue;
        const series = this.series.get(reading[1]);
        if (!series) continue;
        const points = series.points;
        if (points.length && reading[2] < points[points.length - 1][0]) {
          if (reading[2] <= points[0][0]) continue; // older than anything held: history covers it
          points.push([reading[2], reading[3]]);
          points.sort((a, b) => a[0] - b[0]);
        } else {
          points.push([reading[2], reading[3]]);
        }
        series.dirty = true;
      }
    }
    this.update(device);
    this.drawCharts();
  }

  update(device) {
    setStatus(this.badge, device.status);
    setText(this.nameEl, device.name || device.id);
    const now = gatewayNow();
    setSeen(this.seen, device, now);
    for (const [metric, series] of this.series) {
      const pair = device.values.get(metric);
      setText(series.latest, pair ? formatValue(pair[1]) : "–");
    }
    for (const [metric, state] of this.states) {
      const pair = device.values.get(metric);
      const value = pair ? formatValue(pair[1]) : "–";
      setText(state.value, value);
      state.tile.dataset.value = typeof pair?.[1] === "boolean" ? String(pair[1]) : "";
      setText(state.seen, pair ? `updated ${formatAge(now - pair[0])}` : "");
    }
  }

  drawCharts(all = false) {
    const now = gatewayNow();
    const moved = this.track && [this.track.metrics.lat, this.track.metrics.lon].some((m) => this.series.get(m)?.dirty);
    for (const [metric, series] of this.series) {
      if (!all && !series.dirty) continue;
      series.dirty = false;
      trim(series.points, now);
      series.chart.setData(series.points, this.windowS, this.heldFrom(series), series.band);
      series.chart.draw(now);
      const inWindow = series.points.filter((p) => p[0] >= now - this.windowS);
      if (inWindow.length) {
        let lo = Infinity;
        let hi = -Infinity;
        for (const [, v] of inWindow) {
          lo = Math.min(lo, v);
          hi = Math.max(hi, v);
        }
        const unit = series.unit ? ` ${series.unit}` : "";
        setText(series.range, `min ${formatValue(lo)} · max ${formatValue(hi)}${unit}`);
        series.canvas.setAttribute(
          "aria-label",
          `${metric}: latest ${formatValue(inWindow[inWindow.length - 1][1])}${unit}, range ${formatValue(lo)} to ${formatValue(hi)}`,
        );
      } else {
        setText(series.range, "");
      }
    }
    if (this.track && (all || moved)) this.drawTrack(now);
    this.showCoverage(now);
  }

  drawTrack(now) {
    const { lat, lon, heading, speed } = this.track.metrics;
    const device = this.device;
    this.track.update({
      lat: this.series.get(lat)?.points ?? [],
      lon: this.series.get(lon)?.points ?? [],
      windowS: this.windowS,
      now,
      heading: heading ? device?.values.get(heading) : undefined,
      speed: speed ? device?.values.get(speed) : undefined,
      speedUnit: speed ? device?.units.get(speed) || "" : "",
    });
  }

  /** Where this series' points start when the gateway's cap cut its history short, else null. */
  heldFrom(series) {
    if (series.keptFrom === null) return null;
    // Live points gathered since may reach back further than what the gateway still keeps.
    return series.points.length ? Math.min(series.keptFrom, series.points[0][0]) : series.keptFrom;
  }

  /** Say which windows reach back further than the history the gateway keeps for this device. */
  showCoverage(now) {
    let from = -Infinity;
    for (const series of this.series.values()) {
      const held = this.heldFrom(series);
      if (held !== null) from = Math.max(from, held);
    }
    const span = Number.isFinite(from) ? now - from : Infinity;
    for (const button of this.windowGroup.children) {
      const beyond = Number(button.dataset.window) > span * 1.02 + 5;
      if ((button.dataset.beyond === "true") !== beyond) {
        button.dataset.beyond = String(beyond);
        button.title = beyond ? "Longer than the history the gateway keeps for this device" : "";
      }
    }
    const short = this.windowS > span * 1.02 + 5;
    this.historyNote.hidden = !short;
    if (short) {
      const label = WINDOWS.find(([s]) => s === this.windowS)?.[1] ?? formatDuration(this.windowS);
      setText(
        this.historyNote,
        `History starts at ${formatClock(from)}: the gateway keeps the last ` +
          `${limits.historyLength.toLocaleString()} points per metric, about ${formatDuration(span)} ` +
          `of this device's data, less than the ${label} window.`,
      );
    }
  }

  /** Once a second: ages tick and the window slides even when the device is quiet. */
  tick() {
    const device = this.device;
    if (!device || !this.nameEl) return;
    this.update(device);
    this.drawCharts(true);
  }
}

function trim(points, now) {
  let drop = 0;
  while (drop < points.length && points[drop][0] < now - KEEP_S) drop++;
  drop = Math.max(drop, points.length - KEEP_POINTS);
  if (drop > 0) points.splice(0, drop);
}

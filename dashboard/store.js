// Fleet state in the page: devices from snapshots and the device events of `readings` frames,
// latest values from their readings (docs/protocol.md, "The stream"). Frames are buffered as they
// arrive and applied in order at most once per animation frame, each frame's events before its
// data; each flush tells listeners which devices changed, so views touch only what they show.
//
// Event "flush" (detail: {dirty: Set<id>, structural: bool, batches: Array<readings data>}):
// `structural` means devices were added/removed or a status/meta changed (lists re-filter).
// Event "snapshot": the whole fleet was just replaced (first load, or a reconnect that could not
// resume its stream); views holding their own copies (chart history) fetch them again.

import { gatewayNow } from "./gateway.js";

// A hidden tab gets no animation frames; past this many buffered readings we apply anyway so a
// background tab's buffer cannot grow without bound.
const MAX_BUFFERED = 50_000;
const FALLBACK_FLUSH_MS = 500;

export class Store extends EventTarget {
  constructor() {
    super();
    /** @type {Map<string, Device>} */
    this.devices = new Map();
    this.pending = []; // buffered readings frames: {events, data}
    this.buffered = 0;
    this.dirty = new Set();
    this.structural = false;
    this.frame = 0;
    this.fallback = 0;
    this.loaded = false; // a first snapshot has arrived
    this.stats = { readings: 0, flushes: 0, gaps: 0, duplicates: 0, snapshots: 0, recovered: 0, refreshed: 0 };
  }

  /** Replace the fleet with a snapshot (one subscription covers every device: "*"). */
  loadSnapshot(devices) {
    // Frames still buffered came before the snapshot: apply them first so they cannot overwrite it.
    if (this.pending.length) this.flush();
    this.stats.snapshots++;
    const seen = new Set();
    for (const raw of devices) {
      if (!raw || typeof raw.id !== "string") continue;
      seen.add(raw.id);
      const device = this.upsert(raw);
      if (raw.values && typeof raw.values === "object") {
        device.values = new Map();
        for (const [metric, pair] of Object.entries(raw.values)) {
          if (Array.isArray(pair) && pair.length === 2) device.values.set(metric, pair);
        }
      }
    }
    for (const id of this.devices.keys()) if (!seen.has(id)) this.devices.delete(id);
    this.loaded = true;
    this.structural = true;
    this.schedule();
    this.dispatchEvent(new CustomEvent("snapshot"));
  }

  /** A `readings` frame's events and data (a subscription's "batch"), buffered now, applied on
   * the next animation frame. */
  pushFrame(frame) {
    const events = Array.isArray(frame.events) ? frame.events : [];
    const data = Array.isArray(frame.data) ? frame.data : [];
    if (events.length === 0 && data.length === 0) return;
    this.pending.push({ events, data });
    this.buffered += data.length + events.length;
    if (this.buffered > MAX_BUFFERED) this.flush();
    else this.schedule();
  }

  /** One device event: `device` is the device's whole state (without values). */
  applyEvent(event) {
    const raw = event && event.device;
    if (!raw || typeof raw.id !== "string") return;
    if (event.event === "removed") this.devices.delete(raw.id);
    else this.upsert(raw);
    this.structural = true;
    this.dirty.add(raw.id);
  }

  /** Mark the whole list for re-filtering (used by the view when only time moved on). */
  touch() {
    this.structural = true;
    this.schedule();
  }

  upsert(raw) {
    let device = this.devices.get(raw.id);
    if (!device) {
      device = {
        id: raw.id,
        name: "",
        type: "",
        status: "unknown",
        lastSeen: NaN,
        meta: null,
        metaKey: "null",
        values: new Map(),
        units: new Map(),
      };
      this.devices.set(raw.id, device);
    }
    if (typeof raw.status === "string") device.status = raw.status;
    if (typeof raw.last_seen === "number") device.lastSeen = Math.min(raw.last_seen, gatewayNow());
    if ("meta" in raw) {
      const meta = raw.meta && typeof raw.meta === "object" ? raw.meta : null;
      // Every device event carries the meta again; views rebuild only when it really changed.
      const key = JSON.stringify(meta);
      if (key !== device.metaKey) {
        device.metaKey = key;
        device.meta = meta;
        device.units = unitsOf(meta);
      }
    }
    const meta = device.meta || {};
    device.name = str(raw.name) || str(meta.name) || "";
    device.type = str(raw.type) || str(meta.type) || "";
    return device;
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => this.flush());
    this.fallback = setTimeout(() => this.flush(), FALLBACK_FLUSH_MS);
  }

  flush() {
    cancelAnimationFrame(this.frame);
    clearTimeout(this.fallback);
    this.frame = 0;
    const pending = this.pending;
    this.pending = [];
    this.buffered = 0;
    const batches = [];
    // Readings carry the device's timestamp, not when the gateway got them: "last seen" is when the
    // page did, on the gateway's clock. (Replayed after a resume, that is up to the outage late.)
    const now = gatewayNow();
    const { devices, dirty } = this;
    for (const { events, data } of pending) {
      for (const event of events) this.applyEvent(event);
      batches.push(data);
      for (const reading of data) {
        if (!Array.isArray(reading) || reading.length !== 4) continue;
        const [id, metric, ts, value] = reading;
        let device = devices.get(id);
        if (!device) {
          // Readings before the device's announcement: show it rather than drop the data.
          device = this.upsert({ id });
          this.structural = true;
        }
        device.values.set(metric, [ts, value]);
        device.lastSeen = now;
        dirty.add(id);
      }
      this.stats.readings += data.length;
    }
    this.stats.flushes++;
    const detail = { dirty, structural: this.structural, batches };
    this.dirty = new Set();
    this.structural = false;
    this.dispatchEvent(new CustomEvent("flush", { detail }));
  }
}

function str(value) {
  return typeof value === "string" ? value : "";
}

function unitsOf(meta) {
  const units = new Map();
  const metrics = meta && typeof meta.metrics === "object" && meta.metrics;
  if (metrics) {
    for (const [metric, info] of Object.entries(metrics)) {
      if (info && typeof info.unit === "string") units.set(metric, info.unit);
    }
  }
  return units;
}

// A small canvas line chart for one numeric series over a sliding time window.
// Points are [ts, value] pairs sorted by ts. More points than pixels are reduced to the min and
// max per pixel column, so a 1 h window at 10 Hz (36,000 points) draws as fast as a 1 m one.
// Gaps much longer than the series' usual spacing break the line instead of bridging them.
// The part of the window before `keptFrom` (history the gateway no longer keeps) is shaded.
// Long windows come from the history store as buckets: `band` holds [t, min, max] per bucket,
// drawn as a min-max band behind the line of the buckets' averages.
// Time is the gateway's clock (gatewayNow), which the points' timestamps are on.

import { keepSized, themeColors } from "./canvas.js";
import { formatClock, formatValue } from "./dom.js";
import { gatewayNow } from "./gateway.js";
import { axisTicks } from "./ticks.js";

// The left padding grows to the widest tick label; the top makes room for the unit, written once
// above the value axis.
const PAD = { left: 30, right: 10, top: 18, bottom: 22 };

export class LineChart {
  constructor(canvas, { unit = "", label = "" } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.unit = unit;
    this.label = label;
    this.points = [];
    this.windowS = 300;
    this.keptFrom = null;
    this.band = null;
    this.hoverX = null;
    this.width = 0;
    this.height = 0;
    keepSized(canvas, this.ctx, ({ width, height }) => {
      this.width = width;
      this.height = height;
      this.draw();
    });
    canvas.addEventListener("pointermove", (ev) => {
      this.hoverX = ev.offsetX;
      this.draw();
    });
    canvas.addEventListener("pointerleave", () => {
      this.hoverX = null;
      this.draw();
    });
  }

  setData(points, windowS, keptFrom = null, band = null) {
    this.points = points;
    this.windowS = windowS;
    this.keptFrom = keptFrom;
    this.band = band && band.length ? band : null;
  }

  /** Index of the first point with ts >= t (points sorted by ts). */
  lowerBound(t) {
    let lo = 0;
    let hi = this.points.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.points[mid][0] < t) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  draw(now = gatewayNow()) {
    const { ctx, width, height, points } = this;
    if (!width) return;
    const c = themeColors(this.canvas);
    ctx.clearRect(0, 0, width, height);
    const y0 = PAD.top;
    const y1 = height - PAD.bottom;
    const x1 = width - PAD.right;
    const t1 = now;
    const t0 = now - this.windowS;
    const start = Math.max(0, this.lowerBound(t0) - 1);
    let lo = Infinity;
    let hi = -Infinity;
    for (let i = start; i < points.length; i++) {
      const v = points[i][1];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    const band = this.band ? this.band.filter((b) => b[0] >= t0) : [];
    for (const [, bmin, bmax] of band) {
      if (bmin < lo) lo = bmin;
      if (bmax > hi) hi = bmax;
    }
    ctx.font = c.font;
    ctx.textBaseline = "middle";
    if (!Number.isFinite(lo)) {
      ctx.fillStyle = c.muted;
      ctx.textAlign = "center";
      ctx.fillText("No data in this window", (PAD.left + x1) / 2, (y0 + y1) / 2);
      this.axis = null;
      return;
    }
    const axis = axisTicks(lo, hi, Math.max(2, Math.floor((y1 - y0) / 36)));
    this.axis = axis; // read by tests: the labels as drawn
    ({ lo, hi } = axis);
    const labelWidth = Math.max(...[...axis.labels, this.unit].map((label) => ctx.measureText(label).width));
    const x0 = Math.min(Math.max(PAD.left, Math.ceil(labelWidth) + 10), width / 2);
    const xOf = (t) => x0 + ((t - t0) / (t1 - t0)) * (x1 - x0);
    const yOf = (v) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);

    if (this.keptFrom !== null && this.keptFrom > t0) {
      // History from before this is not kept by the gateway: say so rather than draw "no data".
      const xk = Math.min(x1, xOf(this.keptFrom));
      ctx.fillStyle = c.grid;
      ctx.globalAlpha = 0.35;
      ctx.fillRect(x0, y0, xk - x0, y1 - y0);
      ctx.globalAlpha = 1;
    }

    // Grid and axis labels; the unit once, above them.
    ctx.strokeStyle = c.grid;
    ctx.lineWidth = 1;
    ctx.fillStyle = c.muted;
    ctx.textAlign = "right";
    ctx.beginPath();
    axis.ticks.forEach((v, i) => {
      const y = Math.round(yOf(v)) + 0.5;
      ctx.moveTo(x0, y);
      ctx.lineTo(x1, y);
      ctx.fillText(axis.labels[i], x0 - 6, y);
    });
    ctx.stroke();
    if (this.unit) ctx.fillText(this.unit, x0 - 6, 6);
    ctx.textAlign = "center";
    ctx.textBaseline = "alphabetic";
    const timeStep = niceTimeStep(this.windowS, Math.max(3, Math.floor((x1 - x0) / 80)));
    for (let t = Math.ceil(t0 / timeStep) * timeStep; t <= t1; t += timeStep) {
      ctx.fillText(timeStep >= 43200 ? formatDay(t) : formatClock(t, timeStep < 60), xOf(t), height - 6);
    }

    // The series, min/max per pixel column when dense, broken at gaps.
    const gap = gapThreshold(points, start, this.windowS);
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, y0 - 2, x1 - x0, y1 - y0 + 4);
    ctx.clip();
    if (band.length) {
      // The min-max band of the buckets: their spread, so a spike never disappears.
      ctx.fillStyle = c.accent;
      ctx.globalAlpha = 0.18;
      ctx.beginPath();
      band.forEach(([t, , bmax], k) => (k ? ctx.lineTo(xOf(t), yOf(bmax)) : ctx.moveTo(xOf(t), yOf(bmax))));
      for (let k = band.length - 1; k >= 0; k--) ctx.lineTo(xOf(band[k][0]), yOf(band[k][1]));
      ctx.closePath();
      ctx.fill();
      ctx.globalAlpha = 1;
    }
    const segments = [];
    let seg = null;
    let prevT = -Infinity;
    let col = null;
    for (let i = start; i < points.length; i++) {
      const [t, v] = points[i];
      if (t - prevT > gap || !seg) {
        seg = [];
        segments.push(seg);
        col = null;
      }
      prevT = t;
      const x = Math.round(xOf(t));
      const y = yOf(v);
      if (col && col.x === x) {
        col.min = Math.min(col.min, y);
        col.max = Math.max(col.max, y);
        col.last = y;
      } else {
        col = { x, first: y, min: y, max: y, last: y };
        seg.push(col);
      }
    }
    ctx.lineWidth = 1.75;
    ctx.lineJoin = "round";
    ctx.strokeStyle = c.accent;
    ctx.fillStyle = c.accentSoft;
    for (const s of segments) {
      ctx.beginPath();
      for (const [k, p] of s.entries()) {
        if (k === 0) ctx.moveTo(p.x, p.first);
        else ctx.lineTo(p.x, p.first);
        if (p.min !== p.max) {
          ctx.lineTo(p.x, p.min);
          ctx.lineTo(p.x, p.max);
        }
        ctx.lineTo(p.x, p.last);
      }
      ctx.stroke();
      if (s.length > 1) {
        ctx.lineTo(s[s.length - 1].x, y1);
        ctx.lineTo(s[0].x, y1);
        ctx.closePath();
        ctx.fill();
      }
    }
    const lastPoint = points[points.length - 1];
    ctx.fillStyle = c.accent;
    ctx.beginPath();
    ctx.arc(xOf(lastPoint[0]), yOf(lastPoint[1]), 3, 0, Math.PI * 2);
    ctx.fill();
    ctx.restore();

    if (this.hoverX !== null && this.hoverX >= x0 && this.hoverX <= x1) {
      const t = t0 + ((this.hoverX - x0) / (x1 - x0)) * (t1 - t0);
      const i = this.lowerBound(t);
      const near = [points[i - 1], points[i]].filter(Boolean).sort((a, b) => Math.abs(a[0] - t) - Math.abs(b[0] - t))[0];
      if (near && near[0] >= t0) {
        const x = xOf(near[0]);
        ctx.strokeStyle = c.text;
        ctx.globalAlpha = 0.4;
        ctx.beginPath();
        ctx.moveTo(Math.round(x) + 0.5, y0);
        ctx.lineTo(Math.round(x) + 0.5, y1);
        ctx.stroke();
        ctx.globalAlpha = 1;
        const text = `${formatValue(near[1])}${this.unit ? ` ${this.unit}` : ""} · ${formatClock(near[0])}`;
        ctx.font = `600 ${c.font}`;
        const w = ctx.measureText(text).width;
        const tx = Math.min(Math.max(x, x0 + w / 2 + 2), x1 - w / 2 - 2);
        ctx.fillStyle = c.text;
        ctx.textAlign = "center";
        ctx.fillText(text, tx, y0 + 10);
      }
    }
  }
}

/** "3 Mar" for a tick on a multi-day axis. */
function formatDay(t) {
  return new Date(t * 1000).toLocaleDateString(undefined, { day: "numeric", month: "short" });
}

function niceTimeStep(windowS, count) {
  const steps = [5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400, 172800, 604800];
  return steps.find((s) => windowS / s <= count) ?? 604800;
}

/** Break the line where the spacing is far above the series' median spacing. */
function gapThreshold(points, start, windowS) {
  const diffs = [];
  for (let i = Math.max(start + 1, points.length - 64); i < points.length; i++) {
    diffs.push(points[i][0] - points[i - 1][0]);
  }
  diffs.sort((a, b) => a - b);
  const median = diffs.length ? diffs[diffs.length >> 1] : 1;
  return Math.max(windowS / 30, median * 5, 2);
}

// DOM and formatting helpers. Everything that reaches the page from a device (names, ids, metric
// names, units, string values, error messages) goes through textContent, never innerHTML.

import { limits } from "./gateway.js";

/** Create an element: h("div", {class: "x", dataset: {testid: "y"}}, "text", child, ...). */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key === "text") el.textContent = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (value === true) el.setAttribute(key, "");
    else el.setAttribute(key, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Set textContent only when it changed: cheaper for the layout engine on hot paths. */
export function setText(el, text) {
  if (el.textContent !== text) el.textContent = text;
}

// Six significant digits, and every digit of the integer part: 21.45, 51.5074, 3,576.43,
// 1,234,568 (roundingPriority picks whichever of the two keeps more; a browser without it keeps
// the six significant digits).
const numberFormat = new Intl.NumberFormat(undefined, {
  maximumSignificantDigits: 6,
  maximumFractionDigits: 0,
  roundingPriority: "morePrecision",
});

/** Format a metric value for display: numbers to a sensible precision, booleans as on/off. */
export function formatValue(value) {
  if (typeof value === "number") {
    return Number.isFinite(value) ? numberFormat.format(value) : String(value);
  }
  if (typeof value === "boolean") return value ? "on" : "off";
  if (value === null || value === undefined) return "–";
  return String(value);
}

/** "now", "12s ago", "5m ago", "3h ago", "2d ago" for an age in seconds. */
export function formatAge(seconds) {
  if (!Number.isFinite(seconds)) return "never";
  if (seconds < 2) return "just now";
  if (seconds < 60) return `${Math.floor(seconds)}s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)}h ago`;
  return `${Math.floor(seconds / 86400)}d ago`;
}

export function formatClock(epochSeconds, withSeconds = true) {
  const d = new Date(epochSeconds * 1000);
  const pad = (n) => String(n).padStart(2, "0");
  return withSeconds
    ? `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
    : `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

/** "90 s", "2 min", "1 h 30 min" for a duration in seconds. */
export function formatDuration(seconds) {
  const s = Math.max(0, Math.round(seconds));
  if (s < 120) return `${s} s`;
  const m = Math.round(s / 60);
  if (m < 120) return `${m} min`;
  const hours = Math.floor(m / 60);
  return m % 60 ? `${hours} h ${m % 60} min` : `${hours} h`;
}

export const STATUS_LABELS = {
  online: "Online",
  offline: "Offline",
  stale: "Stale",
  unknown: "Unknown",
};

/** A status badge element; update it with setStatus(). */
export function statusBadge(status) {
  const el = h("span", { class: "badge", dataset: { testid: "status-badge" } });
  setStatus(el, status);
  return el;
}

export function setStatus(el, status) {
  const known = status in STATUS_LABELS ? status : "unknown";
  if (el.dataset.status === known) return;
  el.dataset.status = known;
  el.textContent = STATUS_LABELS[known];
  el.title = known === "stale" ? `Online, but nothing heard for over ${formatDuration(limits.staleAfterS)}` : "";
}

/**
 * Show a device's last-seen age in `el`. While the page cannot hear from the gateway, statuses
 * stop changing: an online device silent for longer than the gateway's stale limit is marked
 * overdue (data-overdue) so it does not look healthy.
 */
export function setSeen(el, device, now) {
  const age = now - device.lastSeen;
  setText(el, formatAge(age));
  const overdue = device.status === "online" && Number.isFinite(age) && age > limits.staleAfterS;
  if (el.dataset.overdue !== String(overdue)) el.dataset.overdue = String(overdue);
}

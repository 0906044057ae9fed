// The latest values of a fleet row: as many whole values as the cell holds, in priority order
// (the metrics the device declares first, in its meta's order), then "+N" for the rest. A number
// is never cut: a value either shows whole or not at all (only the first one's metric name may
// give way, with an ellipsis). The full set appears on hover and keyboard focus in one shared
// tooltip, which also describes the focused row to screen readers.

import { formatValue, h, setText } from "./dom.js";

/** Values given a chip in a row; the tooltip lists every one. */
const ROW_VALUES = 8;

/** Every metric of the device with a value: declared ones first (meta order), then the rest. */
export function metricsInOrder(device, limit = Infinity) {
  const declared = device.meta?.metrics && typeof device.meta.metrics === "object" ? Object.keys(device.meta.metrics) : [];
  const out = [];
  for (const metric of declared) {
    if (out.length >= limit) return out;
    if (device.values.has(metric)) out.push(metric);
  }
  for (const metric of device.values.keys()) {
    if (out.length >= limit) break;
    if (!out.includes(metric)) out.push(metric);
  }
  return out;
}

/** The chips for `device`'s values in a row's values cell (rebuilt when its metrics change). */
export class RowValues {
  constructor(cell) {
    this.cell = cell;
    this.chips = [];
    this.key = null;
    this.total = 0;
    this.shown = 0;
    this.textLength = -1;
    this.more = h("span", { class: "vmore", "aria-hidden": "true", dataset: { testid: "more-values" }, hidden: true });
  }

  /** Show the device's values; true when the cell must be fitted again (see fitRows). */
  update(device) {
    const metrics = metricsInOrder(device, ROW_VALUES);
    this.total = device.values.size;
    const key = metrics.join("\n");
    let refit = false;
    if (key !== this.key) {
      this.key = key;
      this.chips = metrics.map((metric) => {
        const num = h("span", { class: "vnum" });
        const chip = h(
          "span",
          { class: "value", dataset: { testid: "value", metric } },
          h("span", { class: "vlabel", text: metric }),
          num,
          h("span", { class: "vunit", text: device.units.get(metric) || "" }),
        );
        return { chip, num, metric };
      });
      this.cell.replaceChildren(...this.chips.map((c) => c.chip), this.more);
      refit = true;
    }
    let length = 0;
    for (const { num, metric } of this.chips) {
      const pair = device.values.get(metric);
      const text = pair ? formatValue(pair[1]) : "–";
      setText(num, text);
      length += text.length;
    }
    // Wider or narrower text may change what fits (tabular digits: the length says enough).
    if (length !== this.textLength) {
      this.textLength = length;
      refit = true;
    }
    return refit;
  }

  /** How many of the device's values the row does not show. */
  get hidden() {
    return this.total - this.shown;
  }
}

/**
 * Fit each row's chips to its cell: every chip unhidden and measured first (all writes, then
 * all reads: one layout for all rows), then the ones that do not fit hidden, whole.
 */
export function fitRows(rows) {
  const list = [...rows];
  for (const values of list) {
    values.cell.dataset.measuring = "";
    for (const { chip } of values.chips) chip.hidden = false;
    values.more.hidden = false;
    values.more.textContent = `+${values.total}`; // the widest it can be
  }
  const measured = list.map((values) => ({
    values,
    room: values.cell.clientWidth,
    gap: parseFloat(getComputedStyle(values.cell).columnGap) || 0,
    widths: values.chips.map(({ chip }) => chip.getBoundingClientRect().width),
    more: values.more.getBoundingClientRect().width,
  }));
  for (const { values, room, gap, widths, more } of measured) {
    let used = 0;
    let shown = 0;
    for (const [i, width] of widths.entries()) {
      const step = width + (i ? gap : 0);
      const reserve = values.total - i - 1 > 0 ? gap + more : 0;
      // The first value always shows: its metric name gives way (CSS), never its number.
      if (i > 0 && used + step + reserve > room) break;
      used += step;
      shown++;
    }
    values.shown = shown;
    values.chips.forEach(({ chip }, i) => {
      chip.hidden = i >= shown;
    });
    values.more.hidden = values.hidden === 0;
    values.more.textContent = `+${values.hidden}`;
    delete values.cell.dataset.measuring;
  }
}

/** The one tooltip that lists a row's full set of values, shown beside the row. */
export class ValuesTip {
  constructor() {
    this.el = h("div", { class: "values-tip", id: "values-tip", role: "tooltip", dataset: { testid: "values-tip" }, hidden: true });
    document.body.append(this.el);
    this.row = null;
    this.described = null; // the link it describes
    this.dismissed = null; // the row whose tooltip Escape closed, until another row's
  }

  /**
   * Fill the tooltip with every value of `device`, shown beside `row` when `visible` (and not
   * dismissed), and make it the description of `link` (the focused row's) if given.
   */
  show(row, device, visible, link = null) {
    if (this.row !== row) this.dismissed = null;
    this.row = row;
    if (this.described !== link) {
      this.described?.removeAttribute("aria-describedby");
      link?.setAttribute("aria-describedby", this.el.id);
      this.described = link;
    }
    const items = metricsInOrder(device).map((metric) => {
      const pair = device.values.get(metric);
      const unit = device.units.get(metric);
      return h(
        "li",
        { dataset: { metric } },
        h("span", { class: "vlabel", text: metric }),
        h("span", { class: "vnum", text: pair ? formatValue(pair[1]) : "–" }),
        unit ? h("span", { class: "vunit", text: unit }) : null,
      );
    });
    this.el.replaceChildren(h("p", { class: "values-tip-title", text: device.name || device.id }), h("ul", {}, ...items));
    this.el.hidden = !visible || this.dismissed === row;
    if (!this.el.hidden) this.place(row);
  }

  /** Escape: hidden until another row's values are asked for (WCAG 1.4.13). */
  dismiss() {
    this.dismissed = this.row;
    this.el.hidden = true;
  }

  /** Below the row's values (above it when there is no room), inside the window. */
  place(row) {
    const anchor = row.querySelector(".cvalues").getBoundingClientRect();
    const rowBox = row.getBoundingClientRect();
    const tip = this.el.getBoundingClientRect();
    const below = rowBox.bottom + 4;
    const top = below + tip.height <= innerHeight - 4 ? below : Math.max(4, rowBox.top - tip.height - 4);
    const left = Math.max(4, Math.min(anchor.left, innerWidth - tip.width - 4));
    this.el.style.transform = `translate(${Math.round(left)}px, ${Math.round(top)}px)`;
  }

  hide() {
    this.described?.removeAttribute("aria-describedby");
    this.described = null;
    this.row = null;
    this.el.hidden = true;
  }
}

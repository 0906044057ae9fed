// The fleet list: filter, sort, and a virtualized list that only keeps rows for what is on
// screen (plus a little overscan). Rows are bound to device ids and recycled on scroll, so a flush
// of 10,000 readings touches only the dozen or so visible rows. Each row shows the latest values
// that fit whole (fleet-values.js); hovering or focusing it shows them all.

import { formatDuration, h, setSeen, setStatus, setText, statusBadge } from "./dom.js";
import { RowValues, ValuesTip, fitRows } from "./fleet-values.js";
import { gatewayNow, limits } from "./gateway.js";

const OVERSCAN = 6;
const STATUS_RANK = { offline: 0, stale: 1, unknown: 2, online: 3 };
const FILTERS = ["all", "online", "stale", "offline", "unknown"];
const SORTS = {
  name: "Name",
  status: "Status (problems first)",
  oldest: "Last seen (oldest first)",
  newest: "Last seen (newest first)",
};
const PREFS_KEY = "iotgw.fleet";
const collator = new Intl.Collator(undefined, { numeric: true, sensitivity: "base" });

export class FleetView {
  constructor(root, store) {
    this.root = root;
    this.store = store;
    const saved = loadPrefs();
    this.query = saved.query ?? "";
    this.filter = FILTERS.includes(saved.filter) ? saved.filter : "all";
    this.sort = saved.sort in SORTS ? saved.sort : "name";
    this.order = [];
    this.rows = new Map(); // device id -> row element currently bound
    this.free = [];
    this.rowHeight = 56;
    this.renderQueued = false;
    this.toFit = new Set(); // RowValues to fit to their cells at the next frame
    this.tip = new ValuesTip();
    this.build();
    store.addEventListener("flush", (ev) => this.onFlush(ev.detail));
    new ResizeObserver(() => this.measure()).observe(this.scroller);
  }

  build() {
    this.search = h("input", {
      type: "search",
      id: "fleet-search",
      class: "search",
      placeholder: "Filter by name, id or type",
      autocomplete: "off",
      spellcheck: "false",
      value: this.query,
      dataset: { testid: "fleet-filter" },
      oninput: () => {
        this.query = this.search.value;
        this.changed();
      },
    });
    this.chips = new Map();
    const chipGroup = h("div", { class: "chips", role: "group", "aria-label": "Show status" });
    for (const status of FILTERS) {
      const count = h("span", { class: "chip-count" });
      const chip = h(
        "button",
        {
          type: "button",
          class: "chip",
          dataset: { status, testid: `status-filter-${status}` },
          "aria-pressed": String(status === this.filter),
          onclick: () => {
            this.filter = status;
            for (const [s, c] of this.chips) c.el.setAttribute("aria-pressed", String(s === status));
            this.changed();
          },
        },
        h("span", { class: "chip-label", text: status === "all" ? "All" : cap(status) }),
        count,
      );
      this.chips.set(status, { el: chip, count });
      chipGroup.append(chip);
    }
    this.sortSelect = h(
      "select",
      {
        id: "fleet-sort",
        dataset: { testid: "fleet-sort" },
        onchange: () => {
          this.sort = this.sortSelect.value;
          this.changed();
        },
      },
      ...Object.entries(SORTS).map(([value, label]) =>
        h("option", { value, selected: value === this.sort }, label),
      ),
    );
    const toolbar = h(
      "div",
      { class: "toolbar" },
      h(
        "div",
        { class: "search-wrap" },
        h("label", { for: "fleet-search", class: "visually-hidden", text: "Filter devices" }),
        this.search,
      ),
      chipGroup,
      h(
        "div",
        { class: "sort" },
        h("label", { for: "fleet-sort", text: "Sort" }),
        this.sortSelect,
      ),
    );
    const head = h(
      "div",
      { class: "list-head", "aria-hidden": "true" },
      h("span", { text: "Device" }),
      h("span", { text: "Type" }),
      h("span", { text: "Status" }),
      h("span", { text: "Latest values" }),
      h("span", { class: "right", text: "Last seen" }),
    );
    this.spacer = h("div", { class: "list-spacer", role: "list", "aria-label": "Devices" });
    this.scroller = h(
      "div",
      { class: "list-scroll", dataset: { testid: "device-list" } },
      this.spacer,
    );
    this.scroller.addEventListener("scroll", () => this.queueRender(), { passive: true });
    this.spacer.addEventListener("keydown", (ev) => this.onKey(ev));
    // The full set of values: for the row under the pointer, else the focused one.
    this.hoverRow = null;
    this.focusRow = null;
    this.spacer.addEventListener("pointerover", (ev) => this.tipFor("hoverRow", ev.target.closest(".row")));
    this.spacer.addEventListener("pointerleave", () => this.tipFor("hoverRow", null));
    this.spacer.addEventListener("focusin", (ev) => this.tipFor("focusRow", ev.target.closest(".row")));
    this.spacer.addEventListener("focusout", (ev) => {
      if (!this.spacer.contains(ev.relatedTarget)) this.tipFor("focusRow", null);
    });
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && !this.tip.el.hidden) this.tip.dismiss();
    });
    this.empty = h("div", { class: "empty", dataset: { testid: "fleet-empty" }, hidden: true });
    this.summary = h("p", { class: "summary", "aria-live": "polite", dataset: { testid: "fleet-summary" } });
    this.root.append(toolbar, this.summary, h("div", { class: "list" }, head, this.scroller, this.empty));
  }

  changed() {
    savePrefs({ query: this.query, filter: this.filter, sort: this.sort });
    this.recompute();
    this.scroller.scrollTop = 0;
    this.render();
  }

  onFlush({ dirty, structural }) {
    if (structural) this.recompute();
    if (this.root.hidden) return;
    if (structural) {
      this.render();
      return;
    }
    for (const id of dirty) {
      const row = this.rows.get(id);
      if (row) this.updateRow(row, this.store.devices.get(id));
    }
    if (this.tip.row && dirty.has(this.tip.row.dataset.deviceId)) this.refreshTip();
  }

  /** Once a second: ages tick, and a last-seen sort may reorder. */
  tick() {
    if (this.root.hidden) return;
    if (this.sort === "oldest" || this.sort === "newest") {
      this.recompute();
      this.render();
      return;
    }
    const now = gatewayNow();
    for (const [id, row] of this.rows) {
      const device = this.store.devices.get(id);
      if (device) setSeen(row._seen, device, now);
    }
  }

  show() {
    this.measure();
    this.recompute();
    this.render();
  }

  recompute() {
    const query = this.query.trim().toLowerCase();
    const counts = { all: 0, online: 0, stale: 0, offline: 0, unknown: 0 };
    const matched = [];
    for (const device of this.store.devices.values()) {
      if (query && !`${device.name}\n${device.id}\n${device.type}`.toLowerCase().includes(query)) {
        continue;
      }
      const status = device.status in STATUS_RANK ? device.status : "unknown";
      counts.all++;
      counts[status]++;
      if (this.filter === "all" || this.filter === status) matched.push(device);
    }
    const byName = (a, b) => collator.compare(a.name || a.id, b.name || b.id) || collator.compare(a.id, b.id);
    const seen = (d) => (Number.isFinite(d.lastSeen) ? d.lastSeen : 0);
    const compare = {
      name: byName,
      status: (a, b) => (STATUS_RANK[a.status] ?? 2) - (STATUS_RANK[b.status] ?? 2) || byName(a, b),
      oldest: (a, b) => seen(a) - seen(b) || byName(a, b),
      newest: (a, b) => seen(b) - seen(a) || byName(a, b),
    }[this.sort];
    matched.sort(compare);
    this.order = matched.map((d) => d.id);
    for (const [status, { el, count }] of this.chips) {
      setText(count, counts[status].toLocaleString());
      el.dataset.count = String(counts[status]);
    }
    const staleHint = `Online, but nothing heard for over ${formatDuration(limits.staleAfterS)}`;
    const staleChip = this.chips.get("stale").el;
    if (staleChip.title !== staleHint) staleChip.title = staleHint;
    const total = this.store.devices.size;
    setText(
      this.summary,
      !this.store.loaded
        ? ""
        : `Showing ${this.order.length.toLocaleString()} of ${total.toLocaleString()} devices`,
    );
    this.empty.hidden = this.order.length > 0;
    setText(
      this.empty,
      !this.store.loaded
        ? "Waiting for the gateway…"
        : total === 0
          ? "No devices yet. They appear here as soon as they publish."
          : "No devices match this filter.",
    );
  }

  measure() {
    this.viewHeight = this.scroller.clientHeight;
    for (const row of this.rows.values()) this.queueFit(row);
    const value = parseFloat(getComputedStyle(this.scroller).getPropertyValue("--row-h"));
    if (value && value !== this.rowHeight) {
      this.rowHeight = value;
      for (const row of this.rows.values()) row._top = -1;
    }
    this.queueRender();
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => {
      this.renderQueued = false;
      this.render();
    });
  }

  /** Bind rows to the devices in view, recycle the rest. */
  render() {
    const { rowHeight, order } = this;
    this.spacer.style.height = `${order.length * rowHeight}px`;
    const height = this.viewHeight || innerHeight;
    const first = Math.max(0, Math.floor(this.scroller.scrollTop / rowHeight) - OVERSCAN);
    const last = Math.min(order.length, Math.ceil((this.scroller.scrollTop + height) / rowHeight) + OVERSCAN);
    const wanted = new Map();
    for (let i = first; i < last; i++) wanted.set(order[i], i);
    for (const [id, row] of this.rows) {
      if (!wanted.has(id)) {
        if (this.hoverRow === row) this.hoverRow = null;
        if (this.focusRow === row) this.focusRow = null;
        this.rows.delete(id);
        row.hidden = true;
        delete row.dataset.deviceId; // a recycled row must not match a device selector
        this.free.push(row);
      }
    }
    for (const [id, index] of wanted) {
      const device = this.store.devices.get(id);
      let row = this.rows.get(id);
      if (!row) {
        row = this.free.pop() || this.createRow();
        row.hidden = false;
        this.bindRow(row, device);
        this.rows.set(id, row);
      } else {
        this.updateRow(row, device);
      }
      if (row._top !== index * rowHeight) {
        row._top = index * rowHeight;
        row.style.transform = `translateY(${row._top}px)`;
      }
      row._index = index;
      row.setAttribute("aria-posinset", String(index + 1));
      row.setAttribute("aria-setsize", String(order.length));
    }
    this.refreshTip(); // its row may have moved or gone
  }

  createRow() {
    const link = h("a", { class: "row-link" });
    const name = h("span", { class: "dname" });
    const id = h("span", { class: "did" });
    link.append(name);
    const row = h(
      "div",
      { class: "row", role: "listitem", dataset: { testid: "device-row" } },
      h("div", { class: "cell cname" }, h("span", { class: "dot", "aria-hidden": "true" }), h("div", { class: "names" }, link, id)),
      h("div", { class: "cell ctype" }),
      h("div", { class: "cell cstatus" }, statusBadge("unknown")),
      h("div", { class: "cell cvalues" }),
      h("div", { class: "cell cseen", dataset: { testid: "last-seen" } }),
    );
    row._link = link;
    row._name = name;
    row._id = id;
    row._type = row.querySelector(".ctype");
    row._badge = row.querySelector(".badge");
    row._values = row.querySelector(".cvalues");
    row._valueChips = new RowValues(row._values);
    row._seen = row.querySelector(".cseen");
    row._top = -1;
    this.spacer.append(row);
    return row;
  }

  bindRow(row, device) {
    row.dataset.deviceId = device.id;
    row._link.href = `#/device/${encodeURIComponent(device.id)}`;
    row._valueChips.key = null; // another device's units, even for the same metrics
    this.updateRow(row, device);
  }

  updateRow(row, device) {
    if (!device) return;
    setText(row._name, device.name || device.id);
    setText(row._id, device.name ? device.id : "");
    setText(row._type, device.type || "—");
    // A long type ends in an ellipsis: the whole of it on hover.
    if (row._type.title !== (device.type || "")) row._type.title = device.type || "";
    setStatus(row._badge, device.status);
    row.dataset.status = row._badge.dataset.status;
    setSeen(row._seen, device, gatewayNow());
    if (row._valueChips.update(device)) this.queueFit(row);
  }

  /** Fit the row's values to its cell at the next frame, with every other row that changed. */
  queueFit(row) {
    this.toFit.add(row._valueChips);
    if (this.toFit.size > 1) return;
    requestAnimationFrame(() => {
      const rows = [...this.toFit].filter((values) => values.cell.isConnected);
      this.toFit.clear();
      fitRows(rows);
      this.refreshTip();
    });
  }

  tipFor(kind, row) {
    this[kind] = row && !row.hidden && row.dataset.deviceId ? row : null;
    this.refreshTip();
  }

  /**
   * The full set of the hovered (else the focused) row's values, beside it when some are hidden
   * or cut short; for the focused row it is also the link's description for screen readers.
   */
  refreshTip() {
    const row = this.hoverRow || this.focusRow;
    const device = row && this.store.devices.get(row.dataset.deviceId);
    if (!device) {
      this.tip.hide();
      return;
    }
    const label = row.querySelector(".value:not([hidden]) .vlabel");
    const cut = row._valueChips.hidden > 0 || (label !== null && label.scrollWidth > label.clientWidth);
    this.tip.show(row, device, cut, row === this.focusRow ? row._link : null);
  }

  onKey(ev) {
    const row = ev.target.closest(".row");
    if (!row || row._index === undefined) return;
    const page = Math.max(1, Math.floor(this.scroller.clientHeight / this.rowHeight) - 1);
    const moves = { ArrowDown: 1, ArrowUp: -1, PageDown: page, PageUp: -page };
    let target;
    if (ev.key in moves) target = row._index + moves[ev.key];
    else if (ev.key === "Home") target = 0;
    else if (ev.key === "End") target = this.order.length - 1;
    else return;
    ev.preventDefault();
    this.focusIndex(Math.max(0, Math.min(this.order.length - 1, target)));
  }

  /** Focus the row of device `id` when the list shows it (scrolled into view). */
  focusDevice(id) {
    const index = this.order.indexOf(id);
    if (index >= 0) this.focusIndex(index);
  }

  focusIndex(index) {
    const top = index * this.rowHeight;
    if (top < this.scroller.scrollTop) this.scroller.scrollTop = top;
    else if (top + this.rowHeight > this.scroller.scrollTop + this.scroller.clientHeight) {
      this.scroller.scrollTop = top + this.rowHeight - this.scroller.clientHeight;
    }
    this.render();
    this.rows.get(this.order[index])?._link.focus({ preventScroll: true });
  }
}

function cap(s) {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function loadPrefs() {
  try {
    return JSON.parse(sessionStorage.getItem(PREFS_KEY)) || {};
  } catch {
    return {};
  }
}

function savePrefs(prefs) {
  sessionStorage.setItem(PREFS_KEY, JSON.stringify(prefs));
}

// Wiring: one client (client.js, through connection.js), one subscription to every device, one
// store, two views and a hash router (#/ and #/device/<id>).

import { pageClient, signIn } from "./connection.js";
import { DeviceView } from "./device.js";
import { formatClock, setText } from "./dom.js";
import { FleetView } from "./fleet.js";
import { applyHello } from "./gateway.js";
import { Store } from "./store.js";
import { wireThemeToggle } from "./theme-toggle.js";

const $ = (selector) => document.querySelector(selector);

const conn = pageClient();
const store = new Store();
// The clock offset and limits are in place before the subscription's snapshot arrives.
conn.addEventListener("hello", ({ detail }) => applyHello(detail));
const subscription = conn.subscribe({ devices: ["*"] });
const fleet = new FleetView($("#fleet"), store);
const device = new DeviceView($("#device"), store, conn);

// Exposed for tests and for curious operators in the console; nothing depends on it.
// `stats`: snapshots taken, streams recovered/refreshed after a reconnect, seq gaps, readings.
const stats = {
  get snapshots() {
    return store.stats.snapshots;
  },
  get readings() {
    return store.stats.readings;
  },
  get flushes() {
    return store.stats.flushes;
  },
  get recovered() {
    return conn.stats.recovered;
  },
  get refreshed() {
    return conn.stats.refreshed;
  },
  get gaps() {
    return conn.stats.gaps;
  },
  get duplicates() {
    return conn.stats.duplicates;
  },
};
window.iotgw = { conn, subscription, store, fleet, device, stats };

subscription.addEventListener("snapshot", ({ detail }) => store.loadSnapshot(detail.devices));
subscription.addEventListener("resync", ({ detail }) => {
  store.loadSnapshot(detail.devices);
  notice(
    `Reconnected — refreshed. ${
      detail.restarted
        ? "The gateway restarted, so the latest values were loaded again."
        : "The updates missed while away were no longer held, so the latest values were loaded again."
    }`,
    "refreshed",
  );
});
subscription.addEventListener("batch", ({ detail }) => {
  store.pushFrame(detail);
  if (detail.coalesced) {
    notice(
      `Falling behind: ${Number(detail.dropped || 0).toLocaleString()} intermediate readings skipped; latest values kept.`,
      "lagging",
    );
  }
});
subscription.addEventListener("refused", ({ detail }) =>
  showConnectionError(`Subscribe refused: ${detail.error.message}`),
);
conn.addEventListener("gap", ({ detail }) =>
  notice(`Missed ${detail.missed} update frame(s); reloading the latest values.`),
);
conn.addEventListener("error", ({ detail: frame }) =>
  showConnectionError(`Gateway error: ${frame.message || frame.code}`),
);

// --- connection indicator ------------------------------------------------------------------------

const indicator = $('[data-testid="connection"]');
const indicatorText = $('[data-testid="connection-text"]');
const retry = $('[data-testid="connection-retry"]');
const brokerBanner = $('[data-testid="broker-banner"]');
const connBanner = $('[data-testid="connection-banner"]');
retry.addEventListener("click", () => conn.retryNow());

function renderConnection() {
  const { phase, broker, brokerSince, retryAt, message } = conn.state;
  let state = phase;
  let text;
  switch (phase) {
    case "open":
      state = broker === "disconnected" ? "broker-down" : "connected";
      text = broker === "disconnected" ? "Live · broker down" : "Live";
      break;
    case "connecting":
      text = "Connecting…";
      break;
    case "auth":
      text = "Signing in…";
      break;
    case "reconnecting": {
      const seconds = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
      text = seconds > 0 ? `Reconnecting in ${seconds}s` : "Reconnecting…";
      break;
    }
    case "needs-token":
      text = "Sign-in required";
      break;
    default:
      text = "Disconnected";
  }
  indicator.dataset.state = state;
  setText(indicatorText, text);
  retry.hidden = !(phase === "reconnecting" || phase === "failed");
  indicator.title = message || "";

  const brokerDown = phase === "open" && broker === "disconnected";
  brokerBanner.hidden = !brokerDown;
  if (brokerDown) {
    setText(
      brokerBanner,
      `The gateway has lost its MQTT broker${brokerSince ? ` since ${formatClock(brokerSince)}` : ""}. ` +
        "Values shown are the last received; commands cannot be sent until it is back.",
    );
  }
  const lost = phase === "reconnecting" || phase === "failed";
  if (lost) connBanner.hidden = false;
  if (lost) setText(connBanner, `${message || "Not connected to the gateway."} Values are not updating.`);
  else if (!connBanner.dataset.sticky) connBanner.hidden = true;
  document.body.dataset.conn = state;
  if (phase === "needs-token") askToken(message);
}

function showConnectionError(text) {
  connBanner.hidden = false;
  connBanner.dataset.sticky = "1";
  setText(connBanner, text);
  setTimeout(() => {
    delete connBanner.dataset.sticky;
    renderConnection();
  }, 8000);
}

conn.addEventListener("state", renderConnection);

// --- token ---------------------------------------------------------------------------------------

const dialog = $('[data-testid="token-dialog"]');
const tokenInput = $('[data-testid="token-input"]');
const tokenError = $('[data-testid="token-error"]');

function askToken(message) {
  tokenError.hidden = !message;
  setText(tokenError, message || "");
  if (!dialog.open) {
    tokenInput.value = "";
    dialog.showModal();
    tokenInput.focus();
  }
}

dialog.addEventListener("cancel", (ev) => ev.preventDefault()); // nothing works without a token
dialog.querySelector("form").addEventListener("submit", () => {
  const token = tokenInput.value.trim();
  if (token) signIn(conn, token);
});

// --- notices: lagging, seq gaps, a reconnect that could not resume -------------------------------

const toast = $('[data-testid="notice"]');
let toastTimer = 0;
function notice(text, kind = "gap") {
  setText(toast, text);
  toast.dataset.kind = kind;
  toast.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => {
    toast.hidden = true;
  }, 8000);
}

// --- routing -------------------------------------------------------------------------------------

const fleetRoot = $("#fleet");
const deviceRoot = $("#device");

function route() {
  const match = location.hash.match(/^#\/device\/(.+)$/);
  if (match) {
    let id;
    try {
      id = decodeURIComponent(match[1]);
    } catch {
      id = match[1];
    }
    fleetRoot.hidden = true;
    deviceRoot.hidden = false;
    if (device.id !== id) device.open(id);
    document.title = `${store.devices.get(id)?.name || id} · iotgw`;
    deviceRoot.querySelector("h2")?.focus?.();
  } else {
    const from = device.id;
    device.close();
    deviceRoot.hidden = true;
    fleetRoot.hidden = false;
    fleet.show();
    document.title = "Fleet · iotgw";
    // Back from a device: keyboard users carry on from its row, not from the top of the page.
    if (from !== null) fleet.focusDevice(from);
  }
}

addEventListener("hashchange", route);

// --- the page's settings: map tiles for the track view, when the operator configured them ------

fetch("dashboard.json")
  .then((response) => (response.ok ? response.json() : null))
  .then((settings) => device.setMap(settings?.map ?? null))
  .catch(() => device.setMap(null)); // no map: the plain coordinate plot

// --- theme: the toggle, and canvases redrawn in the new colours at once ---------------------------

wireThemeToggle($('[data-testid="theme-toggle"]'));
addEventListener("iotgw:theme", () => {
  if (!deviceRoot.hidden) device.tick();
});

// Once a second: ages, the reconnect countdown, the last-seen sort and sliding chart windows.
setInterval(() => {
  if (!fleetRoot.hidden) fleet.tick();
  if (!deviceRoot.hidden) device.tick();
  if (conn.state.phase === "reconnecting") renderConnection();
}, 1000);

route();
renderConnection();
conn.start();

// What the page knows about the gateway from its latest `hello` (docs/protocol.md): the offset
// between the page's clock and the gateway's, and the limits it announced.
//
// Every time the page shows or compares against "now" (last-seen ages, chart windows, history
// `since`) it uses gatewayNow(): timestamps from the gateway are on the gateway's clock, and a
// laptop whose clock is an hour off must not call a device seen a second ago "1h ago".

let offsetS = 0;

/** Limits from hello.limits; the defaults are the gateway's own until a hello says otherwise. */
export const limits = { historyLength: 1000, staleAfterS: 120 };

/** Take the clock offset and limits from a hello frame (fields missing or malformed: keep). */
export function applyHello(hello) {
  if (!hello || typeof hello !== "object") return;
  // The hello left the gateway a one-way trip ago; on a LAN that is well below what ages show.
  if (typeof hello.time === "number" && Number.isFinite(hello.time)) offsetS = hello.time - Date.now() / 1000;
  const l = hello.limits && typeof hello.limits === "object" ? hello.limits : {};
  if (Number.isInteger(l.history_length) && l.history_length > 0) limits.historyLength = l.history_length;
  if (typeof l.stale_after_s === "number" && l.stale_after_s > 0) limits.staleAfterS = l.stale_after_s;
}

/** Now, in Unix seconds on the gateway's clock (as far as the page can tell). */
export const gatewayNow = () => Date.now() / 1000 + offsetS;

/** Gateway clock minus page clock, in seconds. */
export const clockOffset = () => offsetS;

// The WebSocket link to the gateway (docs/protocol.md, v2): connect, authenticate, correlate
// replies by request id, and reconnect on its own with capped, jittered exponential backoff.
//
// Events (EventTarget): "state" whenever `state` changes, "ready" each time a connection is open
// and authenticated (subscribe then), "frame" for every server frame that is not a reply.

const TOKEN_KEY = "iotgw.token";
const BACKOFF_BASE_MS = 500;
const BACKOFF_CAP_MS = 30_000;
const TRANSIENT_MIN_MS = 2_000; // 4000-4499: the gateway asked us to back off
const HELLO_TIMEOUT_MS = 10_000;
const PING_EVERY_MS = 25_000;
const PONG_TIMEOUT_MS = 10_000;
const STABLE_AFTER_MS = 10_000; // a link up this long resets the backoff
const PROTOCOL = 2; // the protocol version this page speaks (hello.protocol)

/** Close codes after which reconnecting cannot help (protocol.md, "Close codes"). */
const TERMINAL = new Map([
  [1009, "The gateway closed the connection: a message was too large."],
  [4501, "The gateway closed the connection after repeated protocol errors."],
]);

// Same origin only: no URL parameter may point the page (and its token) at another server.
export function defaultUrl() {
  return `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;
}

export class Connection extends EventTarget {
  constructor(url = defaultUrl()) {
    super();
    this.url = url;
    this.ws = null;
    this.nextId = 1;
    this.pending = new Map(); // request id -> reply handler
    this.attempt = 0;
    this.timers = new Set();
    this.hello = null;
    this.readySince = 0;
    /**
     * phase: connecting | auth | open | reconnecting | needs-token | failed
     * broker: connected | disconnected | null (unknown)
     */
    this.state = { phase: "connecting", broker: null, brokerSince: null, retryAt: 0, message: "" };
  }

  get token() {
    return sessionStorage.getItem(TOKEN_KEY);
  }

  /** Remember a token for this browser session and connect with it. */
  setToken(token) {
    sessionStorage.setItem(TOKEN_KEY, token);
    this.retryNow();
  }

  start() {
    addEventListener("online", () => this.state.phase === "reconnecting" && this.retryNow());
    this.connect();
  }

  retryNow() {
    this.clearTimers();
    this.drop();
    this.connect();
  }

  /**
   * Send a request; `onReply` gets every frame carrying its id (an `error`, or for commands
   * `command_accepted` then `command_result`), and `{type: "disconnected"}` if the link drops first.
   * Returns a function that stops listening. Replies a caller no longer wants are ignored.
   */
  request(frame, onReply) {
    const id = this.nextId++;
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN || this.state.phase !== "open") {
      queueMicrotask(() => onReply({ type: "disconnected", id }));
      return () => {};
    }
    this.pending.set(id, onReply);
    this.ws.send(JSON.stringify({ ...frame, id }));
    return () => this.pending.delete(id);
  }

  // --- internals -------------------------------------------------------------------------------

  setState(patch) {
    Object.assign(this.state, patch);
    this.dispatchEvent(new CustomEvent("state", { detail: this.state }));
  }

  later(ms, fn) {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
    return t;
  }

  clearTimers() {
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    clearInterval(this.pinger);
  }

  connect() {
    this.setState({ phase: "connecting", retryAt: 0, message: "" });
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch (err) {
      this.scheduleReconnect(0, String(err));
      return;
    }
    this.ws = ws;
    this.hello = null;
    ws.onmessage = (ev) => this.onMessage(ev);
    ws.onclose = (ev) => this.onClose(ev.code, ev.reason);
    this.later(HELLO_TIMEOUT_MS, () => {
      if (this.ws === ws && !this.hello) this.lost("No answer from the gateway.");
    });
  }

  /** Forget the current socket without waiting for its close handshake (it may never come). */
  drop() {
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onmessage = ws.onclose = null;
      try {
        ws.close();
      } catch {
        /* already closed */
      }
    }
    this.failPending();
  }

  failPending() {
    const handlers = [...this.pending.entries()];
    this.pending.clear();
    for (const [id, handler] of handlers) handler({ type: "disconnected", id });
  }

  lost(message) {
    this.drop();
    this.clearTimers();
    this.scheduleReconnect(0, message);
  }

  onMessage(ev) {
    let frame;
    try {
      frame = JSON.parse(ev.data);
    } catch {
      return; // the gateway only sends JSON text frames; anything else is not ours to guess at
    }
    if (!frame || typeof frame !== "object") return;
    if (frame.id !== undefined && frame.id !== null && this.pending.has(frame.id)) {
      this.pending.get(frame.id)(frame);
      return;
    }
    switch (frame.type) {
      case "hello":
        return this.onHello(frame);
      case "authenticated":
        return this.onReady();
      case "pong":
        this.pongDue = 0;
        return;
      case "gateway":
        this.setState({ broker: frame.broker, brokerSince: frame.since ?? null });
        break;
      case "error":
        if (frame.code === "unauthorized") {
          sessionStorage.removeItem(TOKEN_KEY);
        }
        break;
    }
    this.dispatchEvent(new CustomEvent("frame", { detail: frame }));
  }

  onHello(hello) {
    if (hello.protocol !== PROTOCOL) {
      // Frames of another version would be misread (v1 sent events as their own frames).
      this.clearTimers();
      this.drop();
      this.setState({
        phase: "failed",
        message: `The gateway speaks protocol ${hello.protocol}; this page speaks ${PROTOCOL}. Reload the page.`,
      });
      return;
    }
    this.hello = hello;
    this.setState({
      broker: hello.broker ?? null,
      brokerSince: hello.broker === "disconnected" ? null : this.state.brokerSince,
    });
    if (hello.auth !== "required") {
      this.onReady();
      return;
    }
    const token = this.token;
    if (!token) {
      // Ask first, connect again with the token: the gateway's auth deadline would not wait for a
      // person typing.
      this.clearTimers();
      this.drop();
      this.setState({ phase: "needs-token", message: "" });
      return;
    }
    this.setState({ phase: "auth" });
    this.ws.send(JSON.stringify({ type: "auth", id: this.nextId++, token }));
  }

  onReady() {
    this.readySince = performance.now();
    this.setState({ phase: "open", message: "" });
    this.startPinging();
    this.dispatchEvent(new CustomEvent("ready", { detail: this.hello }));
  }

  startPinging() {
    clearInterval(this.pinger);
    this.pongDue = 0;
    const ws = this.ws;
    // The gateway pings us, but a browser cannot see those pings: our own keeps a half-open
    // link (laptop asleep, NAT timeout) from looking alive forever.
    this.pinger = setInterval(() => {
      if (this.ws !== ws) return;
      if (this.pongDue && performance.now() > this.pongDue) {
        this.lost("The gateway stopped answering.");
        return;
      }
      if (!this.pongDue) {
        this.pongDue = performance.now() + PONG_TIMEOUT_MS;
        ws.send(JSON.stringify({ type: "ping", id: `ping-${this.nextId++}` }));
      }
    }, PING_EVERY_MS / 5);
    this.lastPingAt = performance.now();
  }

  onClose(code, reason) {
    const wasStable = this.readySince && performance.now() - this.readySince > STABLE_AFTER_MS;
    this.ws = null;
    this.readySince = 0;
    this.clearTimers();
    this.failPending();
    if (wasStable) this.attempt = 0;
    if (code === 4500) {
      sessionStorage.removeItem(TOKEN_KEY);
      this.setState({ phase: "needs-token", message: "The gateway refused the token." });
      return;
    }
    if (TERMINAL.has(code)) {
      this.setState({ phase: "failed", message: TERMINAL.get(code) });
      return;
    }
    const transient = code >= 4000 && code < 4500;
    const why =
      code === 1001
        ? "The gateway restarted."
        : transient
          ? `The gateway asked us to back off${reason ? ` (${reason})` : ""}.`
          : "Lost the connection to the gateway.";
    this.scheduleReconnect(transient ? TRANSIENT_MIN_MS : 0, why);
  }

  scheduleReconnect(minMs, message) {
    // Full jitter over the upper half of the window keeps a restarted gateway from being hit by
    // every open dashboard in the same instant.
    const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const delay = Math.max(minMs, ceiling * (0.5 + Math.random() * 0.5));
    this.attempt = Math.min(this.attempt + 1, 16);
    this.setState({ phase: "reconnecting", retryAt: Date.now() + delay, message });
    this.later(delay, () => this.connect());
  }
}

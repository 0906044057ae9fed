// iotgw client: the gateway's WebSocket protocol v2 (docs/protocol.md) for browsers and Node 20+,
// one ES module with no dependencies and no build step (docs/clients.md). The gateway serves it
// at /client.js; its own dashboard uses it. Node 20 needs `--experimental-websocket` for the
// global WebSocket, or pass a constructor: `new Client(url, { WebSocket })`.
//
// The same rules as the Python client (gateway/client/): full-jitter exponential backoff
// (0.5 s → 20 s; a gateway restart, 1001/1012, starts at an 8 s window so its clients spread out),
// every subscription resumed with the stream's epoch/session/seq or resynced from a fresh snapshot
// ("resync": never a silent gap), history and subscribe requests paced below the limits the
// gateway announces in hello (so nothing this client sends can trip its 4001), commands resolved
// exactly once with a typed error per outcome.

export const PROTOCOL = 2;

/** Before command_accepted the gateway waits for the broker's PUBACK; after it, for the device. */
const ACCEPT_GRACE_MS = 10_000;
const RESULT_GRACE_MS = 5_000;

/** The gateway's documented defaults, for a gateway whose hello does not announce them. */
const DEFAULT_LIMITS = {
  max_message_bytes: 65536,
  max_subscriptions: 32,
  history_length: 1000,
  stale_after_s: 120,
  history_rate: 20,
  history_burst: 200,
  history_in_flight: 4,
  subscribe_rate: 5,
  subscribe_burst: 64,
};

// --- errors -----------------------------------------------------------------------------------

export class ClientError extends Error {
  constructor(message) {
    super(message);
    this.name = new.target.name;
  }
}

/** The gateway answered a request with an `error` frame; `code` is the protocol's code. */
export class RequestRefused extends ClientError {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.code = code;
    this.detail = message;
  }
}

/**
 * A command that did not end `ok`. `status`: refused | error | timeout | unknown | unconfirmed |
 * not_sent; `commandId` once the gateway accepted it.
 */
export class CommandError extends ClientError {
  constructor(status, message, { commandId = null, code = null, result = null, frame = null } = {}) {
    super(message);
    this.status = status;
    this.commandId = commandId;
    this.code = code;
    this.result = result;
    this.frame = frame; // the command_result frame, when there was one (rtt_ms)
  }
}
/** Refused before anything was published (`code`: bad_params, forbidden, not_found, …). */
export class CommandRefused extends CommandError {}
/** The device answered with an error (`message`, `result`). */
export class DeviceError extends CommandError {}
/** The device did not answer within the effective timeout. */
export class CommandTimeout extends CommandError {}
/** Nobody can tell whether the device got it (the broker link or this connection dropped). */
export class CommandUnknown extends CommandError {}
/** Published and acknowledged, but nothing the device reports could confirm it. */
export class CommandUnconfirmed extends CommandError {}
/** No connection to send it on within the timeout: nothing was sent. */
export class CommandNotSent extends CommandError {}

// --- policy -----------------------------------------------------------------------------------

/** What a close means for the next attempt: "lost" | "restart" | "back_off" | "terminal". */
export function classifyClose(code) {
  if (code === 1001 || code === 1012) return "restart";
  if (code === 1009 || (code >= 4500 && code <= 4999)) return "terminal";
  if (code >= 4000 && code <= 4499) return "back_off";
  return "lost";
}

/**
 * Full-jitter exponential backoff: attempt n waits uniformly in [0, min(maxMs, minMs·2ⁿ)].
 * A restart close (1001, 1012) starts at the window of `restartMs`, a back-off close (4000–4499)
 * at `backOffMs`; a connection that lasted `stableMs` resets it.
 */
export class Backoff {
  constructor({ minMs = 500, maxMs = 20_000, restartMs = 8_000, backOffMs = 2_000, stableMs = 10_000 } = {}) {
    if (!(minMs > 0 && minMs <= maxMs)) throw new RangeError("backoff needs 0 < minMs <= maxMs");
    Object.assign(this, { minMs, maxMs, restartMs, backOffMs, stableMs });
  }

  window(attempt) {
    return Math.min(this.maxMs, this.minMs * 2 ** Math.min(attempt, 62));
  }

  firstAttempt(kind) {
    const floor = kind === "restart" ? this.restartMs : kind === "back_off" ? this.backOffMs : 0;
    if (!floor || floor <= this.minMs) return 0;
    return Math.ceil(Math.log2(Math.min(floor, this.maxMs) / this.minMs));
  }

  delay(attempt, rng = Math.random) {
    return rng() * this.window(attempt);
  }
}

/**
 * Keeps requests below a gateway token bucket (rate per second, burst). Only half the burst and
 * 90% of the rate are spent here: the gateway's bucket starts when the first request reaches it,
 * and that margin absorbs (burst/2)/rate seconds of delay jitter between the two sides.
 */
export class Pacer {
  constructor(rate, burst, now = () => performance.now()) {
    this.rate = (rate * 0.9) / 1000; // per ms
    this.burst = Math.max(1, Math.floor(burst / 2));
    this.now = now;
    this.tokens = this.burst;
    this.stamp = now();
  }

  refill() {
    const now = this.now();
    this.tokens = Math.min(this.burst, this.tokens + (now - this.stamp) * this.rate);
    this.stamp = now;
  }

  /** Spend a token if there is one now. */
  tryTake() {
    this.refill();
    if (this.tokens < 1) return false;
    this.tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is available. */
  waitMs() {
    this.refill();
    return this.tokens >= 1 ? 0 : (1 - this.tokens) / this.rate;
  }
}

/** One regex for glob patterns (`*`, `?`, `[ab]`, `[!ab]`), case-sensitive: the gateway's rule. */
export function globRegExp(patterns) {
  const one = (p) => {
    let out = "";
    for (let i = 0; i < p.length; i++) {
      const c = p[i];
      if (c === "*") out += ".*";
      else if (c === "?") out += ".";
      else if (c === "[") {
        const end = p.indexOf("]", i + 2);
        if (end < 0) {
          out += "\\[";
          continue;
        }
        let set = p.slice(i + 1, end);
        const negate = set[0] === "!";
        if (negate) set = set.slice(1);
        out += `[${negate ? "^" : ""}${set.replace(/\\/g, "\\\\").replace(/^\^/, "\\^")}]`;
        i = end;
      } else out += c.replace(/[.*+?^${}()|[\]\\/]/g, "\\$&");
    }
    return out;
  };
  return new RegExp(`^(?:${patterns.map(one).join("|")})$`, "s");
}

// --- subscriptions ----------------------------------------------------------------------------

/**
 * One subscription, kept across reconnects. Events (detail):
 * - "snapshot" {devices}: its first state, every device it matches with its values;
 * - "resync" {reason, restarted, devices}: the stream could not continue (the gateway restarted,
 *   the stream expired, a gap was seen): `devices` replaces everything held, nothing is replayed;
 * - "batch" {events, data, coalesced, dropped}: one readings frame's device events (apply first)
 *   and readings `[device, metric, ts, value]` that match; `coalesced` when the gateway merged
 *   frames because this client fell behind (`dropped` values skipped);
 * - "refused" {error}: the gateway refused the subscribe (a RequestRefused); it is over.
 */
export class Subscription extends EventTarget {
  constructor(client, devices, metrics) {
    super();
    if (!Array.isArray(devices) || devices.length === 0) throw new TypeError("subscribe needs device patterns");
    this.client = client;
    this.devices = [...devices];
    this.metrics = metrics ? [...metrics] : null;
    this.all = this.devices.length === 1 && this.devices[0] === "*" && !this.metrics;
    this.deviceRe = globRegExp(this.devices);
    this.metricRe = this.metrics ? globRegExp(this.metrics) : null;
    this.id = null; // the gateway's subscription id
    this.awaiting = ""; // "": its first snapshot is due; a reason: a resync is; null: live
    this.closed = false;
  }

  matchesDevice(id) {
    return this.all || this.deviceRe.test(id);
  }

  matchesReading(row) {
    return this.all || (this.deviceRe.test(row[0]) && (!this.metricRe || this.metricRe.test(row[1])));
  }

  /** Unsubscribe; no more events. */
  close() {
    if (this.closed) return;
    this.closed = true;
    this.client._unsubscribe(this);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

// --- the client -------------------------------------------------------------------------------

/**
 * @typedef {object} ClientOptions
 * @property {string | (() => string | null) | null} [token] sent in an `auth` frame when the
 *   gateway asks (a function is asked on every connect)
 * @property {typeof WebSocket} [WebSocket] the constructor to use (default: the global one)
 * @property {Backoff} [backoff]
 * @property {number} [helloTimeoutMs] a connection without hello within this is retried
 * @property {number} [pingEveryMs] application pings (a browser cannot see WebSocket pings)
 * @property {number} [pongTimeoutMs] no pong within this: the link is considered lost
 */

/**
 * A connection to the gateway, kept open. `state.phase`: connecting | auth | open | reconnecting
 * | needs-token (the gateway wants a token this client does not have, or refused it) | failed
 * (terminal) | closed. Events (detail): "state" (the state), "hello" (each connection's hello),
 * "gap" ({missed}: frames lost on one connection; a resync follows), "unauthorized" (the token
 * was refused), "error" (an error frame that answers no request of this client).
 */
export class Client extends EventTarget {
  /** @param {string} url ws(s)://host:port/ws  @param {ClientOptions} [options] */
  constructor(url, options = {}) {
    super();
    this.url = url;
    this.options = options;
    this.WebSocket = options.WebSocket || globalThis.WebSocket;
    if (!this.WebSocket) throw new ClientError("no WebSocket: pass { WebSocket } (Node 20: --experimental-websocket)");
    this.backoff = options.backoff || new Backoff();
    this.helloTimeoutMs = options.helloTimeoutMs ?? 10_000;
    this.pingEveryMs = options.pingEveryMs ?? 25_000;
    this.pongTimeoutMs = options.pongTimeoutMs ?? 10_000;
    this.nextId = 1;
    this.link = null; // the current connection (see #open)
    this.stream = null; // {epoch, session, link}: the stream the subscriptions' state comes from
    this.subs = [];
    this.historyQueue = [];
    this.waiters = new Set(); // commands waiting for a connection
    this.attempt = 0;
    this.timers = new Set();
    this.stats = { attempts: 0, connects: 0, recovered: 0, refreshed: 0, gaps: 0, duplicates: 0 };
    this.state = { phase: "closed", broker: null, brokerSince: null, retryAt: 0, message: "" };
    this.started = false;
  }

  /** The current connection's hello (null while disconnected). */
  get hello() {
    return this.link && this.link.open ? this.link.hello : null;
  }

  /** Connect, and keep connecting until close(). */
  start() {
    this.started = true;
    this.connect();
    return this;
  }

  /** Drop any connection or wait and connect now (a "Retry now" button, a new token). */
  retryNow() {
    this.started = true;
    this.clearTimers();
    this.drop("retry");
    this.connect();
  }

  /** Close for good: subscriptions stay registered but get nothing more. */
  close() {
    this.started = false;
    this.clearTimers();
    this.drop("closed");
    for (const waiter of this.waiters) waiter.fail(new CommandNotSent("not_sent", "the client was closed"));
    this.setState({ phase: "closed", retryAt: 0, message: "" });
  }

  /**
   * Subscribe to devices matching `devices` (globs) and, if given, only `metrics` (globs).
   * @param {{devices?: string[], metrics?: string[] | null}} [filter]
   * @returns {Subscription}
   */
  subscribe({ devices = ["*"], metrics = null } = {}) {
    const sub = new Subscription(this, devices, metrics);
    this.subs.push(sub);
    const link = this.link;
    if (link && link.open && link.resubscribed) this.sendSubscribes(link, [sub], null);
    return sub;
  }

  /**
   * A history request: `{device, metric, since?, limit?}` (the recent window) or `{device, metric,
   * from, to?, max_points?}` (the store, raw points or buckets). Resolves with the history frame,
   * rejects with RequestRefused. Queued and paced below the gateway's announced limits, at most
   * `history_in_flight` ranged ones at once, asked again on the next connection if this one
   * drops. An aborted `signal` removes it from the queue (rejecting with its reason).
   * @param {{device: string, metric: string, since?: number, limit?: number, from?: number, to?: number, max_points?: number}} params
   * @param {{signal?: AbortSignal}} [options]
   */
  history(params, { signal } = {}) {
    return new Promise((resolve, reject) => {
      const job = { frame: { type: "history", ...params }, ranged: params.from !== undefined, resolve, reject, link: null };
      if (signal) {
        if (signal.aborted) return reject(signal.reason);
        signal.addEventListener(
          "abort",
          () => {
            job.cancelled = true;
            const i = this.historyQueue.indexOf(job);
            if (i >= 0) this.historyQueue.splice(i, 1);
            reject(signal.reason);
          },
          { once: true },
        );
      }
      this.historyQueue.push(job);
      this.pumpHistory();
    });
  }

  /**
   * Send a command. Resolves with the `command_result` frame of an `ok`; rejects with the
   * CommandError of any other outcome, exactly once: CommandRefused, DeviceError, CommandTimeout,
   * CommandUnknown (also when the connection drops after sending), CommandUnconfirmed,
   * CommandNotSent (no connection within `timeoutMs`). `onAccepted(frame)` is called when the
   * gateway has it (`frame.timeout_ms`: the effective timeout).
   * @param {string} device @param {string} name @param {object} [params]
   * @param {{timeoutMs?: number, onAccepted?: (frame: object) => void}} [options]
   */
  command(device, name, params = {}, { timeoutMs = 5000, onAccepted } = {}) {
    return new Promise((resolve, reject) => {
      let settled = false;
      let timer = 0;
      let link = null;
      let id = 0;
      let accepted = null;
      const finish = (error, value) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        this.waiters.delete(waiter);
        if (link) link.pending.delete(id);
        if (error) reject(error);
        else resolve(value);
      };
      const waiter = { fail: (error) => finish(error), send: () => send() };
      const unknown = (why) =>
        finish(new CommandUnknown("unknown", why, { commandId: accepted ? accepted.command_id : null }));
      const send = () => {
        this.waiters.delete(waiter);
        clearTimeout(timer);
        link = this.link;
        id = this.nextId++;
        link.pending.set(id, (frame) => {
          switch (frame.type) {
            case "command_accepted":
              accepted = frame;
              clearTimeout(timer);
              timer = setTimeout(() => unknown("no result from the gateway in time; the device may still act on it"),
                (Number.isFinite(frame.timeout_ms) ? frame.timeout_ms : timeoutMs) + RESULT_GRACE_MS);
              if (onAccepted) onAccepted(frame);
              return;
            case "command_result":
              return finish(commandOutcome(frame), frame);
            case "error":
              return finish(new CommandRefused("refused", `${frame.code}: ${frame.message}`, { code: frame.code }));
            case "_lost":
              return unknown("the connection to the gateway was lost before the result; the device may still act on it");
          }
        });
        link.send({ type: "command", id, device, command: name, params, timeout_ms: Math.max(1, Math.round(timeoutMs)) });
        timer = setTimeout(() => unknown("no answer from the gateway in time; the device may still act on it"), timeoutMs + ACCEPT_GRACE_MS);
      };
      if (this.link && this.link.open) {
        send();
      } else {
        this.waiters.add(waiter);
        timer = setTimeout(
          () => finish(new CommandNotSent("not_sent", `not connected to the gateway within ${timeoutMs / 1000} s`)),
          timeoutMs,
        );
      }
    });
  }

  // --- internals ------------------------------------------------------------------------------

  setState(patch) {
    Object.assign(this.state, patch);
    this.emit("state", this.state);
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
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
  }

  token() {
    const t = this.options.token;
    return typeof t === "function" ? t() : t || null;
  }

  connect() {
    this.setState({ phase: "connecting", retryAt: 0, message: "" });
    this.stats.attempts++;
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (err) {
      this.retry("lost", String(err));
      return;
    }
    const link = {
      ws,
      hello: null,
      open: false,
      seq: 0,
      streamDecided: false,
      resubscribed: false,
      pending: new Map(),
      openedAt: 0,
      ranged: 0,
      pongDue: 0,
      pinger: 0,
      kind: null,
      send(frame) {
        ws.send(JSON.stringify(frame));
      },
    };
    this.link = link;
    ws.onmessage = (ev) => this.onMessage(link, ev.data);
    ws.onclose = (ev) => this.onClose(link, ev.code, ev.reason);
    ws.onerror = () => {}; // a close follows
    this.later(this.helloTimeoutMs, () => {
      if (this.link === link && !link.open) this.lost(link, "No answer from the gateway.");
    });
  }

  /** Forget the current socket without waiting for its close handshake (it may never come). */
  drop(why) {
    const link = this.link;
    if (!link) return;
    this.link = null;
    link.ws.onmessage = link.ws.onclose = null;
    try {
      link.ws.close();
    } catch {
      /* already closed */
    }
    this.ended(link);
  }

  /** A link ended: requests sent on it learn so; history asked on it goes back in the queue. */
  ended(link) {
    link.open = false;
    clearInterval(link.pinger);
    const handlers = [...link.pending.values()];
    link.pending.clear();
    for (const handler of handlers) handler({ type: "_lost" });
  }

  lost(link, message) {
    if (this.link !== link) return;
    this.clearTimers();
    this.drop("lost");
    this.retry(link.kind || "lost", message, link);
  }

  retry(kind, message, link = null) {
    if (!this.started) return;
    if (link && link.openedAt && performance.now() - link.openedAt >= this.backoff.stableMs) this.attempt = 0;
    this.attempt = Math.max(this.attempt, this.backoff.firstAttempt(kind));
    const delay = this.backoff.delay(this.attempt);
    this.attempt = Math.min(this.attempt + 1, 62);
    this.setState({ phase: "reconnecting", retryAt: Date.now() + delay, message });
    this.later(delay, () => this.connect());
  }

  onMessage(link, data) {
    let frame;
    try {
      frame = JSON.parse(data);
    } catch {
      return; // the gateway sends only JSON text frames
    }
    if (!frame || typeof frame !== "object") return;
    if (typeof frame.id === "number" && link.pending.has(frame.id)) {
      link.pending.get(frame.id)(frame);
      return;
    }
    switch (frame.type) {
      case "hello":
        return this.onHello(link, frame);
      case "authenticated":
        return this.onOpen(link);
      case "pong":
        link.pongDue = 0;
        return;
      case "gateway":
        this.setState({ broker: frame.broker, brokerSince: frame.since ?? null });
        return;
      case "readings":
        if (this.inOrder(link, frame)) this.routeReadings(frame);
        return;
      case "snapshot":
        if (this.inOrder(link, frame)) this.routeSnapshot(frame);
        return;
      case "error":
        // Not the reply to a pending request: a refusal of a frame that could not be read.
        if (frame.code === "unauthorized") this.emit("unauthorized", frame);
        else this.emit("error", frame);
        return;
    }
  }

  onHello(link, hello) {
    if (hello.protocol !== PROTOCOL) {
      // Frames of another version would be misread (v1 sent events as frames of their own).
      this.started = false;
      this.clearTimers();
      this.drop("protocol");
      this.setState({
        phase: "failed",
        message: `The gateway speaks protocol ${hello.protocol}; this client speaks ${PROTOCOL}.`,
      });
      return;
    }
    link.hello = { ...hello, limits: { ...DEFAULT_LIMITS, ...(hello.limits || {}) } };
    this.setState({
      broker: hello.broker ?? null,
      brokerSince: hello.broker === "disconnected" ? null : this.state.brokerSince,
    });
    if (hello.auth !== "required") return this.onOpen(link);
    const token = this.token();
    if (!token) {
      // Ask first, connect again with the token: the gateway's auth deadline would not wait.
      this.clearTimers();
      this.drop("needs-token");
      this.setState({ phase: "needs-token", message: "" });
      return;
    }
    this.setState({ phase: "auth" });
    link.send({ type: "auth", id: `auth-${this.nextId++}`, token });
  }

  onOpen(link) {
    const limits = link.hello.limits;
    link.open = true;
    link.openedAt = performance.now();
    link.historyPacer = new Pacer(limits.history_rate, limits.history_burst);
    link.subscribePacer = new Pacer(limits.subscribe_rate, limits.subscribe_burst);
    this.stats.connects++;
    this.setState({ phase: "open", message: "" });
    this.startPinging(link);
    this.emit("hello", link.hello);
    // The subscriptions the stream holds first: the first subscribe decides whether it continues.
    const resume = this.stream ? { epoch: this.stream.epoch, session: this.stream.session, seq: this.stream.link.seq } : null;
    const subs = this.subs.filter((s) => !s.closed).sort((a, b) => (a.id === null) - (b.id === null));
    this.sendSubscribes(link, subs, resume, () => {
      link.resubscribed = true;
      // Subscriptions made while these were on their way go now, as new ones.
      const late = this.subs.filter((s) => !s.closed && s.id === null && !subs.includes(s));
      if (late.length) this.sendSubscribes(link, late, null);
    });
    for (const waiter of [...this.waiters]) waiter.send();
    this.pumpHistory();
  }

  startPinging(link) {
    // The gateway pings us, but a browser cannot see those pings: our own keep a half-open link
    // (laptop asleep, NAT timeout) from looking alive forever.
    link.pinger = setInterval(() => {
      if (this.link !== link) return clearInterval(link.pinger);
      const now = performance.now();
      if (link.pongDue && now > link.pongDue) return this.lost(link, "The gateway stopped answering.");
      if (!link.pongDue) {
        link.pongDue = now + this.pongTimeoutMs;
        link.send({ type: "ping", id: `ping-${this.nextId++}` });
      }
    }, this.pingEveryMs / 5);
  }

  /** Send subscribes one after another (paced), each with `resume` if it held state. */
  sendSubscribes(link, subs, resume, done = () => {}) {
    const next = (i) => {
      if (this.link !== link || !link.open) return;
      if (i >= subs.length) return done();
      const sub = subs[i];
      if (sub.closed) return next(i + 1);
      const wait = link.subscribePacer.waitMs();
      if (wait > 0) return void this.later(wait, () => next(i));
      link.subscribePacer.tryTake();
      const withResume = sub.id !== null ? resume : null;
      const frame = { type: "subscribe", id: this.nextId++, devices: sub.devices };
      if (sub.metrics) frame.metrics = sub.metrics;
      if (withResume) frame.resume = withResume;
      link.pending.set(frame.id, (reply) => {
        link.pending.delete(frame.id);
        if (reply.type === "_lost") return;
        this.onSubscribed(link, sub, withResume, reply);
        next(i + 1);
      });
      link.send(frame);
    };
    next(0);
  }

  onSubscribed(link, sub, resume, reply) {
    if (reply.type === "error") {
      this.subs = this.subs.filter((s) => s !== sub);
      sub.closed = true;
      sub.emit("refused", { error: new RequestRefused(reply.code, reply.message) });
      return;
    }
    if (reply.type !== "subscribed") return;
    const recovered = resume !== null && reply.recovered === true;
    if (!link.streamDecided) {
      // Only now is this connection's session the handle of the subscriptions' stream: a link
      // lost before this reply leaves the old one in place, and resuming with it fails safely.
      link.streamDecided = true;
      const old = this.stream;
      this.stream = { epoch: link.hello.epoch, session: link.hello.session, link };
      if (recovered) {
        link.seq = resume.seq;
        this.stats.recovered++;
      } else {
        link.seq = 0;
        const reason = old && old.epoch !== link.hello.epoch ? "the gateway restarted" : "the stream could not be resumed";
        for (const other of this.subs) if (other.awaiting === null) other.awaiting = reason;
      }
    }
    sub.id = reply.subscription;
    if (!recovered && sub.awaiting === null) sub.awaiting = "the stream could not be resumed";
  }

  /** Check a sequenced frame; a gap (impossible on one connection) forces a resync of all. */
  inOrder(link, frame) {
    const seq = frame.seq;
    if (typeof seq !== "number") return true;
    if (seq <= link.seq) {
      this.stats.duplicates++;
      return false;
    }
    if (seq !== link.seq + 1) {
      this.stats.gaps++;
      this.emit("gap", { missed: seq - link.seq - 1 });
      this.stream = null;
      for (const sub of this.subs) if (sub.awaiting === null) sub.awaiting = "a gap in the stream";
      link.kind = "lost";
      queueMicrotask(() => this.lost(link, "Frames were missed; resyncing."));
      return false;
    }
    link.seq = seq;
    return true;
  }

  routeReadings(frame) {
    const events = Array.isArray(frame.events) ? frame.events : [];
    const data = Array.isArray(frame.data) ? frame.data : [];
    const coalesced = frame.coalesced === true;
    const dropped = Number(frame.dropped) || 0;
    for (const sub of this.subs) {
      if (sub.awaiting !== null || sub.closed) continue;
      const mine = sub.all
        ? { events, data }
        : {
            events: events.filter((e) => e && e.device && sub.matchesDevice(e.device.id)),
            data: data.filter((row) => Array.isArray(row) && sub.matchesReading(row)),
          };
      if (mine.events.length || mine.data.length || coalesced) sub.emit("batch", { ...mine, coalesced, dropped });
    }
  }

  routeSnapshot(frame) {
    const devices = Array.isArray(frame.devices) ? frame.devices : [];
    for (const sub of this.subs) {
      if (sub.id !== frame.subscription || sub.closed) continue;
      if (sub.awaiting === "") {
        sub.awaiting = null;
        sub.emit("snapshot", { devices });
      } else {
        const reason = sub.awaiting || "a new snapshot";
        sub.awaiting = null;
        this.stats.refreshed++;
        sub.emit("resync", { reason, restarted: reason === "the gateway restarted", devices });
      }
    }
  }

  _unsubscribe(sub) {
    this.subs = this.subs.filter((s) => s !== sub);
    const link = this.link;
    if (!link || !link.open || sub.id === null || this.subs.some((s) => s.id === sub.id)) return;
    const id = this.nextId++;
    link.pending.set(id, () => link.pending.delete(id));
    link.send({ type: "unsubscribe", id, subscription: sub.id });
  }

  pumpHistory() {
    const link = this.link;
    if (!link || !link.open) return;
    while (this.historyQueue.length) {
      const job = this.historyQueue[0];
      if (job.ranged && link.ranged >= link.hello.limits.history_in_flight) return; // a reply frees one
      const wait = link.historyPacer.waitMs();
      if (wait > 0) {
        if (!link.pumpTimer) {
          link.pumpTimer = this.later(wait, () => {
            link.pumpTimer = 0;
            this.pumpHistory();
          });
        }
        return;
      }
      link.historyPacer.tryTake();
      this.historyQueue.shift();
      const id = this.nextId++;
      if (job.ranged) link.ranged++;
      link.pending.set(id, (reply) => {
        link.pending.delete(id);
        if (job.ranged) link.ranged--;
        if (reply.type === "_lost") {
          if (!job.cancelled) this.historyQueue.unshift(job); // asked again on the next connection
          return;
        }
        if (!job.cancelled) {
          if (reply.type === "history") job.resolve(reply);
          else job.reject(new RequestRefused(reply.code || "bad_reply", reply.message || String(reply.type)));
        }
        this.pumpHistory();
      });
      link.send({ ...job.frame, id });
    }
  }

  onClose(link, code, reason) {
    if (this.link !== link) return;
    this.link = null;
    this.clearTimers();
    this.ended(link);
    if (code === 4500) {
      this.emit("unauthorized", { code });
      this.setState({ phase: "needs-token", message: "The gateway refused the token." });
      return;
    }
    const kind = link.kind || classifyClose(code);
    if (kind === "terminal") {
      this.started = false;
      const message =
        code === 1009
          ? "The gateway closed the connection: a message was too large."
          : code === 4501
            ? "The gateway closed the connection after repeated protocol errors."
            : `The gateway closed the connection for good (${code}).`;
      this.setState({ phase: "failed", message });
      return;
    }
    const why =
      kind === "restart"
        ? "The gateway restarted."
        : kind === "back_off"
          ? `The gateway asked us to back off${reason ? ` (${reason})` : ""}.`
          : "Lost the connection to the gateway.";
    this.retry(kind, why, link);
  }
}

/** The CommandError of a command_result's status, or null for ok. */
function commandOutcome(frame) {
  const commandId = frame.command_id ?? null;
  switch (frame.status) {
    case "ok":
      return null;
    case "error":
      return new DeviceError("error", String(frame.error ?? "the device reported an error"), {
        commandId,
        result: frame.result,
        frame,
      });
    case "timeout":
      return new CommandTimeout("timeout", "the device did not answer in time", { commandId, frame });
    case "unconfirmed":
      return new CommandUnconfirmed("unconfirmed", "sent, but nothing the device reports can confirm it", {
        commandId,
        frame,
      });
    default:
      return new CommandUnknown("unknown", "the gateway's broker link dropped; the device may still receive it", {
        commandId,
        frame,
      });
  }
}

// The page's one subscription (every device) and the sequenced stream it opens, kept across
// reconnects (docs/protocol.md, "The stream" and "Resuming after a reconnect").
//
// Once the page holds a stream's state (its snapshot arrived), the subscribe on every reconnect
// carries `resume: {epoch, session, seq}`: the epoch and session from the hello of the connection
// that stream belongs to, and the seq of the last sequenced frame (`snapshot` or `readings`) the
// page applied. The gateway then either continues that stream (`recovered: true`: no snapshot, the
// missed frames follow with continuing seq) or starts afresh (`recovered: false`, or no
// `recovered`: a snapshot follows, numbered from 1 on the new connection).
//
// Events: "recovered" (the old stream continues), "refreshed" (detail: {restarted}: a fresh
// snapshot replaces the page's state), "gap" (detail: {missed}: frames lost within a stream),
// "refused" (detail: the error frame).

export class Stream extends EventTarget {
  constructor(conn, stats) {
    super();
    this.conn = conn;
    this.stats = stats;
    this.epoch = null; // the stream the page's state comes from: its gateway epoch and session
    this.session = null;
    this.seq = 0; // last sequenced frame (snapshot or readings) applied from it
    this.synced = false; // its snapshot was applied: only then is there a state to continue
    conn.addEventListener("ready", () => this.subscribe());
  }

  subscribe() {
    const hello = this.conn.hello || {};
    const frame = { type: "subscribe", devices: ["*"] };
    const resume =
      this.session !== null && this.synced ? { epoch: this.epoch, session: this.session, seq: this.seq } : null;
    if (resume) frame.resume = resume;
    this.conn.request(frame, (reply) => {
      if (reply.type === "error") {
        this.dispatchEvent(new CustomEvent("refused", { detail: reply }));
        return;
      }
      if (reply.type !== "subscribed") return; // "disconnected": the next connect tries again
      // Only now is the new connection's session the one holding the page's stream: a link lost
      // before this reply leaves the old handle in place, and resuming with it fails safely.
      this.epoch = typeof hello.epoch === "string" ? hello.epoch : null;
      this.session = typeof hello.session === "string" && this.epoch !== null ? hello.session : null;
      if (resume && reply.recovered === true) {
        this.stats.recovered++;
        this.dispatchEvent(new CustomEvent("recovered"));
        return;
      }
      this.seq = 0; // a fresh stream: the snapshot comes next (seq 1), then readings
      this.synced = false;
      if (resume) {
        this.stats.refreshed++;
        this.dispatchEvent(new CustomEvent("refreshed", { detail: { restarted: resume.epoch !== this.epoch } }));
      }
    });
  }

  /** The stream's snapshot arrived (call before applying it). */
  snapshot() {
    this.synced = true;
  }

  /** Check a sequenced frame's seq; false if the page already applied it (never expected). */
  accept(frame) {
    const seq = frame.seq;
    if (typeof seq !== "number") return true;
    if (seq <= this.seq) {
      this.stats.duplicates++;
      return false;
    }
    if (seq !== this.seq + 1) {
      this.stats.gaps++;
      this.dispatchEvent(new CustomEvent("gap", { detail: { missed: seq - this.seq - 1 } }));
    }
    this.seq = seq;
    return true;
  }
}

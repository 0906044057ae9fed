// The JavaScript client (dashboard/client.js) under Node's own test runner, against a real
// gateway, broker and counting fleet that tests/clients/test_js_client.py starts and controls
// (tests/support/chaos.py): IOTGW_CONTROL is its control URL (restart, kill-broker, drop, finish).

import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff, Client, CommandRefused, CommandError } from "../../dashboard/client.js";

const CONTROL = process.env.IOTGW_CONTROL;
const FAST = new Backoff({ minMs: 20, maxMs: 300, restartMs: 100, backOffMs: 50 });

async function control(path, method = "POST") {
  const response = await fetch(CONTROL + path, { method });
  assert.equal(response.status, 200, `${path}: HTTP ${response.status}`);
  return response.json();
}

/** Resolve once `predicate()` holds, checking every 10 ms, or fail after `ms`. */
async function until(predicate, what, ms = 20_000) {
  const deadline = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Follow a subscription: per device, [segment, n] for every reading; a resync starts a segment. */
function follow(sub) {
  const seen = new Map();
  const state = { segment: 0, resyncs: [], readings: 0, snapshots: 0, seen };
  sub.addEventListener("snapshot", () => state.snapshots++);
  sub.addEventListener("resync", ({ detail }) => {
    state.segment++;
    state.resyncs.push(detail.reason);
  });
  sub.addEventListener("batch", ({ detail }) => {
    for (const [device, metric, , value] of detail.data) {
      if (metric !== "n") continue;
      if (!seen.has(device)) seen.set(device, []);
      seen.get(device).push([state.segment, value]);
      state.readings++;
    }
  });
  return state;
}

test("subscribe, history, commands and refusals", async () => {
  const info = await control("/info", "GET");
  const client = new Client(info.ws_url, { backoff: FAST }).start();
  try {
    const sub = client.subscribe({ devices: ["count-*"], metrics: ["n"] });
    const state = follow(sub);
    await until(() => state.snapshots === 1 && state.readings >= 10, "a snapshot and readings");
    const history = await client.history({ device: "count-0", metric: "n", limit: 5 });
    assert.equal(history.type, "history");
    assert.ok(history.points.length > 0 && history.points.length <= 5);
    const result = await client.command("probe", "echo", { nonce: 1 }, { timeoutMs: 3000 });
    assert.equal(result.status, "ok");
    assert.deepEqual(result.result, { nonce: 1 });
    await assert.rejects(client.command("nobody", "echo", { nonce: 2 }), (err) => {
      assert.ok(err instanceof CommandRefused);
      assert.equal(err.code, "not_found");
      return true;
    });
    await assert.rejects(client.history({ device: "count-0", metric: "nothing" }), (err) => err.code === "not_found");
  } finally {
    client.close();
  }
});

test("history requests past the gateway's burst are paced, never closing the connection", async () => {
  const info = await control("/info", "GET");
  const client = new Client(info.ws_url, { backoff: FAST }).start();
  try {
    await until(() => client.state.phase === "open", "the connection");
    const { history_burst: burst, history_rate: rate } = client.hello.limits;
    const count = burst * 3; // as a device view with many charts switching windows would ask
    const started = performance.now();
    const replies = await Promise.all(
      Array.from({ length: count }, (_, i) => client.history({ device: `count-${i % 6}`, metric: "n", limit: 1 })),
    );
    assert.equal(replies.length, count);
    assert.equal(client.stats.connects, 1, "the connection was closed (4001?) and made again");
    // Paced: the part past half the burst went at no more than the announced rate.
    const seconds = (performance.now() - started) / 1000;
    assert.ok(seconds >= (count - burst / 2) / rate - 0.5, `${count} replies in ${seconds.toFixed(2)} s`);
  } finally {
    client.close();
  }
});

test("chaos: 20 restarts, 2 broker kills, 3 cut connections", async () => {
  const info = await control("/info", "GET");
  const client = new Client(info.ws_url, { backoff: FAST }).start();
  const sub = client.subscribe({ devices: ["count-*"] });
  const state = follow(sub);
  const outcomes = new Map(); // nonce -> [outcome]
  let sending = true;
  const sender = (async () => {
    for (let nonce = 1000; sending; nonce++) {
      let outcome;
      try {
        await client.command("probe", "echo", { nonce }, { timeoutMs: 2000 });
        outcome = "ok";
      } catch (err) {
        assert.ok(err instanceof CommandError, String(err));
        outcome = err.status === "refused" ? `refused:${err.code}` : err.status;
      }
      if (!outcomes.has(nonce)) outcomes.set(nonce, []);
      outcomes.get(nonce).push(outcome);
      await new Promise((r) => setTimeout(r, 20));
    }
  })();
  const progress = async (n = 24) => {
    const target = state.readings + n;
    await until(() => state.readings >= target, `${n} more readings`);
  };
  try {
    for (let restart = 0; restart < 20; restart++) {
      await progress();
      await control("/restart");
      await until(() => state.resyncs.length > restart, `the resync after restart ${restart + 1}`);
      if ([2, 9, 16].includes(restart)) {
        await progress();
        assert.ok((await control("/drop")).dropped >= 1);
      }
      if ([6, 13].includes(restart)) {
        await progress();
        await control("/kill-broker");
      }
    }
    await progress();
    const { last, received } = await control("/finish");
    await until(
      () => Object.entries(last).every(([d, n]) => state.seen.get(d)?.at(-1)?.[1] === n),
      "every device's last reading",
    );
    sending = false;
    await sender;
    // Every reading once and in order within each stream; every gap a resync.
    let boundaries = 0;
    for (const [device, seen] of state.seen) {
      for (let i = 1; i < seen.length; i++) {
        const [[segA, a], [segB, b]] = [seen[i - 1], seen[i]];
        if (segA === segB) assert.equal(b, a + 1, `${device}: ${a} then ${b} within one stream`);
        else boundaries++;
      }
    }
    assert.ok(state.resyncs.filter((r) => r === "the gateway restarted").length >= 20);
    assert.ok(client.stats.recovered >= 3, `resumed ${client.stats.recovered}`);
    assert.equal(client.stats.gaps, 0);
    // Every command exactly one outcome, ok only when the device got it.
    const got = new Set(received);
    const counts = {};
    for (const [nonce, seen] of outcomes) {
      assert.equal(seen.length, 1, `command ${nonce}: ${seen}`);
      counts[seen[0]] = (counts[seen[0]] || 0) + 1;
      if (seen[0] === "ok") assert.ok(got.has(nonce), `command ${nonce} ok, but the device never got it`);
      if (seen[0] === "not_sent" || seen[0].startsWith("refused")) assert.ok(!got.has(nonce), `command ${nonce} ${seen[0]}`);
    }
    assert.ok(counts.ok > 0);
    console.log(
      `CHAOS ${JSON.stringify({ readings: state.readings, resyncs: state.resyncs.length, boundaries, ...client.stats, commands: counts })}`,
    );
  } finally {
    sending = false;
    client.close();
  }
});

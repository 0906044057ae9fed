// Command forms generated from a device's `meta.commands`, and the outcome of each send shown
// next to its form: pending, accepted, then ok / error / timeout / unknown / unconfirmed with the
// round trip, or the gateway's refusal (an `error` frame with code and message).
//
// While the device has the command, a countdown shows the time left of the effective timeout the
// gateway announced in `command_accepted.timeout_ms` (the request's, capped by the gateway).

import { h, setText } from "./dom.js";

const TIMEOUT_MS = 5000; // asked for; the gateway may cap it
let uid = 0;

/** A panel of command forms for `device`; empty when its meta declares no commands. */
export function commandPanel(device, client) {
  const commands = device.meta?.commands;
  const panel = h("div", { class: "commands", dataset: { testid: "commands" } });
  if (!commands || typeof commands !== "object" || Object.keys(commands).length === 0) {
    panel.append(h("p", { class: "muted", text: "This device declares no commands." }));
    return panel;
  }
  for (const [name, spec] of Object.entries(commands)) {
    panel.append(commandForm(device.id, name, spec, client));
  }
  return panel;
}

function commandForm(deviceId, name, spec, client) {
  const params = spec && typeof spec.params === "object" && spec.params ? spec.params : {};
  const fields = Object.entries(params).map(([param, p]) => paramField(param, p || {}));
  const button = h(
    "button",
    { type: "submit", class: fields.length ? "btn" : "btn btn-secondary", dataset: { testid: "command-send" } },
    fields.length ? "Send" : humanize(name),
  );
  const result = h("output", {
    class: "cmd-result",
    dataset: { testid: "command-result", status: "idle" },
    "aria-live": "polite",
  });
  const form = h(
    "form",
    {
      class: `cmd${fields.length ? "" : " cmd-bare"}`,
      dataset: { testid: "command-form", command: name },
      "aria-label": `Command ${name}`,
      novalidate: false,
    },
    fields.length ? h("h4", { class: "cmd-name", text: humanize(name) }) : null,
    fields.length ? h("div", { class: "cmd-fields" }, ...fields.map((f) => f.el)) : null,
    h("div", { class: "cmd-actions" }, button, result),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    if (!form.reportValidity()) return;
    const values = {};
    for (const f of fields) {
      const value = f.read();
      if (value !== undefined) values[f.name] = value;
    }
    send(client, { deviceId, name, params: values }, button, result);
  });
  return form;
}

function paramField(name, p) {
  const id = `cmd-field-${++uid}`;
  const optional = p.optional === true;
  const label = h("label", { for: id }, name, optional ? h("span", { class: "muted", text: " (optional)" }) : null);
  const base = { id, name, dataset: { testid: "command-param", param: name } };
  let input;
  let read;
  if (Array.isArray(p.enum) && p.enum.length) {
    input = h(
      "select",
      { ...base, required: !optional },
      optional ? h("option", { value: "", text: "—" }) : null,
      ...p.enum.map((v, i) => h("option", { value: String(i), text: String(v) })),
    );
    read = () => (input.value === "" ? undefined : p.enum[Number(input.value)]);
  } else if (p.type === "boolean" && !optional) {
    input = h("input", { ...base, type: "checkbox" });
    read = () => input.checked;
  } else if (p.type === "boolean") {
    input = h(
      "select",
      base,
      h("option", { value: "", text: "—" }),
      h("option", { value: "true", text: "on" }),
      h("option", { value: "false", text: "off" }),
    );
    read = () => (input.value === "" ? undefined : input.value === "true");
  } else if (p.type === "number" || p.type === "integer") {
    const num = (v) => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
    const step = num(p.step) ?? (p.type === "integer" ? 1 : "any");
    input = h("input", {
      ...base,
      type: "number",
      inputmode: p.type === "integer" ? "numeric" : "decimal",
      min: num(p.min),
      max: num(p.max),
      step,
      required: !optional,
      placeholder: rangeHint(num(p.min), num(p.max)),
    });
    read = () => (input.value === "" ? undefined : Number(input.value));
  } else {
    input = h("input", { ...base, type: "text", maxlength: 256, required: !optional, autocomplete: "off" });
    read = () => (input.value === "" && optional ? undefined : input.value);
  }
  const el = h("div", { class: `field${input.type === "checkbox" ? " field-check" : ""}` }, label, input);
  return { el, name, read };
}

function rangeHint(min, max) {
  if (min !== undefined && max !== undefined) return `${min} – ${max}`;
  if (min !== undefined) return `≥ ${min}`;
  if (max !== undefined) return `≤ ${max}`;
  return "";
}

function send(client, { deviceId, name, params }, button, result) {
  let ticker = 0;
  const show = (status, text, detail = "", extra = null) => {
    result.dataset.status = status;
    const parts = [h("span", { class: "cmd-status", text })];
    if (extra) parts.push(extra);
    if (detail) parts.push(h("span", { class: "cmd-detail", dataset: { testid: "command-detail" }, text: detail }));
    result.replaceChildren(...parts);
  };
  const finish = (status, text, detail) => {
    clearInterval(ticker);
    button.disabled = false;
    show(status, text, detail);
  };
  const countdown = (timeoutMs) => {
    const deadline = performance.now() + timeoutMs;
    const el = h("span", {
      class: "cmd-countdown",
      dataset: { testid: "command-countdown", timeoutMs: String(timeoutMs) },
      role: "timer",
      "aria-label": "time left for the device to answer",
    });
    const bar = h("span", { class: "cmd-countdown-bar", "aria-hidden": "true" });
    const render = () => {
      const left = Math.max(0, deadline - performance.now());
      setText(el, left > 0 ? `${Math.ceil(left / 1000)} s left` : "any moment");
      bar.style.transform = `scaleX(${left / timeoutMs})`;
    };
    render();
    ticker = setInterval(render, 250);
    return h("span", { class: "cmd-wait" }, el, h("span", { class: "cmd-countdown-track" }, bar));
  };
  button.disabled = true;
  show("pending", "Sending…");
  // The client resolves every command exactly once (client.js): ok, or the error of its outcome,
  // including "unknown" when the link drops after sending or the promised result never comes.
  const onAccepted = (frame) => {
    const timeoutMs = Number.isFinite(frame.timeout_ms) && frame.timeout_ms > 0 ? frame.timeout_ms : TIMEOUT_MS;
    show("accepted", "Waiting for the device…", "", countdown(timeoutMs));
    result.title = `command id ${frame.command_id ?? "?"}`;
  };
  client.command(deviceId, name, params, { timeoutMs: TIMEOUT_MS, onAccepted }).then(
    (frame) => finish(...outcome(frame)),
    (error) => finish(...failure(error)),
  );
}

/** [status, text, detail] for a command that did not end ok (a CommandError of client.js). */
function failure(error) {
  switch (error.status) {
    case "refused":
      return ["refused", `Refused: ${error.message.replace(/^[a-z_]+: /, "") || error.code}`, error.code ? `(${error.code})` : ""];
    case "not_sent":
      return ["disconnected", "Not sent: no connection to the gateway", ""];
    default:
      return error.frame ? outcome(error.frame) : ["unknown", "Outcome unknown", String(error.message || error)];
  }
}

/** [status, text, detail] for a command_result frame. */
function outcome(frame) {
  const rtt = typeof frame.rtt_ms === "number" ? `${Math.round(frame.rtt_ms)} ms` : "";
  switch (frame.status) {
    case "ok": {
      const result = frame.result === undefined || frame.result === null ? "" : compact(frame.result);
      return ["ok", `OK${rtt ? ` · ${rtt}` : ""}`, result];
    }
    case "error":
      return ["error", `Error${rtt ? ` · ${rtt}` : ""}`, String(frame.error ?? "the device reported an error")];
    case "timeout":
      return ["timeout", `Timed out${rtt ? ` · ${rtt}` : ""}`, "the device did not answer in time"];
    case "unknown":
      return ["unknown", "Outcome unknown", "the broker link dropped; the device may still receive it"];
    case "unconfirmed":
      // Published and acknowledged, but no report the device sends could confirm it.
      return ["unknown", `Sent, not confirmed${rtt ? ` · ${rtt}` : ""}`, "the device already showed this state, or reports none"];
    default:
      return ["unknown", `Unexpected status ${String(frame.status)}`, ""];
  }
}

function compact(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text.length > 200 ? `${text.slice(0, 199)}…` : text;
}

/** "set_target" → "Set target". */
export function humanize(name) {
  const words = String(name).replace(/[_.-]+/g, " ").trim();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

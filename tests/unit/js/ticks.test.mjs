// The value axis' ticks (dashboard/ticks.js) on the ranges real devices produce. Run by
// tests/unit/test_dashboard_js.py through `node --test`.

import assert from "node:assert/strict";
import { test } from "node:test";

import { axisTicks } from "../../../dashboard/ticks.js";

const EN = "en-US";

/** What every axis must be: ascending equal steps covering the range, labels all different. */
function checkAxis(lo, hi, count, axis) {
  const { ticks, labels, step } = axis;
  assert.ok(ticks.length >= 2, `at least two ticks for ${lo}..${hi}: ${ticks}`);
  assert.ok(ticks.length <= 2.5 * count + 2, `not far more than ${count} ticks: ${ticks.length}`);
  assert.ok(axis.lo <= Math.min(lo, hi) && axis.hi >= Math.max(lo, hi), `${ticks} covers ${lo}..${hi}`);
  for (let i = 1; i < ticks.length; i++) {
    // Equal up to the doubles' own spacing at the ticks' size.
    const slack = step * 1e-6 + Math.abs(ticks[i]) * 4e-16;
    assert.ok(Math.abs(ticks[i] - ticks[i - 1] - step) <= slack, `equal steps: ${ticks}`);
  }
  assert.equal(new Set(labels).size, labels.length, `labels tell the ticks apart: ${labels}`);
  assert.ok(!labels.some((l) => /^-0(\.0*)?$/.test(l)), `no negative zero: ${labels}`);
}

/** A plain en-US label read back as a number. */
const parse = (label) => Number(label.replaceAll(",", ""));

test("latitude over 0.002°: four decimals, five distinct ticks", () => {
  const axis = axisTicks(51.507, 51.509, 4, EN);
  checkAxis(51.507, 51.509, 4, axis);
  assert.deepEqual(axis.labels, ["51.5070", "51.5075", "51.5080", "51.5085", "51.5090"]);
});

test("a latitude range that does not start on a tick is widened to whole steps", () => {
  const axis = axisTicks(51.50712, 51.50893, 4, EN);
  checkAxis(51.50712, 51.50893, 4, axis);
  assert.equal(axis.labels[0], "51.5070");
  assert.equal(axis.labels.at(-1), "51.5090");
});

test("negative longitude over 0.001°: every label different, none rounded to the same value", () => {
  const axis = axisTicks(-0.0815, -0.0805, 4, EN);
  checkAxis(-0.0815, -0.0805, 4, axis);
  assert.deepEqual(axis.labels, ["-0.0815", "-0.0810", "-0.0805"]);
});

test("an energy meter's 3,576.1–3,576.9 kWh keeps its decimal", () => {
  const axis = axisTicks(3576.1, 3576.9, 4, EN);
  checkAxis(3576.1, 3576.9, 4, axis);
  assert.deepEqual(axis.labels, ["3,576.0", "3,576.2", "3,576.4", "3,576.6", "3,576.8", "3,577.0"]);
});

test("0 to a billion is written compactly", () => {
  const axis = axisTicks(0, 1e9, 4, EN);
  checkAxis(0, 1e9, 4, axis);
  assert.deepEqual(axis.labels, ["0", "500M", "1B"]);
  const finer = axisTicks(0, 1e9, 8, EN);
  assert.deepEqual(finer.labels, ["0", "200M", "400M", "600M", "800M", "1B"]);
});

test("compact labels keep the digits that tell neighbours apart", () => {
  const axis = axisTicks(1_001_000, 1_004_000, 3, EN);
  checkAxis(1_001_000, 1_004_000, 3, axis);
  assert.deepEqual(axis.labels, ["1.001M", "1.002M", "1.003M", "1.004M"]);
});

test("a tiny range on a huge value stays plain and exact", () => {
  const axis = axisTicks(1e9 + 100, 1e9 + 700, 3, EN);
  checkAxis(1e9 + 100, 1e9 + 700, 3, axis);
  assert.deepEqual(axis.labels, ["1,000,000,000", "1,000,000,200", "1,000,000,400", "1,000,000,600", "1,000,000,800"]);
});

test("a constant series gets an axis around its value", () => {
  const axis = axisTicks(21.4, 21.4, 4, EN);
  checkAxis(21.4, 21.4, 4, axis);
  assert.ok(axis.lo < 21.4 && axis.hi > 21.4);
  assert.ok(axis.ticks.includes(21.4), `21.4 is one of ${axis.ticks}`);
  assert.ok(axis.labels.includes("21.4"), `labelled as itself: ${axis.labels}`);
});

test("constant zero, negative, whole, huge and GPS-precise values", () => {
  for (const v of [0, -7, 20, 1e9, 51.507435, -0.081234, 3576.43]) {
    const axis = axisTicks(v, v, 4, EN);
    checkAxis(v, v, 4, axis);
    assert.ok(axis.lo < v && axis.hi > v, `${v} inside ${axis.ticks}`);
    assert.ok(axis.ticks.some((t) => Math.abs(t - v) <= Math.abs(v) * 1e-12), `${v} is one of ${axis.ticks}`);
  }
  assert.deepEqual(axisTicks(51.507435, 51.507435, 4, EN).labels, [
    "51.507433", "51.507434", "51.507435", "51.507436", "51.507437",
  ]);
  assert.deepEqual(axisTicks(1e9, 1e9, 4, EN).labels, ["980M", "990M", "1B", "1.01B", "1.02B"]);
});

test("negative values −40 to −38.5 °C: one decimal on every tick", () => {
  const axis = axisTicks(-40, -38.5, 4, EN);
  checkAxis(-40, -38.5, 4, axis);
  assert.deepEqual(axis.labels, ["-40.0", "-39.5", "-39.0", "-38.5"]);
});

test("a range across zero labels zero as 0", () => {
  const axis = axisTicks(-0.3, 0.25, 4, EN);
  checkAxis(-0.3, 0.25, 4, axis);
  assert.deepEqual(axis.labels, ["-0.4", "-0.2", "0.0", "0.2", "0.4"]);
});

test("tiny magnitudes are written in scientific notation", () => {
  const axis = axisTicks(1.2e-7, 4.7e-7, 4, EN);
  checkAxis(1.2e-7, 4.7e-7, 4, axis);
  assert.deepEqual(axis.labels, ["1E-7", "2E-7", "3E-7", "4E-7", "5E-7"]);
});

test("reversed bounds are taken in order; non-finite bounds are refused", () => {
  assert.deepEqual(axisTicks(10, 0, 5, EN).labels, axisTicks(0, 10, 5, EN).labels);
  assert.throws(() => axisTicks(0, Infinity, 5, EN), RangeError);
  assert.throws(() => axisTicks(NaN, 1, 5, EN), RangeError);
});

test("plain labels read back as their ticks", () => {
  for (const [lo, hi] of [[51.507, 51.509], [3576.1, 3576.9], [-40, -38.5], [0.001, 0.0013]]) {
    const axis = axisTicks(lo, hi, 4, EN);
    axis.labels.forEach((label, i) => assert.ok(Math.abs(parse(label) - axis.ticks[i]) < axis.step * 1e-6, label));
  }
});

test("thousands of ranges of every size and place: the axis rules hold", () => {
  let seed = 7;
  const random = () => ((seed = (seed * 16807) % 2147483647) - 1) / 2147483646;
  for (let i = 0; i < 5000; i++) {
    const centre = (random() - 0.5) * 10 ** (random() * 24 - 12);
    const span = Math.abs(centre || 1) * 10 ** (random() * 11 - 9); // relative 1e-9 .. 100
    const lo = centre - span * random();
    const hi = lo + span;
    const count = 2 + Math.floor(random() * 8);
    checkAxis(lo, hi, count, axisTicks(lo, hi, count, EN));
  }
});

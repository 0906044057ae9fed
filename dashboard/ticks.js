// Value-axis ticks: round steps (1, 2 or 5 × 10^k) covering a range, and labels with just the
// precision that tells them apart. No DOM here, so Node's test runner can import it
// (tests/unit/js/ticks.test.mjs).
//
// Precision follows the step, not the values: 51.5070–51.5090 is labelled 51.5070, 51.5075, …
// (the step's last significant digit sets the decimals, the same for every tick), and
// 3,576.1–3,576.9 is 3,576.0, 3,576.2, … Ticks that are whole multiples of a thousand or more on
// an axis reaching a million are written compactly (500M, 1B, with as many significant digits as
// each tick needs); axes of values below a thousandth with steps finer than a millionth in
// scientific notation (2E-7).

const MANTISSAS = [1, 2, 5, 10];
const formats = new Map();

function format(locale, options) {
  const key = `${locale}|${JSON.stringify(options)}`;
  let fmt = formats.get(key);
  if (!fmt) {
    fmt = new Intl.NumberFormat(locale, options);
    formats.set(key, fmt);
  }
  return fmt;
}

/** m × 10^e as the double nearest the decimal number, without 0.1 * 3 drift. */
function decimal(m, e) {
  return Number(`${m}e${e}`);
}

/**
 * About `count` ticks covering [lo, hi] (it may be a few more: the range is widened to whole
 * steps). A range with no width (a constant series) is widened around its value first.
 * Returns {lo, hi, step, ticks, labels}, lo and hi being the first and last tick.
 */
export function axisTicks(lo, hi, count = 5, locale = undefined) {
  if (!Number.isFinite(lo) || !Number.isFinite(hi)) throw new RangeError(`no axis for ${lo}..${hi}`);
  if (hi < lo) [lo, hi] = [hi, lo];
  const size = Math.max(Math.abs(lo), Math.abs(hi));
  // Within a billionth of the values' size, the series is as good as constant for a chart.
  if (hi - lo <= size * 1e-9) [lo, hi] = aroundConstant((lo + hi) / 2, count);
  const raw = (hi - lo) / Math.max(1, count);
  let exp = Math.floor(Math.log10(raw));
  let mantissa = MANTISSAS.find((m) => decimal(m, exp) >= raw * (1 - 1e-6)) ?? 10;
  if (mantissa === 10) {
    mantissa = 1;
    exp += 1;
  }
  const step = decimal(mantissa, exp);
  const first = Math.floor(lo / step + 1e-6);
  const last = Math.ceil(hi / step - 1e-6);
  const ticks = [];
  for (let i = first; i <= last; i++) ticks.push(decimal(i * mantissa, exp) + 0); // + 0: no -0
  return { lo: ticks[0], hi: ticks[ticks.length - 1], step, ticks, labels: tickLabels(ticks, exp, locale) };
}

/**
 * A range for a constant value v: `count` steps of v's last significant digit, centred on it, so
 * that v is a tick labelled as written (21.4: 21.2 … 21.6); where that would be wider than half
 * of v (20, 1e9) or v is 0, v ± 2% (or ± 1).
 */
function aroundConstant(v, count) {
  if (v === 0) return [-1, 1];
  const [digits, e] = Math.abs(v).toExponential(11).split("e");
  const significant = digits.replace(".", "").replace(/0+$/, "").length;
  const span = Math.max(1, count) * decimal(1, Number(e) - significant + 1);
  const half = span <= Math.abs(v) / 2 ? span / 2 : Math.abs(v) * 0.02;
  return [v - half, v + half];
}

/** Labels for ticks that are all multiples of 10^exp (the step's last significant digit). */
export function tickLabels(ticks, exp, locale = undefined) {
  const size = Math.max(...ticks.map(Math.abs));
  if ((size >= 1e6 && exp >= 3) || (size < 1e-3 && exp < -6)) {
    const notation = exp >= 3 ? "compact" : "scientific";
    return ticks.map((v) => {
      if (v === 0) return format(locale, {}).format(0);
      // Exactly the digits from the tick's first down to the step's: no two ticks alike.
      const digits = Math.min(21, Math.max(1, Math.floor(Math.log10(Math.abs(v)) + 1e-9) - exp + 1));
      return format(locale, { notation, maximumSignificantDigits: digits }).format(v);
    });
  }
  const decimals = Math.max(0, -exp);
  const fmt = format(locale, { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
  return ticks.map((v) => fmt.format(v));
}

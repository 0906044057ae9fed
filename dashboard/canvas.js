// What the canvas views (chart.js, track.js) share: the theme's colours read from the CSS
// variables (again after every theme change), and a canvas kept at the device's pixel density.

let palette = null;
addEventListener("iotgw:theme", () => {
  palette = null; // theme.js changed the colours: read them again
});

/** The current theme's colours and the page's font for canvas text. */
export function themeColors(el) {
  if (!palette) {
    const css = getComputedStyle(el);
    const v = (name) => css.getPropertyValue(name).trim();
    palette = {
      accent: v("--accent"),
      accentSoft: v("--accent-soft"),
      grid: v("--grid"),
      text: v("--text"),
      muted: v("--text-muted"),
      surface: v("--surface"),
      surface2: v("--surface-2"),
      font: `11px ${css.fontFamily}`,
    };
  }
  return palette;
}

/**
 * Keep the canvas' backing store at its CSS box times the device's pixel density, drawing in CSS
 * pixels, and call `onSize({width, height})` (CSS pixels) whenever the box changes while laid out.
 */
export function keepSized(canvas, ctx, onSize) {
  new ResizeObserver(() => {
    const dpr = devicePixelRatio || 1;
    const rect = canvas.getBoundingClientRect();
    if (!rect.width) return; // hidden
    canvas.width = Math.round(rect.width * dpr);
    canvas.height = Math.round(rect.height * dpr);
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    onSize({ width: rect.width, height: rect.height });
  }).observe(canvas);
}

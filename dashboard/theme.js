// The colour theme: "system" (follows prefers-color-scheme), "light" or "dark", remembered in
// localStorage for wall displays whose system setting is not what they should show.
//
// A classic script in <head>, run before the page is first drawn, so a page set to dark never
// flashes light. It owns the choice: it sets <html data-theme="light|dark"> (what style.css
// reads) and data-theme-choice, takes a new choice from an "iotgw:theme-choice" event (the
// toggle in the top bar, theme-toggle.js) and announces every application as "iotgw:theme"
// (canvas charts re-read their colours).
(() => {
  const KEY = "iotgw.theme";
  const CHOICES = ["system", "light", "dark"];
  const root = document.documentElement;
  const systemDark = matchMedia("(prefers-color-scheme: dark)");
  let choice = "system";
  try {
    const saved = localStorage.getItem(KEY);
    if (CHOICES.includes(saved)) choice = saved;
  } catch {
    // Storage disabled (a locked-down kiosk browser): the system setting it is.
  }

  function apply() {
    const theme = choice === "system" ? (systemDark.matches ? "dark" : "light") : choice;
    root.dataset.theme = theme;
    root.dataset.themeChoice = choice;
    dispatchEvent(new CustomEvent("iotgw:theme", { detail: { theme, choice } }));
  }

  systemDark.addEventListener("change", apply);
  addEventListener("iotgw:theme-choice", (ev) => {
    if (!CHOICES.includes(ev.detail)) return;
    choice = ev.detail;
    try {
      localStorage.setItem(KEY, choice);
    } catch {
      // Not remembered, but applied.
    }
    apply();
  });
  apply();
})();

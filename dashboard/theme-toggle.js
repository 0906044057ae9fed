// The theme toggle in the top bar (system / light / dark): its buttons ask theme.js for a choice
// and show the one in force, whoever made it (another tab's choice applies on reload).

const CHOICE_EVENT = "iotgw:theme-choice";

/** Wire the buttons with data-theme-choice inside `group`. */
export function wireThemeToggle(group) {
  const buttons = [...group.querySelectorAll("[data-theme-choice]")];
  const show = () => {
    const choice = document.documentElement.dataset.themeChoice || "system";
    for (const b of buttons) b.setAttribute("aria-pressed", String(b.dataset.themeChoice === choice));
  };
  for (const button of buttons) {
    button.addEventListener("click", () =>
      dispatchEvent(new CustomEvent(CHOICE_EVENT, { detail: button.dataset.themeChoice })),
    );
  }
  addEventListener("iotgw:theme", show);
  show();
}

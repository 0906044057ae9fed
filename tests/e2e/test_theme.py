"""The colour theme: system, light or dark from the toggle in the top bar, remembered."""

from __future__ import annotations

import pytest
from playwright.async_api import expect

from tests.e2e.conftest import PHONE, MakePage
from tests.e2e.pages import open_live
from tests.e2e.stack import Gateway

pytestmark = pytest.mark.e2e

LIGHT_BG = "rgb(245, 247, 250)"
DARK_BG = "rgb(13, 17, 23)"

#: Records, before any of the page's own scripts run, the theme the root element carries when
#: the <body> element is created: set there, it is in place before anything is drawn.
THEME_AT_BODY = """
new MutationObserver((_, observer) => {
  if (!document.body) return;
  window.__themeAtBody = document.documentElement.dataset.theme ?? null;
  observer.disconnect();
}).observe(document, { childList: true, subtree: true });
"""


async def test_dark_chosen_on_a_light_system_stays_dark(
    make_page: MakePage, gateway: Gateway
) -> None:
    """Dark chosen on a light system turns the page dark at once and after a reload, before the
    body exists (no light flash); System follows the system setting again, both ways."""
    page = await make_page(scheme="light")
    await page.add_init_script(THEME_AT_BODY)
    await open_live(page, gateway)
    html = page.locator("html")
    body_bg = "getComputedStyle(document.body).backgroundColor"
    await expect(html).to_have_attribute("data-theme", "light")
    await expect(page.get_by_test_id("theme-system")).to_have_attribute("aria-pressed", "true")
    assert await page.evaluate(body_bg) == LIGHT_BG

    await page.get_by_test_id("theme-dark").click()
    await expect(html).to_have_attribute("data-theme", "dark")
    await expect(page.get_by_test_id("theme-dark")).to_have_attribute("aria-pressed", "true")
    await expect(page.get_by_test_id("theme-system")).to_have_attribute("aria-pressed", "false")
    assert await page.evaluate(body_bg) == DARK_BG

    await page.reload()
    await open_live(page, gateway)
    assert await page.evaluate("window.__themeAtBody") == "dark"
    await expect(page.get_by_test_id("theme-dark")).to_have_attribute("aria-pressed", "true")
    assert await page.evaluate(body_bg) == DARK_BG

    await page.get_by_test_id("theme-system").click()
    await expect(html).to_have_attribute("data-theme", "light")
    await page.emulate_media(color_scheme="dark")
    await expect(html).to_have_attribute("data-theme", "dark")
    await page.get_by_test_id("theme-light").click()
    await expect(html).to_have_attribute("data-theme", "light")
    assert await page.evaluate(body_bg) == LIGHT_BG


async def test_theme_toggle_fits_the_phone_top_bar(make_page: MakePage, gateway: Gateway) -> None:
    """At 390x844 in dark the toggle sits in the top bar, wholly on screen, nothing overflowing."""
    page = await make_page(PHONE, "dark")
    await open_live(page, gateway)
    await expect(page.locator("html")).to_have_attribute("data-theme", "dark")
    box = await page.get_by_test_id("theme-toggle").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= PHONE[0]
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE[0]

"""The fleet table's latest values: whole or not at all, never a number cut, the rest counted
and shown in full on hover and keyboard focus; on a laptop and on a phone."""

from __future__ import annotations

import contextlib
from typing import Any

import pytest
from playwright.async_api import Page, expect
from playwright.async_api import TimeoutError as PlaywrightTimeout

from tests.e2e.conftest import DESKTOP, PHONE, AddDevice, MakePage
from tests.e2e.fleet_devices import VALVE, VALVE_VALUES, add_mixed_fleet
from tests.e2e.pages import open_live, row
from tests.e2e.stack import Gateway

pytestmark = pytest.mark.e2e

#: For every value chip shown in the fleet: is any part of it (its number above all) cut off,
#: by its own box or by the cell around it?
CLIPPED_VALUES = """
() => [...document.querySelectorAll('[data-testid="device-row"]:not([hidden])')].flatMap((row) => {
  const cell = row.querySelector(".cvalues").getBoundingClientRect();
  return [...row.querySelectorAll('[data-testid="value"]')]
    .filter((chip) => chip.getClientRects().length > 0)
    .flatMap((chip) => {
      const num = chip.querySelector(".vnum");
      const box = num.getBoundingClientRect();
      const unit = chip.querySelector(".vunit").getBoundingClientRect();
      const problems = [];
      if (num.scrollWidth > num.clientWidth) problems.push("number overflows its box");
      if (box.left < cell.left - 0.5 || box.right > cell.right + 0.5) {
        problems.push("number outside the cell");
      }
      if (unit.width && unit.right > cell.right + 0.5) problems.push("unit outside the cell");
      const what = `${row.dataset.deviceId} ${chip.dataset.metric} ${num.textContent}`;
      return problems.map((p) => `${what}: ${p}`);
    });
})
"""


async def assert_nothing_clipped(page: Page) -> None:
    """Wait (the rows are fitted at the next frame) until no value is clipped; else name them."""
    with contextlib.suppress(PlaywrightTimeout):
        await page.wait_for_function(f"({CLIPPED_VALUES})().length === 0", timeout=5000)
    assert await page.evaluate(CLIPPED_VALUES) == []


async def shown_values(page: Page, device_id: str) -> dict[str, str]:
    chips = row(page, device_id).locator('[data-testid="value"]:visible')
    result: dict[str, Any] = await chips.evaluate_all(
        "chips => Object.fromEntries("
        "  chips.map(c => [c.dataset.metric, c.querySelector('.vnum').textContent]))"
    )
    return result


@pytest.mark.parametrize(
    ("size", "other_width", "scheme"),
    [(DESKTOP, 960, "light"), (PHONE, 890, "dark")],
    ids=["1280x820", "390x844-dark"],
)
async def test_no_value_is_ever_clipped(
    make_page: MakePage,
    gateway: Gateway,
    add_device: AddDevice,
    size: tuple[int, int],
    other_width: int,
    scheme: str,
) -> None:
    """Wide and many values: every value shown is whole, the first ones in meta order, and the
    count of the others is shown; at another width another number of them, still whole."""
    await add_mixed_fleet(add_device)
    page = await make_page(size, scheme)
    await open_live(page, gateway)
    valve = row(page, "trv-1")
    await expect(valve.locator('[data-metric="local_temperature"] .vnum')).to_have_text("21.45")
    energy = row(page, "meter-1").locator('[data-metric="energy"] .vnum')
    await expect(energy).to_have_text("123,457")  # six significant digits, every integer one
    await assert_nothing_clipped(page)
    shown = await shown_values(page, "trv-1")
    assert list(shown) == list(VALVE["metrics"])[: len(shown)], "declared order first"
    more = valve.get_by_test_id("more-values")
    await expect(more).to_have_text(f"+{len(VALVE_VALUES) - len(shown)}")

    # Another width (the page's content stops growing at 1320 px): another set, still whole.
    await page.set_viewport_size({"width": other_width, "height": size[1]})
    await expect(valve.locator('[data-testid="value"]:visible')).not_to_have_count(len(shown))
    await assert_nothing_clipped(page)
    await expect(more).to_have_text(
        f"+{len(VALVE_VALUES) - len(await shown_values(page, 'trv-1'))}"
    )


async def test_full_set_on_hover_and_on_keyboard_focus(
    page: Page, gateway: Gateway, add_device: AddDevice
) -> None:
    """Hovering a row that hides values shows all of them beside it; so does focusing its link
    from the keyboard, which also makes them the link's description; Escape hides it."""
    await add_mixed_fleet(add_device)
    await open_live(page, gateway)
    valve = row(page, "trv-1")
    await expect(valve.get_by_test_id("more-values")).to_be_visible()
    tip = page.get_by_test_id("values-tip")
    await expect(tip).to_be_hidden()

    await valve.hover()
    await expect(tip).to_be_visible()
    for metric, number in VALVE_VALUES.items():
        await expect(tip.locator(f'[data-metric="{metric}"]')).to_contain_text(str(number))
    await page.mouse.move(5, 5)
    await expect(tip).to_be_hidden()

    await valve.locator(".row-link").focus()
    await expect(tip).to_be_visible()
    await expect(tip).to_contain_text("occupied_heating_setpoint")
    await expect(valve.locator(".row-link")).to_have_attribute("aria-describedby", "values-tip")
    box = await tip.bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= DESKTOP[0]
    await page.keyboard.press("Escape")
    await expect(tip).to_be_hidden()
